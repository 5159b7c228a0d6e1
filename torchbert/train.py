"""Pretrain BERT with PyTorch: `python -m torchbert.train` (single process, CPU or GPU) or
`torchrun --nproc-per-node K -m torchbert.train ...` (DistributedDataParallel).

The loop is deliberately plain, the mirror of jaxbert/train.py's `train_step`:
    batch (numpy, from bertcore) -> micro-batches -> forward -> pretraining_loss -> backward
    -> clip -> learning rate of this step -> AdamW -> log / checkpoint.
Everything that is not PyTorch (configs, data, RUNDIR, metrics, plots) is bertcore's.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

from bertcore import evaluation
from bertcore.batches import split_micro_batches, step_seed
from bertcore.cli import resolve_dtype, resolve_pad_vocab, train_parser
from bertcore.config import TrainConfig, weight_decay_applies
from bertcore.errors import UserError, cli_entry
from bertcore.malloc import keep_freed_memory
from bertcore.prefetch import Prefetch
from bertcore.run import Run, setup_run
from bertcore.files import os_error_in, warn_if_low_space, write_failure
from bertcore.stopping import Stopper, resume_command, run_train
from bertcore.rundir import trained_model_config
from bertcore.schedule import make_schedule

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .model import BertForPreTraining, pretraining_loss


def parse_args(argv: list[str] | None = None):
    p = train_parser("python -m torchbert.train",
                     "Pretrain BERT (MLM + optional NSP) with PyTorch on CPU, GPU or torchrun.")
    g = p.add_argument_group("torch")
    g.add_argument("--device", default="auto",
                   help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (opt-in)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


# ---- distributed -----------------------------------------------------------------------------

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


# ---- optimizer -------------------------------------------------------------------------------

def make_optimizer(model: torch.nn.Module, cfg: TrainConfig):
    """AdamW, no weight decay on biases and LayerNorm (the rule lives in bertcore.config)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if weight_decay_applies(name) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per tensor group on CPU and CUDA (torch >= 2.4); on this project's CPU
    # it steps mini's 11M parameters in 21 ms where foreach takes 78 ms and the loop 124 ms.
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


# ---- one optimizer step ----------------------------------------------------------------------

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
    compute dtype, "fp32" or "bf16" (bertcore.cli.resolve_dtype)."""
    batch = to_device(batch, device)      # a no-op for the loop's prefetched device batches
    micro = split_micro_batches(batch, cfg.grad_accum)        # [grad_accum, rows, ...]
    # Normalise by the global number of predictions (all ranks, all micro-batches), so K ranks
    # or K micro-batches compute the gradient of the one big batch exactly. Summed on the
    # device: no host sync (the loop reads device values only at log and checkpoint steps).
    mlm_den = all_reduce_sum(batch["masked_weights"].sum().float(), world).clamp(min=1.0)
    nsp_den = float(cfg.batch_size)
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
            mlm_logits, nsp_logits = model(mb["input_ids"], mb["token_type_ids"],
                                           mb["attention_mask"], mb["masked_positions"],
                                           nsp=cfg.nsp)
            loss, metrics = pretraining_loss(mlm_logits, nsp_logits, mb, mlm_denominator=mlm_den,
                                             nsp_denominator=nsp_den, nsp=cfg.nsp)
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


def evaluate(model, batches: list[dict], cfg: TrainConfig, device: torch.device,
             dtype: str) -> dict[str, Any]:
    """MLM (and NSP) metrics over the fixed eval batches (bertcore.evaluation), dropout off.
    Every rank evaluates all of them on its own copy of the model: the same numbers everywhere,
    no collective (`model` is the plain module, not the DDP wrapper)."""
    mlm_den, nsp_den = evaluation.denominators(batches)
    rows = []
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                         enabled=dtype == "bf16"):
        for b in batches:
            t = to_device(b, device)
            mlm_logits, nsp_logits = model(t["input_ids"], t["token_type_ids"],
                                           t["attention_mask"], t["masked_positions"],
                                           nsp=cfg.nsp)
            rows.append(pretraining_loss(mlm_logits, nsp_logits, t, mlm_denominator=mlm_den,
                                         nsp_denominator=nsp_den, nsp=cfg.nsp)[1])
    model.train()
    return evaluation.eval_row(evaluation.sum_metrics(rows))


# ---- the run ---------------------------------------------------------------------------------

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available; use --device cpu")
    return torch.device(name)


def train(args) -> dict[str, Any]:
    keep_freed_memory()     # before torch's threads start: bertcore/malloc.py
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world = init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    # Rank 0 builds the tokenizer, the shards and RUNDIR first; the others then find them.
    if rank != 0:
        dist.barrier()
    run: Run = setup_run(args, "torch", is_main=rank == 0)
    if rank == 0 and world > 1:
        dist.barrier()
    cfg, mcfg = run.train_config, run.model_config
    cfg.rows_per_part(world, "processes")
    mcfg = trained_model_config(mcfg, cfg)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    pad_vocab = resolve_pad_vocab(args.pad_vocab, accelerator=device.type == "cuda")
    model = BertForPreTraining(mcfg, pad_vocab_to=pad_vocab)
    if run.init_source is not None:
        # Imported here: only a run that starts from other weights needs the reader.
        from .pretrained import pretrained_weights
        fresh = model.load_hf_state_dict(pretrained_weights(run.init_source),
                                         source=str(run.init_source.path))
        if fresh:
            run.note(f"not in {run.init_source.path}, initialised fresh: {', '.join(fresh)}")
    model = model.to(device)
    if args.remat:
        model.gradient_checkpointing_enable()
    dtype = resolve_dtype(args.dtype, accelerator=device.type == "cuda")
    optimizer = make_optimizer(model, cfg)
    lr_at = make_schedule(cfg, mcfg.hidden_size)

    start, batch_state = 0, None
    if args.resume:
        ckpt = latest_checkpoint(run.rundir)
        if ckpt is None:
            raise UserError(f"--resume: {run.checkpoint_dir} has no checkpoint; drop --resume "
                            f"(with --overwrite) to start the run again")
        extra = load_checkpoint(ckpt, model, optimizer)
        start, batch_state = int(extra["step"]), extra["batches"]
        run.note(f"resumed from {ckpt} at step {start}")
    eval_set = run.eval_batches(args.eval_data, args.eval_batches)
    last_eval: dict[str, Any] | None = None
    # The next batches are drawn, pinned and copied on a background thread (bertcore.prefetch).
    batches = Prefetch(run.batches(rank, world, batch_state), lambda b: to_device(b, device))

    net = model
    if args.compile:
        net = torch.compile(net)
    if world > 1:
        DDP = torch.nn.parallel.DistributedDataParallel
        if not cfg.nsp:
            # MLM-only never runs the pooler and NSP head, so they get no gradient, and DDP
            # would wait for their all-reduce ("Expected to have finished reduction in the prior
            # iteration"). Leave them out of its buckets instead of find_unused_parameters (a
            # graph search every step): train_step gives them zero gradients on every rank, so
            # they stay identical and AdamW decays them as optax does in the JAX twin.
            DDP._set_params_and_buffers_to_ignore_for_model(
                net, [n for n, _ in net.named_parameters() if unused_without_nsp(n)])
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    net.train()

    ckpt_bytes = None

    def checkpoint(step: int) -> None:
        # No RNG state to save: dropout is reseeded from (seed, step, rank) every step.
        nonlocal ckpt_bytes
        if rank != 0:
            return
        if ckpt_bytes is None:   # model + AdamW's two moments, fp32
            ckpt_bytes = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
        warn_if_low_space(run.checkpoint_dir, ckpt_bytes, run.note)
        good = latest_checkpoint(run.rundir)
        try:
            stopper.timed_checkpoint(lambda: save_checkpoint(
                run.rundir, step, model, optimizer, {"step": step, "batches": batches.state()},
                keep=cfg.keep_checkpoints))
        except Exception as e:   # OSError, or safetensors' SafetensorError naming one
            err = os_error_in(e)
            if err is None:
                raise                # not a failed write: a bug, keep the traceback
            # no space, permissions, I/O: atomic_path has already removed the temp dir
            raise write_failure(err, run.checkpoint_dir / f"step_{step:08d}", ckpt_bytes,
                                good) from None

    # SIGTERM/SIGINT/SIGUSR1 and --time-budget end the run after a step, with a checkpoint.
    stopper = args.stopper = Stopper.from_args(args).install()
    run.start(start)
    t0 = time.perf_counter()
    step = start
    metrics: dict[str, torch.Tensor] = {}
    last = min(cfg.steps, args.stop_after or cfg.steps)
    for step in range(start + 1, last + 1):
        batch = next(batches)
        torch.manual_seed(step_seed(cfg.seed, step, rank))  # this step's dropout masks
        lr = float(lr_at(step - 1))
        metrics = train_step(net, optimizer, batch, lr, cfg, device, world, dtype)
        # One process decides alone, every step; several ranks combine their flags in the
        # metrics all-reduce below (log and checkpoint steps only: no extra sync per step),
        # so they all stop at the same step.
        want_stop = stopper.poll()
        stop = want_stop and world == 1
        log_now = step % cfg.log_every == 0 or step == last or stop
        save_now = step % cfg.checkpoint_every == 0 or step == last or stop
        if log_now or save_now:
            # The only host sync of the loop: the metrics, summed over ranks, so every rank
            # reads the same numbers and a diverged run stops on all ranks at the same step
            # (run.log and run.guard raise on each), never one rank alone.
            if world > 1:
                # Each rank's stop flag rides in the same all-reduce: the sum counts the ranks
                # that want to stop, and every rank reads it (no collective of its own).
                metrics["stop_requests"] = torch.tensor(float(want_stop), device=device)
            row = global_metrics(metrics, world)
            stop = row.pop("stop_requests") > 0 if world > 1 else want_stop
            stopper.agreed(stop)
            if log_now or stop:
                run.log(step, {**row, "learning_rate": lr})
            if save_now or stop:
                run.guard(step, row["loss"])  # never checkpoint a diverged model
                checkpoint(step)
        if eval_set and run.eval_due(step, last, args.eval_every):
            last_eval = evaluate(model, eval_set, cfg, device, dtype)
            run.log_eval(step, last_eval)
        if stop:
            break
    if step == last:
        stopper.clear()     # a stop asked for at the very last step: the run is done anyway
    batches.close()
    seconds = time.perf_counter() - t0
    run.export_hf({k: v.detach().cpu().numpy() for k, v in model.hf_state_dict().items()})
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    summary = run.finish({"parameters": model.num_parameters(), "device": str(device),
                          "dtype": dtype, "remat": args.remat, "pad_vocab": pad_vocab,
                          "eval": last_eval,
                          "peak_device_memory_mb": peak / 2**20 if peak is not None else None,
                          "world_size": world, "train_seconds": seconds,
                          "stopped": stopper.reason,
                          "torch_version": torch.__version__})
    if rank == 0 and stopper.stopped:
        prog = (f"torchrun --nproc-per-node {world} -m torchbert.train" if world > 1
                else "python -m torchbert.train")
        print(stopper.line(step, latest_checkpoint(run.rundir),
                           resume_command(prog, args.argv, run.rundir)), flush=True)
    elif rank == 0:
        print(f"done: {step} steps in {seconds:.0f}s; run files in {run.rundir}/ "
              f"(metrics.jsonl, summary.json, loss.png, checkpoints/, hf/)")
    args.exit_code = stopper.exit_code
    if world > 1:
        dist.destroy_process_group()
    return summary


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Exit 0 (done, or --time-budget reached), 75 (stopped by a signal, with a checkpoint),
    74 (a checkpoint could not be written), 130 (a second Ctrl-C), 2 (a usage error)."""
    return run_train(train, parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
