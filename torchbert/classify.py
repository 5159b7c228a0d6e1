"""`python -m torchbert.classify train|evaluate|predict`: fine-tune BERT or ModernBERT for
sequence classification with PyTorch (the twin of jaxbert/classify.py).

Flags, data, batches, the epoch loop, metrics, best/ and the RUNDIR are bertcore's
(bertcore.classify.cli, classify_data, classify_run), shared with jaxbert; this file holds what is
PyTorch: reading the pretrained weights, one AdamW step, logits, and torchbert's checkpoints for
--resume. The model is torchbert/classifier.py's, of the config's architecture (arch.py).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np
import torch

from bertcore.classify import cli as classify
from bertcore.classify.data import Classifier, open_classifier
from bertcore.classify.run import ClassifyRun, fit
from bertcore.data.batches import step_seed
from bertcore.errors import UserError, cli_entry

from .arch import classifier_model
from .checkpoint import Checkpointer
from .classifier import classification_loss
from .optim import clip_grad_norm, make_optimizer
from .pretrained import pretrained_weights
from .runtime import configure_process, pick_device
from .step import to_device


class TorchTwin:
    """The PyTorch half of bertcore.classify.run.fit (its `Twin` protocol)."""

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

    def train_step(self, batch: dict[str, np.ndarray], lr: float, step: int) -> float:
        # This step's dropout masks come from (seed, step): a resumed run draws the same ones.
        # (jaxbert folds the step into its dropout key instead.)
        torch.manual_seed(step_seed(self.run.classify_config.seed, step, 0))
        self.model.train()
        b = to_device(batch, self.device)
        with self.autocast:
            logits = self.model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        loss, _ = classification_loss(logits, b["labels"])
        loss.backward()
        clip_grad_norm(self.params, self.run.classify_config.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return predict_logits(self.model, batch, self.device)

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().float().numpy() for k, v in self.model.hf_state_dict().items()}

    def save(self, step: int, extra: dict[str, Any]) -> None:
        self.ckpt.save(step, self.model, self.optimizer, extra)

    def restore(self) -> dict[str, Any]:
        if self.ckpt.latest_step() is None:
            raise UserError(f"--resume: {self.run.rundir}/checkpoints has no checkpoint; start "
                            f"again with --overwrite")
        return self.ckpt.restore(self.model, self.optimizer)

    def close(self) -> None:
        self.ckpt.close()


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


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = classify.parser("torch").parse_args(argv)
    configure_process()     # before torch starts its threads
    device = pick_device("auto")
    if args.cmd == "train":
        run = ClassifyRun(args, "torch")
        state = None if run.resume else run.initial_state(pretrained_weights(run.src))
        torch.manual_seed(run.classify_config.seed)
        twin = TorchTwin(run, state, device)
        try:
            fit(run, twin)
        finally:
            twin.close()
        return 0
    clf = open_classifier(args.model)
    model = load_classifier(clf, device)
    command = classify.run_evaluate if args.cmd == "evaluate" else classify.run_predict
    command(args, clf, lambda batch: predict_logits(model, batch, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
