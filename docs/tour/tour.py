"""Tiny shared fixtures for the tour's examples: a corpus, a tokenizer, shards and batches.

The tour pages `import tour` (run them from docs/tour/, or with docs/tour on PYTHONPATH, as
tests/test_docs.py does). Everything is small enough to run in seconds on a laptop core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

WORDS = ("the movie was great and the actors were wonderful but the plot felt slow "
         "unbelievably cinematography soundtrack director screenplay ending character "
         "performance audience review story scene music comedy drama").split()


def corpus(n_docs: int = 200, seed: int = 0) -> list[str]:
    """Documents of a few random sentences over a small vocabulary (no download)."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        sents = [" ".join(rng.choice(WORDS, int(rng.integers(4, 16)))).capitalize() + "."
                 for _ in range(int(rng.integers(2, 8)))]
        docs.append(" ".join(sents))
    return docs


def train(vocab_size: int = 120):
    """A WordPiece tokenizer freshly trained on `corpus()` (page 1)."""
    from bertcore.data.tokenizer import train_tokenizer

    return train_tokenizer(corpus(), vocab_size)


def tokenizer(out: str | Path = "tour-tokenizer"):
    """The tour's tokenizer: vocab.txt next to this file, written into `out` and loaded.

    It was trained by `train()` once and committed, because the `tokenizers` trainer is not
    deterministic: the same documents can give a slightly different vocabulary from run to run
    (ties between equally frequent merges), hence other ids. A written vocabulary fixes them.
    """
    from bertcore.data.tokenizer import load_tokenizer

    Path(out).mkdir(exist_ok=True)
    (Path(out) / "vocab.txt").write_text((HERE / "vocab.txt").read_text())
    return load_tokenizer(out)


def shards(out: str | Path = "tour-data"):
    """(Shards, tokenizer): the corpus tokenized into a data directory `out`."""
    from bertcore.data.prepare import prepare
    from bertcore.data.shards import Shards

    tok = tokenizer()
    prepare(corpus(), tok, out, source="tour", progress=False, workers=1)
    return Shards(out, tok), tok


def batches(batch_size: int = 4, seq_len: int = 32, max_predictions: int = 5, **cfg):
    """A BatchIterator over the tour's shards, with TrainConfig fields overridden by `cfg`."""
    from bertcore.model.config import TrainConfig
    from bertcore.data.batches import BatchIterator

    data, tok = shards()
    train = TrainConfig(batch_size=batch_size, seq_len=seq_len, max_predictions=max_predictions,
                        **cfg)
    return BatchIterator(data, tok, train, epoch_cache=None), tok, train


def write_corpus(path: str | Path = "corpus.txt", n_docs: int = 200) -> str:
    """The corpus as a .txt file (documents separated by blank lines), for the commands."""
    Path(path).write_text("\n\n".join(corpus(n_docs)) + "\n", encoding="utf-8")
    return str(path)


TRAIN = ("--preset", "tiny", "--vocab-size", "120", "--seq-len", "32", "--batch-size", "8",
         "--max-predictions", "5", "--log-every", "1", "--no-progress")


def run(module: str, *args: str) -> str:
    """`python -m module args...` in a fresh process, as you would type it; returns its stdout
    and raises with its output if it fails."""
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        raise RuntimeError(f"python -m {module} {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout
