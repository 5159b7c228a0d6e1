"""Training dashboards (`--report-to tensorboard,wandb`): the rows a run writes to metrics.jsonl,
mirrored to TensorBoard and/or Weights & Biases as they are written.

metrics.jsonl stays the source of truth: a reporter only repeats its rows (the same steps, the
same values, under tags `train/loss`, `eval/mlm_loss`, `val/accuracy`, ...), on the main process
only (the caller checks: `Reporters.open` is never called on another rank). Framework-free, and
both writers are imported lazily: a run without `--report-to` never loads them.

    RUNDIR/tb/      TensorBoard event files (tensorboardX): `tensorboard --logdir RUNDIR/tb`
    RUNDIR/wandb/   W&B's own run folders, and twinbert-run.json (the W&B run id of this RUNDIR,
                    and the last step W&B was given), so a resumed run continues the same W&B run

A resumed run repeats the steps after its checkpoint (metrics.jsonl is truncated to the
checkpoint's step), and neither dashboard may show them twice: TensorBoard's readers drop the
points an earlier event file holds from `purge_step` on (the writer records it), and W&B is
given only the steps after the last one it already has.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterable

from bertcore.infra.errors import UserError
from bertcore.infra.files import write_text_atomic

logger = logging.getLogger(__name__)

# --report-to's names, and the package each needs (its import name, its pip name).
REPORT_TO = {"tensorboard": ("tensorboardX", "tensorboardX"), "wandb": ("wandb", "wandb")}
TB_DIR = "tb"
WANDB_DIR = "wandb"
WANDB_STATE = "twinbert-run.json"
REPORT_TO_HELP = ("also show metrics.jsonl's rows (and the config) in a dashboard: none | "
                  "tensorboard (event files in RUNDIR/tb/; needs tensorboardX) | wandb (a W&B "
                  "run named after RUNDIR, continued by --resume; needs wandb), or both: "
                  "tensorboard,wandb")


def parse_report_to(value: str | None) -> tuple[str, ...]:
    """`--report-to`'s value as the dashboards' names, in order, each once: `none` (or nothing)
    is (); refuses an unknown name and a dashboard whose package is not installed, with one line
    naming the fix (called while the flags are checked, before any work is done)."""
    if value is None:
        return ()
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    if names in ([], ["none"]):
        return ()
    if "none" in names:
        raise UserError(f"--report-to {value}: 'none' stands alone; pass none, or the "
                        f"dashboards without it (tensorboard, wandb or tensorboard,wandb)")
    bad = [n for n in names if n not in REPORT_TO]
    if bad:
        raise UserError(f"--report-to {value}: unknown {', '.join(repr(n) for n in bad)}; "
                        f"choose none, tensorboard or wandb, or several separated by commas "
                        f"(tensorboard,wandb)")
    names = list(dict.fromkeys(names))
    for name in names:
        module, pip_name = REPORT_TO[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"--report-to {name} needs the {module} package: pip install "
                            f"{pip_name}")
    return tuple(names)


def flat_config(tree: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """A nested config as {"model.hidden_size": 128, ...}: numbers, strings and booleans (what
    TensorBoard's hyperparameters hold); lists become their JSON text, None is left out."""
    out: dict[str, str | int | float | bool] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "."))
        elif isinstance(v, (str, int, float, bool)):
            out[key] = v
        elif v is not None:
            out[key] = json.dumps(v, default=str)
    return out


def tagged(row: dict[str, Any], prefix: str) -> dict[str, float]:
    """A metrics row's numbers as {f"{prefix}/{key}": value}: not its step (the x axis) nor its
    strings (the eval rows' split)."""
    return {f"{prefix}/{k}" if prefix else k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Reporters:
    """The dashboards of one run, on its main process; no names, no reporters (every method does
    nothing). `open` catches up each dashboard with the rows metrics.jsonl already holds that it
    lacks; then `scalars` is called with each row as it is appended to metrics.jsonl."""

    def __init__(self, writers: list[Any]):
        self._writers = writers
        self._closed = False

    @classmethod
    def open(cls, names: Iterable[str], rundir: str | os.PathLike, config: dict[str, Any],
             resume_step: int, history: list[tuple[int, dict[str, float]]] = ()) -> "Reporters":
        """Start the dashboards `names` for RUNDIR at optimizer step `resume_step` (0: a new
        run), with the run's `config` as its hyperparameters; `history` is metrics.jsonl's rows
        up to `resume_step` as (step, tagged scalars) for a dashboard that does not have them
        yet (one added on --resume, or a W&B run that lost its last rows)."""
        rundir = Path(rundir)
        writers: list[Any] = []
        try:
            for name in names:
                kind = _TensorBoard if name == "tensorboard" else _WandB
                writers.append(kind(rundir, config, resume_step, list(history)))
        except BaseException:
            for w in writers:
                w.close(failed=True)
            raise
        return cls(writers)

    def __bool__(self) -> bool:
        return bool(self._writers)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Record a metrics row's tagged scalars (`tagged`) at optimizer step `step`."""
        if self._closed:
            return
        for w in self._writers:
            w.scalars(step, values)

    def flush(self) -> None:
        """Write what is buffered (at a checkpoint: a run killed later keeps these curves)."""
        if self._closed:
            return
        for w in self._writers:
            w.flush()

    def close(self, failed: bool = False) -> None:
        """Flush and close every dashboard (again: nothing). `failed`: the run ended with an
        error (W&B marks the run failed)."""
        if self._closed:
            return
        self._closed = True
        for w in self._writers:
            try:
                w.close(failed)
            except Exception as e:   # a dashboard's own failure never hides the run's outcome
                logger.warning(f"closing the {w.name} report failed: {e}")


class _TensorBoard:
    """Event files under RUNDIR/tb/, through tensorboardX (neither torch nor TensorFlow needed)."""

    name = "tensorboard"

    def __init__(self, rundir: Path, config: dict[str, Any], resume_step: int,
                 history: list[tuple[int, dict[str, float]]]):
        try:
            from tensorboardX import SummaryWriter
            from tensorboardX.summary import hparams
        except ImportError as e:
            raise UserError(f"--report-to tensorboard needs the tensorboardX package ({e}): "
                            f"pip install tensorboardX")
        logdir = rundir / TB_DIR
        fresh = not (logdir.is_dir() and any("tfevents" in p.name for p in logdir.iterdir()))
        # Each process writes its own event file. On a resume, purge_step tells TensorBoard's
        # readers to drop the earlier files' points from the first step this process logs
        # again, so a curve has one point per step. Readers take the files in name order: the
        # suffix (nanoseconds) keeps two files of the same second (the name's own time) apart
        # and in order.
        self.writer = SummaryWriter(str(logdir), purge_step=None if fresh else resume_step + 1,
                                    filename_suffix=f".{time.time_ns()}")
        if fresh:
            # The config as this run's hyperparameters (HParams tab), in the run's own event
            # file, not in the sub-run tensorboardX's add_hparams would make: so the HParams
            # table shows this run's own curves' last values beside its config, and `tensorboard
            # --logdir runs/` compares runs as one table. Only the session's start is written,
            # no experiment summary: TensorBoard then builds the table's columns from every
            # run's hyperparameters and scalar tags (pretraining and classify runs together).
            # Written once, when the curves start: a --resume changes at most the step count
            # and the cadences.
            _, start, _ = hparams(flat_config(config), {})
            self.writer.file_writer.add_summary(start)
            for step, values in history:
                self.scalars(step, values)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, v in values.items():
            self.writer.add_scalar(tag, v, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class _WandB:
    """A W&B run named after RUNDIR, continued by every resume of it (its id is kept in
    RUNDIR/wandb/twinbert-run.json); W&B's own files go under RUNDIR/wandb/."""

    name = "wandb"

    def __init__(self, rundir: Path, config: dict[str, Any], resume_step: int,
                 history: list[tuple[int, dict[str, float]]]):
        try:
            import wandb
        except ImportError as e:
            raise UserError(f"--report-to wandb needs the wandb package ({e}): pip install wandb")
        self.state_path = rundir / WANDB_DIR / WANDB_STATE
        state = _read_state(self.state_path)
        run_id = state.get("id") or secrets.token_hex(6)   # W&B ids: letters and digits
        # W&B refuses a step below the last it has, and offline runs that `wandb sync` joins
        # would hold a step twice: the steps a resumed run repeats are given only if W&B lacks
        # them (the last run stopped at its checkpoint; or it logged further, then was killed).
        self.last_step = int(state.get("step", 0))
        self._save_state(run_id)     # before init: a run killed in it keeps its id
        try:
            self.run = wandb.init(dir=str(rundir), id=run_id, resume="allow",
                                  project=os.environ.get("WANDB_PROJECT", "twinbert"),
                                  name=rundir.name)
        except Exception as e:   # no API key, no network in online mode, a bad setting
            raise UserError(f"--report-to wandb: W&B could not start a run ({e}); log in with "
                            f"`wandb login`, or set WANDB_MODE=offline and `wandb sync` it "
                            f"later") from None
        # A resumed run may have changed what --resume allows (--steps, the cadences).
        self.run.config.update(config, allow_val_change=True)
        self.floor = self.last_step   # steps up to here W&B has
        for step, values in history:
            self.scalars(step, values)

    def _save_state(self, run_id: str) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.state_path, json.dumps({"id": run_id, "step": self.last_step})
                          + "\n")
        self.run_id = run_id

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if step <= self.floor:
            return
        self.run.log(values, step=step)
        if step > self.last_step:
            self.last_step = step
            self._save_state(self.run_id)

    def flush(self) -> None:
        """W&B sends each row as it is logged; nothing is held here."""

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); delete it to start a new W&B run for "
                        f"this RUNDIR")
    return state if isinstance(state, dict) else {}
