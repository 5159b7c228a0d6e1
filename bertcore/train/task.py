"""What a run supplies to the one training loop (bertcore.train.loop.train_loop): a `Task`.

Pretraining's `Run` (bertcore.train.run) and fine-tuning's `ClassifyRun` (bertcore.classify.run)
are tasks. The loop asks a task for its batches, the rate of each update and when to log,
evaluate and checkpoint, and hands it what came of a step: a logged row, an evaluation, the end
of the run. The framework's half is the loop's `Twin` (the step, the metrics, checkpoints).

A task also keeps the run's record in RUNDIR, written here once for every task: metrics.jsonl
(truncated to the step a resume continues from), the --report-to dashboards, the progress bar,
the clock behind the throughput, notes, the divergence guard, and letting go of the run an
--overwrite replaced once the new run has its first checkpoint (bertcore.train.rundir).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from bertcore.infra.errors import UserError
from bertcore.train.report import Reporters
from bertcore.train.rundir import RunDir

logger = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss or gradient norm stopped being finite."""


class Task:
    """One run of the loop, for either twin. Subclasses answer the loop's questions (the methods
    that raise NotImplementedError) and may refine the record's defaults."""

    name = ""                 # run.json's "task" and the dashboards' name: pretrain, classify
    # The advice when the loss stops being finite: the run's settings (its --lr among them)
    # cannot change on --resume, so the way on is a new start, from scratch or (where the task
    # can start from a run's weights: `from_checkpoint`) from the last good checkpoint.
    divergence_fix = "start again with a lower --lr (--overwrite replaces this run)"
    from_checkpoint = ""

    evaluate_before_checkpoint = False   # True: a step's checkpoint holds its evaluation's
                                         # outcome (the loop runs `evaluate` first)

    def __init__(self, rundir: Path, framework: str, files: RunDir, *, is_main: bool = True,
                 progress: bool = True, report_to: tuple[str, ...] = ()):
        self.rundir, self.framework, self.files = rundir, framework, files
        self.is_main = is_main
        self.show_progress = progress and is_main
        # --report-to's dashboards: opened by `start` on the main process only (the other
        # processes write no run files, and report nothing).
        self.report_to = report_to if is_main else ()
        self.reports = Reporters([])
        self.history: list[dict[str, Any]] = []
        self._bar: tqdm | None = None
        self._t_last = self._t_start = time.perf_counter()
        self._step_last = 0

    # ---- what the loop asks ------------------------------------------------------------------

    @property
    def steps(self) -> int:
        """The run's last optimizer step (where the learning-rate schedule ends)."""
        raise NotImplementedError

    def batches(self, rank: int, world: int, state: dict | None) -> Iterator[dict]:
        """The training batches from data position `state` (None: the start), with `state()`."""
        raise NotImplementedError

    def lr(self, step: int) -> float:
        """The learning rate of optimizer update `step` (1-based)."""
        raise NotImplementedError

    def log_due(self, step: int) -> bool:
        raise NotImplementedError

    def save_due(self, step: int) -> bool:
        raise NotImplementedError

    def eval_due(self, step: int, last: int) -> bool:
        raise NotImplementedError

    def log(self, step: int, row: dict[str, float]) -> None:
        """A logged step's global metrics (host floats, learning_rate among them)."""
        raise NotImplementedError

    def evaluate(self, step: int, twin: Any) -> None:
        """Evaluate the twin's model after `step` and record it."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """The task's own counters, saved with each checkpoint beside the data position."""
        return {}

    def restore(self, extra: dict[str, Any]) -> None:
        """Take back `state()` from a resumed checkpoint's extra."""

    def end(self, twin: Any, step: int, info: dict[str, Any]) -> dict[str, Any]:
        """After the last step: the run's final files; returns the summary."""
        raise NotImplementedError

    def done_line(self, step: int, seconds: float, twin: Any) -> str:
        """The last line of a run that was not stopped by a signal or the budget."""
        raise NotImplementedError

    def report_config(self) -> dict[str, Any]:
        """The run's settings, as the dashboards show them."""
        raise NotImplementedError

    def tagged(self, row: dict[str, Any]) -> dict[str, float]:
        """A metrics.jsonl row as dashboard scalars."""
        raise NotImplementedError

    # ---- the record ---------------------------------------------------------------------------

    @property
    def metrics_path(self) -> Path:
        return self.files.metrics_path

    @property
    def checkpoint_dir(self) -> Path:
        return self.files.checkpoint_dir

    def start(self, step: int) -> None:
        """Begin (or continue, after a resume) at optimizer step `step`."""
        self._step_last, self._t_last = step, time.perf_counter()
        self._t_start = self._t_last
        if not self.is_main:
            return
        # Lines logged after the checkpoint we resume from will be logged again.
        self.history = self.files.truncate_metrics(step)
        self.reports = Reporters.open(self.report_to, self.rundir, self.report_config(), step,
                                      [(m["step"], self.tagged(m)) for m in self.history])
        if self.show_progress:
            self._bar = tqdm(total=self.steps, initial=step, unit="step", dynamic_ncols=True,
                             desc=f"{self.framework}bert" + (f" {self.name}"
                                                              if self.name != "pretrain" else ""))

    def reset_clock(self, step: int) -> None:
        """Measure throughput from now on (after the first, compiling step)."""
        self._step_last, self._t_last = step, time.perf_counter()

    def lap(self, step: int) -> tuple[int, float]:
        """(steps, seconds) since the last lap; starts the next."""
        now = time.perf_counter()
        out = step - self._step_last, max(now - self._t_last, 1e-9)
        self._t_last, self._step_last = now, step
        return out

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t_start

    def append(self, step: int, row: dict[str, Any]) -> None:
        """A row to metrics.jsonl, the history and the dashboards (main process only)."""
        if self.is_main:
            self.files.append_metrics(row)
            self.history.append(row)
            self.reports.scalars(step, self.tagged(row))

    def advance_bar(self, step: int, **postfix: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(step - self._bar.n)

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def guard(self, step: int, value: float, name: str = "loss") -> None:
        """Stop a diverged run (before it can write a checkpoint), keeping the last good one."""
        if not math.isfinite(value):
            kept = self.files.has_checkpoint()
            where = (f"the last good checkpoint is kept in {self.checkpoint_dir}" if kept else
                     "no checkpoint was written yet")
            also = self.from_checkpoint.format(rundir=self.rundir) if kept else ""
            raise TrainingDiverged(f"{name} became {value} at step {step}; {where}; "
                                   f"{self.divergence_fix}{also}")

    def note(self, text: str) -> None:
        """A message to the user, from the main process only (the console handler writes it
        above the progress bar)."""
        if self.is_main:
            logger.info(text)

    def checkpointed(self, step: int) -> None:
        """A checkpoint of `step` is on disk: the dashboards hold every point up to where
        --resume continues, and a run that --overwrite replaced is let go (it was kept until
        the new run had something to resume from)."""
        self.reports.flush()
        if self.is_main:
            self.files.keep_new()

    def close_reports(self, failed: bool = False) -> None:
        """Close the dashboards (`end` does; the loop again when a step raised: `failed`)."""
        self.reports.close(failed)
