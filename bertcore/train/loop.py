"""The training loop, written once for every task and both twins: `train_loop(run, twin, ...)`.

Everything a train loop does that is neither the task nor the framework lives here: the order
of a step's work (batch, learning rate, update, stop request), asking the task when to log,
evaluate and checkpoint, stopping on signals and time budgets with the processes in agreement,
the checkpoint write (low-space warning, timing, a failed write turned into one line), and the
end of a run (the task's final files, the last line).

Two halves fill it in. The task (bertcore.train.task's `Task`: pretraining's `Run`, fine-tuning's
`ClassifyRun`) says what to train on and what to record; the twin (`Twin` below: each twin's
train.py and classify.py fill it in a page) does what only a framework can: the step, the metrics
as host floats, evaluation, checkpoints. The twins differ only inside the hooks: torchbert's step
takes the learning rate as an argument and sums metrics over ranks with an all-reduce; jaxbert's
optimizer computes the rate itself (optax's schedule) and its metrics are already global (psum,
or replicated outputs).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertcore.data.prefetch import Prefetch
from bertcore.infra.files import os_error_in, warn_if_low_space, write_failure
from bertcore.train.stopping import Stopper, resume_command
from bertcore.train.task import Task

logger = logging.getLogger(__name__)


class Twin:
    """What a twin supplies to `train_loop`. Defaults are the single-process answers."""

    rank: int = 0
    world: int = 1
    prog: str = ""                  # the command that resumes this run, e.g.
                                    # python -m torchbert.train
    checkpoint_bytes: int = 0       # the size of one checkpoint, for the low-space warning
    compiles: bool = False          # the first step compiles: time it alone, not in throughput

    def put_batch(self, batch: dict) -> Any:
        """A host numpy batch placed where the step wants it (called on the prefetch thread)."""
        return batch

    def step(self, step: int, batch: Any, lr: float) -> Any:
        """One optimizer update (1-based `step`); returns device metrics, without waiting."""
        raise NotImplementedError

    def wait(self, metrics: Any) -> None:
        """Block until `metrics` are computed (timing the first, compiling step)."""

    def host_metrics(self, metrics: Any, want_stop: bool) -> tuple[dict[str, float], bool]:
        """The step's global metrics as host floats, the same on every process, and whether any
        process wants to stop (several processes combine `want_stop` in the same exchange)."""
        return {k: float(v) for k, v in metrics.items()}, want_stop

    def preempted(self, step: int) -> bool:
        """A preemption notice all processes agreed to act on at this step."""
        return False

    # The twin's checkpoint.Checkpointer: the same API in both twins (latest_step, path, save,
    # abandon, close), so the loop asks it directly where the twins do not differ.
    ckpt: Any = None

    def latest_step(self) -> int | None:
        return self.ckpt.latest_step()

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt.path(step)

    def save(self, step: int, extra: dict[str, Any]) -> None:
        """Write the checkpoint of `step` with `extra` (step, data position, the task's
        counters) beside the state (the twins differ in what the state is)."""
        raise NotImplementedError

    def abandon_save(self) -> None:
        """Clean up after a save that failed half-way (temp files, a checkpoint manager)."""
        self.ckpt.abandon()

    def close(self) -> None:
        """After the last step: let go of the checkpointer (waits for its writes)."""
        self.ckpt.close()

    def weights(self) -> dict[str, Any]:
        """The model's weights as HF-named numpy arrays."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """The twin's own summary fields (device, versions, parameter count)."""
        return {}

    def done_detail(self) -> str:
        """Text after 'done: N steps in Ts' (jaxbert names its layout and devices)."""
        return ""


@dataclass
class Result:
    """What `train_loop` returns: the summary (empty on other processes), the last step done,
    the exit code (0 done or budget reached, 75 stopped by a signal) and why it stopped."""
    summary: dict[str, Any]
    step: int
    exit_code: int
    stopped: str | None


def train_loop(run: Task, twin: Twin, stopper: Stopper, *, resumed: dict[str, Any] | None,
               stop_after: int | None, argv: list[str]) -> Result:
    """Train from the start, or from the checkpoint whose extra is `resumed`, to the run's last
    step or until a stop, logging, evaluating and checkpointing on the task's cadence; then the
    task's end and the last line. `stopper` is already catching signals
    (bertcore.train.stopping.run_train installs it before the set-up writes anything); `argv` is
    the command's own flags, for the resume command a stopped run prints."""
    start = int(resumed["step"]) if resumed else 0
    if resumed:
        run.restore(resumed)
    # The next batches are drawn and placed on the devices on a background thread
    # (bertcore.data.prefetch), so a step never waits for its data.
    batches = Prefetch(run.batches(twin.rank, twin.world, resumed and resumed.get("batches")),
                       twin.put_batch)
    first_step_seconds: float | None = None

    def checkpoint(step: int) -> None:
        if twin.rank == 0:
            warn_if_low_space(run.checkpoint_dir, twin.checkpoint_bytes, run.note)
        good = twin.latest_step()
        extra = {"step": step, "batches": batches.state(), **run.state()}
        try:
            stopper.timed_checkpoint(lambda: twin.save(step, extra))
        except Exception as e:   # OSError, or a library's error that wraps one
            err = os_error_in(e)
            if err is None:
                raise                  # not a failed write: a bug, keep the traceback
            twin.abandon_save()
            raise write_failure(err, twin.checkpoint_path(step), twin.checkpoint_bytes,
                                twin.checkpoint_path(good) if good is not None else None
                                ) from None
        run.checkpointed(step)

    try:
        run.start(start)
        stopper.begin()
        t0 = time.perf_counter()
        step = start
        last = min(run.steps, stop_after or run.steps)
        for step in range(start + 1, last + 1):
            batch = next(batches)
            lr = run.lr(step)
            t_step = time.perf_counter()
            metrics = twin.step(step, batch, lr)
            if twin.compiles and first_step_seconds is None:
                twin.wait(metrics)
                first_step_seconds = time.perf_counter() - t_step   # compile + one run
                run.note(f"first step (compile + run) took {first_step_seconds:.1f}s")
                run.reset_clock(step)  # throughput excludes compilation
            # One process decides alone, every step; several processes combine their requests
            # at log and checkpoint steps (in the metrics exchange: no extra sync per step),
            # so they all stop at the same step.
            want_stop = stopper.poll()
            stop = want_stop and twin.world == 1
            if twin.preempted(step):
                stopper.preempted()   # the same step on every process
                stop = True
            log_now = run.log_due(step) or step == last or stop
            save_now = run.save_due(step) or step == last or stop
            if log_now or save_now:
                # The loop's only host sync. The metrics are global, so every process reads the
                # same numbers and a diverged run stops everywhere at one step (run.log and
                # run.guard raise on each), never on one process alone.
                row, anyone = twin.host_metrics(metrics, want_stop)
                stop = stop or anyone
                save_now = save_now or stop
                stopper.agreed(stop)
                if log_now or stop:
                    run.log(step, {**row, "learning_rate": lr})
                if save_now:
                    run.guard(step, row["loss"])  # never checkpoint a diverged model
            # A task whose checkpoint carries what its evaluation decides (fine-tuning's best
            # epoch) evaluates first; pretraining checkpoints first, so a stop or a failed
            # evaluation never costs the step's checkpoint.
            due = run.eval_due(step, last)
            if due and run.evaluate_before_checkpoint:
                run.evaluate(step, twin)
            if save_now:
                checkpoint(step)
            if due and not run.evaluate_before_checkpoint:
                run.evaluate(step, twin)
            if stop:
                break
        if step == last:
            stopper.clear()   # a stop asked for at the very last step: the run is done anyway
        batches.close()
        seconds = time.perf_counter() - t0
        twin.close()
        info: dict[str, Any] = {"train_seconds": seconds}
        if twin.compiles:
            info["first_step_seconds"] = first_step_seconds
        summary = run.end(twin, step, {**info, "stopped": stopper.reason})
        if twin.rank == 0 and stopper.stopped:
            latest = twin.latest_step()
            logger.info(stopper.line(step, twin.checkpoint_path(latest) if latest is not None
                                     else "none", resume_command(twin.prog, argv, run.rundir)))
        elif twin.rank == 0:
            logger.info(run.done_line(step, seconds, twin))
        return Result(summary, step, stopper.exit_code, stopper.reason)
    finally:
        batches.close()   # also when a step raised: the prefetch thread ends with the loop
        twin.close()
        run.close_reports(failed=True)   # a no-op after run.end; else the run failed
