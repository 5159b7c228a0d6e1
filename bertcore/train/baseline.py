"""What "learning" has to beat: the unigram baseline of a data directory.

A model that ignores context and always predicts the corpus's token frequencies has an MLM loss
equal to the entropy of the token distribution, and a model that always answers the most frequent
token has an accuracy equal to that token's share. But BERT's masking shows
the model 20% of its targets: 10% of the predicted slots keep their token and 10% hold a random
one (bertcore.data.masking). A model that looks only at its own slot, never at the context, copies
what it sees there and falls back on frequencies behind [MASK]: its loss and accuracy are the
`context_free_*` figures below (well past the unigram ones; README.md shows both for the
built-in corpus). Only a run that beats those has shown that it uses context.

Computed once from the shards' token array (special tokens excluded) and cached as
DATADIR/unigram.json, written atomically; a read-only DATADIR is recomputed instead (one pass of
`np.bincount` over memory-mapped chunks).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bertcore.data.shards import UNIGRAM
from bertcore.infra.files import write_text_atomic

CACHE_NAME = UNIGRAM   # beside the data it counts (bertcore.data.shards names it)
FORMAT = "twinbert-unigram-v2"
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
    entropy = float(-(p * np.log(p)).sum())
    out = {"format": FORMAT, "tokens": total,
           "entropy": entropy,
           "perplexity": float(math.exp(entropy)),
           "top_share": float(counts[top] / total),
           "top_id": top,
           "top_token": id_to_token(top) if id_to_token is not None else None}
    replaceable = (~np.asarray(is_special, dtype=bool)[:len(counts)] if is_special is not None
                   else np.ones(len(counts), dtype=bool))
    out.update(context_free(counts / total, replaceable, entropy))
    return out


def context_free(p: np.ndarray, replaceable: np.ndarray, entropy: float,
                 masked: float = 0.8, random: float = 0.1) -> dict[str, float]:
    """Loss and accuracy of the best model that sees only the slot it predicts (no context),
    under BERT's masking: `masked` of the slots show [MASK] (predict the unigram distribution
    p), `random` show a token drawn uniformly from the `replaceable` ids, the rest keep their
    own token. Seeing token x, the posterior is q(x|x) = p(x)(1+r)/(p(x)+r), q(y|x) =
    p(y) r/(p(x)+r) for y != x, with r = 1/#replaceable: O(V) in closed form."""
    keep = 1.0 - masked - random
    x = np.flatnonzero(replaceable)
    r = 1.0 / max(len(x), 1)
    px = p[x]
    den = keep * px + random * r                        # P(slot shows x, not [MASK]) / ...
    with np.errstate(divide="ignore", invalid="ignore"):
        q_same = np.where(px > 0, (keep * px + random * r * px) / den, 1.0)
        # sum over every y of random*r*p(y) * -log(random*r*p(y)/den), minus the y = x term
        other = random * r * (entropy - np.log(random * r) + np.log(den))
        other -= np.where(px > 0, random * r * px * -np.log(random * r * px / den), 0.0)
    loss = masked * entropy + float((-(keep * px + random * r * px) * np.log(q_same)).sum()
                                    + other.sum())
    copy = keep * px + random * r * px >= random * r * p.max()
    acc = masked * float(p.max()) + float(np.where(copy, keep * px + random * r * px,
                                                   random * r * p.max()).sum())
    return {"context_free_loss": loss, "context_free_accuracy": acc}


def unigram_baseline(shards, tokenizer=None) -> dict[str, Any] | None:
    """The unigram baseline of a `bertcore.data.shards.Shards`, cached in its directory.

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
