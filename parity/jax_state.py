"""jaxbert (orbax) checkpoints <-> `TrainingState`, through jaxbert's own Checkpointer,
TrainState and optax chain, so the format cannot drift apart. Params and AdamW moments pass
through bertcore.model.hf's one table (`hf_to_flax` / `flax_to_hf`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bertcore.model.hf import fail_names, flatten, flax_to_hf, hf_to_flax, unflatten
from bertcore.train.rundir import RunFiles
from jaxbert.checkpoint import Checkpointer, key_to_list
from jaxbert.optim import make_optimizer
from jaxbert.step import TrainState, abstract_state, seed_keys

from .state import TrainingState


def opt_nodes(node: Any) -> list[Any]:
    """The namedtuple states inside an optax state (chain tuples walked, params trees not)."""
    if isinstance(node, tuple):
        inner = [n for c in node for n in opt_nodes(c)]
        return inner + ([node] if hasattr(node, "_fields") else [])
    return []


def replace_opt(node: Any, fn: Callable[[Any], Any]) -> Any:
    """Rebuild an optax state with `fn` applied to each namedtuple state (bottom-up)."""
    if isinstance(node, tuple):
        kids = [replace_opt(c, fn) for c in node]
        return fn(type(node)(*kids)) if hasattr(node, "_fields") else type(node)(kids)
    return node


def adam_state(opt_state: Any) -> Any:
    adam = [n for n in opt_nodes(opt_state) if {"count", "mu", "nu"} <= set(n._fields)]
    if len(adam) != 1:
        raise ValueError(f"expected one ScaleByAdamState in the optax state, found {len(adam)}")
    return adam[0]


def read_jax(run: RunFiles, step: int | None = None) -> TrainingState:
    """Everything a jaxbert (orbax) checkpoint holds, restored by jaxbert's own Checkpointer."""
    mcfg = run.trained_config
    with Checkpointer(run.rundir, mcfg) as ckpt:      # checks config, structure, shapes
        state, extra = ckpt.restore(abstract_state(mcfg, run.train), step)
    step = int(extra["step"])
    adam = adam_state(state.opt_state)
    counts = {"TrainState.step": state.step, "ScaleByAdamState.count": adam.count,
              **{f"{type(n).__name__}.count": n.count for n in opt_nodes(state.opt_state)
                 if "count" in n._fields and n is not adam}}
    fail_names(f"{run.rundir}: step counters differ from the checkpoint's step {step}",
               [f"{k}={int(v)}" for k, v in counts.items() if int(v) != step],
               "the checkpoint is inconsistent")
    np_tree = lambda t: {k: np.asarray(v) for k, v in flatten(t).items()}
    return TrainingState(run.config, flax_to_hf(unflatten(np_tree(state.params)), mcfg), step,
                         flax_to_hf(unflatten(np_tree(adam.mu)), mcfg),
                         flax_to_hf(unflatten(np_tree(adam.nu)), mcfg),
                         extra.get("batches"), extra.get("rng"))


def write_jax_checkpoint(rundir: Path, state: TrainingState, run: RunFiles) -> None:
    """RUNDIR/checkpoints/<step> as jaxbert's loop saves it: TrainState(step, params, opt_state)
    with optax's Adam mu/nu/count and the schedule count, plus extra {step, batches, rng}."""
    mcfg = run.trained_config
    to_tree = lambda named: jax.tree_util.tree_map(jnp.asarray, hf_to_flax(named, mcfg))
    zeros = {n: np.zeros_like(a) for n, a in state.params.items()}
    params = to_tree(state.params)
    mu = to_tree({**zeros, **state.exp_avg})
    nu = to_tree({**zeros, **state.exp_avg_sq})
    count = jnp.asarray(state.step, jnp.int32)

    def fill(node):
        if {"count", "mu", "nu"} <= set(node._fields):
            return node._replace(count=count, mu=mu, nu=nu)
        return node._replace(count=count) if "count" in node._fields else node

    tx = make_optimizer(run.train, mcfg.hidden_size)
    opt_state = replace_opt(tx.init(params), fill)
    ts = TrainState(step=count, params=params, opt_state=opt_state)
    # A torch run has no dropout key: continue with the one a jax run of this seed would use.
    rng = state.rng if state.rng is not None else key_to_list(seed_keys(run.train.seed)[1])
    with Checkpointer(rundir, mcfg, keep=run.train.keep_checkpoints) as ckpt:
        ckpt.save(state.step, ts, {"step": state.step, "batches": state.batches, "rng": rng})
