"""torchbert.classify and jaxbert.classify, held to the same behaviour: fine-tuning learns (from a
Hugging Face directory and from a pretraining RUNDIR), bad input fails cleanly, resume is exact.
Each test runs once per twin: `test_resume_is_exact[torch]`, `test_resume_is_exact[jax]`."""

from __future__ import annotations

import importlib
import json

import pytest

from helpers import (CLASSIFY_FAST, ClassifyCli, assert_one_line_error, epoch_rows, hf_dir,
                     review_corpus, review_tokenizer, reviews, run_cli, write_jsonl)


def classify(twin: str, *args: str, env: dict | None = None, check: bool = True):
    """The command line in a subprocess (what a user runs)."""
    p = run_cli("-m", f"{twin}bert.classify", *args, env=env)
    if check:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.mark.slow
def test_learns_from_hf_dir(twin, tmp_path, cache_env, capsys):
    """A short fine-tune of a random tiny BERT learns the word rule: accuracy well above 0.5 on
    held-out reviews, in metrics.jsonl and with `evaluate` / `predict`."""
    model = hf_dir(tmp_path / "hf")
    train = write_jsonl(tmp_path / "train.jsonl", reviews(240, 0))
    test = write_jsonl(tmp_path / "test.jsonl", reviews(60, 1))
    out = tmp_path / "run"
    cli = ClassifyCli(twin, capsys)
    cli("train", "--init-from", str(model), "--data", str(train), "--out", str(out),
        "--epochs", "4", "--lr", "2e-3", *CLASSIFY_FAST)
    rows = epoch_rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert max(r["val_accuracy"] for r in rows) >= 0.85, rows
    assert {"val_f1", "train_loss", "val_loss", "learning_rate"} <= set(rows[0])
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    best = json.loads((out / "best" / "classifier.json").read_text())
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in rows)
    p = cli("evaluate", str(out), "--data", str(test), "--json")
    res = json.loads(p.stdout)
    assert res["examples"] == 60 and res["accuracy"] >= 0.85, res
    p = classify(twin, "predict", str(out), "a wonderful superb film", "dull and awful",
                 "--json", env=cache_env)
    assert [r["label"] for r in json.loads(p.stdout)] == ["pos", "neg"]


def test_bad_input(twin, tmp_path, capsys):
    """One `error:` line, non-zero exit, nothing overwritten."""
    cli = ClassifyCli(twin, capsys)

    def train(*args: str):
        return cli("train", "--init-from", str(model), *args, *CLASSIFY_FAST, check=False)

    model = hf_dir(tmp_path / "hf")
    data = write_jsonl(tmp_path / "train.jsonl", reviews(40, 0))
    # a validation set with labels training does not have: named
    val = write_jsonl(tmp_path / "val.jsonl", reviews(8, 1, labels=("neg", "meh", "pos")))
    p = train("--data", str(data), "--validation", str(val), "--out", str(tmp_path / "a"))
    assert_one_line_error(p, "label sets differ", "'meh'")
    assert not (tmp_path / "a").exists()
    # a folder not in the aclImdb layout
    (tmp_path / "notimdb" / "train").mkdir(parents=True)
    p = train("--data", str(tmp_path / "notimdb"), "--out", str(tmp_path / "b"))
    assert_one_line_error(p, "aclImdb layout", "train/pos")
    # a CSV without a label column
    (tmp_path / "x.csv").write_text("text,stars\ngood film,5\n", encoding="utf-8")
    p = train("--data", str(tmp_path / "x.csv"), "--out", str(tmp_path / "c"))
    assert_one_line_error(p, "'label' column", "text, stars")
    # an empty split
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    p = train("--data", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "d"))
    assert_one_line_error(p, "holds no examples")
    # a model whose vocabulary differs from the tokenizer's
    other = tmp_path / "other-tok"
    review_tokenizer(150).save(other)
    p = train("--tokenizer", str(other), "--data", str(data), "--out", str(tmp_path / "e"))
    assert_one_line_error(p, "vocabularies differ")
    # an existing run is not overwritten by a failing or a plain new run
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    p = train("--data", str(tmp_path / "empty.jsonl"), "--out", str(keep), "--overwrite")
    assert_one_line_error(p, "holds no examples")
    p = train("--data", str(data), "--out", str(keep))
    assert_one_line_error(p, "already holds files", "--overwrite")
    assert (keep / "precious.txt").read_text() == "x"


@pytest.mark.slow
def test_resume_is_exact(twin, tmp_path, cache_in_env, capsys):
    """3 epochs straight == stopped mid-epoch at step 13 + --resume: the same metrics.jsonl
    (dropout on) and the same best/ weights, bit for bit."""
    cli = ClassifyCli(twin, capsys)
    model = hf_dir(tmp_path / "hf")
    train = write_jsonl(tmp_path / "train.jsonl", reviews(80, 0))
    common = ("--init-from", str(model), "--data", str(train), "--epochs", "3", "--lr", "2e-3",
              *CLASSIFY_FAST)
    a, b = tmp_path / "straight", tmp_path / "resumed"
    cli("train", *common, "--out", str(a))
    cli("train", *common, "--out", str(b), "--stop-after", "13")   # 9 steps per epoch
    assert [r["step"] for r in epoch_rows(b)] == [9]
    p = cli("train", *common, "--out", str(b), "--resume", "--lr", "1e-3", check=False)
    assert_one_line_error(p, "changed settings (lr)")
    cli("train", *common, "--out", str(b), "--resume")
    assert [r["step"] for r in epoch_rows(a)] == [9, 18, 27]
    assert epoch_rows(b) == epoch_rows(a)
    assert (b / "best" / "model.safetensors").read_bytes() == \
        (a / "best" / "model.safetensors").read_bytes()
    # the comparison has teeth: another seed gives other numbers
    c = tmp_path / "other-seed"
    cli("train", *common, "--out", str(c), "--seed", "1", "--stop-after", "9")
    assert epoch_rows(c)[0]["train_loss"] != epoch_rows(a)[0]["train_loss"]


@pytest.mark.slow
def test_learns_from_pretraining_run(twin, tmp_path, cache_in_env, capsys):
    """--init-from a short pretraining RUNDIR of the same twin (its latest checkpoint, its
    tokenizer): the fine-tune is well above chance; the run records where it started."""
    pretrain = importlib.import_module(f"{twin}bert.train").main
    rundir = tmp_path / "pretrained"
    assert pretrain(["--preset", "tiny", "--corpus", str(review_corpus(tmp_path / "corpus.txt")),
                     "--vocab-size", "200", "--seq-len", "32", "--batch-size", "8",
                     "--max-predictions", "5", "--steps", "10", "--no-progress",
                     "--out", str(rundir)]) == 0
    cli = ClassifyCli(twin, capsys)
    out = tmp_path / "run"
    cli("train", "--init-from", str(rundir), "--data",
        str(write_jsonl(tmp_path / "train.jsonl", reviews(240, 0))), "--out", str(out),
        "--epochs", "3", "--lr", "1e-3", *CLASSIFY_FAST)
    rows = epoch_rows(out)
    assert max(r["val_accuracy"] for r in rows) >= 0.85, rows
    info = json.loads((out / "run.json").read_text())
    assert info["init_from"] == {"path": str(rundir.resolve()), "kind": "rundir"}
    assert (out / "tokenizer" / "vocab.txt").read_text() == \
        (rundir / "tokenizer" / "vocab.txt").read_text()
