"""User-facing errors and the one wrapper every command line uses.

A `UserError` is a mistake the user can fix (bad path, bad flag, mismatched files). Command lines
catch it and print one line, `error: <problem>. <fix>`, and exit with status 2: no traceback.
Anything else is a bug in this project and keeps its traceback. Atomic writes and file locks
live in bertcore.files.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable


class UserError(Exception):
    """A problem in the user's input, with a message that names it and the fix."""


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a `main(argv)` so that a UserError becomes one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            # Output piped into `head` and the like: stop quietly, as Unix tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            # The command is over: what it held (a run directory's lock) is free again, also
            # when `main` is called in a process that goes on (tests, notebooks).
            for release in list(_AT_COMMAND_END):
                release()
        return 0 if rc is None else int(rc)

    return wrapper


# What a command holds until it ends: bertcore.files.hold_lock registers the release of the
# locks it took here, so every command line lets them go when it returns.
_AT_COMMAND_END: list[Callable[[], None]] = []


def at_command_end(release: Callable[[], None]) -> None:
    """Run `release()` whenever a `cli_entry` command ends (once per distinct function)."""
    if release not in _AT_COMMAND_END:
        _AT_COMMAND_END.append(release)
