"""torchbert's data parallelism: one process per rank under torchrun, DistributedDataParallel.

Every rank reads its own rows of each global batch (bertcore.data.batches); gradients are averaged
by DDP's all-reduce, metrics summed by `global_metrics` at log and checkpoint steps. (The twin of
jaxbert/parallel.py, where one process drives all its devices.)
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from bertcore.model.config import TrainConfig


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world_size); under torchrun, joins the process group (nccl on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


def all_reduce_sum(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def global_metrics(metrics: dict[str, torch.Tensor], world: int) -> dict[str, float]:
    """This step's metrics as host floats, summed over ranks (each rank's are its share of the
    global mean); grad_norm is already global (computed after the gradient all-reduce)."""
    vals = all_reduce_sum(torch.stack(list(metrics.values())).float(), world)
    row = dict(zip(metrics, vals.tolist()))
    row["grad_norm"] = float(metrics["grad_norm"])  # the same on every rank, not summed
    return row


def unused_without_nsp(name: str) -> bool:
    """Parameters MLM-only training does not reach: the pooler and the NSP head."""
    return any(f"{m}." in name for m in ("bert.pooler", "cls.seq_relationship"))


def wrap_ddp(model: torch.nn.Module, cfg: TrainConfig, device: torch.device,
             world: int) -> torch.nn.Module:
    """`model` in DistributedDataParallel when there are several ranks (else as it is)."""
    if world == 1:
        return model
    DDP = torch.nn.parallel.DistributedDataParallel
    if not cfg.nsp:
        # MLM-only never runs the pooler and NSP head, so they get no gradient, and DDP
        # would wait for their all-reduce ("Expected to have finished reduction in the prior
        # iteration"). Leave them out of its buckets instead of find_unused_parameters (a
        # graph search every step): train_step gives them zero gradients on every rank, so
        # they stay identical and AdamW decays them as optax does in the JAX twin.
        DDP._set_params_and_buffers_to_ignore_for_model(
            model, [n for n, _ in model.named_parameters() if unused_without_nsp(n)])
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
