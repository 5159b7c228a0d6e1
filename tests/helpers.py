"""Small shared builders for tests (no downloads): a synthetic corpus, tokenizer and shards;
the arguments and readers of a short pretraining run; labelled reviews and a tiny Hugging Face
BERT directory for fine-tuning; the programs under tests/programs/."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "tests" / "programs"

WORDS = ("the movie was great and the actors were wonderful but the plot felt slow "
         "extraordinary unbelievably cinematography soundtrack director screenplay ending "
         "character performance audience review story scene music comedy drama thriller "
         "surprisingly predictable beautifully disappointing remarkable").split()


def synthetic_documents(n_docs: int, seed: int = 0, max_sents: int = 12) -> list[str]:
    """Documents of random sentences over a small vocabulary with some long words."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        sents = []
        for _ in range(int(rng.integers(1, max_sents + 1))):
            words = rng.choice(WORDS, int(rng.integers(3, 25)))
            sents.append(" ".join(words).capitalize() + str(rng.choice([".", "?", "!"])))
        docs.append(" ".join(sents))
    return docs


def build_shards(tmp: Path, n_docs: int = 400, vocab_size: int = 120, seed: int = 0):
    """Train a tokenizer on synthetic documents and prepare shards; return (shards, tok)."""
    from bertcore.data.prepare import prepare
    from bertcore.data.shards import Shards
    from bertcore.data.tokenizer import train_tokenizer

    docs = synthetic_documents(n_docs, seed)
    tok = train_tokenizer(docs, vocab_size)
    prepare(docs, tok, tmp / "data", source="synthetic", progress=False)
    return Shards(tmp / "data", tok), tok


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float | None = 600) -> subprocess.CompletedProcess:
    """Run `python -m ...` in a subprocess; returns the completed process (text output)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """A user mistake: non-zero exit, no traceback, one `error:` line naming the problem."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])


def padded_batch(shards, tok, batch_size: int, seq_len: int, max_predictions: int) -> dict:
    """The first batch, over seeds 0, 1, ..., that has a padded row, unused prediction slots and
    both NSP labels: the cases a real-batch comparison must cover (which seed gives them depends
    on the instance-building code, so it is searched, deterministically, not hard-coded)."""
    from bertcore.model.config import TrainConfig
    from bertcore.data.batches import BatchIterator

    for seed in range(200):
        b = next(BatchIterator(shards, tok, TrainConfig(batch_size=batch_size, seq_len=seq_len,
                                                        max_predictions=max_predictions,
                                                        seed=seed)))
        if ((b["attention_mask"] == 0).any() and (b["masked_weights"] == 0).any()
                and len(set(b["next_sentence_label"].tolist())) == 2):
            return b
    raise AssertionError("no seed below 200 gives a padded batch with unused prediction slots")


def signal_when(args: list[str], env: dict, ready: Callable[[], bool],
                sig: int = signal.SIGTERM, timeout: float = 300) -> tuple[int, str, str]:
    """Run `python ARGS` (PYTHONPATH=ROOT, `env` added), send `sig` once `ready()` holds and return
    (exit status, stdout, stderr) when it ends; a process that ends before `ready()` fails the
    test with its stderr."""
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and not ready():
            if proc.poll() is not None:
                raise AssertionError(f"it ended before it got {signal.Signals(sig).name}: "
                                     + proc.stderr.read()[-2000:])
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def program(name: str, *args: str) -> list[str]:
    """The command line that runs tests/programs/NAME.py with ARGS (its imports need
    PYTHONPATH=ROOT in the environment, as `run_cli` sets)."""
    return [sys.executable, str(PROGRAMS / f"{name}.py"), *args]


# ---- a short pretraining run ------------------------------------------------------------------

def write_corpus(d: Path, n_docs: int = 300, seed: int = 0) -> Path:
    p = d / "corpus.txt"
    p.write_text("\n\n".join(synthetic_documents(n_docs, seed)), encoding="utf-8")
    return p


def prepared_data(tmp_path: Path, env: dict) -> Path:
    """A tokenizer and token shards of `write_corpus`'s text with a held-out split (so a run
    given `--data` writes eval rows too): tmp_path/data."""
    corpus = write_corpus(tmp_path)
    tok, data = tmp_path / "tok", tmp_path / "data"
    for args in (("bertcore.tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "300",
                  "--out", str(tok)),
                 ("bertcore.data", "prepare", "--corpus", str(corpus), "--tokenizer", str(tok),
                  "--eval-fraction", "0.2", "--workers", "1", "--no-progress", "--out",
                  str(data))):
        p = run_cli("-m", *args, env=env)
        assert p.returncode == 0, p.stderr[-2000:]
    return data


def base_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["--preset", "tiny", "--corpus", str(corpus), "--vocab-size", "300", "--seq-len", "32",
            "--batch-size", "8", "--max-predictions", "5", "--no-progress", "--log-every", "1",
            "--out", str(out), *extra]


def metrics(rundir: Path) -> list[dict]:
    return [json.loads(l) for l in (rundir / "metrics.jsonl").read_text().splitlines() if l]


def epoch_rows(rundir: Path) -> list[dict]:
    """A fine-tuning run's metrics.jsonl rows without their wall-clock `elapsed` (what two runs
    that computed the same thing share, bit for bit)."""
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in metrics(rundir)]


def train_cli(twin: str, *args: str, env: dict | None = None, check: bool = True):
    """The twin's training command line in a subprocess (`python -m TWINbert.train ARGS`)."""
    p = run_cli("-m", f"{twin}bert.train", *args, env=env)
    if check:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def train_in_process(twin: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    """The training CLI's `main` called in this process, as `python -m` calls it, with its
    output captured: what a subprocess shows for a run refused at its start, without ~3 s of
    interpreter and framework start-up per call."""
    import contextlib
    import io

    main = importlib.import_module(f"{twin}bert.train").main
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(args))
            except SystemExit as e:   # argparse's own errors
                rc = e.code
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def checkpoint_steps(twin: str, rundir: Path) -> list[int]:
    """Complete checkpoints of a run (torch: step_00000010/, orbax: 10/), and no temp dirs."""
    root = rundir / "checkpoints"
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir()]
    steps = sorted(int(n[5:]) if twin == "torch" else int(n) for n in names
                   if (n.startswith("step_") if twin == "torch" else n.isdigit()))
    return steps


def temp_dirs(rundir: Path) -> list[str]:
    root = rundir / "checkpoints"
    return [str(p) for p in root.rglob("*") if p.is_dir() and
            (p.name.startswith(".") or "orbax-checkpoint-tmp" in p.name)] if root.is_dir() else []


# ---- fine-tuning: reviews whose label follows from their words, a tiny HF BERT ---------------

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


def review_corpus(path: Path, n: int = 300) -> Path:
    """A pretraining corpus of reviews (documents separated by blank lines)."""
    rows = reviews(n, 7)
    docs = [". ".join(r["text"] for r in rows[i:i + 3]) + "." for i in range(0, n, 3)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def review_tokenizer(vocab_size: int = 200):
    """A WordPiece tokenizer trained on the reviews."""
    from bertcore.data.tokenizer import train_tokenizer

    docs = [r["text"] for r in reviews(400, 5)] * 2
    return train_tokenizer(docs, vocab_size)


def hf_dir(path: Path, vocab_size: int = 200, seed: int = 0) -> Path:
    """A tiny random transformers.BertForPreTraining saved with save_pretrained + our tokenizer."""
    import torch
    import transformers

    tok = review_tokenizer(vocab_size)
    tok.save(path)
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=64)
    transformers.BertForPreTraining(cfg).save_pretrained(path)
    return path


CLASSIFY_FAST = ("--max-len", "24", "--batch-size", "8", "--no-progress")


class ClassifyCli:
    """A twin's classify command line in-process (`main(argv)`, no interpreter start-up): the
    result has the returncode / stdout / stderr of a finished subprocess."""

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


def wait_all(procs: list, timeout: float = 500) -> list[str]:
    """Wait for processes started together (ranks of one job), killing any left at the end;
    assert each exited 0 and return their outputs."""
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "".join((o or "")[-2000:] for o in outs)
    return outs
