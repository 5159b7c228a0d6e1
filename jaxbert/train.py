"""Pretrain BERT with JAX/Flax: `python -m jaxbert.train`, on CPU, GPU or TPU.

The twin of torchbert/train.py: the command line and the loop; nothing imports this module.
The heart is step.py's pure function

    train_step(state, batch, dropout_key) -> (state, metrics)

compiled by parallel.py's `Layout` one of three ways (`--parallel`: single, pmap, sharded).
Multi-host: `--coordinator HOST:PORT --num-processes N --process-id I` calls
jax.distributed.initialize; each process reads its own rows of every global batch.
The optimizer is optim.py's, the process settings runtime.py's, the checkpoints
checkpoint.py's. Everything that is not JAX (configs, data, RUNDIR, metrics, plots) is bertcore's.
"""

from __future__ import annotations

import functools
import signal
import sys
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from bertcore.cli import resolve_dtype, resolve_pad_vocab, train_parser
from bertcore.errors import UserError, cli_entry
from bertcore.hf import flax_to_hf
from bertcore.prefetch import Prefetch
from bertcore.run import Run, setup_run
from bertcore.files import cache_root, os_error_in, warn_if_low_space, write_failure
from bertcore.stopping import Stopper, resume_command, run_train
from bertcore.rundir import trained_model_config
from bertcore.schedule import make_schedule

from .checkpoint import Checkpointer, key_from_list, key_to_list
from .model import BertForPreTraining, init_params, merge_hf_params
from .optim import make_optimizer
from .parallel import Layout, init_distributed, pick_parallel
from .pretrained import pretrained_weights
from .runtime import compute_dtype, configure_process, peak_device_memory_mb
from .step import create_state, eval_step, evaluate, seed_keys, train_step


def parse_args(argv: list[str] | None = None):
    p = train_parser("python -m jaxbert.train",
                     "Pretrain BERT (MLM + optional NSP) with JAX/Flax: jit, pmap or sharded jit.")
    g = p.add_argument_group("jax")
    g.add_argument("--parallel", default="auto", choices=["auto", "single", "pmap", "sharded"],
                   help="auto = sharded when several devices exist, else single")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-host: address of process 0 (jax.distributed.initialize)")
    g.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    g.add_argument("--process-id", type=int, help="multi-host: this process's index")
    return p.parse_args(argv)


def train(args) -> dict[str, Any]:
    rank, world = init_distributed(args.coordinator, args.num_processes, args.process_id)
    # Process 0 builds the tokenizer, the shards and RUNDIR first; the others then find them.
    if rank != 0:
        multihost_utils.sync_global_devices("twinbert: data ready")
    run: Run = setup_run(args, "jax", is_main=rank == 0)
    if rank == 0 and world > 1:
        multihost_utils.sync_global_devices("twinbert: data ready")
    cfg, mcfg = run.train_config, run.model_config
    mcfg = trained_model_config(mcfg, cfg)
    kind = pick_parallel(args.parallel)
    if kind == "pmap" and jax.local_device_count() == 1:
        run.note("note: --parallel pmap with a single device runs pmap over that one device")
    cfg.rows_per_part(world, "processes")

    pad_vocab = resolve_pad_vocab(args.pad_vocab, jax.default_backend() != "cpu")
    model = BertForPreTraining(mcfg, dtype=compute_dtype(args.dtype), remat=args.remat,
                               pad_vocab_to=pad_vocab)
    tx = make_optimizer(cfg, mcfg.hidden_size)
    step_fn = functools.partial(train_step, model=model, tx=tx, cfg=cfg)
    layout = Layout(kind, cfg, step_fn)

    init_key, dropout_key = seed_keys(cfg.seed)
    params = init_params(mcfg, init_key)
    if run.init_source is not None:
        params, fresh = merge_hf_params(pretrained_weights(run.init_source), mcfg,
                                        lambda: params)
        if fresh:
            run.note(f"not in {run.init_source.path}, initialised fresh: {', '.join(fresh)}")
    state = create_state(params, tx)
    ckpt = Checkpointer(run.rundir, mcfg, keep=cfg.keep_checkpoints)
    start, batch_state = 0, None
    if args.resume:
        if ckpt.latest_step() is None:
            raise UserError(f"--resume: {run.checkpoint_dir} has no checkpoint; drop --resume "
                            f"(with --overwrite) to start the run again")
        # Several processes: restore into host (numpy) arrays, which put_state then lays out
        # over the global devices (a restored single-device array would have to cross hosts).
        state, extra = ckpt.restore(jax.device_get(state) if world > 1 else state)
        start, batch_state = int(extra["step"]), extra["batches"]
        dropout_key = key_from_list(extra["rng"])
        run.note(f"resumed from {ckpt.path(start)} at step {start}")
    state, step_key = layout.put_state(state), layout.put_key(dropout_key)
    eval_set = run.eval_batches(args.eval_data, args.eval_batches)
    eval_fn = jax.jit(functools.partial(eval_step, model=model, cfg=cfg))
    last_eval: dict[str, Any] | None = None
    # The next batches are drawn and put on the devices on a background thread
    # (bertcore.prefetch), so a step never waits for its data.
    batches = Prefetch(run.batches(rank, world, batch_state), layout.put_batch)
    lr_at = make_schedule(cfg, mcfg.hidden_size)

    ckpt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state))
    if kind == "pmap":
        ckpt_bytes //= jax.local_device_count()

    def checkpoint(step: int) -> None:
        if rank == 0:
            warn_if_low_space(run.checkpoint_dir, ckpt_bytes, run.note)
        good = ckpt.latest_step()
        try:
            stopper.timed_checkpoint(lambda: ckpt.save(
                step, layout.host_state(state),
                {"step": step, "batches": batches.state(), "rng": key_to_list(dropout_key)}))
        except Exception as e:   # orbax wraps I/O errors (tensorstore, asyncio) in many types
            err = os_error_in(e)
            if err is None:
                raise                  # not a failed write: a bug, keep the traceback
            ckpt.abandon()             # orbax's manager may be half-way through this step
            raise write_failure(err, ckpt.path(step), ckpt_bytes,
                                ckpt.path(good) if good is not None else None) from None

    # SIGTERM/SIGINT/SIGUSR1 and --time-budget end the run after a step, with a checkpoint.
    stopper = args.stopper = Stopper.from_args(args)
    # Multi-process: SIGTERM is JAX's preemption notice (jax.distributed's preemption sync
    # manager catches it and agrees on a step with every process); the other signals and the
    # budget are combined by an allgather at log and checkpoint steps.
    preemption_sync = (world > 1 and signal.SIGTERM in stopper.signals and
                       jax.config.jax_enable_preemption_service)
    if preemption_sync:
        stopper.signals.remove(signal.SIGTERM)
    stopper.install()
    run.start(start)
    t0 = time.perf_counter()
    step, compile_seconds = start, None
    metrics: dict = {}
    last = min(cfg.steps, args.stop_after or cfg.steps)
    for step in range(start + 1, last + 1):
        batch = next(batches)
        t_step = time.perf_counter()
        state, metrics = layout.fn(state, batch, step_key)
        if compile_seconds is None:
            jax.block_until_ready(metrics)
            compile_seconds = time.perf_counter() - t_step   # first step: compile + one run
            run.note(f"first step (compile + run) took {compile_seconds:.1f}s")
            run.reset_clock(step)  # throughput excludes compilation
        # One process decides alone, every step; several processes combine their flags at
        # log and checkpoint steps (an allgather of one int beside the metrics read, no extra
        # sync per step), so they all stop at the same step.
        want_stop = stopper.poll()
        stop = want_stop and world == 1
        if preemption_sync and multihost_utils.reached_preemption_sync_point(step):
            stopper.preempted()   # the same step on every process
            stop = True
        log_now = step % cfg.log_every == 0 or step == last or stop
        save_now = step % cfg.checkpoint_every == 0 or step == last or stop
        if log_now or save_now:
            # The metrics are global (psum, or replicated outputs of the sharded step), so every
            # process reads the same numbers and a diverged run stops everywhere at one step.
            row = layout.metrics(metrics)
            if world > 1:
                stop = stop or bool(np.max(multihost_utils.process_allgather(
                    np.int32(want_stop))))
                stopper.agreed(stop)
            if log_now or stop:
                run.log(step, {**row, "learning_rate": float(lr_at(step - 1))})
            if save_now or stop:
                run.guard(step, row["loss"])  # never checkpoint a diverged model
                checkpoint(step)
        if eval_set and run.eval_due(step, last, args.eval_every):
            last_eval = evaluate(eval_fn, layout.host_state(state).params, eval_set)
            run.log_eval(step, last_eval)
        if stop:
            break
    if step == last:
        stopper.clear()     # a stop asked for at the very last step: the run is done anyway
    batches.close()
    ckpt.close()
    run.export_hf(flax_to_hf(jax.device_get(layout.host_state(state).params), mcfg))
    seconds = time.perf_counter() - t0
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(layout.host_state(state).params))
    summary = run.finish({"parameters": int(n_params), "parallel": kind,
                          "dtype": resolve_dtype(args.dtype, jax.default_backend() != "cpu"),
                          "remat": args.remat, "pad_vocab": pad_vocab,
                          "peak_device_memory_mb": peak_device_memory_mb(),
                          "eval": last_eval,
                          "devices": jax.device_count(), "backend": jax.default_backend(),
                          "processes": world, "train_seconds": seconds,
                          "stopped": stopper.reason,
                          "first_step_seconds": compile_seconds, "jax_version": jax.__version__,
                          "step_compilations": layout.traces})
    if rank == 0 and stopper.stopped:
        print(stopper.line(step, ckpt.path(ckpt.latest_step()),
                           resume_command("python -m jaxbert.train", args.argv, run.rundir)),
              flush=True)
    elif rank == 0:
        print(f"done: {step} steps in {seconds:.0f}s ({kind}, {jax.device_count()} "
              f"{jax.default_backend()} device(s)); run files in {run.rundir}/ (metrics.jsonl, "
              f"summary.json, loss.png, checkpoints/, hf/)")
    args.exit_code = stopper.exit_code
    return summary


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Exit 0 (done, or --time-budget reached), 75 (stopped by a signal, with a checkpoint),
    74 (a checkpoint could not be written), 130 (a second Ctrl-C), 2 (a usage error)."""
    args = parse_args(argv)
    configure_process()     # before JAX starts its backend
    return run_train(train, args, argv)


if __name__ == "__main__":
    sys.exit(main())
