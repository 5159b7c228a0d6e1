"""How the project speaks to the user: errors, messages, and the wrapper every command uses.

A `UserError` is a mistake the user can fix (bad path, bad flag, mismatched files). Command lines
catch it and log one line, `error: <problem>. <fix>`, and exit with status 2: no traceback.
Anything else is a bug in this project and keeps its traceback.

Messages: every module logs through `logging.getLogger(__name__)` (notes at INFO, warnings at
WARNING), and `cli_entry` sets up the one console handler for the project's packages: a message
alone on its line, written through tqdm so a progress bar stays below it; notes on stdout (or
stderr, for a command whose stdout is data: `notes_to_stderr()`), warnings and errors on stderr.
`print` is only for a command's result (predictions, tables, statistics, --json output).
Atomic writes and file locks live in bertcore.infra.files.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import Callable

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

# The project's top-level packages: their loggers get the console handler.
PACKAGES = ("bertcore", "torchbert", "jaxbert", "parity", "benchmarks")


class UserError(Exception):
    """A problem in the user's input, with a message that names it and the fix."""


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a `main(argv)` so that a UserError becomes one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            setup_logging()
            rc = main(*args, **kwargs)
        except UserError as e:
            logger.error("error: %s", e)
            return 2
        except BrokenPipeError:
            # Output piped into `head` and the like: stop quietly, as Unix tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except KeyboardInterrupt:
            logger.error("interrupted")
            return 130
        finally:
            # The command is over: what it held (a run directory's lock) is free again, also
            # when `main` is called in a process that goes on (tests, notebooks).
            for release in list(_AT_COMMAND_END):
                release()
        return 0 if rc is None else int(rc)

    return wrapper


# What a command holds until it ends: bertcore.infra.files.hold_lock registers the release of the
# locks it took here, so every command line lets them go when it returns.
_AT_COMMAND_END: list[Callable[[], None]] = []


def at_command_end(release: Callable[[], None]) -> None:
    """Run `release()` whenever a `cli_entry` command ends (once per distinct function)."""
    if release not in _AT_COMMAND_END:
        _AT_COMMAND_END.append(release)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where X tells the reader something: not for switches, not for
    flags whose default is None (they fall back to TrainConfig and show it as [X] themselves),
    and not where the help text already says "(default ...)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "(default" in text:
            return text
        return super()._get_help_string(action)


class _Console(logging.Handler):
    """A record's message alone on its line, through tqdm.write (a progress bar is redrawn below
    it). The stream is looked up at each message, so redirected streams (pytest's capsys,
    contextlib.redirect_stdout) receive it."""

    notes_to_stderr = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            err = record.levelno >= logging.WARNING or self.notes_to_stderr
            stream = sys.stderr if err else sys.stdout
            tqdm.write(self.format(record), file=stream)
            stream.flush()   # each message as it happens, also into a pipe
        except Exception:
            self.handleError(record)


_CONSOLE = _Console()


def _not_ours(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] not in (*PACKAGES, "__main__")


class _Others(logging.Handler):
    """Other libraries' warnings and errors as Python's last resort shows them (the message
    alone on stderr), on the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.addFilter(_not_ours)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


_OTHERS = _Others()


def setup_logging() -> None:
    """Show the project's messages on the console (notes on stdout). Entry points call it
    (`cli_entry` does), never a library function; calling it again changes nothing. The
    loggers still propagate, so an application's own handlers (or pytest's caplog) see them."""
    _CONSOLE.notes_to_stderr = False
    # "__main__": the logger of the module `python -m` runs (bertcore.data, parity.check, ...).
    for name in (*PACKAGES, "__main__"):
        log = logging.getLogger(name)
        if _CONSOLE not in log.handlers:
            log.addHandler(_CONSOLE)
        log.setLevel(logging.INFO)
    # A library that calls logging.basicConfig() (absl does, at its first message, when the
    # root logger has no handler) would repeat every project message a second time, as
    # "ERROR:bertcore.infra.errors:error: ...": its handler, already there or yet to come, passes
    # only other loggers' records.
    for h in logging.root.handlers:
        if type(h) is logging.StreamHandler and _not_ours not in h.filters:
            h.addFilter(_not_ours)
    if not logging.root.handlers:
        logging.root.addHandler(_OTHERS)


def notes_to_stderr() -> None:
    """Notes go to stderr for the rest of this command: its stdout is data (a report table)."""
    _CONSOLE.notes_to_stderr = True
