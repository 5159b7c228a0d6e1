"""Training checkpoints with orbax: RUNDIR/checkpoints/<step>/{state, extra}.

The twin of `torchbert/checkpoint.py` (safetensors + JSON there). Each checkpoint holds two items:

- `state`: the train-state pytree (params, optax opt_state, step), arrays saved by orbax's
  tensorstore backend; restored *into a target* of the same structure, built for the current
  config (a fresh init or `jax.eval_shape` of one), so optax's namedtuples and any shardings come
  from the target, not from the file.
- `extra`: one JSON object: the batch iterator's state, the RNG key as a list of ints (see
  `key_to_list`), anything else the loop needs, and `model_config`, which restore compares with
  the current config before touching any array.

Orbax writes each step into a temporary directory and renames it when complete, so a crash never
leaves a half-written checkpoint where `latest_step` would find it; it keeps the last K steps.

The API is torchbert/checkpoint.py's, by int step, in the same order: the module's
`latest_step(rundir)` and `remove_temp_dirs(rundir)` (what killed saves left), a `Checkpointer`
per run (`path`, `steps`, `latest_step`, `save`, `restore`, `abandon`, `close`), and
`restore_params(rundir)`, the weights alone as HF-named numpy arrays.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from bertcore.model.config import ModelConfig
from bertcore.infra.errors import UserError
from bertcore.infra.files import os_error_in
from bertcore.model.hf import flax_to_hf
from bertcore.train.rundir import CHECKPOINTS, read_run

from .step import abstract_state

logger = logging.getLogger(__name__)


# ---- what a checkpoint holds: the RNG key as ints --------------------------------------------

def key_to_list(key) -> list[int]:
    """A PRNG key (raw uint32 `PRNGKey` or typed `jax.random.key`) as JSON-able ints."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key).astype(np.uint32).ravel().tolist()


def key_from_list(data: list[int], typed: bool = False):
    """Inverse of `key_to_list` (default threefry impl): a raw uint32 key, or a typed one."""
    raw = jnp.asarray(np.asarray(data, dtype=np.uint32))
    return jax.random.wrap_key_data(raw) if typed else raw


# ---- the checkpoints of a run, on disk -------------------------------------------------------

def checkpoint_dir(rundir: str | Path) -> Path:
    return Path(rundir).absolute() / CHECKPOINTS  # orbax wants absolute paths


def _steps(rundir: str | Path) -> list[int]:
    d = checkpoint_dir(rundir)
    if not d.is_dir():
        return []
    return sorted(ocp.utils.checkpoint_steps(d))  # finalised steps, not orbax's tmp directories


def latest_step(rundir: str | Path) -> int | None:
    """The newest complete checkpoint step in RUNDIR/checkpoints, or None."""
    steps = _steps(rundir)
    return steps[-1] if steps else None


def remove_temp_dirs(rundir: str | Path) -> list[Path]:
    """Delete the temporary directories of saves that did not finish (orbax names them
    `<step>.orbax-checkpoint-tmp-<n>`, in RUNDIR/checkpoints and inside a step); returns them."""
    d = checkpoint_dir(rundir)
    if not d.is_dir():
        return []
    gone = sorted(p for p in d.rglob("*.orbax-checkpoint-tmp*") if p.is_dir())
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


# ---- save ------------------------------------------------------------------------------------

class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _absl_held_back(replay: bool) -> Iterator[None]:
    """Hold back what orbax logs through absl in the block (its writer threads log each failed
    write with a traceback: ~100 lines for one full disk). A save that fails is reported once,
    by the twin (bertcore.infra.files.write_failure), so its records are dropped; after a save that
    succeeds (`replay`) they are shown as usual."""
    log, held = logging.getLogger("absl"), _Held()
    propagate, log.propagate = log.propagate, False
    log.addHandler(held)
    hook = sys.unraisablehook
    sys.unraisablehook = _drop_closed_loop_errors
    ok = False
    try:
        yield
        ok = True
    finally:
        log.removeHandler(held)
        log.propagate = propagate
        if ok:
            sys.unraisablehook = hook   # after a failure, the failed save's writes end later
            if replay:
                for record in held.records:
                    log.handle(record)


def _drop_closed_loop_errors(unraisable: Any) -> None:
    """sys.unraisablehook while orbax saves: tensorstore's writes that end after orbax closed
    their asyncio loop (a save that failed) report "Event loop is closed" through it, each with
    its traceback; anything else is shown as usual."""
    if not (unraisable.exc_type is RuntimeError
            and str(unraisable.exc_value) == "Event loop is closed"):
        sys.__unraisablehook__(unraisable)


# ---- restore ---------------------------------------------------------------------------------

def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _check_config(stored: dict[str, Any], config: ModelConfig, path: Path) -> None:
    """Refuse a checkpoint written for another model config, naming the fields that differ."""
    now = config.to_dict()
    names = [f for f in now if f in type(config).__dataclass_fields__]
    if stored.get("model_type", "bert") != now.get("model_type", "bert"):
        names = ["model_type"]
    diff = [f"{n}: checkpoint {stored.get(n, '(absent)')!r}, now {now[n]!r}"
            for n in names if stored.get(n) != now[n]]
    if diff:
        raise UserError(f"checkpoint {path} was written for another model config ("
                        f"{'; '.join(diff)}); resume with the run's own config.json or start "
                        f"a new run directory")


# ---- the Checkpointer ------------------------------------------------------------------------

class Checkpointer:
    """Save and restore the training state of one run, RUNDIR/checkpoints/<step>/, by int step (a
    thin layer over ocp.CheckpointManager): the same methods as torchbert.checkpoint.Checkpointer.
    The state is a value here, so `restore` returns it with the extra state (torchbert's loads
    into the model and optimizer in place).

    `save` is synchronous: when it returns, the checkpoint is committed on disk (what a
    crash-safe resume needs). `close()` (or a `with` block) releases orbax's manager at the end.
    """

    def __init__(self, rundir: str | Path, config: ModelConfig, keep: int = 3):
        self.dir, self.config = checkpoint_dir(rundir), config
        self.root = Path(rundir) / CHECKPOINTS     # as the user named it, for messages
        self._keep = keep
        self._mgr: ocp.CheckpointManager | None = None
        self._swept = False     # stale temp directories removed (by the first save)

    def path(self, step: int) -> Path:
        """The directory of checkpoint `step` (whether or not it exists)."""
        return self.root / str(int(step))

    def steps(self) -> list[int]:
        """The complete checkpoints' steps, oldest first."""
        return _steps(self.dir.parent)

    def latest_step(self) -> int | None:
        return latest_step(self.dir.parent)

    def _manager(self, create: bool) -> ocp.CheckpointManager:
        # Made lazily, so that merely looking for checkpoints never creates RUNDIR/checkpoints.
        if self._mgr is None:
            if not create and not self.dir.is_dir():
                raise UserError(f"no checkpoint in {self.dir} (the directory does not exist); "
                                f"start without --resume or point to the right run directory")
            options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=create,
                                                   enable_async_checkpointing=False)
            self._mgr = ocp.CheckpointManager(self.dir, options=options,
                                              item_names=("state", "extra"))
        return self._mgr

    def save(self, step: int, state: Any, extra_state: dict[str, Any]) -> Path | None:
        """Write checkpoint `step`, then keep only the newest `keep`; returns its directory, or
        None (and nothing written) if that step already exists.

        `state` must be a host-local or globally sharded pytree (unreplicate a pmap state first);
        `extra_state` must be JSON-able (plain ints, floats, strings, lists, dicts).
        """
        extra = dict(extra_state, model_config=self.config.to_dict())
        json.dumps(extra)  # fail here, with the offending value named, not inside orbax
        if not self._swept and jax.process_count() == 1:
            # The writer holds RUNDIR's lock, so orbax temp directories there are a killed or
            # twice-interrupted earlier save's (orbax never reuses them): gone before the first
            # save. (Several processes save together: none sweeps what another may be writing.)
            remove_temp_dirs(self.dir.parent)
            self._swept = True
        mgr = self._manager(create=True)
        if step in mgr.all_steps():
            logger.info("checkpoint %d already exists in %s; not overwriting it", step, self.dir)
            return None
        t = time.perf_counter()
        with _absl_held_back(replay=True):
            mgr.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        extra=ocp.args.JsonSave(extra)))
        logger.debug("saved checkpoint %d in %.2fs", step, time.perf_counter() - t)
        return self.path(step)

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restore (state, extra_state) of `step` (default: the latest) into `target`'s structure.

        `target` is a state of the current config: a fresh one (arrays come back with its
        shardings), or `jax.eval_shape` of one whose ShapeDtypeStructs carry a `sharding`
        (without shardings orbax returns numpy arrays). A dict or a flax TrainState both work.

        UserError, naming the path, if there is no checkpoint, if it is unreadable, if it was
        written for another model config (the differing fields listed), or if its arrays do not
        fit `target`.
        """
        mgr = self._manager(create=False)
        mgr.reload()  # another process (an earlier run) may have written steps since
        steps = mgr.all_steps()
        if not steps:
            raise UserError(f"no checkpoint in {self.dir}; start without --resume or point to "
                            f"the right run directory")
        step = max(steps) if step is None else int(step)
        if step not in steps:
            raise UserError(f"no checkpoint for step {step} in {self.dir}; available: "
                            f"{', '.join(map(str, sorted(steps)))}")
        path = self.dir / str(step)
        try:
            extra = mgr.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
            extra = extra["extra"]
            if not isinstance(extra, dict) or not isinstance(extra.get("model_config"), dict):
                raise ValueError("its extra_state item has no model_config")
        except Exception as e:  # orbax raises many kinds (ValueError, FileNotFoundError, ...)
            raise UserError(f"checkpoint {path} is corrupt or unreadable ({_short(e)}); delete "
                            f"it to resume from an earlier one") from e
        _check_config(extra["model_config"], self.config, path)
        t = time.perf_counter()
        try:
            state = mgr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target)))["state"]
        except Exception as e:
            raise UserError(f"checkpoint {path} is corrupt or does not match this run's training "
                            f"state ({_short(e)}); delete it or start a new run directory") from e
        logger.debug("restored checkpoint %d in %.2fs", step, time.perf_counter() - t)
        return state, extra

    def abandon(self) -> None:
        """After a failed save: drop orbax's manager, which may be half-way through it, and the
        save's temporary directories."""
        try:
            with _absl_held_back(replay=False):
                self.close()
        except Exception as e:   # orbax wraps I/O errors (tensorstore, asyncio) in many types
            # Closing waits for the failed save and may raise its I/O error again: that one is
            # already being reported. Anything else is a bug: keep its traceback.
            if os_error_in(e) is None:
                raise
        finally:
            self._mgr = None
            remove_temp_dirs(self.dir.parent)

    def close(self) -> None:
        if self._mgr is not None:
            self._mgr.close()
            self._mgr = None

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def restore_params(rundir: str | Path, step: int | None = None) -> dict[str, np.ndarray]:
    """The weights of a pretraining RUNDIR's checkpoint `step` (default: the latest), HF-named
    numpy arrays, after every check `Checkpointer.restore` makes (fill-mask, --init-from)."""
    run = read_run(rundir)
    config = run.trained_config
    with Checkpointer(rundir, config) as ckpt:      # checks config, structure and shapes
        state, _ = ckpt.restore(abstract_state(config, run.train), step)
    return flax_to_hf(jax.tree_util.tree_map(np.asarray, state.params), config)
