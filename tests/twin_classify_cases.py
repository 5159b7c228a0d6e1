"""Fine-tuning tests shared by both twins (test_torch_classify.py and test_jax_classify.py set
TWIN and call these), plus the builders the data and parity tests use: labelled reviews whose
label follows from their words, and a tiny Hugging Face BERT directory. No downloads."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from helpers import assert_one_line_error, run_cli

POSITIVE = "great wonderful excellent superb brilliant delightful moving charming".split()
NEGATIVE = "awful boring terrible dull clumsy tedious dreadful lifeless".split()
FILLER = ("the movie film plot actors story scene music ending director was and but with "
          "a an of this that it its very quite really").split()


def reviews(n: int, seed: int = 0, labels=("neg", "pos")) -> list[dict]:
    """Reviews of filler words with sentiment words of their label only."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lab = labels[i % len(labels)]
        words = list(rng.choice(FILLER, int(rng.integers(6, 14))))
        cue = POSITIVE if lab == labels[-1] else NEGATIVE
        for w in rng.choice(cue, int(rng.integers(1, 3))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(w))
        out.append({"text": " ".join(words), "label": lab})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_aclimdb(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        for i, r in enumerate(reviews(n, seed)):
            d = root / split / r["label"]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i}_7.txt").write_text(r["text"] + "<br /><br />the end", encoding="utf-8")
    return root


def tokenizer(vocab_size: int = 200):
    from bertcore.data.tokenizer import train_tokenizer

    docs = [r["text"] for r in reviews(400, 5)] * 2
    return train_tokenizer(docs, vocab_size)


def hf_dir(path: Path, vocab_size: int = 200, seed: int = 0) -> Path:
    """A tiny random transformers.BertForPreTraining saved with save_pretrained + our tokenizer."""
    import torch
    import transformers

    tok = tokenizer(vocab_size)
    tok.save(path)
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=64)
    transformers.BertForPreTraining(cfg).save_pretrained(path)
    return path


FAST = ("--max-len", "24", "--batch-size", "8", "--no-progress")


def classify(twin: str, *args: str, env: dict | None = None, check: bool = True):
    """The command line in a subprocess (what a user runs)."""
    p = run_cli("-m", f"{twin}bert.classify", *args, env=env)
    if check:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


class Cli:
    """The same command line in-process (`main(argv)`, no interpreter start-up): the result has
    the returncode / stdout / stderr of a finished subprocess."""

    def __init__(self, twin: str, capsys):
        self.main = importlib.import_module(f"{twin}bert.classify").main
        self.capsys = capsys

    def __call__(self, *args: str, check: bool = True) -> SimpleNamespace:
        self.capsys.readouterr()
        rc = self.main(list(args))
        out, err = self.capsys.readouterr()
        if check:
            assert rc == 0, out[-3000:] + err[-3000:]
        return SimpleNamespace(returncode=rc, stdout=out, stderr=err)


def metrics(rundir: Path, drop=("elapsed",)) -> list[dict]:
    rows = [json.loads(line) for line in (rundir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


# ---- the cases --------------------------------------------------------------------------------

def learns_from_hf_dir(twin: str, tmp: Path, env: dict, capsys) -> None:
    """A short fine-tune of a random tiny BERT learns the word rule: accuracy well above 0.5 on
    held-out reviews, in metrics.jsonl and with `evaluate` / `predict`."""
    model = hf_dir(tmp / "hf")
    train = write_jsonl(tmp / "train.jsonl", reviews(240, 0))
    test = write_jsonl(tmp / "test.jsonl", reviews(60, 1))
    out = tmp / "run"
    cli = Cli(twin, capsys)
    cli("train", "--init-from", str(model), "--data", str(train), "--out", str(out),
        "--epochs", "4", "--lr", "2e-3", *FAST)
    rows = metrics(out)
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
                 "--json", env=env)
    assert [r["label"] for r in json.loads(p.stdout)] == ["pos", "neg"]


def bad_input(twin: str, tmp: Path, capsys) -> None:
    """One `error:` line, non-zero exit, nothing overwritten."""
    classify = lambda _twin, *args, **_: Cli(twin, capsys)(*args, check=False)  # noqa: E731
    model = hf_dir(tmp / "hf")
    train = write_jsonl(tmp / "train.jsonl", reviews(40, 0))
    # a validation set with labels training does not have: named
    val = write_jsonl(tmp / "val.jsonl", reviews(8, 1, labels=("neg", "meh", "pos")))
    p = classify(twin, "train", "--init-from", str(model), "--data", str(train), "--validation",
                 str(val), "--out", str(tmp / "a"), *FAST)
    assert_one_line_error(p, "label sets differ", "'meh'")
    assert not (tmp / "a").exists()
    # a folder not in the aclImdb layout
    (tmp / "notimdb" / "train").mkdir(parents=True)
    p = classify(twin, "train", "--init-from", str(model), "--data", str(tmp / "notimdb"),
                 "--out", str(tmp / "b"), *FAST)
    assert_one_line_error(p, "aclImdb layout", "train/pos")
    # a CSV without a label column
    (tmp / "x.csv").write_text("text,stars\ngood film,5\n", encoding="utf-8")
    p = classify(twin, "train", "--init-from", str(model), "--data", str(tmp / "x.csv"),
                 "--out", str(tmp / "c"), *FAST)
    assert_one_line_error(p, "'label' column", "text, stars")
    # an empty split
    (tmp / "empty.jsonl").write_text("\n", encoding="utf-8")
    p = classify(twin, "train", "--init-from", str(model), "--data", str(tmp / "empty.jsonl"),
                 "--out", str(tmp / "d"), *FAST)
    assert_one_line_error(p, "holds no examples")
    # a model whose vocabulary differs from the tokenizer's
    other = tmp / "other-tok"
    tokenizer(150).save(other)
    p = classify(twin, "train", "--init-from", str(model), "--tokenizer", str(other), "--data",
                 str(train), "--out", str(tmp / "e"), *FAST)
    assert_one_line_error(p, "vocabularies differ")
    # an existing run is not overwritten by a failing or a plain new run
    keep = tmp / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    p = classify(twin, "train", "--init-from", str(model), "--data", str(tmp / "empty.jsonl"),
                 "--out", str(keep), "--overwrite", *FAST)
    assert_one_line_error(p, "holds no examples")
    p = classify(twin, "train", "--init-from", str(model), "--data", str(train),
                 "--out", str(keep), *FAST)
    assert_one_line_error(p, "already holds files", "--overwrite")
    assert (keep / "precious.txt").read_text() == "x"


def resume_is_exact(twin: str, tmp: Path, capsys) -> None:
    """3 epochs straight == stopped mid-epoch at step 13 + --resume: the same metrics.jsonl
    (dropout on) and the same best/ weights, bit for bit."""
    cli = Cli(twin, capsys)
    model = hf_dir(tmp / "hf")
    train = write_jsonl(tmp / "train.jsonl", reviews(80, 0))
    common = ("--init-from", str(model), "--data", str(train), "--epochs", "3", "--lr", "2e-3",
              *FAST)
    a, b = tmp / "straight", tmp / "resumed"
    cli("train", *common, "--out", str(a))
    cli("train", *common, "--out", str(b), "--stop-after", "13")   # 9 steps per epoch
    assert [r["step"] for r in metrics(b)] == [9]
    p = cli("train", *common, "--out", str(b), "--resume", "--lr", "1e-3", check=False)
    assert_one_line_error(p, "changed settings (lr)")
    cli("train", *common, "--out", str(b), "--resume")
    assert [r["step"] for r in metrics(a)] == [9, 18, 27]
    assert metrics(b) == metrics(a)
    assert (b / "best" / "model.safetensors").read_bytes() == \
        (a / "best" / "model.safetensors").read_bytes()
    # the comparison has teeth: another seed gives other numbers
    c = tmp / "other-seed"
    cli("train", *common, "--out", str(c), "--seed", "1", "--stop-after", "9")
    assert metrics(c)[0]["train_loss"] != metrics(a)[0]["train_loss"]


def review_corpus(path: Path, n: int = 300) -> Path:
    """A pretraining corpus of reviews (documents separated by blank lines)."""
    rows = reviews(n, 7)
    docs = [". ".join(r["text"] for r in rows[i:i + 3]) + "." for i in range(0, n, 3)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def learns_from_pretraining_run(twin: str, tmp: Path, capsys) -> None:
    """--init-from a short pretraining RUNDIR of the same twin (its latest checkpoint, its
    tokenizer): the fine-tune is well above chance; the run records where it started."""
    pretrain = importlib.import_module(f"{twin}bert.train").main
    rundir = tmp / "pretrained"
    assert pretrain(["--preset", "tiny", "--corpus", str(review_corpus(tmp / "corpus.txt")),
                     "--vocab-size", "200", "--seq-len", "32", "--batch-size", "8",
                     "--max-predictions", "5", "--steps", "10", "--no-progress",
                     "--out", str(rundir)]) == 0
    cli = Cli(twin, capsys)
    out = tmp / "run"
    cli("train", "--init-from", str(rundir), "--data",
        str(write_jsonl(tmp / "train.jsonl", reviews(240, 0))), "--out", str(out),
        "--epochs", "3", "--lr", "1e-3", *FAST)
    rows = metrics(out)
    assert max(r["val_accuracy"] for r in rows) >= 0.85, rows
    info = json.loads((out / "run.json").read_text())
    assert info["init_from"] == {"path": str(rundir.resolve()), "kind": "rundir"}
    assert (out / "tokenizer" / "vocab.txt").read_text() == \
        (rundir / "tokenizer" / "vocab.txt").read_text()
