"""RUNDIR's one owner (bertcore.train.rundir.RunDir) and what it guarantees at the command lines:
nothing of the user's is deleted, a failed command leaves nothing that blocks the corrected one,
one process writes a run at a time, no output is written over or into an input, and --resume
refuses another model. The training cases run torchbert in-process (the twins share set-up)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bertcore.model.config import TrainConfig
from bertcore.infra.errors import UserError
from bertcore.infra.files import atomic_path, check_apart, remove_stale_temps
from bertcore.train.rundir import RunDir
from helpers import (ROOT, assert_one_line_error, base_args, metrics, program, run_cli,
                     train_in_process, write_corpus)

TWIN = "torch"


def train(*args: str, env: dict) -> subprocess.CompletedProcess:
    return train_in_process(TWIN, *args, env=env)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A corpus, a data cache and one finished 2-step run (copied by each test that alters it)."""
    tmp = tmp_path_factory.mktemp("rundir")
    env = {"TWINBERT_CACHE": str(tmp / "cache")}
    corpus = write_corpus(tmp)
    run = tmp / "run"
    ok(train(*base_args(corpus, run, "--steps", "2", "--checkpoint-every", "2"), env=env))
    return corpus, run, env


def copy_run(made, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(made[1], dst)
    return dst


# ---- RunDir itself ---------------------------------------------------------------------------

def test_check_target_protects_runs_with_checkpoints_and_never_user_files(tmp_path):
    d = RunDir(tmp_path / "r")
    d.check_target(overwrite=False)                      # nothing there yet
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{}")    # a half-made run: no checkpoint
    (tmp_path / "r" / "run.json").write_text("{}")
    d.check_target(overwrite=False)
    (tmp_path / "r" / "checkpoints" / "step_00000002").mkdir(parents=True)
    with pytest.raises(UserError, match="already holds another run.*--overwrite"):
        d.check_target(overwrite=False)
    d.check_target(overwrite=True)
    (tmp_path / "r" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"not a run's \(notes.txt\)"):
        d.check_target(overwrite=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        RunDir(tmp_path / "f").check_target(overwrite=True)
    # checkpoints whose run.json was deleted: what is missing and how to resume, not a loop
    # between "drop --resume" and "pass --resume"
    (tmp_path / "r" / "notes.txt").unlink()
    (tmp_path / "r" / "run.json").unlink()
    for check in (lambda: d.check_target(overwrite=False), d.check_run_file):
        with pytest.raises(UserError, match=r"checkpoints but no run.json.*restore .*run.json "
                                            r"to resume.*--overwrite"):
            check()
    d.check_target(overwrite=True)


def test_create_swaps_a_run_in_whole_and_puts_the_old_back_on_failure(tmp_path):
    d = RunDir(tmp_path / "r")
    d.create({"framework": "torch"}, {"config.json": "new\n", "tokenizer":
                                      lambda p: (p.mkdir(), (p / "vocab.txt").write_text("a"))})
    assert json.loads(d.info_path.read_text()) == {"framework": "torch"}
    before = snapshot(d.path)

    def broken(p: Path):
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        d.create({"framework": "jax"}, {"config.json": "other\n", "tokenizer": broken})
    assert snapshot(d.path) == before
    assert sorted(p.name for p in d.path.iterdir()) == ["config.json", "run.json", "tokenizer"]
    d.create({"framework": "jax"}, {"config.json": "other\n"})   # the old tokenizer/ goes too
    assert sorted(p.name for p in d.path.iterdir()
                  if not p.name.startswith(".old-")) == ["config.json", "run.json"]
    # ... but waits beside until the new run has a checkpoint: a failure before then puts the
    # old run back, whole (--overwrite loses nothing until the new run can be resumed)
    (d.checkpoint_dir / "step_00000001").mkdir(parents=True)   # the new run's, then it fails
    d.discard()
    assert snapshot(d.path) == before
    d.create({"framework": "jax"}, {"config.json": "other\n"})
    d.keep_new()                                      # its first checkpoint: the old one goes
    assert sorted(p.name for p in d.path.iterdir()) == ["config.json", "run.json"]


def test_truncate_metrics(tmp_path):
    d = RunDir(tmp_path)
    for s in (1, 2, 3):
        d.append_metrics({"step": s})
    assert d.truncate_metrics(2) == [{"step": 1}, {"step": 2}]
    assert [json.loads(x)["step"] for x in d.metrics_path.read_text().splitlines()] == [1, 2]


def test_truncate_metrics_names_a_torn_or_damaged_line(tmp_path, caplog):
    """A line cut off by a kill (or damaged) is named in a warning on resume, not dropped without
    a word; a damaged line in the middle no longer hides every row after it."""
    d = RunDir(tmp_path)
    d.append_metrics({"step": 1})
    with open(d.metrics_path, "a", encoding="utf-8") as f:
        f.write('{"step": 2, "lo\n{"step": 3}\n{"step": 4, "lo')
    with caplog.at_level("WARNING"):
        kept = d.truncate_metrics(3)
    assert kept == [{"step": 1}, {"step": 3}]
    assert "lines 2, 4 are not a metrics row" in caplog.text and "after 3" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert d.truncate_metrics(3) == kept     # rewritten clean: nothing more to say
    assert "not a metrics row" not in caplog.text


def hold(rundir: Path) -> subprocess.Popen:
    """Another process that holds RUNDIR's lock (as a live run does)."""
    p = subprocess.Popen(program("hold_lock", str(rundir)), cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_refuses_a_second_writer_naming_its_pid(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(UserError, match=f"in use by another process \\(pid {holder.pid}\\)"):
            RunDir(tmp_path).lock()
    finally:
        holder.kill()
        holder.wait()
    d = RunDir(tmp_path)
    d.lock()           # the holder is gone: free
    d.lock()
    d.unlock()


def test_check_apart(tmp_path):
    d = tmp_path / "x"
    (d / "c.txt").parent.mkdir()
    (d / "c.txt").write_text("a")
    for out, inp, where in ((d, d, "is"), (d, d / "c.txt", "holds"), (d / "sub", d, "lies inside"),
                            (d / "sub", tmp_path / "x" / "*.txt", "lies inside")):
        with pytest.raises(UserError, match=f"{where} the input --corpus"):
            check_apart(out, {"--corpus": inp})
    assert check_apart(tmp_path / "y", {"--corpus": d, "--data": None}) == tmp_path / "y"
    with pytest.raises(UserError, match="is a file"):
        check_apart(d / "c.txt", {})


# ---- train: validate everything first, never delete what is not a run's -----------------------

@pytest.mark.parametrize("flag, value, needle", [
    ("--mask-prob", "1.5", "mask-prob=1.5"), ("--beta1", "1.5", "beta1=1.5"),
    ("--eps", "-1", "eps=-1"), ("--lr", "nan", "lr=nan"), ("--seed", "-1", "seed=-1"),
    ("--weight-decay", "-1", "weight-decay=-1"), ("--grad-clip", "-1", "grad-clip=-1"),
    ("--pad-vocab", "0", "--pad-vocab 0"), ("--stop-signals", "FOO", "SIGFOO"),
    ("--time-budget", "abc", "abc"), ("--eval-batches", "0", "--eval-batches 0"),
    ("--eval-every", "-3", "--eval-every -3"), ("--stop-after", "0", "--stop-after 0"),
    ("--eval-every", "5", "no held-out data")])
def test_overwrite_with_a_bad_flag_keeps_the_old_run(made, tmp_path, flag, value, needle):
    corpus, _, env = made
    run = copy_run(made, tmp_path)
    before = snapshot(run)
    bad = (flag, value)
    assert_one_line_error(train(*base_args(corpus, run, "--overwrite", *bad), env=env),
                          needle)
    assert snapshot(run) == before
    fresh = tmp_path / "fresh"
    assert_one_line_error(train(*base_args(corpus, fresh, *bad), env=env))
    assert not fresh.exists()            # nothing written for a refused command


def test_overwrite_never_deletes_a_folder_of_user_files(made, tmp_path):
    corpus, _, env = made
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("x")
    assert_one_line_error(train(*base_args(corpus, d, "--overwrite", "--steps", "1"),
                                env=env), "notes.txt", "--overwrite")
    assert [p.name for p in d.iterdir()] == ["notes.txt"]


def test_overwrite_replaces_a_run(made, tmp_path):
    corpus, _, env = made
    run = copy_run(made, tmp_path)
    ok(train(*base_args(corpus, run, "--overwrite", "--steps", "1",
                        "--checkpoint-every", "1"), env=env))
    assert [m["step"] for m in metrics(run)] == [1]
    assert json.loads((run / "train_config.json").read_text())["steps"] == 1
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_a_failure_after_set_up_does_not_block_the_corrected_command(made, tmp_path,
                                                                     monkeypatch):
    """An error the twin finds after set-up (its optimizer, the --init-from weights) leaves a
    run directory without a checkpoint: the corrected command reuses it, no --overwrite."""
    import torchbert.train as tt

    corpus, _, env = made
    out = tmp_path / "r"

    def refuse(*a, **k):
        raise UserError("the optimizer refuses")
    monkeypatch.setattr(tt, "make_optimizer", refuse)
    assert_one_line_error(train(*base_args(corpus, out, "--steps", "1"), env=env),
                          "optimizer refuses")
    assert (out / "run.json").is_file()
    monkeypatch.undo()
    p = train(*base_args(corpus, out, "--steps", "1", "--resume"), env=env)
    assert_one_line_error(p, "no checkpoint", "drop --resume")
    ok(train(*base_args(corpus, out, "--steps", "1"), env=env))


def test_an_input_is_never_an_output(made, tmp_path):
    corpus, run, env = made
    d = tmp_path / "corpus"
    d.mkdir()
    shutil.copy(corpus, d / "c.txt")
    assert_one_line_error(train(*base_args(d / "c.txt", d, "--steps", "1"), env=env),
                          "holds the input --corpus")
    assert_one_line_error(train(*base_args(corpus, run / "sub", "--init-from", str(run),
                                           "--steps", "1"), env=env),
                          "lies inside the input --init-from")
    tok = tmp_path / "tok"
    p = run_cli("-m", "bertcore.tokenizer", "train", "--corpus", str(d), "--vocab-size", "200",
                "--out", str(d / "tok"))
    assert_one_line_error(p, "lies inside the input --corpus")
    assert run_cli("-m", "bertcore.tokenizer", "train", "--corpus", str(d), "--vocab-size",
                   "200", "--out", str(tok)).returncode == 0
    p = run_cli("-m", "bertcore.data", "prepare", "--corpus", str(d), "--tokenizer", str(tok),
                "--out", str(d), "--overwrite", "--no-progress")
    assert_one_line_error(p, "is the input --corpus")
    assert (d / "c.txt").is_file()
    p = run_cli("-m", "bertcore.data", "prepare", "--corpus", str(d), "--tokenizer", str(tok),
                "--out", str(d / "c.txt"), "--no-progress")
    assert_one_line_error(p, "is a file")
    from parity.convert import convert
    with pytest.raises(UserError, match="lies inside the input SRC"):
        convert(run, run / "jaxcopy", "jax")
    assert not (run / "jaxcopy").exists()


# ---- a killed writer's temp files do not stay ---------------------------------------------------

def test_atomic_path_replaces_a_file_with_a_directory_and_leaves_nothing(tmp_path):
    f = tmp_path / "out"
    f.write_text("a file")
    with atomic_path(f, is_dir=True) as tmp:
        (tmp / "x").write_text("1")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (f / "x").read_text() == "1"


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", ""])
    p.wait()
    return p.pid


def test_stale_temps_of_dead_writers_are_removed_and_a_live_ones_kept(made, tmp_path):
    pid = dead_pid()
    f = tmp_path / "out"
    for name in (f".out.tmp-{pid}-abc", f".out.old-{pid}", f".out.tmp-{os.getpid()}-xyz",
                 f".other.tmp-{pid}-abc"):
        (tmp_path / name).mkdir()
    assert sorted(p.name for p in remove_stale_temps(f)) == [f".out.old-{pid}",
                                                             f".out.tmp-{pid}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".other.tmp-{pid}-abc",
                                                          f".out.tmp-{os.getpid()}-xyz"]
    # the corpus cache: the next run on the corpus removes a killed build's temp (SIGTERM
    # during tokenizing), under the cache's lock
    corpus, _, env = made
    shards = Path(env["TWINBERT_CACHE"]) / "shards"
    (data,) = [p for p in shards.iterdir() if not p.name.startswith(".")]
    stale = shards / f".{data.name}.tmp-{pid}-q1w2e3"
    stale.mkdir()
    ok(train(*base_args(corpus, tmp_path / "run", "--steps", "1"), env=env))
    assert not stale.exists()


# ---- a run has one writer ---------------------------------------------------------------------

def test_a_live_run_refuses_a_second_writer(made, tmp_path):
    corpus, _, env = made
    run = copy_run(made, tmp_path)
    before = snapshot(run)
    holder = hold(run)
    try:
        for extra in (("--resume",), ("--overwrite",)):
            p = train(*base_args(corpus, run, "--steps", "2", "--checkpoint-every", "2",
                                 *extra), env=env)
            assert_one_line_error(p, "in use by another process", f"pid {holder.pid}")
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    # and a run that ended (or died) holds nothing: a second command is not refused
    ok(train(*base_args(corpus, run, "--steps", "2", "--checkpoint-every", "2",
                        "--overwrite"), env=env))


# ---- --resume is the run's own model ----------------------------------------------------------

@pytest.mark.parametrize("flags, name", [(("--preset", "mini"), "preset"),
                                         (("--layer-norm-position", "pre"),
                                          "layer_norm_position"),
                                         (("--attention-dropout", "0"), "attention_dropout")])
def test_resume_refuses_other_model_flags(made, tmp_path, flags, name):
    corpus, _, env = made
    run = copy_run(made, tmp_path)
    before = snapshot(run)
    p = train(*base_args(corpus, run, "--steps", "2", "--checkpoint-every", "2",
                         "--resume", *flags), env=env)
    assert_one_line_error(p, f"changed settings ({name})")
    assert snapshot(run) == before


def test_resume_of_a_hand_edited_run_is_one_line(made, tmp_path):
    corpus, _, env = made
    run = copy_run(made, tmp_path)
    args = base_args(corpus, run, "--steps", "2", "--checkpoint-every", "2", "--resume")
    saved = json.loads((run / "train_config.json").read_text())
    for text, needle in ((json.dumps({**saved, "beta1": 1.5}), "beta1=1.5"),
                         ("[1, 2]", "JSON object"), ("\udcff", "cannot read")):
        (run / "train_config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        assert_one_line_error(train(*args, env=env), needle)
    (run / "train_config.json").write_text(json.dumps(saved))
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "hidden_dropout_prob": "0.1"}))
    assert_one_line_error(train(*args, env=env), "hidden_dropout_prob='0.1'")


def test_resume_of_a_data_run_whose_data_is_gone_is_one_line(made, tmp_path):
    """A --data run's prepared directory is the user's: when it is gone, --resume says so (the
    cache of a --corpus run is rebuilt instead)."""
    corpus, _, env = made
    run = copy_run(made, tmp_path)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "data": str(tmp_path / "gone"),
                                              "corpus": None}))
    args = base_args(corpus, run, "--steps", "2", "--checkpoint-every", "2", "--resume")
    del args[args.index("--corpus"):args.index("--corpus") + 2]   # a --data run takes none
    assert_one_line_error(train(*args, env=env), "data directory", str(tmp_path / "gone"),
                          "prepare")


def test_train_config_refuses_what_an_optimizer_cannot_use():
    for kw, needle in ((dict(beta1=1.0), "beta1"), (dict(beta2=-0.1), "beta2"),
                       (dict(eps=0.0), "eps"), (dict(lr=float("inf")), "lr"),
                       (dict(weight_decay=-1.0), "weight-decay"), (dict(grad_clip=-1.0),
                                                                   "grad-clip"),
                       (dict(seed=-1), "seed"), (dict(lr="0.1"), "lr")):
        with pytest.raises(UserError, match=needle):
            TrainConfig(**kw)
    TrainConfig(beta1=0.0, grad_clip=0.0, weight_decay=0.0, seed=0)

