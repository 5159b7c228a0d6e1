"""torchbert's optimizer: AdamW with bertcore's weight-decay rule, and optax's clipping rule.

Used by pretraining (torchbert/step.py) and fine-tuning (torchbert/classify.py), which set each
step's learning rate into the param groups themselves. (The twin of jaxbert/optim.py, where the
schedule and the clipping are parts of the optax chain.)
"""

from __future__ import annotations

import torch

from bertcore.model.config import weight_decay_applies


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW, no weight decay on biases and LayerNorm (the rule lives in bertcore.model.config).
    `cfg` is a TrainConfig or a ClassifyConfig: lr, beta1, beta2, eps and weight_decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if weight_decay_applies(name) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per tensor group on CPU and CUDA (torch >= 2.4), the fastest of AdamW's
    # three implementations on this project's CPU (BENCHMARKS.md).
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=True)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Global grad norm, and scale by max_norm / norm when above it.

    Written out (instead of `clip_grad_norm_`, which adds 1e-6 to the norm) so it follows the
    rule of `optax.clip_by_global_norm`, the JAX twin's clipping (equal up to float rounding)."""
    grads = [p.grad for p in params if p.grad is not None]
    # One fused launch for all per-tensor norms on a GPU (torch's own clip_grad_norm_ does the
    # same), instead of ~200 tiny kernels.
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if max_norm > 0:
        scale = torch.where(norm < max_norm, torch.ones_like(norm), max_norm / norm)
        torch._foreach_mul_(grads, scale)
    return norm
