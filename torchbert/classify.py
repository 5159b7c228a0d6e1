"""`python -m torchbert.classify train|evaluate|predict`: fine-tune BERT, ModernBERT or
ELECTRA (its discriminator) for sequence classification or regression, of single texts or
sentence pairs, with PyTorch (the twin of jaxbert/classify.py).

Flags, data, batches, metrics, best/ and the RUNDIR are bertcore's (bertcore.classify: cli, data,
run), and so is the loop (bertcore.train.loop, pretraining's own), shared with jaxbert; this file
fills the loop's `Twin` with what is PyTorch: reading the pretrained weights, one AdamW step,
logits, and torchbert's checkpoints. The model is torchbert/classifier.py's, of the config's
architecture (arch.py).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np
import torch

from bertcore.classify import cli as classify
from bertcore.classify.data import Classifier, open_classifier
from bertcore.classify.run import ClassifyRun
from bertcore.data.batches import step_seed
from bertcore.infra.errors import cli_entry
from bertcore.train.loop import Result, Twin, train_loop
from bertcore.train.stopping import Stopper, run_train

from .arch import classifier_model
from .checkpoint import Checkpointer
from .classifier import sequence_loss
from .optim import clip_grad_norm, make_optimizer
from .pretrained import pretrained_weights
from .runtime import configure_process, pick_device
from .step import to_device


class ClassifierTwin(Twin):
    """What bertcore.train.loop.train_loop asks of PyTorch to fine-tune a classifier: one AdamW
    step, logits, the weights and checkpoints (jaxbert/classify.py's ClassifierTwin mirrors it)."""

    prog = "python -m torchbert.classify"

    def __init__(self, run: ClassifyRun, state: dict[str, np.ndarray] | None,
                 device: torch.device):
        self.run, self.device = run, device
        self.model = classifier_model(run.model_config, len(run.labels))
        if state is not None:    # else: --resume, the checkpoint's weights replace these
            self.model.load_hf_state_dict(state, source="initial weights")
        self.model.to(device)
        # AdamW with bertcore's weight-decay rule, as in pretraining (ClassifyConfig has the
        # fields make_optimizer reads: lr, betas, eps, weight_decay), clipped by clip_grad_norm.
        self.optimizer = make_optimizer(self.model, run.classify_config)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                         else contextlib.nullcontext())
        self.ckpt = Checkpointer(run.rundir, run.model_config, keep=1)
        self.loss_fn = sequence_loss(run.labels.regression)   # cross-entropy, or an MSE

    def step(self, step: int, batch: dict[str, np.ndarray], lr: float) -> dict[str, Any]:
        # This step's dropout masks come from (seed, step): a resumed run draws the same ones.
        # (jaxbert folds the step into its dropout key instead.)
        torch.manual_seed(step_seed(self.run.classify_config.seed, step, 0))
        self.model.train()
        b = to_device(batch, self.device)
        with self.autocast:
            logits = self.model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        loss, _ = self.loss_fn(logits, b["labels"])
        loss.backward()
        clip_grad_norm(self.params, self.run.classify_config.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.detach()}

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return predict_logits(self.model, batch, self.device)

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().float().numpy() for k, v in self.model.hf_state_dict().items()}

    def save(self, step: int, extra: dict[str, Any]) -> None:
        self.ckpt.save(step, self.model, self.optimizer, extra)

    def restore(self) -> dict[str, Any]:
        return self.ckpt.restore(self.model, self.optimizer)


def predict_logits(model: torch.nn.Module, batch: dict[str, np.ndarray],
                   device: torch.device) -> np.ndarray:
    """Logits [B, num_labels] (fp32 numpy), dropout off."""
    model.eval()
    b = to_device(batch, device)
    with torch.no_grad():
        return model(b["input_ids"], b["token_type_ids"], b["attention_mask"]).float().cpu().numpy()


def load_classifier(clf: Classifier, device: torch.device) -> torch.nn.Module:
    """A trained classifier (framework-free weights from open_classifier) on `device`."""
    model = classifier_model(clf.config, len(clf.labels))
    model.load_hf_state_dict(clf.state, source=str(clf.path))
    return model.to(device)


def train(args, argv: list[str], stopper: Stopper) -> Result:
    device = pick_device("auto")
    run = ClassifyRun(args, "torch")
    state = None if run.resume else run.initial_state(pretrained_weights(run.src))
    torch.manual_seed(run.classify_config.seed)
    twin = ClassifierTwin(run, state, device)
    resumed = run.begin(twin)
    return train_loop(run, twin, stopper, resumed=resumed, stop_after=run.stop_after, argv=argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """train: exit 0 (done, or --time-budget reached), 75 (stopped by a signal, with a
    checkpoint), 74 (a checkpoint could not be written), 2 (a usage error); evaluate, predict:
    0 or 2."""
    args = classify.parser("torch").parse_args(argv)
    configure_process()     # before torch starts its threads
    if args.cmd == "train":
        return run_train(train, args, argv)
    device = pick_device("auto")
    clf = open_classifier(args.model)
    model = load_classifier(clf, device)
    command = classify.run_evaluate if args.cmd == "evaluate" else classify.run_predict
    command(args, clf, lambda batch: predict_logits(model, batch, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
