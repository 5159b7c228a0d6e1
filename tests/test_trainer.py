"""One trainer for every task (bertcore.train.loop): fine-tuning gets what pretraining has, and
--overwrite loses nothing until the new run has its first checkpoint. Each test that takes
`twin` runs once per twin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import (CLASSIFY_FAST, ClassifyCli, assert_one_line_error, base_args,
                     checkpoint_steps, epoch_rows, hf_dir, reviews, run_cli, signal_when, train_cli,
                     train_in_process, write_corpus, write_jsonl)


def files_of(rundir: Path) -> dict[str, bytes]:
    """Every file under RUNDIR but the lock, by relative path."""
    return {str(p.relative_to(rundir)): p.read_bytes() for p in sorted(rundir.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.mark.slow
def test_sigterm_during_classify_train_checkpoints_then_resume_is_exact(twin, tmp_path,
                                                                         cache_env):
    """SIGTERM mid-epoch in `classify train`: the step in progress ends, its checkpoint is
    written, exit 75 with the resume command (pretraining's contract); --resume then ends with
    the straight run's metrics.jsonl and best/, bit for bit."""
    model = hf_dir(tmp_path / "hf")
    data = write_jsonl(tmp_path / "train.jsonl", reviews(400, 0))      # 45 steps an epoch
    common = ["--init-from", str(model), "--data", str(data), "--epochs", "100", *CLASSIFY_FAST]
    stopped = tmp_path / "stopped"
    metrics = stopped / "metrics.jsonl"
    rc, out, err = signal_when(      # in epoch 2 or later, of 100
        ["-m", f"{twin}bert.classify", "train", *common, "--out", str(stopped)], cache_env,
        lambda: metrics.is_file() and bool(metrics.read_text()))
    assert rc == 75, out[-2000:] + err[-3000:]
    assert "Traceback" not in err, err
    (stop,) = checkpoint_steps(twin, stopped)
    assert 45 <= stop < 4500
    line = [ln for ln in out.splitlines() if ln.startswith("stopped by SIGTERM")]
    assert len(line) == 1 and f"after step {stop}" in line[0], out
    assert f"python -m {twin}bert.classify train" in line[0] and "--resume" in line[0]
    assert not (stopped / "summary.json").exists()      # not done: --resume goes on
    end = str((stop // 45 + 2) * 45)                    # the end of the next full epoch
    # Processes like the stopped one (an entry point's XLA settings are not a test process's,
    # and a bit-for-bit comparison needs the same).
    for out, more in ((stopped, ("--resume",)), (tmp_path / "straight", ())):
        p = run_cli("-m", f"{twin}bert.classify", "train", *common, "--out", str(out),
                    "--stop-after", end, *more, env=cache_env)
        assert p.returncode == 0, p.stderr[-3000:]
    straight = tmp_path / "straight"
    assert epoch_rows(straight)[-1]["step"] == int(end)
    assert epoch_rows(stopped) == epoch_rows(straight)
    assert (stopped / "best" / "model.safetensors").read_bytes() == \
        (straight / "best" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_classify_time_budget_stops_with_a_checkpoint(twin, tmp_path, cache_in_env, capsys):
    """--time-budget in `classify train` (pretraining's flag, now fine-tuning's): the run stops
    with a checkpoint, exit 0 and the resume command, and --resume goes on from there. (In this
    process the budget, counted from the process's start, is spent at once: one step each.)"""
    model = hf_dir(tmp_path / "hf")
    data = write_jsonl(tmp_path / "train.jsonl", reviews(400, 0))
    common = ["--init-from", str(model), "--data", str(data), "--epochs", "200", *CLASSIFY_FAST]
    out = tmp_path / "budget"
    cli = ClassifyCli(twin, capsys)
    p = cli("train", *common, "--out", str(out), "--time-budget", "1s", check=False)
    assert p.returncode == 0, p.stderr
    (stop,) = checkpoint_steps(twin, out)
    assert stop < 200 * 45
    assert "stopped by --time-budget" in p.stdout + p.stderr
    p = cli("train", *common, "--out", str(out), "--resume", "--time-budget", "1s",
            check=False)
    assert p.returncode == 0, p.stderr
    assert checkpoint_steps(twin, out) == [stop + 1]
    assert [r["step"] for r in epoch_rows(out)] == []     # no epoch ended


@pytest.mark.slow
def test_overwrite_that_fails_before_a_checkpoint_keeps_the_old_run(twin, tmp_path, cache_env):
    """train --overwrite whose new run fails after its set-up replaced the old run's files (here:
    a corpus too small for one batch, found when the first batch is drawn): the old run, its
    checkpoints, hf/, metrics and summary, is back as it was."""
    corpus = write_corpus(tmp_path)
    run = tmp_path / "run"
    train_cli(twin, *base_args(corpus, run, "--steps", "2"), env=cache_env)
    before = files_of(run)
    assert any(k.startswith("checkpoints/") for k in before) and "summary.json" in before
    small = tmp_path / "small.txt"
    small.write_text("one short line.\n\nanother one.\n", encoding="utf-8")
    p = train_in_process(twin, *base_args(small, run, "--steps", "2", "--overwrite",
                                          "--batch-size", "64"), env=cache_env)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert files_of(run) == before
    assert not [q.name for q in run.iterdir() if q.name.startswith(".old-")]


def test_a_replaced_run_left_beside_by_a_killed_process_comes_back(tmp_path):
    """A process killed between --overwrite's swap and the new run's first checkpoint leaves the
    old run in RUNDIR/.old-PID: the next command on RUNDIR puts it back before it reads anything
    (the new run, with no checkpoint, had nothing worth keeping); once a new run has a
    checkpoint, the old one is deleted instead. A kill during the swap itself (no mark on the
    aside) loses nothing either: the old files win, and none of the old run's is deleted."""
    from bertcore.train.rundir import RunDir

    run = tmp_path / "run"
    aside = run / ".old-999999"
    (aside / "checkpoints" / "step_00000002").mkdir(parents=True)
    (aside / "run.json").write_text('{"framework": "torch"}')
    (aside / ".swapped").touch()                                # the swap was whole
    (run / "run.json").write_text('{"framework": "jax"}')      # the new run, no checkpoint
    assert RunDir(run).recover() is True                        # what train and classify call
    assert json.loads((run / "run.json").read_text())["framework"] == "torch"
    assert (run / "checkpoints" / "step_00000002").is_dir() and not aside.exists()
    assert RunDir(run).recover() is False                       # nothing more to do

    aside.mkdir()
    (aside / "run.json").write_text('{"framework": "jax"}')
    (aside / ".swapped").touch()
    files = RunDir(run)
    files.lock()                       # the new run (torch) has a checkpoint: the aside goes
    files.unlock()
    assert json.loads((run / "run.json").read_text())["framework"] == "torch"
    assert not aside.exists()

    # killed mid-swap: run.json had gone aside, the checkpoints had not; the stage is half-placed
    aside.mkdir()
    (run / "run.json").rename(aside / "run.json")
    (run / "config.json").write_text("new, half-placed")
    (aside / "config.json").write_text("old")
    assert RunDir(run).recover() is True
    assert json.loads((run / "run.json").read_text())["framework"] == "torch"
    assert (run / "config.json").read_text() == "old"
    assert (run / "checkpoints" / "step_00000002").is_dir() and not aside.exists()


def test_a_full_disk_outside_checkpoints_is_one_line(twin, tmp_path, cache_in_env, capsys,
                                                      monkeypatch):
    """A run file that cannot be written (here best/ at the end of an epoch, on a full disk) ends
    `classify train` with one line and exit 74 (a failed checkpoint's code), not a traceback; the
    checkpoints already written are kept."""
    import errno

    import bertcore.classify.run as classify_run

    def full(out, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(classify_run, "write_classifier_dir", full)
    model = hf_dir(tmp_path / "hf")
    data = write_jsonl(tmp_path / "train.jsonl", reviews(80, 0))
    cli = ClassifyCli(twin, capsys)
    p = cli("train", "--init-from", str(model), "--data", str(data), "--epochs", "1",
            *CLASSIFY_FAST, "--out", str(tmp_path / "run"), check=False)
    assert p.returncode == 74
    assert_one_line_error(p, "could not write", "best", "No space left")


def nan_from(step: int):
    """A host_metrics wrapper whose loss turns NaN at optimizer `step` (a diverged model, without
    waiting for one: the guard is what is tested)."""
    seen = []

    def wrap(original):
        def host_metrics(self, metrics, want_stop):
            row, stop = original(self, metrics, want_stop)
            seen.append(row)
            if len(seen) >= step:
                row = {**row, "loss": float("nan")}
            return row, stop
        return host_metrics
    return wrap


@pytest.mark.slow
def test_a_diverged_pretraining_run_stops_keeping_its_last_good_checkpoint(twin, tmp_path,
                                                                         cache_env, monkeypatch):
    """The loop's guard: a loss that stops being finite ends the run with one line (exit 2)
    before that step is checkpointed; the last good checkpoint stays, and the advice is one a
    user can follow (--resume would refuse another --lr)."""
    import importlib

    mod = importlib.import_module(f"{twin}bert.train")
    cls = mod.TorchTwin if twin == "torch" else mod.JaxTwin
    monkeypatch.setattr(cls, "host_metrics", nan_from(3)(cls.host_metrics))
    run = tmp_path / "run"
    p = train_in_process(twin, *base_args(write_corpus(tmp_path), run, "--steps", "6",
                                          "--checkpoint-every", "2"), env=cache_env)
    assert_one_line_error(p, "loss became nan at step 3", str(run / "checkpoints"),
                          "lower --lr", "--overwrite", f"--init-from {run} --out NEW")
    assert checkpoint_steps(twin, run) == [2]
    # before the first checkpoint: no checkpoint to name, nor to start from
    monkeypatch.setattr(cls, "host_metrics", nan_from(1)(cls.host_metrics))
    p = train_in_process(twin, *base_args(write_corpus(tmp_path), tmp_path / "early", "--steps",
                                          "6", "--checkpoint-every", "2"), env=cache_env)
    assert_one_line_error(p, "loss became nan at step 1", "no checkpoint was written yet",
                          "lower --lr")
    assert "--init-from" not in p.stderr


@pytest.mark.slow
def test_a_diverged_fine_tuning_run_stops_with_one_line(twin, tmp_path, cache_in_env, capsys,
                                                        monkeypatch):
    """The same guard in `classify train` (it had its own): one line, no checkpoint of the
    diverged step."""
    import importlib

    cls = importlib.import_module(f"{twin}bert.classify").ClassifierTwin
    monkeypatch.setattr(cls, "host_metrics", nan_from(12)(cls.host_metrics))
    model = hf_dir(tmp_path / "hf")
    data = write_jsonl(tmp_path / "train.jsonl", reviews(80, 0))     # 9 steps an epoch
    run = tmp_path / "run"
    p = ClassifyCli(twin, capsys)("train", "--init-from", str(model), "--data", str(data),
                                  *CLASSIFY_FAST, "--out", str(run), check=False)
    assert_one_line_error(p, "loss became nan at step 12", "lower --lr", "--overwrite")
    assert checkpoint_steps(twin, run) == [9]
