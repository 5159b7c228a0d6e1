"""Small shared builders for tests: a synthetic corpus, tokenizer and shards (no downloads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

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
            timeout: float = 600) -> subprocess.CompletedProcess:
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
    from bertcore.data.batches import BatchIterator
    from bertcore.config import TrainConfig

    for seed in range(200):
        b = next(BatchIterator(shards, tok, TrainConfig(batch_size=batch_size, seq_len=seq_len,
                                                        max_predictions=max_predictions,
                                                        seed=seed)))
        if ((b["attention_mask"] == 0).any() and (b["masked_weights"] == 0).any()
                and len(set(b["next_sentence_label"].tolist())) == 2):
            return b
    raise AssertionError("no seed below 200 gives a padded batch with unused prediction slots")
