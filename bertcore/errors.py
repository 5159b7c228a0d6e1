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
        return 0 if rc is None else int(rc)

    return wrapper
