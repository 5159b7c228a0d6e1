"""Files, framework-free: atomic writes, file locks, the cache root, disk space, and the one-line
error of a checkpoint that could not be written.

    atomic_path(path) / write_text_atomic   a file or directory appears complete or not at all
    remove_stale_temps(path)                what killed writers of `path` left beside it
    file_lock(path)                         one process builds a shared thing, the others wait
    hold_lock(path) / release_lock(s)       a command's exclusive hold (a run directory), never
                                            waited for: a second writer is refused
    check_apart(out, inputs)                an output is never an input, nor inside one
    Output / check_output / replace_output  the one --overwrite of every command: a target that
                                            holds what the command does not write is refused,
                                            and the new output replaces the old in one swap
    cache_root()                            where tokenizers, shards, downloads and caches live
    format_bytes / free_bytes / warn_if_low_space
    CheckpointWriteError / write_failure / os_error_in
                                            a save that failed (disk full, permissions, I/O),
                                            reported in one line with its exit code
    writing(path, what)                     the same for any other output (prepare, tokenizer,
                                            convert): one line, no traceback
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Any, Callable, Iterator

from bertcore.infra.errors import UserError, at_command_end

try:
    import fcntl
except ImportError:   # not on Windows: concurrent builders then both build
    fcntl = None


# ---- atomic writes and locks --------------------------------------------------------------------

@contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False,
                before_swap: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success rename it onto `path`, on failure delete it.

    Whatever stood at `path` before stays untouched until the new file or directory is complete,
    so an interrupted write never leaves a half-written file where a good one was; a directory
    that cannot be swapped in puts the old one back. `before_swap()` runs once the new one is
    complete, just before the swap: it may refuse it (by raising; the old one then stays).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name: `remove_stale_temps` tells a killed writer's leftovers from
    # a live one's.
    prefix = f".{path.name}.tmp-{os.getpid()}-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if before_swap is not None:
            before_swap()
        if is_dir:
            if path.exists() or path.is_symlink():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                _remove(old)    # a leftover of this pid's earlier, killed swap
                path.rename(old)
                try:
                    tmp.rename(path)
                except BaseException:
                    old.rename(path)    # the old one comes back
                    raise
                _remove(old)    # a directory, or a file that the new directory replaces
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


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:     # another user's process (PermissionError): alive
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete what `atomic_path(path)` writers that were killed (SIGTERM, SIGKILL) left beside
    `path`: `.NAME.tmp-PID-*` and `.NAME.old-PID` whose process no longer runs on this host.
    Call it where no other host writes `path` at the same time (under the cache lock, say: a pid
    is only this host's). Returns what was removed."""
    path = Path(path)
    stale = re.compile(rf"\.{re.escape(path.name)}\.(?:tmp-(\d+)-.+|old-(\d+))")
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = stale.fullmatch(p.name)
        if m and not _alive(int(m.group(1) or m.group(2))):
            _remove(p)
            removed.append(p)
    return removed


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
        at_command_end(release_locks)
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


# ---- outputs a command replaces (--overwrite) ---------------------------------------------------

# Temporary entries of an interrupted write, inside an output directory: atomic_path's
# `.NAME.tmp-PID-*` / `.NAME.old-PID` (a tokenizer/ or a file written in place) and RunDir.create's
# `.new-PID` / `.old-PID`. They are nobody's work: no check counts them as the user's.
TEMP_ENTRY = re.compile(r"\.((new|old)-\d+|.+\.tmp-.+|.+\.old-\d+)")


@dataclass(frozen=True)
class Output:
    """What one command writes in its output directory, named by the module that owns the
    layout (a RUNDIR: bertcore.train.rundir; a data directory: bertcore.data.shards; a tokenizer:
    bertcore.data.tokenizer; a Hugging Face directory: bertcore.model.hf). Anything else in the
    directory is the user's, and no command deletes it, --overwrite or not.

    `noun` ("a run", "a tokenizer") names the output in messages; `entries` are the names it
    writes, `patterns` the names it writes by number (tokens-00000.bin)."""
    noun: str
    entries: AbstractSet[str]
    patterns: tuple[str, ...] = ()

    def owns(self, name: str) -> bool:
        return (name in self.entries or TEMP_ENTRY.fullmatch(name) is not None
                or any(re.fullmatch(p, name) for p in self.patterns))

    def foreign(self, path: str | os.PathLike) -> list[str]:
        """The entries of directory `path` that are not this output's (the user's), sorted."""
        p = Path(path)
        if not p.is_dir():
            return []
        return sorted(e.name for e in p.iterdir() if not self.owns(e.name))


def check_output(path: str | os.PathLike, output: Output, overwrite: bool | None = None,
                 flag: str = "--out") -> Path:
    """May `output` be written at `path`? The check every command that writes a directory makes
    before it reads or writes anything. Refuses a file, and a directory holding entries that are
    not `output`'s (even with --overwrite: naming up to 3 of them and the fix); with `overwrite`
    given (not None), also a non-empty directory without it. Reads only. Returns `path`."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p} is a file; {flag} names {output.noun} directory: choose "
                        f"another {flag}")
    foreign = output.foreign(p)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(f"{p} already holds files that are not {output.noun}'s ({shown}); "
                        f"--overwrite replaces only {output.noun}, so choose another {flag} (or "
                        f"move those files away)")
    if overwrite is False and p.is_dir() and any(not TEMP_ENTRY.fullmatch(e.name)
                                                 for e in p.iterdir()):
        raise UserError(f"{p} already exists; pass --overwrite to replace it, or choose another "
                        f"{flag}")
    return p


@contextmanager
def replace_output(path: str | os.PathLike, output: Output, flag: str = "--out"
                   ) -> Iterator[Path]:
    """Yield an empty directory beside `path` to build the new `output` in; when the block ends
    it is swapped in for whatever `path` held (`atomic_path`): the old output stays until the
    new one is complete and in place, and comes back if the swap fails; if the block fails, the
    new one is deleted and the old one never moved. Just before the swap `path` is checked again
    (`check_output`): a file the user put there meanwhile refuses the swap, never is deleted."""
    with atomic_path(path, is_dir=True,
                     before_swap=lambda: check_output(path, output, flag=flag)) as tmp:
        yield tmp


def _glob_root(p: Path) -> Path:
    """The directory a glob pattern (data/*.parquet, shards/**/*.jsonl) searches; else `p`."""
    parts = p.parts
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return Path(*parts[:i]) if i else Path(".")
    return p


def cache_root() -> Path:
    """Where built tokenizers, shards, epochs, the IMDB download and the jax compilation cache
    live: $TWINBERT_CACHE, else $XDG_CACHE_HOME/twinbert, else ~/.cache/twinbert (one root for
    everything)."""
    if os.environ.get("TWINBERT_CACHE"):
        return Path(os.environ["TWINBERT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "twinbert"


# ---- disk space ----------------------------------------------------------------------------------

def format_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024; whole bytes below a kilobyte)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the disk that holds `path` (or its nearest existing parent); None if
    unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def warn_if_low_space(path: str | os.PathLike, needed: int, note: Callable[[str], None],
                      _warned: set = set()) -> None:
    """Before a save: warn (once per directory) when the disk holds fewer than two more
    checkpoints of this size, so a user can free space before one fails."""
    free = free_bytes(path)
    key = str(path)
    if free is not None and free < 2 * needed and key not in _warned:
        _warned.add(key)
        note(f"warning: {format_bytes(free)} free on the disk of {path}, about "
             f"{format_bytes(needed)} needed per checkpoint; free space before a save fails")


# ---- checkpoint writes that fail -----------------------------------------------------------------

class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, permissions, I/O error)."""

    exit_code = 74   # EX_IOERR; bertcore.train.stopping lists every exit code of a run


# The errors a failed write reports that `write_failure` gives advice for.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EIO, errno.EPERM)


def os_error_in(e: BaseException) -> OSError | None:
    """The OSError behind a failed write `e`: `e` itself, one in its chain of causes and contexts,
    or else the one `os_error_from_message` recognises in its text; None when there is none (a
    bug, which keeps its traceback)."""
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            return cur
        cur = cur.__cause__ or cur.__context__
    return os_error_from_message(str(e))


def os_error_from_message(text: str) -> OSError | None:
    """The OSError whose strerror ('No space left on device', ...) appears in `text`, or None.

    The one place that reads an error's text: tensorstore, which writes jaxbert's checkpoints,
    reports a failed write as a ValueError whose message quotes the operating system's strerror
    and carries no errno and no OSError cause, so the text is all there is. Only the errnos a
    write reports are looked for (`WRITE_ERRNOS`)."""
    for code in WRITE_ERRNOS:
        if os.strerror(code) in text:
            return OSError(code, os.strerror(code))
    return None


def write_failure(e: OSError, path: str | os.PathLike, needed: int | None,
                  last_good: str | os.PathLike | None) -> CheckpointWriteError:
    """The one-line error for a checkpoint that could not be written to `path`."""
    what = e.strerror or str(e)
    msg = f"could not write checkpoint {path}: {what}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(path)
        msg += (f" (about {format_bytes(needed or 0)} needed, "
                f"{format_bytes(free) if free is not None else 'unknown'} free)")
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        msg += " (check the permissions of the run directory)"
    msg += (f"; the last good checkpoint is kept: {last_good}" if last_good else
            "; there is no earlier checkpoint")
    msg += "; free space or fix the directory, then --resume"
    return CheckpointWriteError(msg)


# ---- other outputs that fail ------------------------------------------------------------------

def write_error(e: OSError, path: str | os.PathLike, what: str, kept: bool) -> UserError:
    """The one-line error for output `what` (a data directory, a tokenizer) that could not be
    written to `path`: the reason, the space on a full disk, and whether the old `path` is kept."""
    reason = e.strerror or str(e)
    msg = f"could not write {what} {path}: {reason}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(path)
        msg += f" ({format_bytes(free) if free is not None else 'unknown'} free)"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = e.filename or Path(path).parent
        msg += f" (check the permissions of {where})"
    msg += (f"; the earlier {path} is kept as it was" if kept else "; nothing was left behind")
    msg += "; free space or fix the directory, then run the command again"
    return UserError(msg)


@contextmanager
def writing(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Run a block that writes output `path`: a write that fails there (disk full, quota,
    read-only disk, permissions, I/O error, whatever wraps the OSError) becomes one line
    (`write_error`) instead of a traceback. Whatever wrote `path` inside the block must leave it
    as it was on failure (`replace_output`, `atomic_path`); errors that are no failed write (a
    bug, a UserError) pass unchanged."""
    existed = Path(path).exists()
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        err = os_error_in(e)
        if err is None or err.errno not in WRITE_ERRNOS:
            raise
        raise write_error(err, path, what, kept=existed and Path(path).exists()) from None
