"""Pretrain BERT with JAX/Flax: `python -m jaxbert.train`, on CPU, GPU or TPU.

The twin of torchbert/train.py. The heart is a pure function

    train_step(state, batch, dropout_key) -> (state, metrics)

jitted one of three ways (`--parallel`):
    single   jax.jit on one device
    pmap     jax.pmap over the local devices; the batch is reshaped to [devices, B/devices, ...]
             and gradients are summed with lax.psum over the named axis "data"
    sharded  jax.jit with the batch laid out over a 1-D Mesh("data") by a NamedSharding, the
             modern path: XLA inserts the gradient all-reduce itself
Multi-host: `--coordinator HOST:PORT --num-processes N --process-id I` calls
jax.distributed.initialize; each process reads its own rows of every global batch.
Everything that is not JAX (configs, data, RUNDIR, metrics, plots) is bertcore's.

(~480 lines, over the project's ~400: the pure step, the three device layouts and the loop
with its eval and stop handling. `Layout` is the part to move into a module of its own next.)
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bertcore import evaluation
from bertcore.batches import split_micro_batches
from bertcore.cli import resolve_dtype, resolve_pad_vocab, train_parser
from bertcore.config import BertConfig, TrainConfig, weight_decay_applies
from bertcore.errors import UserError, cli_entry
from bertcore.malloc import keep_freed_memory
from bertcore.hf import flax_to_hf
from bertcore.prefetch import Prefetch
from bertcore.run import Run, setup_run
from bertcore.files import cache_root, os_error_in, warn_if_low_space, write_failure
from bertcore.stopping import Stopper, resume_command, run_train
from bertcore.rundir import trained_model_config
from bertcore.schedule import make_schedule

from .checkpoint import Checkpointer, key_from_list, key_to_list, latest_step, remove_temp_dirs
from .cpu import apply_cpu_settings
from .model import BertForPreTraining, init_params, merge_hf_params, pretraining_loss

AXIS = "data"


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


# ---- state and optimizer --------------------------------------------------------------------

class TrainState(struct.PyTreeNode):
    """Everything that changes during training, as one pytree (checkpointed by orbax).
    torch keeps the same three things in `model`, `optimizer` and the loop's `step`."""
    step: jax.Array
    params: Any
    opt_state: Any


def decay_mask(params) -> Any:
    """True where AdamW decays: the same bertcore rule as torch, on '/'-joined Flax paths."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: weight_decay_applies("/".join(str(getattr(k, "key", k)) for k in path)),
        params)


def make_optimizer(cfg: TrainConfig, hidden_size: int) -> optax.GradientTransformation:
    lr_at = make_schedule(cfg, hidden_size)
    # optax calls the schedule with the update count (0 for the first update): the same step
    # index torch passes to lr_at, but traced, hence xp=jnp.
    adamw = optax.adamw(lambda count: lr_at(count, xp=jnp), b1=cfg.beta1, b2=cfg.beta2,
                        eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw


def create_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init key, dropout key) of a run: the only place a jaxbert run's keys come from its seed
    (torch has no key: it reseeds per step from bertcore.batches.step_seed)."""
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, dropout_key


def abstract_state(config: BertConfig, cfg: TrainConfig) -> TrainState:
    """The TrainState `train` builds, shapes and dtypes only (eval_shape runs no initialiser):
    the target a checkpoint is restored into (fill-mask, parity.convert)."""
    tx = make_optimizer(cfg, config.hidden_size)
    return jax.eval_shape(lambda: create_state(init_params(config, jax.random.PRNGKey(0)), tx))


# ---- one optimizer step ---------------------------------------------------------------------

def train_step(state: TrainState, batch: dict, dropout_key: jax.Array, *, model, tx, cfg,
               axis_name: str | None = None) -> tuple[TrainState, dict]:
    """One AdamW update on a batch laid out as [grad_accum, rows, ...].

    Pure: jit/pmap it. Under pmap (`axis_name`), each device holds its rows and gradients and
    metrics are summed over devices; losses are normalised by the global number of predictions
    either way, so every layout computes the gradient of the one global batch.
    """
    mlm_den = jnp.maximum(batch["masked_weights"].sum(), 1.0)
    if axis_name:
        mlm_den = jnp.maximum(jax.lax.psum(batch["masked_weights"].sum(), axis_name), 1.0)
    nsp_den = float(cfg.batch_size)
    # Dropout masks depend only on (seed, step, device): torch mirrors this by reseeding
    # its generator from (seed, step, rank) every step.
    key = jax.random.fold_in(dropout_key, state.step)
    if axis_name:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))

    def micro_step(carry, inputs):
        grads_sum, metrics_sum = carry
        mb, i = inputs

        def loss_fn(params):
            mlm_logits, nsp_logits = model.apply(
                {"params": params}, mb["input_ids"], mb["token_type_ids"], mb["attention_mask"],
                mb["masked_positions"], deterministic=not cfg.dropout, nsp=cfg.nsp,
                rngs={"dropout": jax.random.fold_in(key, i)})
            return pretraining_loss(mlm_logits, nsp_logits, mb, mlm_den, nsp_den, nsp=cfg.nsp)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        add = functools.partial(jax.tree_util.tree_map, jnp.add)
        return (add(grads_sum, grads), add(metrics_sum, metrics)), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    metric_zeros = {k: jnp.zeros((), jnp.float32) for k in
                    (["mlm_loss", "mlm_accuracy", "loss"] +
                     (["nsp_loss", "nsp_accuracy"] if cfg.nsp else []))}
    steps = jnp.arange(batch["input_ids"].shape[0])
    (grads, metrics), _ = jax.lax.scan(micro_step, (zeros, metric_zeros), (batch, steps))
    if axis_name:
        grads = jax.lax.psum(grads, axis_name)
        metrics = jax.lax.psum(metrics, axis_name)
    metrics["grad_norm"] = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, batch: dict, mlm_den, nsp_den, *, model, cfg) -> dict:
    """Metrics of one fixed eval batch (bertcore.evaluation), dropout off; the denominators
    are the totals over all eval batches, so the batches' metrics add up. Pure: jit it."""
    mlm_logits, nsp_logits = model.apply(
        {"params": params}, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
        batch["masked_positions"], deterministic=True, nsp=cfg.nsp)
    return pretraining_loss(mlm_logits, nsp_logits, batch, mlm_den, nsp_den, nsp=cfg.nsp)[1]


def evaluate(eval_fn, params, batches: list[dict]) -> dict[str, Any]:
    """The eval line over the fixed batches: every process evaluates all of them (the same
    numbers everywhere), as each torchbert rank does."""
    mlm_den, nsp_den = evaluation.denominators(batches)
    rows = [eval_fn(params, b, mlm_den, nsp_den) for b in batches]
    return evaluation.eval_row(evaluation.sum_metrics(jax.device_get(rows)))


# ---- parallel layouts -----------------------------------------------------------------------

def pick_parallel(name: str) -> str:
    n = jax.device_count()
    if name == "auto":
        return "sharded" if n > 1 else "single"
    return name


class Layout:
    """How the step is compiled and how a host numpy batch is placed on devices."""

    def __init__(self, kind: str, cfg: TrainConfig, step_fn):
        self.kind, self.cfg = kind, cfg
        self.local_devices = jax.local_devices()
        cfg.rows_per_part(jax.device_count() if kind != "single" else 1, "devices")
        # Python runs the step's body only while jit/pmap trace it, i.e. once per compiled
        # program: `traces` counts compilations in every layout (pmap has no _cache_size).
        self.traces = 0
        traced = step_fn

        def step_fn(*args, **kwargs):
            self.traces += 1
            return traced(*args, **kwargs)
        if kind == "pmap":
            # pmap takes arrays whose leading axis is laid out one slice per local device
            # (jax.device_put_replicated/_sharded are deprecated since JAX 0.8).
            local_mesh = Mesh(np.array(self.local_devices), (AXIS,))
            self.stacked = NamedSharding(local_mesh, PartitionSpec(AXIS))
            self.fn = jax.pmap(functools.partial(step_fn, axis_name=AXIS), axis_name=AXIS,
                               in_axes=(0, 0, None), donate_argnums=(0,))
        elif kind == "sharded":
            mesh = Mesh(np.array(jax.devices()), (AXIS,))
            self.replicated = NamedSharding(mesh, PartitionSpec())
            # Batch arrays are [grad_accum, rows, ...]: shard the rows.
            self.rows = NamedSharding(mesh, PartitionSpec(None, AXIS))
            # Explicit shardings: state and dropout key replicated, batch split by rows, and
            # the outputs (new state, metrics) replicated, so XLA inserts exactly one gradient
            # all-reduce and the donated state buffers are reused for the new state in place.
            self.fn = jax.jit(step_fn, donate_argnums=(0,),
                              in_shardings=(self.replicated, self.rows, self.replicated),
                              out_shardings=(self.replicated, self.replicated))
        else:
            self.fn = jax.jit(step_fn, donate_argnums=(0,))

    def put_state(self, state: TrainState) -> TrainState:
        if self.kind == "pmap":
            D = len(self.local_devices)
            copies = jax.tree_util.tree_map(
                lambda x: np.broadcast_to(np.asarray(x)[None], (D, *np.shape(x))), state)
            return jax.device_put(copies, self.stacked)
        if self.kind == "sharded":
            return jax.device_put(state, self.replicated)
        return jax.device_put(state)

    def put_key(self, key: jax.Array) -> jax.Array:
        """The dropout key where the compiled step expects it (replicated when sharded)."""
        return jax.device_put(key, self.replicated) if self.kind == "sharded" else key

    def host_state(self, state: TrainState) -> TrainState:
        """A single-copy state for checkpoints and conversion."""
        if self.kind == "pmap":
            return jax.tree_util.tree_map(lambda x: x[0], state)
        return state

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict:
        """This process's rows [rows, ...] -> [grad_accum, rows/grad_accum, ...] on devices."""
        A = self.cfg.grad_accum
        split = split_micro_batches(batch, A)
        if self.kind == "pmap":
            D = len(self.local_devices)
            # [A, rows, ...] -> [D, A, rows/D, ...]: device d gets a contiguous block of rows
            # of every micro-batch.
            split = {k: np.moveaxis(v.reshape(A, D, v.shape[1] // D, *v.shape[2:]), 1, 0)
                     for k, v in split.items()}
            return jax.device_put(split, self.stacked)
        if self.kind == "sharded":
            return {k: jax.make_array_from_process_local_data(self.rows, v)
                    for k, v in split.items()}
        return jax.device_put(split)

    def metrics(self, metrics: dict) -> dict[str, float]:
        """Device metrics -> host floats (the loop's only device->host sync, at log steps)."""
        m = jax.device_get(metrics)
        if self.kind == "pmap":
            m = {k: v[0] for k, v in m.items()}   # psum made them equal on every device
        return {k: float(v) for k, v in m.items()}


# ---- the run --------------------------------------------------------------------------------

def init_distributed(args) -> None:
    if args.coordinator or args.num_processes:
        if not (args.coordinator and args.num_processes and args.process_id is not None):
            raise UserError("multi-host needs all of --coordinator, --num-processes and "
                            "--process-id")
        # CPU processes need a collectives backend of their own (GPU/TPU ignore this flag),
        # so the multi-host path runs, and is tested, on plain CPUs too.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk: the second run of a config starts in seconds, not
    tens of seconds. $JAX_COMPILATION_CACHE_DIR wins; else the twinbert cache directory."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax-compilation"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def peak_device_memory_mb() -> float | None:
    """The most memory any local device held (XLA's allocator statistics; None on a CPU, whose
    client keeps none). torchbert reports torch.cuda.max_memory_allocated."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) / 2**20 if peaks else None


def compute_dtype(name: str):
    """The Flax modules' `dtype` for --dtype NAME (bertcore.cli.resolve_dtype); params stay fp32."""
    accelerator = jax.default_backend() in ("gpu", "tpu")
    return {"fp32": jnp.float32, "bf16": jnp.bfloat16}[resolve_dtype(name, accelerator)]


def train(args) -> dict[str, Any]:
    keep_freed_memory()     # before XLA's threads start: bertcore/malloc.py
    apply_cpu_settings()    # jaxbert/cpu.py: XLA CPU settings; torchbert has none to make
    enable_compilation_cache()
    init_distributed(args)
    rank, world = jax.process_index(), jax.process_count()
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
        # Imported here: only a run that starts from other weights needs the reader (which
        # itself restores checkpoints through this module's abstract_state).
        from .pretrained import pretrained_weights
        params, fresh = merge_hf_params(pretrained_weights(run.init_source), mcfg,
                                        lambda: params)
        if fresh:
            run.note(f"not in {run.init_source.path}, initialised fresh: {', '.join(fresh)}")
    state = create_state(params, tx)
    ckpt = Checkpointer(run.rundir, mcfg, keep=cfg.keep_checkpoints)
    start, batch_state = 0, None
    if args.resume:
        if latest_step(run.rundir) is None:
            raise UserError(f"--resume: {run.checkpoint_dir} has no checkpoint; drop --resume "
                            f"(with --overwrite) to start the run again")
        # Several processes: restore into host (numpy) arrays, which put_state then lays out
        # over the global devices (a restored single-device array would have to cross hosts).
        state, extra = ckpt.restore(jax.device_get(state) if world > 1 else state)
        start, batch_state = int(extra["step"]), extra["batches"]
        dropout_key = key_from_list(extra["rng"])
        run.note(f"resumed from {run.checkpoint_dir / str(start)} at step {start}")
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
        good = latest_step(run.rundir)
        try:
            stopper.timed_checkpoint(lambda: ckpt.save(
                step, layout.host_state(state),
                {"step": step, "batches": batches.state(), "rng": key_to_list(dropout_key)}))
        except Exception as e:   # orbax wraps I/O errors (tensorstore, asyncio) in many types
            err = os_error_in(e)
            if err is None:
                raise                  # not a failed write: a bug, keep the traceback
            ckpt.abandon()             # orbax's manager may be half-way through this step
            remove_temp_dirs(run.rundir)
            raise write_failure(err, run.checkpoint_dir / str(step), ckpt_bytes,
                                run.checkpoint_dir / str(good) if good is not None else None
                                ) from None

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
        print(stopper.line(step, run.checkpoint_dir / str(latest_step(run.rundir)),
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
    return run_train(train, parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
