"""The pretraining loop, written once for both twins: `pretrain(run, twin, ...)`.

Everything a train loop does that is not the framework lives here: the order of a step's work
(batch, learning rate, update, stop request), the cadence of logging, checkpoints, held-out
evaluation and the divergence guard, stopping on signals and time budgets with the processes in
agreement, the checkpoint write (low-space warning, timing, a failed write turned into one line),
and the end of a run (hf/ export, summary, the last line). The twin supplies the few things only
a framework can do, through the `Twin` hooks below: torchbert/train.py and jaxbert/train.py each
fill them in a page.

The twins differ only inside the hooks: torchbert's step takes the learning rate as an argument
and sums metrics over ranks with an all-reduce; jaxbert's optimizer computes the rate itself
(optax's schedule) and its metrics are already global (psum, or replicated outputs).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertcore.data.prefetch import Prefetch
from bertcore.files import os_error_in, warn_if_low_space, write_failure
from bertcore.train.run import Run
from bertcore.train.schedule import make_schedule
from bertcore.train.stopping import Stopper, resume_command

logger = logging.getLogger(__name__)


class Twin:
    """What a twin's train.py supplies to `pretrain`. Defaults are the single-process answers."""

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
        raise NotImplementedError

    def preempted(self, step: int) -> bool:
        """A preemption notice all processes agreed to act on at this step."""
        return False

    def evaluate(self, batches: list[dict]) -> dict[str, Any]:
        raise NotImplementedError

    # The twin's checkpoint.Checkpointer: the same API in both twins (latest_step, path, save,
    # abandon), so the loop asks it directly where the twins do not differ.
    ckpt: Any = None

    def latest_step(self) -> int | None:
        return self.ckpt.latest_step()

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt.path(step)

    def save(self, step: int, extra: dict[str, Any]) -> None:
        """Write the checkpoint of `step` with `extra` (step, data position) beside the state
        (the twins differ in what the state is)."""
        raise NotImplementedError

    def abandon_save(self) -> None:
        """Clean up after a save that failed half-way (temp files, a checkpoint manager)."""
        self.ckpt.abandon()

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """After the last step: (the final weights as HF-named numpy arrays, the twin's own
        summary fields)."""
        raise NotImplementedError

    def done_detail(self) -> str:
        """Text after 'done: N steps in Ts' (jaxbert names its layout and devices)."""
        return ""


@dataclass
class Result:
    """What `pretrain` returns: the summary (empty on other processes), the last step done,
    the exit code (0 done or budget reached, 75 stopped by a signal) and why it stopped."""
    summary: dict[str, Any]
    step: int
    exit_code: int
    stopped: str | None


def pretrain(run: Run, twin: Twin, stopper: Stopper, *, start: int,
             batch_state: dict | None, eval_set: list[dict] | None, eval_every: int,
             stop_after: int | None, argv: list[str]) -> Result:
    """Train from optimizer step `start` (0, or the resumed checkpoint's) to the run's last step
    or until a stop, writing logs, checkpoints and evaluations on the run's cadence; then export,
    summarise and say so. `stopper` is already catching signals (bertcore.train.stopping.run_train
    installs it before the set-up writes anything); `argv` is the command's own flags, for the
    resume command a stopped run prints."""
    cfg = run.train_config
    lr_at = make_schedule(cfg, run.model_config.hidden_size)
    # The next batches are drawn and placed on the devices on a background thread
    # (bertcore.data.prefetch), so a step never waits for its data.
    batches = Prefetch(run.batches(twin.rank, twin.world, batch_state), twin.put_batch)
    last_eval: dict[str, Any] | None = None
    first_step_seconds: float | None = None

    def checkpoint(step: int) -> None:
        if twin.rank == 0:
            warn_if_low_space(run.checkpoint_dir, twin.checkpoint_bytes, run.note)
        good = twin.latest_step()
        try:
            stopper.timed_checkpoint(
                lambda: twin.save(step, {"step": step, "batches": batches.state()}))
        except Exception as e:   # OSError, or a library's error that wraps one
            err = os_error_in(e)
            if err is None:
                raise                  # not a failed write: a bug, keep the traceback
            twin.abandon_save()
            raise write_failure(err, twin.checkpoint_path(step), twin.checkpoint_bytes,
                                twin.checkpoint_path(good) if good is not None else None
                                ) from None
        run.flush_reports()   # the dashboards hold every point up to where --resume continues

    try:
        run.start(start)
        stopper.begin()
        t0 = time.perf_counter()
        step = start
        last = min(cfg.steps, stop_after or cfg.steps)
        for step in range(start + 1, last + 1):
            batch = next(batches)
            lr = float(lr_at(step - 1))
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
            log_now = step % cfg.log_every == 0 or step == last or stop
            save_now = step % cfg.checkpoint_every == 0 or step == last or stop
            if log_now or save_now:
                # The loop's only host sync. The metrics are global, so every process reads the
                # same numbers and a diverged run stops everywhere at one step (run.log and
                # run.guard raise on each), never on one process alone.
                row, anyone = twin.host_metrics(metrics, want_stop)
                stop = stop or anyone
                stopper.agreed(stop)
                if log_now or stop:
                    run.log(step, {**row, "learning_rate": lr})
                if save_now or stop:
                    run.guard(step, row["loss"])  # never checkpoint a diverged model
                    checkpoint(step)
            if eval_set and run.eval_due(step, last, eval_every):
                last_eval = twin.evaluate(eval_set)
                run.log_eval(step, last_eval)
            if stop:
                break
        if step == last:
            stopper.clear()   # a stop asked for at the very last step: the run is done anyway
        batches.close()
        seconds = time.perf_counter() - t0
        params, extra = twin.finish()
        run.export_hf(params)
        timing = {"train_seconds": seconds}
        if twin.compiles:
            timing["first_step_seconds"] = first_step_seconds
        summary = run.finish({**extra, "eval": last_eval, **timing, "stopped": stopper.reason})
        if twin.rank == 0 and stopper.stopped:
            latest = twin.latest_step()
            logger.info(stopper.line(step, twin.checkpoint_path(latest) if latest is not None
                                     else "none", resume_command(twin.prog, argv, run.rundir)))
        elif twin.rank == 0:
            logger.info(f"done: {step} steps in {seconds:.0f}s{twin.done_detail()}; run files in "
                        f"{run.rundir}/ (metrics.jsonl, summary.json, loss.png, checkpoints/, hf/)")
        return Result(summary, step, stopper.exit_code, stopper.reason)
    finally:
        batches.close()   # also when a step raised: the prefetch thread ends with the loop
        run.close_reports(failed=True)   # a no-op after run.finish; else the run failed
