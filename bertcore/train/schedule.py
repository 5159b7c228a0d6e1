"""Learning-rate schedules as plain functions of the step.

Each schedule takes an `xp` argument, the array module to compute with: numpy for torch (a
Python float per step, written into the optimizer's param groups) and `jax.numpy` for jaxbert,
where the step is a traced integer inside `jit` and optax calls the same function. One formula,
both twins.

Steps count optimizer updates from 0; the rate used for update `step` is `lr_at(step)`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bertcore.model.config import TrainConfig
from bertcore.infra.errors import UserError


def warmup_linear(step, *, peak: float, warmup: int, total: int, xp: Any = np):
    """BERT's schedule: linear warmup to `peak`, then linear decay to 0 at `total`."""
    step = xp.asarray(step, dtype=xp.float32)
    warm = (step + 1.0) / max(warmup, 1)
    decay = (total - step) / max(total - warmup, 1)
    factor = xp.where(step < warmup, warm, decay)
    return peak * xp.clip(factor, 0.0, 1.0)


def warmup_cosine(step, *, peak: float, warmup: int, total: int, xp: Any = np):
    """Linear warmup, then half a cosine from `peak` down to 0 at `total`."""
    step = xp.asarray(step, dtype=xp.float32)
    warm = (step + 1.0) / max(warmup, 1)
    progress = xp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    cosine = 0.5 * (1.0 + xp.cos(np.pi * progress))
    return peak * xp.where(step < warmup, xp.minimum(warm, 1.0), cosine)


def noam(step, *, peak: float, warmup: int, hidden_size: int, xp: Any = np):
    """The original project's (and "Attention is all you need"'s) schedule:
    `hidden^-0.5 * min(s^-0.5, s * warmup^-1.5)` with s = step + 1, scaled by `peak`
    (the Transformer paper's "factor")."""
    s = xp.asarray(step, dtype=xp.float32) + 1.0
    w = float(max(warmup, 1))
    return peak * hidden_size ** -0.5 * xp.minimum(s ** -0.5, s * w ** -1.5)


def constant(step, *, peak: float, warmup: int, xp: Any = np):
    step = xp.asarray(step, dtype=xp.float32)
    return peak * xp.minimum((step + 1.0) / max(warmup, 1), 1.0)


def make_schedule(cfg: TrainConfig, hidden_size: int) -> Callable[..., Any]:
    """Return `lr(step, xp=np)` for the run described by `cfg`."""
    kw = dict(peak=cfg.lr, warmup=cfg.warmup_steps)
    if cfg.schedule == "linear":
        return lambda step, xp=np: warmup_linear(step, total=cfg.steps, xp=xp, **kw)
    if cfg.schedule == "cosine":
        return lambda step, xp=np: warmup_cosine(step, total=cfg.steps, xp=xp, **kw)
    if cfg.schedule == "noam":
        return lambda step, xp=np: noam(step, hidden_size=hidden_size, xp=xp, **kw)
    if cfg.schedule == "constant":
        return lambda step, xp=np: constant(step, xp=xp, **kw)
    raise UserError(f"unknown schedule {cfg.schedule!r}")
