"""Stopping a training run cleanly: signals, time budgets, the resume command and the exit codes.

Both twins' loops use one `Stopper`:

    stopper = Stopper.from_args(args)      # --stop-signals, --time-budget
    stopper.install()                      # before anything is written
    ...set-up: configs, data, RUNDIR...    # a signal here ends the command at once
    stopper.begin()                        # from here a signal only sets a flag
    for step in ...:
        ...one optimizer step...
        if stopper.poll():                 # a signal came, or the budget is nearly spent
            ...checkpoint this step, write summary.json and the plot, print stopper.line(...)
    return stopper.exit_code

Once training has begun, a signal only sets a flag: the loop finishes the step it is in,
checkpoints it and ends the run as usual. During the set-up before it (building a tokenizer or
shards, waiting for another process's build, a rank waiting at a barrier) there is no step to
finish: the handler raises `SetupInterrupted`, the set-up unwinds (its worker pool is ended, its
locks released) and the command exits 128 + the signal's number, as an uncaught signal would,
with one line; nothing was trained, so the same command starts again. A second SIGINT (Ctrl-C)
raises KeyboardInterrupt at once (exit 130, no checkpoint).
Several ranks or processes must stop at the same step: each twin folds the local flag into a
collective it already runs (torch: the metrics all-reduce at log and checkpoint steps; jax
multi-process: an allgather at the same steps), so every rank reads the same decision.

Exit codes (docs/guide.md "Stopping and resuming", `--help`):
    0    finished, or stopped by --time-budget with a checkpoint
    75   stopped by a signal (EX_TEMPFAIL: "try again"), with a checkpoint: --resume continues
    74   a checkpoint could not be written (EX_IOERR); the last good one is kept and named
         (bertcore.infra.files: CheckpointWriteError, write_failure)
    130  a second Ctrl-C: aborted at once, nothing written
    128+N  signal N during the set-up, before the first step (143 for SIGTERM, 130 for SIGINT)
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
from typing import Any, Callable

from bertcore.infra.errors import UserError
from bertcore.infra.files import (CheckpointWriteError, WRITE_ERRNOS, format_bytes, free_bytes,
                                  os_error_from_message)

logger = logging.getLogger(__name__)

EXIT_SIGNAL = 75       # EX_TEMPFAIL
EXIT_WRITE_FAILED = CheckpointWriteError.exit_code  # EX_IOERR
EXIT_BUDGET = 0
DEFAULT_SIGNALS = "TERM,INT,USR1"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'2h', '90m', '1h30m', '45s', '3600' (seconds) -> seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", t)
        if not parts or "".join(n + u for n, u in parts) != t:
            raise ValueError(f"{text!r} is not a duration; write e.g. 2h, 90m, 1h30m or 45s")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a time budget must be positive")
    return seconds


def parse_signals(text: str) -> list[signal.Signals]:
    """'TERM,INT,USR1' (or SIGTERM, ...; 'none' for no handlers) -> signals."""
    if text.strip().lower() in ("", "none"):
        return []
    out = []
    for name in text.split(","):
        name = name.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if not hasattr(signal, name) or name in ("SIGKILL", "SIGSTOP"):
            raise ValueError(f"{name}: not a signal a run can catch; choose from TERM, INT, "
                             f"USR1, USR2, HUP")
        out.append(getattr(signal, name))
    return out


def process_start_time() -> float:
    """Wall-clock time (time.time()) this process started: a time budget counts from there,
    imports and compilation included."""
    try:
        import psutil
        return psutil.Process().create_time()
    except Exception:  # no psutil or no /proc: count from the first call instead
        return _IMPORTED


_IMPORTED = time.time()


class SetupInterrupted(BaseException):
    """A stop signal before the first step (a BaseException, so that no `except Exception` in
    the set-up swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Stopper:
    """Decides when a run stops early: a caught signal or a nearly spent time budget."""

    def __init__(self, signals: list[signal.Signals] | None = None,
                 time_budget: float | None = None, start: float | None = None,
                 reserve: float | None = None):
        self.signals = list(signals or [])
        self.budget = time_budget
        self.start = process_start_time() if start is None else start
        # Seconds kept back at the end of a budget for writing summary.json, the plot and hf/.
        self.reserve = (reserve if reserve is not None else
                        min(120.0, max(10.0, 0.05 * time_budget)) if time_budget else 0.0)
        self.signum: int | None = None
        self._begun = False             # set by begin(): before it, a signal aborts the set-up
        self.budget_reached = False
        self._old: dict[int, Any] = {}
        self._wakeup: tuple[int, int] | None = None     # (read, write) ends of the wakeup pipe
        self._old_wakeup = -1
        self._t_poll: float | None = None
        self.max_step_seconds = 0.0      # the longest step seen (the first, compiling one
        self._steps = 0                  # only until another is measured)
        self.checkpoint_seconds = 0.0    # the longest checkpoint write seen

    @classmethod
    def from_args(cls, args: Any) -> "Stopper":
        try:
            sigs = parse_signals(getattr(args, "stop_signals", None) or DEFAULT_SIGNALS)
            budget = getattr(args, "time_budget", None)
            budget = parse_duration(budget) if budget else None
        except ValueError as e:
            raise UserError(str(e)) from None
        return cls(sigs, budget)

    # ---- signals ------------------------------------------------------------------------

    def install(self) -> "Stopper":
        """Catch the chosen signals (main thread only; elsewhere Python forbids it)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for s in self.signals:
            self._old[s] = signal.signal(s, self._handle)
        if signal.SIGINT in self.signals:
            # Python runs a handler once for all the deliveries of a signal that came while
            # the main thread was inside one C call (a long step, a checkpoint's fsync): a
            # second Ctrl-C 0.2 s after the first would be lost. The C-level handler writes
            # every delivery to the wakeup fd, so `_handle` counts them there.
            self._wakeup = os.pipe()
            for fd in self._wakeup:
                os.set_blocking(fd, False)
            self._old_wakeup = signal.set_wakeup_fd(self._wakeup[1], warn_on_full_buffer=False)
        return self

    def uninstall(self) -> None:
        for s in list(self._old):
            self.release(s)
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None

    def _deliveries(self, signum: int) -> int:
        """How many times `signum` arrived since the last call (1 without a wakeup fd)."""
        n = 0
        while self._wakeup is not None:
            try:
                data = os.read(self._wakeup[0], 512)
            except BlockingIOError:
                break
            if not data:
                break
            n += data.count(signum)
        return max(n, 1)

    def release(self, signum: signal.Signals) -> None:
        """Stop catching `signum` and put back the handler it replaced (jaxbert hands SIGTERM to
        JAX's preemption service: released before jax.distributed starts, which then installs
        its own handler at the C level, where Python's `signal` cannot see it)."""
        old = self._old.pop(signum, None)
        if old is not None:
            signal.signal(signum, old)
        if signum in self.signals:
            self.signals.remove(signum)

    def begin(self) -> None:
        """The first step starts now: from here a signal sets a flag the loop acts on after a
        step, and the budget's step timing counts from here, not from the set-up before it."""
        self._begun = True
        self._t_poll = time.time()

    def _handle(self, signum: int, frame: Any) -> None:
        if not self._begun:
            raise SetupInterrupted(signum)   # no step to finish: unwind the set-up now
        if signum == signal.SIGINT and (self.signum is not None or
                                        self._deliveries(signum) > 1):
            raise KeyboardInterrupt   # a second Ctrl-C: abort now
        if self.signum is None:
            self.signum = signum
            # os.write, not print: a handler may interrupt a print to the same stream.
            os.write(2, f"\n{signal.Signals(signum).name} received: finishing this step, then "
                        f"writing a checkpoint (Ctrl-C again aborts without one)\n".encode())

    # ---- the decision, after each step --------------------------------------------------

    def poll(self) -> bool:
        """True if this process wants to stop after the step just done (the local decision;
        ranks combine theirs in a collective). Also measures the step's duration."""
        now = time.time()
        if self._t_poll is not None:
            took = now - self._t_poll
            # The first step (compilation) counts until a second one is measured; after that
            # the budget keeps room for the longest ordinary step.
            self._steps += 1
            self.max_step_seconds = (took if self._steps == 2 else
                                     max(self.max_step_seconds, took))
        self._t_poll = now
        if self.signum is not None:
            return True
        if self.budget is not None:
            # Stop if one more step, a checkpoint and the end of the run might not fit.
            left = self.start + self.budget - now
            if left <= self.max_step_seconds + self.checkpoint_seconds + self.reserve:
                self.budget_reached = True
                return True
        return False

    def timed_checkpoint(self, save: Callable[[], Any]) -> Any:
        """Run `save()` and remember how long checkpoints take (the budget keeps room for one)."""
        t = time.time()
        try:
            return save()
        finally:
            self.checkpoint_seconds = max(self.checkpoint_seconds, time.time() - t)
            self._t_poll = time.time()   # a checkpoint is not part of the next step's time

    def agreed(self, stop: bool) -> None:
        """Record a stop the ranks agreed on that this rank did not see itself."""
        if stop and self.signum is None and not self.budget_reached:
            self.budget_reached = self.budget is not None
            if not self.budget_reached:
                self.signum = -1       # another rank was signalled

    def preempted(self) -> None:
        """A SIGTERM seen by another mechanism (JAX's preemption sync point)."""
        if self.signum is None:
            self.signum = signal.SIGTERM

    def clear(self) -> None:
        """Forget a stop request (the run reached its last step anyway)."""
        self.signum, self.budget_reached = None, False

    @property
    def stopped(self) -> bool:
        return self.signum is not None or self.budget_reached

    @property
    def reason(self) -> str | None:
        if self.signum is not None:
            return ("a signal on another rank" if self.signum < 0
                    else signal.Signals(self.signum).name)
        if self.budget_reached:
            return f"--time-budget ({format_seconds(self.budget)})"
        return None

    @property
    def exit_code(self) -> int:
        if self.signum is not None:
            return EXIT_SIGNAL
        return EXIT_BUDGET

    def line(self, step: int, checkpoint: str | os.PathLike, command: str) -> str:
        """The one line a stopped run ends with."""
        return (f"stopped by {self.reason} after step {step}: checkpoint {checkpoint}; "
                f"resume with: {command}")


def add_stopping_flags(p: argparse.ArgumentParser) -> None:
    """--stop-signals and --time-budget: the same in both twins' train and classify train."""
    s = p.add_argument_group(
        "stopping", "A caught signal or a spent --time-budget ends the step in progress, writes a "
        "checkpoint (and, for pretraining, summary.json and the plot), and prints the command "
        "that resumes the run. Exit codes: 0 done (or --time-budget reached), 75 stopped by a "
        "signal (resume it), 74 a checkpoint could not be written (the last good one is kept), "
        "130 a second Ctrl-C (aborted at once, nothing written), 2 a usage error.")
    s.add_argument("--stop-signals", default=DEFAULT_SIGNALS, metavar="SIG,...",
                   help="signals that stop the run cleanly with a checkpoint ('none': the "
                        "default actions); with several ranks they stop together at the next "
                        "log or checkpoint step")
    s.add_argument("--time-budget", metavar="DURATION",
                   help="stop, checkpoint and summarise before this much time has passed since "
                        "the process started (compilation and checkpoints count): 2h, 90m, "
                        "1h30m, 45s")


def _os_error(e: BaseException) -> OSError | None:
    """The OSError `e` is, or wraps on purpose (`raise ... from`), or names in its message."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            return cur
        cur = cur.__cause__
    return os_error_from_message(str(e))


def format_seconds(s: float | None) -> str:
    if s is None:
        return "none"
    h, rem = divmod(int(round(s)), 3600)
    m, sec = divmod(rem, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec or not (h or m)
                                                               else "")


def resume_command(prog: str, argv: list[str], rundir: str | os.PathLike) -> str:
    """The command line that continues this run: its own flags, --resume, no --overwrite."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--overwrite", "--resume"):
            continue
        if a in ("--init-from",):      # a resumed run continues from its checkpoint
            skip = True
            continue
        if a.startswith("--init-from="):
            continue
        out.append(a)
    if not any(a == "--out" or a.startswith("--out=") for a in out):
        out += ["--out", str(rundir)]
    return f"{prog} {shlex.join(out + ['--resume'])}"


def run_train(train: Callable[[Any, list[str], Stopper], Any], args: Any,
              argv: list[str] | None) -> int:
    """Both twins' `main`: catch the stop signals before anything is written, run
    `train(args, argv, stopper)` (which returns bertcore.train.loop's Result) and turn its outcome
    into the exit code: 0 (done, or --time-budget reached), 75 (stopped by a signal, with a
    checkpoint), 74 (a checkpoint could not be written), 130 (a second Ctrl-C); the signal
    handlers are removed whatever happens."""
    stopper = Stopper.from_args(args).install()
    try:
        return train(args, list(sys.argv[1:] if argv is None else argv), stopper).exit_code
    except CheckpointWriteError as e:
        logger.error("error: %s", e)
        return e.exit_code
    except UserError:
        raise                      # already one line (cli_entry prints it)
    except Exception as e:
        # A run file that could not be written (hf/, best/, summary.json, the set-up's configs
        # on a full disk) or a file the disk refused (permissions, I/O): one line, the same
        # exit code; the checkpoints are kept. Only the error itself and what it wraps (its
        # __cause__, or a library's message) count: a bug raised while handling an OSError keeps
        # its traceback.
        err = _os_error(e)
        if err is None or err.errno not in WRITE_ERRNOS:
            raise                  # not a failed write: a bug, keep the traceback
        where = err.filename or "a run file"
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            free = free_bytes(where) if err.filename else None
            what = (f"could not write {where}: {err.strerror or err}"
                    f"{f' ({format_bytes(free)} free)' if free is not None else ''}")
        else:                      # EACCES, EPERM, EIO: a read as well as a write
            what = f"{where}: {err.strerror or err} (check its permissions and its disk)"
        logger.error(f"error: {what}; the checkpoints already written are kept; free space or "
                     f"fix the directory, then run the command again (with --resume once a "
                     f"checkpoint exists)")
        return EXIT_WRITE_FAILED
    except SetupInterrupted as e:
        logger.error(f"{signal.Signals(e.signum).name} received during the set-up, before the "
                     f"first step: stopped, nothing trained; run the same command to start again")
        return 128 + e.signum
    finally:
        stopper.uninstall()
