"""Pretrain BERT with PyTorch: `python -m torchbert.train` (single process, CPU or GPU) or
`torchrun --nproc-per-node K -m torchbert.train ...` (DistributedDataParallel).

The command line and the loop; nothing imports this module. The loop is deliberately plain:
    next batch -> train_step (step.py: forward, loss, backward, clip, AdamW) -> log / checkpoint.
The optimizer is optim.py's, the ranks parallel.py's, the device and process settings
runtime.py's, the checkpoints checkpoint.py's. Everything that is not PyTorch (configs, data,
RUNDIR, metrics, plots) is bertcore's.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

from bertcore.batches import step_seed
from bertcore.cli import resolve_dtype, resolve_pad_vocab, train_parser
from bertcore.errors import UserError, cli_entry
from bertcore.prefetch import Prefetch
from bertcore.run import Run, setup_run
from bertcore.files import os_error_in, warn_if_low_space, write_failure
from bertcore.stopping import Stopper, resume_command, run_train
from bertcore.rundir import trained_model_config
from bertcore.schedule import make_schedule

from . import parallel       # parallel.global_metrics: the loop's one host sync, counted by tests
from .checkpoint import Checkpointer
from .model import BertForPreTraining
from .optim import make_optimizer
from .parallel import init_distributed, wrap_ddp
from .pretrained import pretrained_weights
from .runtime import configure_process, peak_device_memory_mb, pick_device
from .step import evaluate, to_device, train_step


def parse_args(argv: list[str] | None = None):
    p = train_parser("python -m torchbert.train",
                     "Pretrain BERT (MLM + optional NSP) with PyTorch on CPU, GPU or torchrun.")
    g = p.add_argument_group("torch")
    g.add_argument("--device", default="auto",
                   help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (opt-in)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def train(args) -> dict[str, Any]:
    device = pick_device(args.device)
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

    ckpt = Checkpointer(run.rundir, mcfg, keep=cfg.keep_checkpoints)
    start, batch_state = 0, None
    if args.resume:
        if ckpt.latest_step() is None:
            raise UserError(f"--resume: {run.checkpoint_dir} has no checkpoint; drop --resume "
                            f"(with --overwrite) to start the run again")
        extra = ckpt.restore(model, optimizer)
        start, batch_state = int(extra["step"]), extra["batches"]
        run.note(f"resumed from {ckpt.path(start)} at step {start}")
    eval_set = run.eval_batches(args.eval_data, args.eval_batches)
    last_eval: dict[str, Any] | None = None
    # The next batches are drawn, pinned and copied on a background thread (bertcore.prefetch).
    batches = Prefetch(run.batches(rank, world, batch_state), lambda b: to_device(b, device))

    net = model
    if args.compile:
        net = torch.compile(net)
    net = wrap_ddp(net, cfg, device, world)
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
        good = ckpt.latest_step()
        try:
            stopper.timed_checkpoint(lambda: ckpt.save(
                step, model, optimizer, {"step": step, "batches": batches.state()}))
        except Exception as e:   # OSError, or safetensors' SafetensorError naming one
            err = os_error_in(e)
            if err is None:
                raise                # not a failed write: a bug, keep the traceback
            ckpt.abandon()           # no space, permissions, I/O: the temp dir is already gone
            raise write_failure(err, ckpt.path(step), ckpt_bytes,
                                ckpt.path(good) if good is not None else None) from None

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
            row = parallel.global_metrics(metrics, world)
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
    ckpt.close()
    seconds = time.perf_counter() - t0
    run.export_hf({k: v.detach().cpu().numpy() for k, v in model.hf_state_dict().items()})
    summary = run.finish({"parameters": model.num_parameters(), "device": str(device),
                          "dtype": dtype, "remat": args.remat, "pad_vocab": pad_vocab,
                          "eval": last_eval,
                          "peak_device_memory_mb": peak_device_memory_mb(device),
                          "world_size": world, "train_seconds": seconds,
                          "stopped": stopper.reason,
                          "torch_version": torch.__version__})
    if rank == 0 and stopper.stopped:
        prog = (f"torchrun --nproc-per-node {world} -m torchbert.train" if world > 1
                else "python -m torchbert.train")
        print(stopper.line(step, ckpt.path(ckpt.latest_step()),
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
    args = parse_args(argv)
    configure_process(args.threads)   # before torch starts its threads
    return run_train(train, args, argv)


if __name__ == "__main__":
    sys.exit(main())
