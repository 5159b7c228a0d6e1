"""A run directory, framework-free: `RunDir` is its one owner. Every command that writes a
RUNDIR (both twins' train and classify train, parity.convert, parity's curves) creates it here,
and every reader of run.json and the configs (the twins, fill-mask, --init-from, classify,
parity) reads them here.

    RUNDIR/.lock               held by the process that writes the run (its pid inside)
    RUNDIR/run.json            which twin owns the run, its data (written last: a directory
                               without it is no run yet)
    RUNDIR/config.json         the model; RUNDIR/train_config.json or classify_config.json
    RUNDIR/tokenizer/          the tokenizer
    RUNDIR/metrics.jsonl       one JSON object per logged step (or epoch)
    RUNDIR/checkpoints/        the twin's checkpoints: a run with none is not yet worth keeping
    RUNDIR/summary.json        at the end (a fine-tuning run stopped early has none yet)
    RUNDIR/loss.png, hf/       pretraining: the curves; the final weights as a Hugging Face
                               directory with its model card
    RUNDIR/best/               fine-tuning: the best epoch as a Hugging Face classifier
    RUNDIR/tb/                 TensorBoard event files (--report-to tensorboard)
    RUNDIR/wandb/              W&B's run folders and the W&B run id (--report-to wandb)

The rules it keeps: a run's files appear together or not at all (`create` builds them beside
the old ones and swaps them in), one process writes a run at a time (`lock`), a run with a
checkpoint is replaced only when asked (`check_target`), a replaced run is kept beside until the
new one has its first checkpoint and comes back if it fails before (`keep_new`, `discard`), and
files that are not a run's own are never deleted. docs/design.md ("The run directory") says
what each file holds.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bertcore.model.config import ModelConfig, TrainConfig, load_model_config
from bertcore.infra.errors import UserError, at_command_end
from bertcore.infra.files import Output, check_output, hold_lock, release_lock, write_text_atomic
from bertcore.train.metrics import read_metrics

logger = logging.getLogger(__name__)


def trained_model_config(model: ModelConfig, train: TrainConfig) -> ModelConfig:
    """The config the twins build their model with: `--no-dropout` zeroes the dropout rates
    (so checkpoints record what was trained, and both twins compare equal)."""
    return model if train.dropout else model.without_dropout()


FRAMEWORKS = ("torch", "jax")
# The names of a RUNDIR's files, here and nowhere else.
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
CONFIG = "config.json"
TRAIN_CONFIG = "train_config.json"
CLASSIFY_CONFIG = "classify_config.json"
TAG_CONFIG = "tag_config.json"          # a token-tagging run's (bertcore.tag)
TOKENIZER = "tokenizer"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
# A complete checkpoint in RUNDIR/checkpoints: torchbert's step_00000100/, orbax's (jaxbert's)
# 100/. Match with fullmatch; a temporary directory never matches (its name starts with ".").
CHECKPOINT_NAME = re.compile(r"step_(?P<torch>\d{8})|(?P<jax>\d+)")
# What a pretraining, classify or converted run writes in its directory; anything else there is
# the user's, and no command deletes it.
OWN_ENTRIES = frozenset({RUN_FILE, LOCK_FILE, CONFIG, TRAIN_CONFIG,
                         CLASSIFY_CONFIG, TAG_CONFIG, TOKENIZER, METRICS, SUMMARY,
                         "loss.png", "hf", "best", CHECKPOINTS, "tb", "wandb"})
# A run as the output of a command (bertcore.infra.files' one --overwrite check); the temporary
# entries of an interrupted write (`create`'s `.new-PID` / `.old-PID`, atomic_path's) are no one's.
RUN_OUTPUT = Output("a run", OWN_ENTRIES)


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint directory named `name` (CHECKPOINT_NAME), or None."""
    m = CHECKPOINT_NAME.fullmatch(name)
    return int(m["torch"] or m["jax"]) if m else None


@dataclass
class RunFiles:
    """The framework-free files of an existing RUNDIR: run.json and the two configs."""
    rundir: Path
    info: dict[str, Any]
    config: ModelConfig       # RUNDIR/config.json, dropout as the user set it
    train: TrainConfig

    @property
    def framework(self) -> str:
        return self.info["framework"]

    @property
    def trained_config(self) -> ModelConfig:
        """The config the twins build the model with, which their checkpoints record."""
        return trained_model_config(self.config, self.train)


# A file of a new run: its text, or a function that writes it at the path it is given.
Writer = str | Callable[[Path], Any]


class RunDir:
    """One run directory, existing or to be made."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._made = False      # `lock` created the directory (so a failed set-up removes it)
        self._locked = False
        self._aside: Path | None = None   # the run `create` replaced, until the first checkpoint
        self._recovered = False           # `lock` put back a run an interrupted --overwrite left

    def __str__(self) -> str:
        return str(self.path)

    # ---- what it holds -----------------------------------------------------------------------

    @property
    def info_path(self) -> Path:
        return self.path / RUN_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def is_run(self) -> bool:
        """Does it hold run.json (a pretraining, classify or converted run)?"""
        return self.info_path.is_file()

    def has_checkpoint(self) -> bool:
        """Does it hold a complete checkpoint (so it is a run worth keeping)?"""
        d = self.checkpoint_dir
        return d.is_dir() and any(p.is_dir() and checkpoint_step(p.name) is not None
                                  for p in d.iterdir())

    def foreign(self) -> list[str]:
        """The entries that are not a run's own (the user's files), sorted."""
        return RUN_OUTPUT.foreign(self.path)

    def info(self) -> dict[str, Any]:
        """run.json as a dict (any task)."""
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{self.path}/run.json is unreadable ({e}); is {self.path} a "
                            f"training run?")
        if not isinstance(info, dict):
            raise UserError(f"{self.path}/run.json must hold a JSON object; it is not a run "
                            f"directory this project wrote")
        return info

    def read(self) -> RunFiles:
        """A pretraining RUNDIR that a twin wrote: run.json and the two configs."""
        info = self.info()
        if info.get("framework") not in FRAMEWORKS:
            raise UserError(f"{self.path}/run.json names no framework (torch or jax); it is not "
                            f"a torchbert or jaxbert run directory")
        for f in ("config.json", "train_config.json"):
            if not (self.path / f).is_file():
                raise UserError(f"{self.path} lacks {f}; it is not a complete run directory")
        return RunFiles(self.path, info, load_model_config(self.path / "config.json"),
                        TrainConfig.from_json_file(self.path / "train_config.json"))

    # ---- making a new run --------------------------------------------------------------------

    def check_target(self, overwrite: bool, resume_hint: str = "pass --resume to continue it, ",
                     flag: str = "--out") -> None:
        """May a new run be made here? Refuses a file, a folder with files that are not a run's
        own (even with --overwrite: no command deletes them), and a run with a checkpoint unless
        `overwrite`. A run without a checkpoint (set up by a command that then failed) is no run
        to protect: the corrected command replaces it. Reads only."""
        p = self.path
        check_output(p, RUN_OUTPUT, flag=flag)     # a file, or the user's files
        if self.has_checkpoint() and not overwrite:    # run.json or not: checkpoints are work
            self.check_run_file(flag)
            raise UserError(f"{p} already holds another run; {resume_hint}--overwrite to "
                            f"start over, or choose another {flag}")

    def check_run_file(self, flag: str = "--out") -> None:
        """Refuse checkpoints without run.json (deleted by hand) with what is wrong: --resume
        needs run.json, and a new run here would replace the checkpoints."""
        if self.has_checkpoint() and not self.is_run():
            raise UserError(f"{self.path} holds checkpoints but no run.json (which names the twin "
                            f"and the data to resume with); restore {self.info_path} to resume "
                            f"the run, or pass --overwrite to start over, or choose another "
                            f"{flag}")

    def lock(self) -> None:
        """Hold RUNDIR's lock until `unlock` or the end of the command (bertcore.infra.errors'
        cli_entry) or process: another process that wants to write this run (either twin's
        train, --resume, --overwrite, classify train, convert) is refused, naming our pid.
        Creates the directory if needed: call it once every flag has been checked."""
        if self._locked:
            return
        self._made = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            hold_lock(self.path / LOCK_FILE, f"run directory {self.path}")
        except UserError:
            # Another process holds it: remove the directory only if we made it and it is still
            # empty (two new runs can both see it missing; the holder's lock file keeps it
            # non-empty, so the loser never deletes the winner's run).
            if self._made:
                try:
                    self.path.rmdir()
                except OSError:
                    pass
            raise
        self._locked = True
        self._recovered = self._recover()

    def _recover(self) -> bool:
        """A run that --overwrite replaced, left beside by a process killed before the new run's
        first checkpoint (`create`'s `.old-PID`), comes back; one whose new run did checkpoint
        is deleted. An aside without its mark (the kill came during the swap itself) always
        comes back, its files winning over the half-placed new ones. Called holding the lock,
        so its writer is gone. Returns whether a run came back."""
        back = False
        for aside in self.path.glob(".old-*"):
            if not aside.is_dir() or not aside.name[5:].isdigit():
                continue
            if (aside / _SWAPPED).exists() and self.has_checkpoint():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                self._aside = aside
                self._put_back()
                back = True
        return back

    def recover(self) -> bool:
        """Put back a run an interrupted --overwrite left beside, before anything reads RUNDIR
        (a --resume must not read the half-made run that replaced it); True if one came back.
        Takes the lock for a moment (refused, naming the holder, while a process writes it)."""
        if not any(p.is_dir() for p in self.path.glob(".old-*")):
            return False
        if self._locked:
            return self._recover()
        self.lock()
        try:
            return self._recovered
        finally:
            self.unlock()

    def unlock(self) -> None:
        if self._locked:
            release_lock(self.path / LOCK_FILE)
            self._locked = False

    def discard(self) -> None:
        """Undo a set-up or a run that failed before its first checkpoint: the run that
        `create` replaced comes back (--overwrite loses nothing until the new run has something
        to resume from), the directory goes if `lock` made it, and the lock is let go."""
        if self._aside is not None:
            self._put_back()
        if self._locked and self._made:
            shutil.rmtree(self.path, ignore_errors=True)
        self.unlock()

    def keep_new(self) -> None:
        """The new run has its first checkpoint: the run `create` replaced is deleted now."""
        if self._aside is not None:
            shutil.rmtree(self._aside, ignore_errors=True)
            self._aside = None
            _REPLACING.discard(self)

    def _put_back(self) -> None:
        """The new run's own files out, the replaced run's back in (its run.json last). The
        aside's mark goes first: a kill in between leaves an unmarked aside, which the next
        lock puts back (`_recover`)."""
        aside, self._aside = self._aside, None
        _REPLACING.discard(self)
        whole = (aside / _SWAPPED).exists()
        (aside / _SWAPPED).unlink(missing_ok=True)
        # After a whole swap every run file here is the new run's; after an interrupted one
        # only those the aside has a copy of may be (the rest are the old run's, never moved).
        for p in self.path.iterdir():
            if (p.name in OWN_ENTRIES and p.name != LOCK_FILE
                    and (whole or (aside / p.name).exists())):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        for p in sorted(aside.iterdir(), key=lambda p: p.name == RUN_FILE):
            p.rename(self.path / p.name)
        aside.rmdir()

    def create(self, info: dict[str, Any], files: dict[str, Writer]) -> None:
        """Write a new run: `files` ({name: text or writer}, the tokenizer among them) and then
        run.json, into a staging folder beside the old run's files, then swap them in (the old
        run's own files moved aside, deleted only once the new ones are in place, put back if
        anything fails). The user's files, if any, are left alone."""
        self.path.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        stage, aside = self.path / f".new-{pid}", self.path / f".old-{pid}"
        for d in (stage, aside):
            shutil.rmtree(d, ignore_errors=True)
        stage.mkdir()
        try:
            for name, write in {**files, RUN_FILE: json.dumps(info, indent=2) + "\n"}.items():
                if isinstance(write, str):
                    (stage / name).write_text(write, encoding="utf-8")
                else:
                    write(stage / name)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        # run.json goes first and comes last, so the directory never looks like a half run
        old = sorted((p for p in self.path.iterdir()
                      if p.name in OWN_ENTRIES and p.name != LOCK_FILE),
                     key=lambda p: p.name != RUN_FILE)
        new = sorted(stage.iterdir(), key=lambda p: p.name == RUN_FILE)
        moved: list[Path] = []
        placed: list[Path] = []
        try:
            aside.mkdir()
            for p in old:
                p.rename(aside / p.name)
                moved.append(p)
            for p in new:
                p.rename(self.path / p.name)
                placed.append(self.path / p.name)
        except BaseException:
            for p in placed:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            for p in reversed(moved):
                (aside / p.name).rename(p)
            shutil.rmtree(stage, ignore_errors=True)
            shutil.rmtree(aside, ignore_errors=True)
            raise
        shutil.rmtree(stage, ignore_errors=True)
        if moved:
            # The replaced run waits beside until the new one checkpoints (`keep_new`); a
            # failure before then puts it back (`discard`, or at the end of the command). The
            # mark says the swap is whole (a kill during it leaves an aside without one).
            (aside / _SWAPPED).touch()
            self._aside = aside
            _REPLACING.add(self)
        else:
            shutil.rmtree(aside, ignore_errors=True)

    def write_file(self, name: str, text: str) -> None:
        """Replace one file of the run atomically (a resumed run's train config)."""
        write_text_atomic(self.path / name, text)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json, the record of a finished (or stopped) run."""
        self.write_file(SUMMARY, json.dumps(summary, indent=2) + "\n")

    # ---- metrics -----------------------------------------------------------------------------

    def metrics_until(self, step: int) -> list[dict[str, Any]]:
        """The metrics lines of steps <= `step`; a line that cannot be read is named in a
        warning (it is dropped: the rows after `step` are logged again on resume)."""
        bad: list[int] = []
        rows = [m for m in read_metrics(self.metrics_path, bad) if m["step"] <= step]
        if bad:
            logger.warning(f"warning: {self.metrics_path}: line{'s' if len(bad) > 1 else ''} "
                           f"{', '.join(map(str, bad[:5]))} {'are' if len(bad) > 1 else 'is'} "
                           f"not a metrics row (cut off when the run was stopped, or damaged) "
                           f"and {'are' if len(bad) > 1 else 'is'} dropped; the steps after "
                           f"{step} are logged again from the checkpoint")
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        write_text_atomic(self.metrics_path, "".join(json.dumps(m) + "\n" for m in rows))

    def truncate_metrics(self, step: int) -> list[dict[str, Any]]:
        """Keep the lines of steps <= `step` (a resumed run logs the later ones again)."""
        kept = self.metrics_until(step)
        self.write_metrics(kept)
        return kept

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


# In a replaced run's `.old-PID`: the swap that moved it there is complete.
_SWAPPED = ".swapped"

# The runs being replaced by this process whose new run has no checkpoint yet: a command that
# ends without one (a failure, a signal during the set-up) puts the old run back.
_REPLACING: set[RunDir] = set()


def _put_back_replaced() -> None:
    for rundir in list(_REPLACING):
        rundir.discard()


at_command_end(_put_back_replaced)   # registered first, so it runs while the lock is still held


def read_run(rundir: str | Path) -> RunFiles:
    """Open a RUNDIR that a twin wrote (`RunDir(rundir).read()`)."""
    return RunDir(rundir).read()


def copy_tree(src: Path) -> Callable[[Path], None]:
    """A `create` writer that copies the directory `src` (another run's tokenizer)."""
    return lambda dst: shutil.copytree(src, dst)

