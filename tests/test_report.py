"""--report-to: TensorBoard's own reader and W&B's offline run hold exactly what metrics.jsonl
holds (the same steps, the same values, one point per step after resumes), for both twins'
train and classify train; the run's config is there as hyperparameters; only the main process
reports; a bad name or a missing package is one line. Each test that takes `twin` runs once per
twin: `test_tensorboard_mirrors_metrics_through_resumes[torch]`, `...[jax]`."""

from __future__ import annotations

import json
import struct
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from helpers import (CLASSIFY_FAST, ClassifyCli, assert_one_line_error, base_args, hf_dir,
                     metrics, prepared_data, reviews, train_cli, train_in_process,
                     write_corpus, write_jsonl)

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


# ---- readers ---------------------------------------------------------------------------------

def tb_view(logdir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, object]]:
    """What TensorBoard shows of RUNDIR/tb: {tag: [(step, value)]} and the hyperparameters."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    content = acc.PluginTagToContent("hparams")
    assert list(content) == ["_hparams_/session_start_info"], list(content)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return scalars, hparams


def pretrain_tags(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl of a pretraining run as the dashboards' tags: train/loss, eval/mlm_loss..."""
    out = defaultdict(list)
    for r in rows:
        split = r.get("split", "train")
        for k, v in r.items():
            if k not in ("step", "split"):
                out[f"{split}/{k}"].append((r["step"], v))
    return dict(out)


def classify_tags(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl of a fine-tuning run as tags: train_loss is train/loss, val_accuracy is
    val/accuracy, epoch, learning_rate and elapsed are under train/."""
    out = defaultdict(list)
    for r in rows:
        for k, v in r.items():
            if k == "step":
                continue
            split, _, name = k.partition("_")
            tag = f"{split}/{name}" if split in ("train", "val") else f"train/{k}"
            out[tag].append((r["step"], v))
    return dict(out)


def assert_same(shown: dict, want: dict) -> None:
    """The same tags, steps (each once) and values, to float32's precision (TensorBoard's)."""
    assert sorted(shown) == sorted(want)
    for tag, points in want.items():
        assert [s for s, _ in shown[tag]] == [s for s, _ in points], tag
        np.testing.assert_allclose([v for _, v in shown[tag]], [v for _, v in points],
                                   rtol=1e-6, err_msg=tag)


def wandb_records(path: Path):
    """The records of an offline W&B run's .wandb file: W&B's own transaction log (what `wandb
    sync` uploads), LevelDB's log format (32 KiB blocks of records with a 7-byte header: crc,
    length, type) after a 7-byte file header, each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:                  # too little room for a header: the block is padded
            pos += left
            continue
        _, n, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0:                 # zero padding to the block's end
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):            # a full record, or a record's last piece
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            yield rec
            buf = b""


# ---- pretraining -----------------------------------------------------------------------------

def pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--preset", "tiny", "--data", str(data), "--seq-len", "32", "--batch-size", "8",
            "--max-predictions", "5", "--no-progress", "--log-every", "1", "--steps", "6",
            "--checkpoint-every", "3", "--eval-batches", "2", "--out", str(out), *extra]


def drop_checkpoint(twin: str, rundir: Path, step: int) -> None:
    """Remove a checkpoint, as if the run had been killed after logging its steps but before
    writing it: --resume then repeats those steps from the checkpoint before."""
    import shutil

    name = f"step_{step:08d}" if twin == "torch" else str(step)
    shutil.rmtree(rundir / "checkpoints" / name)


@pytest.mark.slow
def test_tensorboard_mirrors_metrics_through_resumes(twin, tmp_path, cache_env):
    """TensorBoard's reader finds metrics.jsonl's scalars (train and eval rows) and the config:
    after a run stopped by --stop-after, after its --resume, and after a --resume that repeats
    steps the event files already hold (one point per step, the repeated run's values)."""
    data = prepared_data(tmp_path, cache_env)
    out = tmp_path / "run"
    args = pretrain_args(data, out, "--report-to", "tensorboard")
    train_cli(twin, *args, "--stop-after", "4", env=cache_env)
    shown, hparams = tb_view(out / "tb")
    rows = metrics(out)
    assert [r["step"] for r in rows if "split" in r] == [3, 4]     # eval rows are there too
    assert_same(shown, pretrain_tags(rows))
    config = json.loads((out / "config.json").read_text())
    assert hparams["framework"] == twin and hparams["task"] == "pretrain"
    assert hparams["model.hidden_size"] == config["hidden_size"] == 128
    assert hparams["train.steps"] == 6 and hparams["train.nsp"] is True

    train_cli(twin, *args, "--resume", env=cache_env)
    before, _ = tb_view(out / "tb")
    assert_same(before, pretrain_tags(metrics(out)))
    assert [s for s, _ in before["train/loss"]] == [1, 2, 3, 4, 5, 6]

    drop_checkpoint(twin, out, 6)
    train_cli(twin, *args, "--resume", env=cache_env)     # from step 4: 5 and 6 again
    after, hparams_after = tb_view(out / "tb")
    rows = metrics(out)
    assert_same(after, pretrain_tags(rows))
    assert hparams_after == hparams
    # the points shown for 5 and 6 are the last run's (its own throughput), not the first's
    assert after["train/tokens_per_second"][4:] != before["train/tokens_per_second"][4:]
    assert after["train/loss"] == before["train/loss"]        # resume is exact
    assert len(list((out / "tb").glob("*tfevents*"))) == 3    # one event file per process
    # --overwrite starts the curves over
    train_cli(twin, *pretrain_args(data, out, "--report-to", "tensorboard", "--steps", "2",
                                   "--overwrite"), env=cache_env)
    shown, hparams = tb_view(out / "tb")
    assert_same(shown, pretrain_tags(metrics(out)))
    assert hparams["train.steps"] == 2


@pytest.mark.slow
def test_wandb_offline_run_continues_without_repeats(tmp_path, cache_env):
    """--report-to tensorboard,wandb in W&B's offline mode: every process's offline run has the
    run's one id, the config, and history rows that together hold each step of metrics.jsonl
    once with its values (the steps a resume repeats are not given to W&B again). One twin: the
    reporter is framework-free and the twins call it from the same loop."""
    pytest.importorskip("wandb")
    twin = "torch"
    env = {**cache_env, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
           "WANDB_DATA_DIR": str(tmp_path / "wandb-data"), "WANDB_PROJECT": "twinbert-test"}
    data = prepared_data(tmp_path, env)
    out = tmp_path / "run"
    args = pretrain_args(data, out, "--report-to", "tensorboard,wandb")
    train_cli(twin, *args, "--stop-after", "4", env=env)
    train_cli(twin, *args, "--resume", env=env)
    drop_checkpoint(twin, out, 6)
    train_cli(twin, *args, "--resume", env=env)

    state = json.loads((out / "wandb" / "twinbert-run.json").read_text())
    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 3 and all(f.name == f"run-{state['id']}.wandb" for f in files)
    history: dict[int, dict[str, float]] = defaultdict(dict)
    for f in files:
        runs = configs = 0
        for rec in wandb_records(f):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                runs += 1
                assert rec.run.run_id == state["id"] and rec.run.display_name == "run"
                assert rec.run.project == "twinbert-test"
            elif kind == "config":
                got = {i.key: json.loads(i.value_json) for i in rec.config.update}
                if "train" in got:
                    configs += 1
                    assert got["framework"] == twin and got["train"]["steps"] == 6
                    assert got["model"]["hidden_size"] == 128
            elif kind == "history":
                step = rec.history.step.num
                # a key with "/" is stored as its parts (nested_key); W&B's own start with _
                row = {key: json.loads(i.value_json) for i in rec.history.item
                       if not (key := i.key or "/".join(i.nested_key)).startswith("_")}
                assert not set(row) & set(history[step]), (step, row)   # no key twice
                history[step].update(row)
        assert runs == 1 and configs == 1, f
    rows = metrics(out)
    want = pretrain_tags(rows)
    assert sorted(history) == sorted({r["step"] for r in rows}) == [1, 2, 3, 4, 5, 6]
    assert sorted({k for r in history.values() for k in r}) == sorted(want)
    for tag, points in want.items():
        if tag in ("train/tokens_per_second", "train/elapsed"):
            continue   # timings: steps 5 and 6 are those of the run W&B saw first
        assert [(s, history[s][tag]) for s, _ in points] == points, tag
    assert_same(tb_view(out / "tb")[0], want)     # and TensorBoard beside it


def test_only_the_main_process_reports(tmp_path):
    """A data-parallel job's other processes report nothing (the main one writes every run
    file); the main one writes its rows to RUNDIR/tb."""
    from bertcore.model.config import BertConfig, TrainConfig
    from bertcore.train.run import Run

    for is_main in (True, False):
        d = tmp_path / f"main-{is_main}"
        d.mkdir()
        run = Run(d, "torch", BertConfig.from_preset("tiny", vocab_size=100),
                  TrainConfig(steps=2), None, None, resume=False, is_main=is_main,
                  progress=False, report_to=("tensorboard",))
        run.start(0)
        run.log(1, {"loss": 2.5, "learning_rate": 1e-4})
        run.log_eval(1, {"split": "eval", "mlm_loss": 2.0, "perplexity": 7.4,
                         "mlm_accuracy": 0.1})
        run.close_reports()
        assert (d / "tb").exists() == is_main
        if is_main:
            shown, _ = tb_view(d / "tb")
            assert_same(shown, pretrain_tags(metrics(d)))


def test_bad_report_to(twin, tmp_path, cache_env, monkeypatch, capsys):
    """An unknown name, or a dashboard whose package is not installed: one line naming the fix,
    before anything is written; in train and in classify train."""
    corpus = write_corpus(tmp_path)
    out = tmp_path / "run"
    p = train_in_process(twin, *base_args(corpus, out, "--report-to", "tensorboard,foo"),
                         env=cache_env)
    assert_one_line_error(p, "--report-to tensorboard,foo", "'foo'", "none, tensorboard or wandb")
    monkeypatch.setitem(sys.modules, "tensorboardX", None)    # as if it were not installed
    p = train_in_process(twin, *base_args(corpus, out, "--report-to", "tensorboard"),
                         env=cache_env)
    assert_one_line_error(p, "--report-to tensorboard needs the tensorboardX package",
                          "pip install tensorboardX")
    monkeypatch.setitem(sys.modules, "wandb", None)
    p = train_in_process(twin, *base_args(corpus, out, "--report-to", "none,wandb"),
                         env=cache_env)
    assert_one_line_error(p, "'none'")     # none is alone or not at all
    p = train_in_process(twin, *base_args(corpus, out, "--report-to", "wandb"), env=cache_env)
    assert_one_line_error(p, "--report-to wandb needs the wandb package: pip install wandb")
    assert not out.exists()
    cli = ClassifyCli(twin, capsys)
    p = cli("train", "--init-from", str(tmp_path / "nothing"), "--data", str(corpus), "--out",
            str(out), "--report-to", "tensorbord", *CLASSIFY_FAST, check=False)
    assert_one_line_error(p, "'tensorbord'")
    assert not out.exists()


# ---- classify ------------------------------------------------------------------------------

@pytest.mark.slow
def test_classify_epochs_in_tensorboard(twin, tmp_path, cache_env, monkeypatch, capsys):
    """classify train --report-to tensorboard: its epochs' rows (train/loss, val/accuracy, ...)
    and its config, also across a --resume from the middle of an epoch."""
    for k, v in cache_env.items():
        monkeypatch.setenv(k, v)
    cli = ClassifyCli(twin, capsys)
    model = hf_dir(tmp_path / "hf")
    train = write_jsonl(tmp_path / "train.jsonl", reviews(40, 0))
    out = tmp_path / "run"
    common = ("train", "--init-from", str(model), "--data", str(train), "--out", str(out),
              "--epochs", "2", "--report-to", "tensorboard", *CLASSIFY_FAST)
    cli(*common, "--stop-after", "6")    # 4 steps per epoch: stopped in the second
    cli(*common, "--resume")
    rows = metrics(out)
    assert [r["step"] for r in rows] == [4, 8]
    shown, hparams = tb_view(out / "tb")
    assert_same(shown, classify_tags(rows))
    assert {"train/loss", "val/loss", "val/accuracy", "val/f1", "train/epoch"} <= set(shown)
    assert hparams["task"] == "classify" and hparams["framework"] == twin
    assert hparams["classify.epochs"] == 2 and hparams["labels"] == '["neg", "pos"]'
