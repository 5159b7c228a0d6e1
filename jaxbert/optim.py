"""jaxbert's optimizer: optax AdamW with bertcore's weight-decay rule and schedule, after
global-norm clipping, as one GradientTransformation.

Used by pretraining (`make_optimizer`) and fine-tuning (jaxbert/classify.py calls `adamw` with
its own schedule). (The twin of torchbert/optim.py, whose loops set each step's rate and clip
themselves.)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from bertcore.model.config import TrainConfig, weight_decay_applies
from bertcore.train.schedule import make_schedule


def decay_mask(params) -> Any:
    """True where AdamW decays: the same bertcore rule as torch, on '/'-joined Flax paths."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: weight_decay_applies("/".join(str(getattr(k, "key", k)) for k in path)),
        params)


def adamw(cfg, lr_at: Callable) -> optax.GradientTransformation:
    """AdamW at the rate `lr_at(update_count, xp=...)`, no weight decay on biases and LayerNorm,
    after `optax.clip_by_global_norm(cfg.grad_clip)` when it is > 0. `cfg` is a TrainConfig or a
    ClassifyConfig: beta1, beta2, eps, weight_decay and grad_clip."""
    # optax calls the schedule with the update count (0 for the first update): the same step
    # index torch passes to lr_at, but traced, hence xp=jnp.
    tx = optax.adamw(lambda count: lr_at(count, xp=jnp), b1=cfg.beta1, b2=cfg.beta2,
                     eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    return tx


def make_optimizer(cfg: TrainConfig, hidden_size: int) -> optax.GradientTransformation:
    """Pretraining's optimizer: `adamw` with the --schedule of `cfg`."""
    return adamw(cfg, make_schedule(cfg, hidden_size))
