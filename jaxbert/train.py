"""Pretrain BERT with JAX/Flax: `python -m jaxbert.train`, on CPU, GPU or TPU.

The twin of torchbert/train.py: the command line and the run's set-up; nothing imports this
module. The loop is bertcore.train.loop's `train_loop`, shared with torchbert: this file fills its
hooks (`JaxTwin`). The heart is step.py's pure function

    train_step(state, batch, dropout_key) -> (state, metrics)

compiled by parallel.py's `Layout` one of three ways (`--parallel`: single, pmap, sharded).
Multi-host: `--coordinator HOST:PORT --num-processes N --process-id I` calls
jax.distributed.initialize; each process reads its own rows of every global batch.
The optimizer is optim.py's, the process settings runtime.py's, the checkpoints
checkpoint.py's. Everything that is not JAX (configs, data, RUNDIR, metrics, plots, the loop)
is bertcore's.
"""

from __future__ import annotations

import functools
import signal
import sys
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from bertcore.infra.errors import cli_entry
from bertcore.model.hf import flax_to_hf
from bertcore.train.cli import resolve_dtype, resolve_pad_vocab, train_parser
from bertcore.train.loop import Result, Twin, train_loop
from bertcore.train.init_from import fresh_note
from bertcore.train.run import Run
from bertcore.train.setup import setup_run
from bertcore.train.rundir import trained_model_config
from bertcore.train.stopping import Stopper, run_train

from .checkpoint import Checkpointer, key_from_list, key_to_list
from .arch import init_params, merge_hf_params, pretraining_model
from .optim import make_optimizer
from .parallel import Layout, init_distributed, pick_parallel
from .pretrained import pretraining_weights
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


class JaxTwin(Twin):
    """What bertcore.train.loop.train_loop asks of JAX: the compiled step on its layout, the global
    metrics (already summed over devices), eval and checkpoints. The loop itself (cadence,
    stopping, logging, the end of a run) is bertcore's."""

    compiles = True   # the first step compiles: the loop times it apart from throughput
    prog = "python -m jaxbert.train"

    def __init__(self, state, layout: Layout, model, ckpt: Checkpointer, cfg, dropout_key,
                 rank: int, world: int, preemption_sync: bool, extra: dict[str, Any]):
        self.layout, self.ckpt, self.cfg, self.extra = layout, ckpt, cfg, extra
        self.rank, self.world, self.preemption_sync = rank, world, preemption_sync
        self.dropout_key = dropout_key   # saved in checkpoints; the step folds the step into it
        self.state, self.step_key = layout.put_state(state), layout.put_key(dropout_key)
        self.eval_fn = jax.jit(functools.partial(eval_step, model=model, cfg=cfg))
        self.checkpoint_bytes = sum(x.size * x.dtype.itemsize
                                    for x in jax.tree_util.tree_leaves(self.state))
        if layout.parallel == "pmap":
            self.checkpoint_bytes //= jax.local_device_count()

    def put_batch(self, batch):
        return self.layout.put_batch(batch)

    def step(self, step, batch, lr):
        # lr is not passed: the optimizer computes it from its own update count (optax's
        # schedule), the same rate the loop logs.
        self.state, metrics = self.layout.fn(self.state, batch, self.step_key)
        return metrics

    def wait(self, metrics):
        jax.block_until_ready(metrics)

    def host_metrics(self, metrics, want_stop):
        # Global already (psum, or the sharded step's replicated outputs); several processes
        # combine their stop requests in an allgather of one int beside this read.
        row = self.layout.metrics(metrics)
        anyone = want_stop
        if self.world > 1:
            anyone = bool(np.max(multihost_utils.process_allgather(np.int32(want_stop))))
        return row, anyone

    def preempted(self, step):
        return self.preemption_sync and multihost_utils.reached_preemption_sync_point(step)

    def evaluate(self, batches):
        return evaluate(self.eval_fn, self.layout.host_state(self.state).params, batches)

    def save(self, step, extra):
        # Every process calls orbax's save (it coordinates multi-host writes itself).
        self.ckpt.save(step, self.layout.host_state(self.state),
                       {**extra, "rng": key_to_list(self.dropout_key)})

    def weights(self):
        return flax_to_hf(jax.device_get(self.layout.host_state(self.state).params),
                          self.ckpt.config)

    def summary(self):
        params = self.layout.host_state(self.state).params
        return {"parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
                **self.extra, "peak_device_memory_mb": peak_device_memory_mb(),
                "jax_version": jax.__version__, "step_compilations": self.layout.traces}

    def done_detail(self):
        return (f" ({self.layout.parallel}, {jax.device_count()} {jax.default_backend()} "
                f"device(s))")


def train(args, argv: list[str], stopper: Stopper) -> Result:
    # Multi-process: SIGTERM is JAX's preemption notice (jax.distributed's preemption sync
    # manager catches it and agrees on a step with every process), so the stopper lets go of it
    # before jax.distributed starts; the other signals and the budget are combined by an
    # allgather at log and checkpoint steps.
    preemption_sync = ((args.num_processes or 1) > 1 and signal.SIGTERM in stopper.signals and
                       jax.config.jax_enable_preemption_service)
    if preemption_sync:
        stopper.release(signal.SIGTERM)
    rank, world = init_distributed(args.coordinator, args.num_processes, args.process_id)
    # Process 0 builds the tokenizer, the shards and RUNDIR first; the others then find them.
    if rank != 0:
        multihost_utils.sync_global_devices("twinbert: data ready")
    run: Run = setup_run(args, "jax", is_main=rank == 0)
    if rank == 0 and world > 1:
        multihost_utils.sync_global_devices("twinbert: data ready")
    cfg, mcfg = run.train_config, run.model_config
    mcfg = trained_model_config(mcfg, cfg)
    parallel = pick_parallel(args.parallel)
    if parallel == "pmap" and jax.local_device_count() == 1:
        run.note("note: --parallel pmap with a single device runs pmap over that one device")
    cfg.check_rows_divide(world, "processes")

    pad_vocab = resolve_pad_vocab(args.pad_vocab, jax.default_backend() != "cpu")
    model = pretraining_model(mcfg, dtype=compute_dtype(args.dtype), remat=args.remat,
                               pad_vocab_to=pad_vocab)
    tx = make_optimizer(cfg, mcfg.hidden_size)
    step_fn = functools.partial(train_step, model=model, tx=tx, cfg=cfg)
    layout = Layout(parallel, cfg, step_fn)

    init_key, dropout_key = seed_keys(cfg.seed)
    params = init_params(mcfg, init_key)
    if run.init_source is not None:
        params, fresh = merge_hf_params(pretraining_weights(run.init_source), mcfg,
                                        lambda: params)
        if fresh:
            run.note(fresh_note(run.init_source.path, fresh))
    state = create_state(params, tx)
    ckpt = Checkpointer(run.rundir, mcfg, keep=cfg.keep_checkpoints)
    resumed = None
    if args.resume:
        # Several processes: restore into host (numpy) arrays, which put_state then lays out
        # over the global devices (a restored single-device array would have to cross hosts).
        state, resumed = ckpt.restore(jax.device_get(state) if world > 1 else state)
        dropout_key = key_from_list(resumed["rng"])
        run.note(f"resumed from {ckpt.path(resumed['step'])} at step {resumed['step']}")
    twin = JaxTwin(state, layout, model, ckpt, cfg, dropout_key, rank, world, preemption_sync,
                   {"parallel": parallel,
                    "dtype": resolve_dtype(args.dtype, jax.default_backend() != "cpu"),
                    "remat": args.remat, "pad_vocab": pad_vocab,
                    "devices": jax.device_count(), "backend": jax.default_backend(),
                    "processes": world})
    return train_loop(run, twin, stopper, resumed=resumed, stop_after=args.stop_after,
                      argv=argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Exit 0 (done, or --time-budget reached), 75 (stopped by a signal, with a checkpoint),
    74 (a checkpoint could not be written), 130 (a second Ctrl-C), 2 (a usage error)."""
    args = parse_args(argv)
    configure_process()     # before JAX starts its backend
    return run_train(train, args, argv)


if __name__ == "__main__":
    sys.exit(main())
