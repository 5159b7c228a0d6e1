"""Held-out evaluation during pretraining, framework-free: which data, which batches, which
numbers. Each twin only runs its model over the batches (`evaluate` in its train.py).

The eval batches are fixed: the first `--eval-batches` global batches that a `BatchIterator`
with the run's own masking settings and seed draws from the held-out shards. They depend on
nothing that changes during training, so both twins, every evaluation of a run and every
resume see exactly the same masked tokens, and eval curves of two runs compare directly.

The held-out data is `--eval-data DATADIR`, else the split that
`python -m bertcore.data prepare --eval-fraction F` wrote beside the training data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bertcore.model.config import TrainConfig
from bertcore.data.batches import BatchIterator
from bertcore.data.shards import Shards
from bertcore.data.tokenizer import WordPiece
from bertcore.infra.errors import UserError


def eval_shards(eval_data: str | None, train: Shards, tok: WordPiece) -> Shards | None:
    """The held-out shards a run evaluates on, or None when it has none."""
    if eval_data:
        path = Path(eval_data)
        if not (path / "meta.json").is_file():   # (an old format: Shards says so itself)
            raise UserError(f"--eval-data {path} is not a prepared data directory; make one "
                            f"with python -m bertcore.data prepare --out {path}, or pass "
                            f"--eval-fraction to prepare to hold out part of the corpus")
        return Shards(path, tok)     # refuses data made with another tokenizer
    return Shards(train.eval_path, tok) if train.eval_path is not None else None


def eval_batches(shards: Shards, tok: WordPiece, cfg: TrainConfig, n: int) -> list[dict]:
    """The run's fixed eval batches (whole global batches: every rank evaluates all of them,
    so every rank computes the same numbers and no collective is needed)."""
    if n < 1:
        raise UserError(f"--eval-batches {n} must be at least 1")
    it = BatchIterator(shards, tok, cfg)
    return [next(it) for _ in range(n)]


def denominators(batches: list[dict]) -> tuple[float, float]:
    """(real predictions, rows) over all eval batches: each batch's loss is divided by the
    totals, so the per-batch metrics add up to the mean over every eval prediction and row."""
    predictions = float(sum(b["masked_weights"].sum() for b in batches))
    return max(predictions, 1.0), float(sum(len(b["input_ids"]) for b in batches))


def token_denominator(batches: list[dict]) -> float:
    """Real tokens over all eval batches (ELECTRA's discriminator is scored on every one)."""
    return max(float(sum(b["attention_mask"].sum() for b in batches)), 1.0)


def eval_row(totals: dict[str, float]) -> dict[str, Any]:
    """The metrics line of one evaluation: summed metrics + perplexity = exp(MLM loss) (ELECTRA:
    the generator's), and ELECTRA's discriminator precision and recall (`detection_rates`)."""
    row = {"split": "eval", **detection_rates({k: float(v) for k, v in totals.items()})}
    row["perplexity"] = math.exp(min(row["mlm_loss"], 700.0))   # exp overflows past ~709
    return row


def detection_rates(row: dict[str, float]) -> dict[str, float]:
    """An ELECTRA metrics row's summed shares of real tokens (disc_tp: predicted and replaced;
    disc_predicted; disc_replaced) as the discriminator's precision and recall on replaced
    tokens, and the share replaced (`replaced`: how often the generator's sample differs from
    the original). Ratios of sums, so they come after adding up micro-batches, ranks and eval
    batches. Other rows pass through."""
    if "disc_tp" not in row:
        return row
    row = dict(row)
    tp, predicted, replaced = (row.pop(k) for k in ("disc_tp", "disc_predicted", "disc_replaced"))
    row["disc_precision"] = tp / predicted if predicted > 0 else 0.0
    row["disc_recall"] = tp / replaced if replaced > 0 else 0.0
    row["replaced"] = replaced
    return row


def sum_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Add up per-batch metrics (host floats or 0-d arrays)."""
    out: dict[str, float] = {}
    for r in rows:
        for k, v in r.items():
            out[k] = out.get(k, 0.0) + float(np.asarray(v))
    return out
