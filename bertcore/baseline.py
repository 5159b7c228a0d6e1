"""What "learning" has to beat: the unigram baseline of a data directory.

A model that ignores context and always predicts the corpus's token frequencies has an MLM loss
equal to the entropy of the token distribution, and a model that always answers the most frequent
token has an accuracy equal to that token's share. A run has learned something from context only
once its MLM loss is below the entropy and its accuracy well above the share.

Computed once from the shards' token array (special tokens excluded) and cached as
DATADIR/unigram.json, written atomically; a read-only DATADIR is recomputed instead (one pass of
`np.bincount` over memory-mapped chunks: about a second per 100M tokens).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import write_text_atomic

CACHE_NAME = "unigram.json"
FORMAT = "twinbert-unigram-v1"
CHUNK = 1 << 24  # tokens per bincount: bounded memory on any corpus


def unigram_counts(tokens, vocab_size: int, chunk: int = CHUNK) -> np.ndarray:
    """Token counts [vocab_size] of a token array (anything with len() and slicing)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(tokens), chunk):
        part = np.asarray(tokens[start:start + chunk])
        counts += np.bincount(part.astype(np.int64, copy=False), minlength=vocab_size)[:vocab_size]
    return counts


def baseline_from_counts(counts: np.ndarray, is_special: np.ndarray | None = None,
                         id_to_token=None) -> dict[str, Any]:
    """Entropy (nats) and most frequent token share of counts, special ids left out."""
    counts = np.asarray(counts, dtype=np.int64).copy()
    if is_special is not None:
        counts[np.asarray(is_special, dtype=bool)[:len(counts)]] = 0
    total = int(counts.sum())
    if total == 0:
        return {"format": FORMAT, "tokens": 0, "entropy": None, "top_share": None,
                "top_token": None}
    p = counts[counts > 0] / total
    top = int(counts.argmax())
    return {"format": FORMAT, "tokens": total,
            "entropy": float(-(p * np.log(p)).sum()),
            "perplexity": float(math.exp(-(p * np.log(p)).sum())),
            "top_share": float(counts[top] / total),
            "top_id": top,
            "top_token": id_to_token(top) if id_to_token is not None else None}


def unigram_baseline(shards, tokenizer=None) -> dict[str, Any] | None:
    """The unigram baseline of a `bertcore.shards.Shards`, cached in its directory.

    Returns {"entropy": nats, "perplexity", "top_share", "top_token", "tokens", ...}, or None
    when it cannot be computed (an empty or unreadable data directory): a missing baseline
    must never stop a run from finishing."""
    path = Path(shards.path) / CACHE_NAME
    fingerprint = shards.meta.get("tokenizer_fingerprint")
    n_tokens = shards.meta.get("tokens")
    if n_tokens is None:
        n_tokens = len(shards.tokens)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if (cached.get("format") == FORMAT and cached.get("fingerprint") == fingerprint
                and cached.get("corpus_tokens") == n_tokens):
            return cached
    except (OSError, ValueError, AttributeError):
        pass
    try:
        if tokenizer is None:
            tokenizer = shards.tokenizer()
        counts = unigram_counts(shards.tokens, shards.vocab_size)
        out = baseline_from_counts(counts, tokenizer.is_special, tokenizer.id_to_token)
    except Exception:  # noqa: BLE001 - a summary line is not worth a failed run
        return None
    out.update(fingerprint=fingerprint, corpus_tokens=n_tokens)
    try:
        write_text_atomic(path, json.dumps(out, indent=2) + "\n")
    except OSError:
        pass  # a read-only data directory: compute again next time
    return out
