"""jaxbert's data parallelism: one process drives all its devices, laid out one of three ways
(`--parallel`), and several processes join through jax.distributed (multi-host).

    single   jax.jit on one device
    pmap     jax.pmap over the local devices; the batch is reshaped to [devices, B/devices, ...]
             and gradients are summed with lax.psum over the named axis "data"
    sharded  jax.jit with the batch laid out over a 1-D Mesh("data") by a NamedSharding, the
             modern path: XLA inserts the gradient all-reduce itself

Each process reads its own rows of every global batch (bertcore.data.batches). (The twin of
torchbert/parallel.py, one process per rank under torchrun.)
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bertcore.model.config import TrainConfig
from bertcore.data.batches import split_micro_batches
from bertcore.infra.errors import UserError

from .step import TrainState

AXIS = "data"


def init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> tuple[int, int]:
    """(rank, world_size): this process's index and the number of processes; with a
    coordinator (multi-host), joins the others through jax.distributed first."""
    if coordinator or num_processes:
        if not (coordinator and num_processes and process_id is not None):
            raise UserError("multi-host needs all of --coordinator, --num-processes and "
                            "--process-id")
        # CPU processes need a collectives backend of their own (GPU/TPU ignore this flag),
        # so the multi-host path runs, and is tested, on plain CPUs too.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator, num_processes, process_id)
    return jax.process_index(), jax.process_count()


def pick_parallel(name: str) -> str:
    n = jax.device_count()
    if name == "auto":
        return "sharded" if n > 1 else "single"
    return name


class Layout:
    """How the step is compiled and how a host numpy batch is placed on devices."""

    def __init__(self, parallel: str, cfg: TrainConfig, step_fn):
        self.parallel, self.cfg = parallel, cfg   # parallel: single | pmap | sharded (--parallel)
        self.local_devices = jax.local_devices()
        cfg.check_rows_divide(jax.device_count() if parallel != "single" else 1, "devices")
        # Python runs the step's body only while jit/pmap trace it, i.e. once per compiled
        # program: `traces` counts compilations in every layout (pmap has no _cache_size).
        self.traces = 0
        traced = step_fn

        def step_fn(*args, **kwargs):
            self.traces += 1
            return traced(*args, **kwargs)
        if parallel == "pmap":
            # pmap takes arrays whose leading axis is laid out one slice per local device
            # (jax.device_put_replicated/_sharded are deprecated since JAX 0.8).
            local_mesh = Mesh(np.array(self.local_devices), (AXIS,))
            self.stacked = NamedSharding(local_mesh, PartitionSpec(AXIS))
            self.fn = jax.pmap(functools.partial(step_fn, axis_name=AXIS), axis_name=AXIS,
                               in_axes=(0, 0, None), donate_argnums=(0,))
        elif parallel == "sharded":
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
        if self.parallel == "pmap":
            D = len(self.local_devices)
            copies = jax.tree_util.tree_map(
                lambda x: np.broadcast_to(np.asarray(x)[None], (D, *np.shape(x))), state)
            return jax.device_put(copies, self.stacked)
        if self.parallel == "sharded":
            return jax.device_put(state, self.replicated)
        return jax.device_put(state)

    def put_key(self, key: jax.Array) -> jax.Array:
        """The dropout key where the compiled step expects it (replicated when sharded)."""
        return jax.device_put(key, self.replicated) if self.parallel == "sharded" else key

    def host_state(self, state: TrainState) -> TrainState:
        """A single-copy state for checkpoints and conversion."""
        if self.parallel == "pmap":
            return jax.tree_util.tree_map(lambda x: x[0], state)
        return state

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict:
        """This process's rows [rows, ...] -> [grad_accum, rows/grad_accum, ...] on devices."""
        A = self.cfg.grad_accum
        split = split_micro_batches(batch, A)
        if self.parallel == "pmap":
            D = len(self.local_devices)
            # [A, rows, ...] -> [D, A, rows/D, ...]: device d gets a contiguous block of rows
            # of every micro-batch.
            split = {k: np.moveaxis(v.reshape(A, D, v.shape[1] // D, *v.shape[2:]), 1, 0)
                     for k, v in split.items()}
            return jax.device_put(split, self.stacked)
        if self.parallel == "sharded":
            return {k: jax.make_array_from_process_local_data(self.rows, v)
                    for k, v in split.items()}
        return jax.device_put(split)

    def metrics(self, metrics: dict) -> dict[str, float]:
        """Device metrics -> host floats (the loop's only device->host sync, at log steps)."""
        m = jax.device_get(metrics)
        if self.parallel == "pmap":
            m = {k: v[0] for k, v in m.items()}   # psum made them equal on every device
        return {k: float(v) for k, v in m.items()}
