"""`python -m torchbert.tag train|evaluate|predict`: fine-tune BERT, ModernBERT or ELECTRA (its
discriminator) for token tagging with PyTorch (the twin of jaxbert/tag.py).

Flags, data, batches, scores (seqeval), best/ and the RUNDIR are bertcore's (bertcore.tag: cli,
data, model, run), and so is the loop (bertcore.train.loop, pretraining's own), shared with
jaxbert; this file fills the loop's `Twin` with what is PyTorch: one AdamW step, logits, and
torchbert's checkpoints. The model is torchbert/tagger.py's, of the config's architecture.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np
import torch

from bertcore.data.batches import step_seed
from bertcore.infra.errors import cli_entry
from bertcore.tag import cli as tag
from bertcore.tag.model import Tagger, open_tagger
from bertcore.tag.run import TagRun
from bertcore.train.loop import Result, Twin, train_loop
from bertcore.train.stopping import Stopper, run_train

from .checkpoint import Checkpointer
from .optim import clip_grad_norm, make_optimizer
from .pretrained import pretrained_weights
from .runtime import configure_process, pick_device
from .step import to_device
from .tagger import tagger_model, tagging_loss


class TaggerTwin(Twin):
    """What bertcore.train.loop.train_loop asks of PyTorch to fine-tune a tagger: one AdamW step,
    logits, the weights and checkpoints (jaxbert/tag.py's TaggerTwin mirrors it)."""

    prog = "python -m torchbert.tag"

    def __init__(self, run: TagRun, state: dict[str, np.ndarray] | None, device: torch.device):
        self.run, self.device = run, device
        self.model = tagger_model(run.model_config, len(run.tags))
        if state is not None:    # else: --resume, the checkpoint's weights replace these
            self.model.load_hf_state_dict(state, source="initial weights")
        self.model.to(device)
        # classify's AdamW (bertcore's weight-decay rule; TagConfig has ClassifyConfig's fields),
        # clipped by clip_grad_norm.
        self.optimizer = make_optimizer(self.model, run.tag_config)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                         else contextlib.nullcontext())
        self.ckpt = Checkpointer(run.rundir, run.model_config, keep=1)

    def step(self, step: int, batch: dict[str, np.ndarray], lr: float) -> dict[str, Any]:
        # This step's dropout masks come from (seed, step): a resumed run draws the same ones.
        # (jaxbert folds the step into its dropout key instead.)
        torch.manual_seed(step_seed(self.run.tag_config.seed, step, 0))
        self.model.train()
        b = to_device(batch, self.device)
        with self.autocast:
            logits = self.model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        loss, _ = tagging_loss(logits, b["labels"])
        loss.backward()
        clip_grad_norm(self.params, self.run.tag_config.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.detach()}

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return predict_logits(self.model, batch, self.device)      # (B, L, T), dropout off

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().float().numpy() for k, v in self.model.hf_state_dict().items()}

    def save(self, step: int, extra: dict[str, Any]) -> None:
        self.ckpt.save(step, self.model, self.optimizer, extra)

    def restore(self) -> dict[str, Any]:
        return self.ckpt.restore(self.model, self.optimizer)


def predict_logits(model: torch.nn.Module, batch: dict[str, np.ndarray],
                   device: torch.device) -> np.ndarray:
    """Logits [B, L, num_labels] (fp32 numpy), dropout off."""
    model.eval()
    b = to_device(batch, device)
    with torch.no_grad():
        return model(b["input_ids"], b["token_type_ids"], b["attention_mask"]).float().cpu().numpy()


def load_tagger(tagger: Tagger, device: torch.device) -> torch.nn.Module:
    """A trained tagger (framework-free weights from open_tagger) on `device`."""
    model = tagger_model(tagger.config, len(tagger.tags))
    model.load_hf_state_dict(tagger.state, source=str(tagger.path))
    return model.to(device)


def train(args, argv: list[str], stopper: Stopper) -> Result:
    device = pick_device("auto")
    run = TagRun(args, "torch")
    state = None if run.resume else run.initial_state(pretrained_weights(run.src))
    torch.manual_seed(run.tag_config.seed)
    twin = TaggerTwin(run, state, device)
    resumed = run.begin(twin)
    return train_loop(run, twin, stopper, resumed=resumed, stop_after=run.stop_after, argv=argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """train: exit 0 (done, or --time-budget reached), 75 (stopped by a signal, with a
    checkpoint), 74 (a checkpoint could not be written), 2 (a usage error); evaluate, predict:
    0 or 2."""
    args = tag.parser("torch").parse_args(argv)
    configure_process()     # before torch starts its threads
    if args.cmd == "train":
        return run_train(train, args, argv)
    device = pick_device("auto")
    tagger = open_tagger(args.model)
    model = load_tagger(tagger, device)
    command = tag.run_evaluate if args.cmd == "evaluate" else tag.run_predict
    command(args, tagger, lambda batch: predict_logits(model, batch, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
