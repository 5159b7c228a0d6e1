"""bertcore.train.baseline (the unigram baseline a run must beat) and bertcore.train.metrics'
end-of-run summary and loss.png: smoothed curves, baseline lines, eval rows as points."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from bertcore.train.baseline import (CACHE_NAME, baseline_from_counts, unigram_baseline,
                                     unigram_counts)
from bertcore.train.metrics import (FILL_MASK_EXAMPLE, ema, learned, learned_lines, plot_metrics,
                                    split_rows)


class FakeTokenizer:
    is_special = np.array([True, True, False, False, False, False])

    def id_to_token(self, i: int) -> str:
        return ["[PAD]", "[UNK]", "a", "b", "c", "d"][i]


class FakeShards:
    """What unigram_baseline reads of a bertcore.data.shards.Shards."""

    def __init__(self, path: Path, tokens: np.ndarray, fingerprint: str = "f1"):
        self.path, self.tokens, self.vocab_size = path, tokens, 6
        self.meta = {"tokenizer_fingerprint": fingerprint, "tokens": len(tokens)}
        self.reads = 0

    def tokenizer(self):
        self.reads += 1
        return FakeTokenizer()


def test_unigram_counts_in_chunks_equal_bincount():
    t = np.random.default_rng(0).integers(0, 50, size=10_001).astype(np.uint16)
    assert (unigram_counts(t, 50, chunk=97) == np.bincount(t, minlength=50)).all()


def test_baseline_is_entropy_and_top_share_without_specials(tmp_path):
    # a: 4, b: 2, c: 1, d: 1 (+ 5 [UNK] and 3 [PAD] that must not count)
    tokens = np.array([2] * 4 + [3] * 2 + [4, 5] + [1] * 5 + [0] * 3, dtype=np.uint16)
    shards = FakeShards(tmp_path, tokens)
    b = unigram_baseline(shards)
    p = np.array([4, 2, 1, 1]) / 8
    assert b["entropy"] == pytest.approx(-(p * np.log(p)).sum())
    assert b["perplexity"] == pytest.approx(math.exp(b["entropy"]))
    assert b["top_share"] == 0.5 and b["top_token"] == "a" and b["tokens"] == 8
    # cached in the data dir, read back without touching the tokens again
    assert json.loads((tmp_path / CACHE_NAME).read_text())["entropy"] == b["entropy"]
    shards.tokens = None
    assert unigram_baseline(shards) == b and shards.reads == 1


def test_baseline_cache_is_ignored_for_other_data(tmp_path):
    unigram_baseline(FakeShards(tmp_path, np.array([2, 2, 3], dtype=np.uint16)))
    # same directory, other tokenizer / other tokens: computed again, not read from the cache
    b = unigram_baseline(FakeShards(tmp_path, np.array([2, 3, 4, 5], dtype=np.uint16), "f2"))
    assert b["entropy"] == pytest.approx(math.log(4)) and b["top_share"] == 0.25


def test_baseline_of_a_read_only_or_empty_dir(tmp_path):
    missing = tmp_path / "not" / "there"   # cannot be written: computed, not cached
    assert unigram_baseline(FakeShards(missing, np.array([2, 3], dtype=np.uint16)))[
        "entropy"] == pytest.approx(math.log(2))
    assert baseline_from_counts(np.zeros(6, np.int64))["entropy"] is None


def test_context_free_baseline_equals_brute_force():
    """The closed form equals the best slot-only predictor computed over every (shown, target)
    pair: 80% [MASK] (predict p), 10% a uniform random replaceable token, 10% the token."""
    from bertcore.train.baseline import context_free

    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(7) * 0.5)
    p[2] = 0.0                                   # a token that never occurs
    p /= p.sum()
    repl = np.ones(7, dtype=bool)
    V = 7
    joint = np.zeros((V, V))                     # joint[x, y] = P(shows x, target y), not [MASK]
    for y in range(V):
        joint[y, y] += 0.1 * p[y]
        joint[:, y] += 0.1 * p[y] / V
    nz = p > 0
    h = float(-(p[nz] * np.log(p[nz])).sum())
    post = joint / np.maximum(joint.sum(1, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = 0.8 * h + float(np.where(joint > 0, -joint * np.log(post), 0).sum())
    acc = 0.8 * p.max() + float(joint.max(1).sum())
    got = context_free(p, repl, h)
    assert got["context_free_loss"] == pytest.approx(loss, rel=1e-9)
    assert got["context_free_accuracy"] == pytest.approx(acc, rel=1e-9)
    assert got["context_free_loss"] < h and got["context_free_accuracy"] > p.max()


def test_ema_is_bias_corrected():
    assert ema([3.0] * 20, 5) == pytest.approx([3.0] * 20)     # no pull towards 0
    assert ema([1.0, 2.0, 3.0], 1) == [1.0, 2.0, 3.0]          # window 1: the raw values
    s = ema([0.0, 10.0] * 50, 10)
    assert 4 < s[-1] < 6                                         # smooths the zig-zag


def _rows(with_eval: bool = True) -> list[dict]:
    rows = []
    for s in range(10, 210, 10):
        rows.append({"step": s, "loss": 8 - s / 100, "mlm_loss": 7.3 - s / 100,
                     "mlm_accuracy": s / 1000, "nsp_loss": 0.69,
                     "nsp_accuracy": 0.5 + (s % 20) / 100,
                     "learning_rate": 1e-3, "grad_norm": 1.0, "tokens_per_second": 1.0,
                     "elapsed": s / 10})
        if with_eval and s % 100 == 0:
            rows.append({"step": s, "split": "eval", "mlm_loss": 7.5 - s / 100,
                         "mlm_accuracy": s / 1200, "perplexity": math.exp(7.5 - s / 100),
                         "nsp_loss": 0.7, "nsp_accuracy": 0.55})
    return rows


BASELINE = {"entropy": 6.28, "top_share": 0.054, "top_token": ".", "context_free_loss": 5.4,
            "context_free_accuracy": 0.14}


def test_learned_separates_eval_rows_and_names_the_baseline():
    rows = _rows()
    train, evals = split_rows(rows)
    assert len(train) == 20 and [m["step"] for m in evals] == [100, 200]
    got = learned(rows, BASELINE)
    assert got["final_mlm_loss"] == pytest.approx(np.mean([7.3 - s / 100 for s in
                                                            range(160, 210, 10)]))
    assert got["final_mlm_accuracy_mean"] == pytest.approx(0.18)
    assert got["unigram_entropy"] == 6.28 and got["eval"]["step"] == 200
    assert got["eval"]["mlm_loss"] == pytest.approx(5.5)
    text, nxt = learned_lines(got, "jax", "runs/x")
    assert "MLM loss 5.50 (word frequencies alone: 6.28; blind to context: 5.40)" in text
    assert "accuracy 18.0% (always '.': 5.4%; blind to context: 14.0%)" in text
    assert "below word frequencies, but no better yet" in text and "NOT" not in text
    assert "it uses context" in learned_lines({**got, "final_mlm_loss": 5.3}, "jax", "r")[0]
    assert "NOT below word frequencies" in learned_lines({**got, "final_mlm_loss": 6.5}, "jax",
                                                         "r")[0]
    assert "held-out (step 200): MLM loss 5.50, accuracy 16.7%" in text
    assert f'python -m jaxbert.fill_mask runs/x "{FILL_MASK_EXAMPLE}"' in nxt
    assert "parity.convert runs/x runs/x-torch --to torch" in nxt and "parity.check" in nxt
    # no eval rows, no baseline, or nothing logged: fewer words, no crash
    bare = learned(_rows(with_eval=False), None)
    assert bare["eval"] is None and "held-out" not in learned_lines(bare, "torch", "r")[0]
    assert "torchbert.fill_mask r " in learned_lines(bare, "torch", "r")[1]
    assert "parity.convert r r-jax --to jax" in learned_lines(bare, "torch", "r")[1]
    assert learned([], None)["final_mlm_loss"] is None and learned_lines(learned([], None),
                                                                          "jax", "r") == []


def test_plot_draws_train_eval_baseline_and_lr(tmp_path):
    pytest.importorskip("matplotlib")
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    png = plot_metrics(metrics, tmp_path / "loss.png", "t", baseline=BASELINE)
    assert png == tmp_path / "loss.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # MLM-only rows without learning rate, no baseline: still a plot
    metrics.write_text("".join(json.dumps({"step": s, "loss": 5.0, "mlm_loss": 5.0,
                                           "mlm_accuracy": 0.1}) + "\n" for s in (1, 2)))
    assert plot_metrics(metrics, tmp_path / "b.png") is not None
    metrics.write_text("")
    assert plot_metrics(metrics, tmp_path / "c.png") is None


def test_plot_is_skipped_quietly_without_matplotlib(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    assert plot_metrics(metrics, tmp_path / "loss.png", baseline=BASELINE) is None
    assert not (tmp_path / "loss.png").exists()


def test_electra_rows_say_what_the_generator_and_the_discriminator_learned():
    """An ELECTRA run's end lines: the MLM figures are the generator's, and the discriminator
    is set against guessing 'original' everywhere (right on every token not replaced)."""
    rows = [{"step": s, "loss": 20.0, "mlm_loss": 6.0, "mlm_accuracy": 0.1, "disc_loss": 0.3,
             "disc_accuracy": 0.9, "disc_precision": 0.6, "disc_recall": 0.25,
             "replaced": 0.12} for s in (10, 20)]
    rows.append({"step": 20, "split": "eval", "loss": 21.0, "mlm_loss": 6.1,
                 "mlm_accuracy": 0.1, "disc_accuracy": 0.89, "disc_precision": 0.5,
                 "disc_recall": 0.2, "replaced": 0.13, "disc_loss": 0.31})
    got = learned(rows, BASELINE)
    assert got["final_disc_accuracy"] == pytest.approx(0.9)
    assert got["eval"]["disc_precision"] == 0.5
    gen, disc, nxt = learned_lines(got, "torch", "runs/e", "electra")
    assert gen.startswith("learned: generator MLM loss 6.00")
    assert ("discriminator accuracy 90.0% on every token (all 'original': 88.0%), precision "
            "60.0% and recall 25.0% on the 12.0% replaced") in disc
    assert nxt.endswith("python -m parity.check --arch electra")
