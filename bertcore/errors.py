"""User-facing errors and the one wrapper every command line uses.

A `UserError` is a mistake the user can fix (bad path, bad flag, mismatched files). Command lines
catch it and print one line, `error: <problem>. <fix>`, and exit with status 2: no traceback.
Anything else is a bug in this project and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import fcntl
except ImportError:   # not on Windows: concurrent builders then both build
    fcntl = None


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
            release_locks()
        return 0 if rc is None else int(rc)

    return wrapper


@contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success rename it onto `path`, on failure delete it.

    Whatever stood at `path` before stays untouched until the new file or directory is complete,
    so an interrupted write never leaves a half-written file where a good one was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir:
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _open_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a+")


@contextmanager
def file_lock(path: str | os.PathLike, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the `with` block: a process that
    builds something shared (a cache entry, an epoch file) takes it, and any other process that
    wants the same thing waits, then finds it built. `waiting()` runs once if another process
    holds the lock. The lock ends with the process, so a killed builder never blocks the next."""
    path = Path(path)
    with _open_lock(path) as f:
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None:
                    waiting()
                fcntl.flock(f, fcntl.LOCK_EX)
        yield


class Locked(UserError):
    """Another process holds a lock that `hold_lock` would not wait for."""


# The locks `hold_lock` took in this process, by path: `release_locks` (cli_entry, at the end of
# a command) frees them; the process's exit frees them anyway.
_HELD: dict[Path, Any] = {}


def hold_lock(path: str | os.PathLike, what: str) -> Path:
    """Take an exclusive lock on `path` (created if missing, our pid written into it) and keep it
    until `release_lock(path)`, `release_locks()` or the end of the process; never wait: if
    another process holds it, raise `Locked` naming `what` and the holder's pid. Taking a lock
    this process already holds first lets go of the old one (a command run again in-process).
    The file exists only while the lock is held (or after its holder was killed)."""
    path = Path(path).absolute()
    release_lock(path)
    for _ in range(10):
        f = _open_lock(path)
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                pid = f.read().strip() or "unknown"
                f.close()
                raise Locked(f"{what} is in use by another process (pid {pid}); wait for it to "
                             f"end or stop it, or choose another directory") from None
            try:
                same = os.path.samestat(os.fstat(f.fileno()), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:   # removed or replaced between our open and our lock: take the new one
                f.close()
                continue
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        _HELD[path] = f
        return path
    raise Locked(f"{what}: its lock file {path} keeps being replaced; is another process "
                 f"deleting it?")


def release_lock(path: str | os.PathLike) -> None:
    """Let go of a lock `hold_lock` took, removing its file first (while still held, so a
    process that opened the file meanwhile finds it replaced and takes the new one)."""
    path = Path(path).absolute()
    f = _HELD.pop(path, None)
    if f is None:
        return
    try:
        if os.path.samestat(os.fstat(f.fileno()), os.stat(path)):
            path.unlink()
    except FileNotFoundError:
        pass
    f.close()


def release_locks() -> None:
    for path in list(_HELD):
        release_lock(path)


def check_apart(out: str | os.PathLike, inputs: dict[str, "str | os.PathLike | None"],
                out_flag: str = "--out") -> Path:
    """Refuse an output that is a regular file, or that is, holds or lies inside one of the
    `inputs` ({flag: path or glob pattern}; None skipped, as callers skip names that are not
    paths, such as the corpus "builtin"): replacing or filling it would destroy or change what
    the command reads. Every command that writes a directory calls this before it reads or
    writes anything (train, classify train, prepare, tokenizer train, convert). Returns `out`."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out_flag} {out} is a file; {out_flag} names a directory to write: "
                        f"choose another path")
    o = out.resolve()
    for flag, given in inputs.items():
        if given is None or str(given) == "":
            continue
        p = _glob_root(Path(given).expanduser())
        if not p.exists():
            continue
        p = p.resolve()
        if o == p or p.is_relative_to(o) or o.is_relative_to(p):
            where = ("is" if o == p else "holds" if p.is_relative_to(o) else "lies inside")
            raise UserError(f"{out_flag} {out} {where} the input {flag} {given}: writing there "
                            f"would change the source itself; choose another {out_flag}")
    return out


def _glob_root(p: Path) -> Path:
    """The directory a glob pattern (data/*.parquet, shards/**/*.jsonl) searches; else `p`."""
    parts = p.parts
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return Path(*parts[:i]) if i else Path(".")
    return p
