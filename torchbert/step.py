"""One torchbert training step and the held-out evaluation: the pure computation of a step,
without the loop around it (torchbert/train.py) or the device layout (torchbert/parallel.py).

    batch (numpy, from bertcore) -> micro-batches -> forward -> loss (pretraining_loss, or
    electra_loss) -> backward -> clip -> learning rate of this step -> AdamW

(The twin of jaxbert/step.py, whose `train_step` is a pure function of an explicit state.)
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from bertcore.model.config import TrainConfig
from bertcore.data.batches import split_micro_batches
from bertcore.train import evaluation

from .electra import electra_loss
from .model import pretraining_loss
from .optim import clip_grad_norm
from .parallel import all_reduce_sum


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """numpy arrays (or tensors) -> tensors on `device`. On a GPU through pinned memory with a
    non-blocking copy: the prefetch thread calls it, so the copy overlaps the running step and
    the host never waits for it. Tensors already on `device` pass through."""
    out = {}
    for k, v in batch.items():
        t = torch.as_tensor(v)
        if device.type == "cuda" and t.device.type == "cpu":
            t = t.pin_memory()
        out[k] = t.to(device, non_blocking=True)
    return out


def train_step(model, optimizer, batch: dict[str, Any], lr: float, cfg: TrainConfig,
               device: torch.device, world: int, dtype: str = "fp32") -> dict[str, torch.Tensor]:
    """One optimizer update on this rank's share of the global batch (numpy arrays, or tensors
    already on `device`); returns device tensors of metrics (this rank's share of the global
    values, summed over micro-batches). Nothing in it waits for the device. `dtype` is the
    compute dtype, "fp32" or "bf16" (bertcore.train.cli.resolve_dtype)."""
    batch = to_device(batch, device)      # a no-op for the loop's prefetched device batches
    micro = split_micro_batches(batch, cfg.grad_accum)        # [grad_accum, rows, ...]
    # Normalise by the global number of predictions (all ranks, all micro-batches), so K ranks
    # or K micro-batches compute the gradient of the one big batch exactly. Summed on the
    # device: no host sync (the loop reads device values only at log and checkpoint steps).
    mlm_den = all_reduce_sum(batch["masked_weights"].sum().float(), world).clamp(min=1.0)
    nsp_den = float(cfg.batch_size)
    # ELECTRA's discriminator loss is a mean over every real token of the global batch.
    tok_den = (all_reduce_sum(batch["attention_mask"].sum().float(), world).clamp(min=1.0)
               if cfg.objective == "electra" else None)
    # bf16 autocast (--dtype, on CPU too): matmuls in bf16, parameters, optimizer state and the
    # loss (pretraining_loss upcasts the logits) in fp32. JAX twin: the modules' dtype.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    totals: dict[str, torch.Tensor] = {}
    for i in range(cfg.grad_accum):
        mb = {k: v[i] for k, v in micro.items()}
        # DDP averages gradients over ranks, but our per-rank losses are already parts of the
        # global mean: scale by world so the average becomes the sum. Sync only on the last
        # micro-batch.
        sync = (i == cfg.grad_accum - 1) or not hasattr(model, "no_sync")
        with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
            loss, metrics = forward_loss(model, mb, cfg, mlm_den, nsp_den, tok_den)
        (loss * world).backward()
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + v
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        # A parameter the loss does not reach (the pooler and NSP head with --no-nsp) still gets
        # a zero gradient, so AdamW decays it as optax does in the JAX twin (torch would skip it).
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    totals["grad_norm"] = clip_grad_norm(params, cfg.grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return totals


def forward_loss(model, mb: dict[str, torch.Tensor], cfg: TrainConfig, mlm_den, nsp_den,
                 tok_den=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's forward and its objective's loss on one micro-batch: MLM (+ NSP) for BERT and
    ModernBERT, replaced-token detection for ELECTRA (electra.py; `tok_den`: real tokens).
    JAX twin: step.py's function of the same name."""
    if cfg.objective == "electra":
        outputs = model(mb["input_ids"], mb["token_type_ids"], mb["attention_mask"],
                        mb["masked_positions"], mb["masked_ids"], mb["masked_weights"],
                        mb["sample_seeds"])
        return electra_loss(*outputs, mb, mlm_den, tok_den, cfg.disc_weight)
    mlm_logits, nsp_logits = model(mb["input_ids"], mb["token_type_ids"], mb["attention_mask"],
                                   mb["masked_positions"], nsp=cfg.nsp)
    return pretraining_loss(mlm_logits, nsp_logits, mb, mlm_denominator=mlm_den,
                            nsp_denominator=nsp_den, nsp=cfg.nsp)


def evaluate(model, batches: list[dict], cfg: TrainConfig, device: torch.device,
             dtype: str) -> dict[str, Any]:
    """MLM (and NSP) metrics over the fixed eval batches (bertcore.train.evaluation), dropout off.
    Every rank evaluates all of them on its own copy of the model: the same numbers everywhere,
    no collective (`model` is the plain module, not the DDP wrapper)."""
    mlm_den, nsp_den = evaluation.denominators(batches)
    tok_den = evaluation.token_denominator(batches)
    rows = []
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                         enabled=dtype == "bf16"):
        for b in batches:
            rows.append(forward_loss(model, to_device(b, device), cfg, mlm_den, nsp_den,
                                     tok_den)[1])
    model.train()
    return evaluation.eval_row(evaluation.sum_metrics(rows))
