"""The flag stage of both twins' train and classify commands (issue 34's probe, by class): a
bad flag is one `error:` line naming the flag, its value and the fix, exit status 2, no
traceback, and nothing written (no RUNDIR, no data cache), before any model is built. Each
test runs once per twin; a case a twin does not have (torch's --device, jax's multi-host
flags) is skipped for the other.

Classes and what the probe saw before: tracebacks (seeds beyond 2^64, negative classify seeds,
torch classify --lr nan, --device banana, --process-id 5 --num-processes 2); silent acceptance
(classify --grad-clip nan written into classify_config.json as NaN, classify --weight-decay -1,
--num-processes 0, --process-id alone, --stop-after beyond --steps, --resume with another
--corpus/--data/--init-from, --init-from with --config, --resume --overwrite, predict "";
--warmup-steps beyond --steps is warned about, not refused); misleading messages (jax classify --lr
nan told to "lower --lr"; --resume on a RUNDIR another process holds told to "drop --resume")."""

from __future__ import annotations

import dataclasses
import fcntl
import importlib
import json
import os
from pathlib import Path

import pytest

from helpers import assert_one_line_error

from bertcore.classify.cli import ClassifyConfig
from bertcore.model.config import TrainConfig
from bertcore.infra.flags import RANGES, SEED_LIMIT


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """`cli(twin, command, *argv)`: TWINbert.COMMAND's main(argv) in this process, with the
    data cache in tmp_path/cache; the result has returncode, stdout and stderr."""
    monkeypatch.setenv("TWINBERT_CACHE", str(tmp_path / "cache"))

    def run(twin: str, command: str, *argv: str):
        main = importlib.import_module(f"{twin}bert.{command}").main
        capsys.readouterr()
        try:
            rc = main(list(argv))
        except SystemExit as e:      # argparse's own errors
            rc = e.code
        out, err = capsys.readouterr()
        return type("Result", (), {"returncode": rc, "stdout": out, "stderr": err})()
    return run


def refused(p, *needles: str) -> None:
    """Exit 2, one `error:` line holding every needle, no traceback."""
    assert_one_line_error(p, *needles)
    assert p.returncode == 2, p.stderr


def nothing_written(tmp_path: Path, *keep: str) -> None:
    """tmp_path holds only what the test itself made (`keep`): no RUNDIR, no cache."""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def train_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["--preset", "tiny", "--corpus", str(tmp_path / "corpus.txt"), "--steps", "4",
            "--no-progress", "--out", str(tmp_path / "run"), *extra]


def classify_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--init-from", str(tmp_path / "model"), "--data",
            str(tmp_path / "train.jsonl"), "--no-progress", "--out", str(tmp_path / "run"), *extra]


BIG_SEED = str(2 ** 64)

# (command, twin or None for both, extra flags, words the error line must hold)
TRACEBACKS = [
    ("train", None, ("--seed", BIG_SEED), (f"--seed={BIG_SEED}", str(SEED_LIMIT - 1))),
    ("classify", None, ("--seed", BIG_SEED), (f"--seed={BIG_SEED}", str(SEED_LIMIT - 1))),
    ("classify", None, ("--seed", "-1"), ("--seed=-1", "from 0")),
    ("classify", None, ("--lr", "nan"), ("--lr=nan", "finite number > 0")),
    ("train", "torch", ("--device", "banana"), ("--device banana", "cpu", "cuda:N")),
    ("train", "jax", ("--coordinator", "127.0.0.1:1", "--process-id", "5", "--num-processes",
                      "2"), ("--process-id 5", "--num-processes 2", "0 to 1")),
]

SILENT = [
    ("classify", None, ("--grad-clip", "nan"), ("--grad-clip=nan", "finite number >= 0")),
    ("classify", None, ("--weight-decay", "-1"), ("--weight-decay=-1.0", ">= 0")),
    ("classify", None, ("--val-fraction", "inf"), ("--val-fraction=inf", "finite")),
    ("classify", None, ("--resume", "--overwrite"), ("--resume", "--overwrite", "one of them")),
    ("train", None, ("--lr", "inf"), ("--lr=inf", "finite number > 0")),
    ("train", None, ("--attention-dropout", "nan"), ("--attention-dropout=nan", "[0, 1)")),
    ("train", "jax", ("--num-processes", "0"), ("--num-processes=0", "positive integer")),
    ("train", "jax", ("--process-id", "1"), ("--process-id 1", "multi-host needs all",
                                             "drop them")),
    ("train", None, ("--stop-after", "9"), ("--stop-after 9", "--steps 4", "raise --steps")),
    ("train", None, ("--init-from", "somewhere", "--config", "config.json"),
     ("--init-from somewhere", "--config config.json", "ignored", "drop --config")),
    ("train", None, ("--resume", "--overwrite"), ("--resume", "--overwrite", "one of them")),
]


def per_twin(cases):
    """Each case once per twin that has the flag: (twin, command, extra, needles)."""
    return [(t, c, e, n) for c, only, e, n in cases for t in ("torch", "jax")
            if only in (None, t)]


def case_ids(cases):
    return [f"{t}: {' '.join(e)[:40]} ({c})" for t, c, e, n in cases]


@pytest.mark.parametrize("twin, command, extra, needles", per_twin(TRACEBACKS),
                         ids=case_ids(per_twin(TRACEBACKS)))
def test_tracebacks_are_one_line_errors(twin, cli, tmp_path, command, extra, needles):
    """Plain input that raised a traceback is a one-line error, with nothing written."""
    argv = (train_argv if command == "train" else classify_argv)(tmp_path, *extra)
    refused(cli(twin, command, *argv), *needles)
    nothing_written(tmp_path)


@pytest.mark.parametrize("twin, command, extra, needles", per_twin(SILENT),
                         ids=case_ids(per_twin(SILENT)))
def test_silent_acceptance_is_refused(twin, cli, tmp_path, command, extra, needles):
    """What was accepted and then ignored (or written as NaN) is refused at the flag stage."""
    argv = (train_argv if command == "train" else classify_argv)(tmp_path, *extra)
    refused(cli(twin, command, *argv), *needles)
    nothing_written(tmp_path)


def test_warmup_beyond_steps_is_warned(twin, cli, tmp_path):
    """--warmup-steps beyond --steps is warned about (a recipe's warmup with a short trial run
    is fair use, and a recipe's flags written out behave as the recipe), at the flag stage."""
    p = cli(twin, "train", *train_argv(tmp_path, "--warmup-steps", "10"))
    refused(p, "corpus.txt does not exist")     # (a later stage: the corpus is not there)
    assert "warning: --warmup-steps 10 is beyond --steps 4: the learning rate never" in p.stderr
    assert not (tmp_path / "run").exists()


def test_predict_refuses_an_empty_text(twin, cli, tmp_path):
    p = cli(twin, "classify", "predict", str(tmp_path / "model"), "a fine film", "  ")
    refused(p, "text 2 of 2 is empty", "non-empty")
    nothing_written(tmp_path)


def _fake_run(rundir: Path, info: dict, *files: str) -> dict[str, str]:
    """A RUNDIR with run.json (and `files`) but no checkpoint: what --resume reads first.
    Returns its files' contents, to check nothing changed."""
    rundir.mkdir()
    (rundir / "run.json").write_text(json.dumps(info))
    for f in files:
        (rundir / f).write_text("{}")
    return {p.name: p.read_text() for p in rundir.iterdir()}


def test_resume_refuses_other_data(twin, cli, tmp_path):
    """--resume with another --corpus/--data (train) or --data/--init-from (classify) than the
    run's: the new one would be ignored, so it is refused, naming the run's."""
    run = tmp_path / "run"
    before = _fake_run(run, {"framework": twin, "data": str(tmp_path / "cache-shards"),
                             "corpus": str(tmp_path / "old.txt"), "init_from": None})
    p = cli(twin, "train", *train_argv(tmp_path, "--resume"))
    refused(p, "--resume", str(tmp_path / "old.txt"), f"--corpus {tmp_path / 'corpus.txt'}",
            "drop --corpus")
    p = cli(twin, "train", *train_argv(tmp_path, "--resume", "--data", str(tmp_path / "d")))
    refused(p, "--resume", str(tmp_path / "cache-shards"), "drop --data")
    # the run's own corpus passes this check (and the half-made run fails a later one)
    p = cli(twin, "train", *train_argv(tmp_path, "--resume", "--corpus",
                                       str(tmp_path / "old.txt")))
    refused(p)
    assert "--corpus" not in p.stderr
    assert {f.name: f.read_text() for f in run.iterdir()} == before

    crun = tmp_path / "crun"
    _fake_run(crun, {"framework": twin, "task": "classify", "data": str(tmp_path / "old.jsonl"),
                     "validation": None, "init_from": {"path": str(tmp_path / "model")}},
              "classify_config.json")
    argv = classify_argv(tmp_path, "--resume")
    argv[argv.index("--out") + 1] = str(crun)
    p = cli(twin, "classify", *argv)
    refused(p, "--resume", str(tmp_path / "old.jsonl"), "drop --data")
    argv[argv.index("--data") + 1] = str(tmp_path / "old.jsonl")
    argv[argv.index("--init-from") + 1] = str(tmp_path / "other-model")
    p = cli(twin, "classify", *argv)
    refused(p, "--resume", str(tmp_path / "model"), "drop --init-from")
    nothing_written(tmp_path, "run", "crun")


def test_messages_name_the_real_problem(twin, cli, tmp_path):
    """A non-finite --lr is refused as such (jax classify told the user to "lower --lr");
    --resume on a RUNDIR another process holds, before its first checkpoint, names the holder
    (it said "drop --resume")."""
    p = cli(twin, "classify", *classify_argv(tmp_path, "--lr", "nan"))
    refused(p, "--lr=nan", "finite")
    assert "lower --lr" not in p.stderr
    nothing_written(tmp_path)

    for command, argv, info, files in (
            ("train", train_argv(tmp_path, "--resume"),
             {"framework": twin, "data": str(tmp_path / "d"), "corpus": None}, ()),
            ("classify", classify_argv(tmp_path, "--resume"),
             {"framework": twin, "task": "classify", "data": str(tmp_path / "train.jsonl")},
             ("classify_config.json",))):
        run = tmp_path / "run"
        _fake_run(run, info, *files)
        with open(run / ".lock", "a+") as holder:    # what RunDir.lock does in another process
            fcntl.flock(holder, fcntl.LOCK_EX)
            holder.write("424242\n")
            holder.flush()
            # another open file description: the lock conflicts as another process's would
            p = cli(twin, command, *argv)
        refused(p, f"run directory {run} is in use by another process (pid 424242)")
        assert "drop --resume" not in p.stderr
        assert not any((run / d).exists() for d in ("checkpoints", "metrics.jsonl"))
        for f in list(run.iterdir()):
            os.remove(f)
        run.rmdir()


def test_one_range_table_for_both_configs():
    """Every numeric setting of TrainConfig and ClassifyConfig has its row in
    bertcore.infra.flags.RANGES (what the flag stage and the configs' validate check), and the
    defaults are inside their ranges."""
    for cls in (TrainConfig, ClassifyConfig):
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                assert f.name in RANGES, (cls.__name__, f.name)
                assert RANGES[f.name].allows(default), (cls.__name__, f.name, default)
    with pytest.raises(Exception, match=r"seed=4294967296 must be an integer from 0"):
        TrainConfig(seed=SEED_LIMIT)
    with pytest.raises(Exception, match=r"grad-clip=nan must be a finite number >= 0"):
        ClassifyConfig(grad_clip=float("nan")).validate()
