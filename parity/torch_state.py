"""torchbert checkpoints <-> `TrainingState`, through torchbert's own checkpoint code
(torchbert.checkpoint), model and optimizer, so the format cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bertcore.infra.errors import UserError
from bertcore.model.hf import fail_names
from bertcore.train.rundir import RunFiles
from bertcore.train.schedule import make_schedule
from torchbert.checkpoint import Checkpointer
from torchbert.arch import pretraining_model
from torchbert.optim import make_optimizer

from .state import TrainingState


def read_torch(run: RunFiles, step: int | None = None) -> TrainingState:
    """Everything a torchbert checkpoint holds, loaded and validated by torchbert's own code."""
    ckpt = Checkpointer(run.rundir, run.trained_config)
    found = ckpt.steps()
    if not found:
        raise UserError(f"{run.rundir} (a torchbert run) has no checkpoint in "
                        f"{run.rundir / 'checkpoints'}")
    if step is not None and step not in found:
        raise UserError(f"{run.rundir} has no checkpoint for step {step}; available: "
                        f"{', '.join(map(str, found))}")
    path = ckpt.path(found[-1] if step is None else step)
    model = pretraining_model(run.trained_config)
    optimizer = make_optimizer(model, run.train)
    extra = ckpt.restore(model, optimizer, step)   # checks files, config, names, shapes
    step = int(extra["step"])
    params = {k: v.detach().numpy() for k, v in model.hf_state_dict().items()}
    exp_avg, exp_avg_sq, off = {}, {}, []
    for name, p in model.named_parameters():       # the tied decoder is listed once, as HF
        s = optimizer.state.get(p)
        if not s:
            continue                               # never had a gradient (e.g. NSP head, --no-nsp)
        if int(s["step"]) != step:
            off.append(f"{name} (step {int(s['step'])})")
        exp_avg[name] = s["exp_avg"].numpy()
        exp_avg_sq[name] = s["exp_avg_sq"].numpy()
    fail_names(f"{path}: AdamW step counts differ from the checkpoint's step {step}", off,
               "the optimizer state is not from this run's loop")
    return TrainingState(run.config, params, step, exp_avg, exp_avg_sq, extra.get("batches"))


def write_torch_checkpoint(rundir: Path, state: TrainingState, run: RunFiles) -> Path:
    """RUNDIR/checkpoints/step_XXXXXXXX written by torchbert's own Checkpointer, from a model
    and an AdamW built by torchbert (so groups, hyper-parameters and format are the twin's)."""
    model = pretraining_model(run.trained_config)
    missing = model.load_hf_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                                        state.params.items()}, source="converted state")
    fail_names("missing parameters", missing, "the state is incomplete")
    optimizer = make_optimizer(model, run.train)
    for name, p in model.named_parameters():
        if name in state.exp_avg:
            # torch keeps a per-parameter step: a float32 tensor, as AdamW itself creates it
            optimizer.state[p] = {"step": torch.tensor(float(state.step), dtype=torch.float32),
                                  "exp_avg": torch.from_numpy(np.array(state.exp_avg[name])),
                                  "exp_avg_sq": torch.from_numpy(np.array(state.exp_avg_sq[name]))}
    lr_at = make_schedule(run.train, run.config.hidden_size)
    for group in optimizer.param_groups:    # what the loop last set (it sets it every step)
        group["lr"] = float(lr_at(state.step - 1)) if state.step > 0 else run.train.lr
    ckpt = Checkpointer(rundir, run.trained_config, keep=run.train.keep_checkpoints)
    return ckpt.save(state.step, model, optimizer, {"step": state.step, "batches": state.batches})
