"""Masking statistics over >= 1M tokens, instance layout and whole-word masking."""

import numpy as np
import pytest

from bertcore.model.config import TrainConfig
from bertcore.data.batches import BatchIterator
from bertcore.data.masking import assemble, create_instances
from helpers import build_shards


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_shards(tmp_path_factory.mktemp("mask"), n_docs=600, vocab_size=120)


def test_masking_statistics_over_a_million_tokens(data):
    shards, tok = data
    # P = L so the cap never bites: the 15% rate is measured exactly.
    cfg = TrainConfig(batch_size=256, seq_len=128, max_predictions=128, seed=3)
    it = BatchIterator(shards, tok, cfg)
    cand = selected = n_mask = n_same = n_random = 0
    labels = []
    while cand < 1_000_000:
        b = next(it)
        # Reconstruct the unmasked ids from the targets.
        orig = b["input_ids"].copy()
        rows, slots = np.nonzero(b["masked_weights"])
        pos = b["masked_positions"][rows, slots]
        orig[rows, pos] = b["masked_ids"][rows, slots]
        real = b["attention_mask"] > 0
        cand += int((real & ~tok.is_special[orig]).sum())
        selected += len(rows)
        # no special or padding token ever selected; masked_ids are the original tokens
        assert real[rows, pos].all()
        assert not tok.is_special[b["masked_ids"][rows, slots]].any()
        assert (b["masked_weights"][b["masked_weights"] > 0] == 1).all()
        now = b["input_ids"][rows, pos]
        target = b["masked_ids"][rows, slots]
        n_mask += int((now == tok.mask_id).sum())
        n_same += int((now == target).sum())
        n_random += int(((now != tok.mask_id) & (now != target)).sum())
        assert not tok.is_special[now[now != tok.mask_id]].any()  # random ids are real tokens
        labels.append(b["next_sentence_label"])
    assert abs(selected / cand - 0.15) < 0.003, selected / cand
    # a random replacement equals the original with chance ~1/vocab; tolerance covers it
    assert abs(n_mask / selected - 0.8) < 0.01
    assert abs(n_same / selected - 0.1) < 0.01
    assert abs(n_random / selected - 0.1) < 0.01
    labels = np.concatenate(labels)
    assert abs(labels.mean() - 0.5) < 0.05, labels.mean()  # a few thousand rows: loose


def test_nsp_labels_are_balanced(data):
    """50% +/- 1% random next segments, over >= 80k instances (sigma ~0.002)."""
    shards, _ = data
    labels = np.concatenate([
        create_instances(shards.sent_offsets, shards.doc_offsets, 128, [3, epoch], nsp=True)[:, 4]
        for epoch in range(40)])
    assert len(labels) >= 80_000
    assert abs(labels.mean() - 0.5) < 0.01, labels.mean()


def test_static_max_predictions_caps_and_pads(data):
    shards, tok = data
    b = next(BatchIterator(shards, tok, TrainConfig(batch_size=64, seq_len=128, max_predictions=5)))
    assert b["masked_positions"].shape == (64, 5)
    assert (b["masked_weights"].sum(1) <= 5).all()
    unused = b["masked_weights"] == 0
    assert (b["masked_positions"][unused] == 0).all() and (b["masked_ids"][unused] == 0).all()
    used = b["masked_positions"] * (~unused)
    assert (np.diff(used, axis=1)[~unused[:, 1:]] > 0).all()  # ascending, no duplicates


def test_instances_layout(data):
    shards, tok = data
    inst = create_instances(shards.sent_offsets, shards.doc_offsets, 64, [0], nsp=True)
    assert ((inst[:, 1] + inst[:, 3] <= 61).all() and (inst[:, 1] > 0).all()
            and (inst[:, 3] > 0).all())
    b = assemble(shards.tokens, inst[:50], 64, tok.cls_id, tok.sep_id, tok.pad_id, nsp=True)
    for i in range(50):
        a0, al, b0, bl, _ = inst[i]
        row = b["input_ids"][i]
        expect = [tok.cls_id, *shards.tokens[a0:a0 + al], tok.sep_id, *shards.tokens[b0:b0 + bl],
                  tok.sep_id]
        assert row[:len(expect)].tolist() == [int(x) for x in expect]
        assert (row[len(expect):] == tok.pad_id).all()
        assert b["attention_mask"][i].sum() == len(expect)
        assert b["token_type_ids"][i].tolist() == [0] * (al + 2) + [1] * (bl + 1) + \
            [0] * (64 - len(expect))
    # Actual-next pairs (label 0) continue the document: B starts where A ends. Truncation to
    # 61 = 64 - 3 tokens may then trim A's back and B's front, which opens a gap between them,
    # so: no gap where nothing was cut, B never before A's end, and both in one document.
    a0, al, b0, bl, label = inst.T
    nxt = label == 0
    gap = b0 - (a0 + al)
    full = al + bl == 61              # a truncated pair ends at exactly 61: shorter ones are uncut
    assert (gap[nxt & ~full] == 0).all() and (gap[nxt] >= 0).all()
    doc_start = shards.sent_offsets[shards.doc_offsets]         # token offset of each document
    doc_of = lambda t: np.searchsorted(doc_start, t, side="right") - 1  # noqa: E731
    assert (doc_of(a0[nxt]) == doc_of(b0[nxt] + bl[nxt] - 1)).all()
    assert (nxt & ~full).sum() > 50 and (gap[nxt] > 0).sum() > 50   # both cases are exercised
    # Without NSP every instance is one segment: no B, and A fits [CLS] A [SEP] (<= 64 - 2).
    single = create_instances(shards.sent_offsets, shards.doc_offsets, 64, [0], nsp=False)
    assert (single[:, 3] == 0).all() and (single[:, 1] <= 62).all()


def test_whole_word_masking_moves_pieces_together(data):
    shards, tok = data
    cfg = TrainConfig(batch_size=64, seq_len=128, max_predictions=40, whole_word_mask=True)
    b = next(BatchIterator(shards, tok, cfg))
    orig = b["input_ids"].copy()
    rows, slots = np.nonzero(b["masked_weights"])
    orig[rows, b["masked_positions"][rows, slots]] = b["masked_ids"][rows, slots]
    chosen = np.zeros_like(orig, dtype=bool)
    chosen[rows, b["masked_positions"][rows, slots]] = True
    cand = (b["attention_mask"] > 0) & ~tok.is_special[orig]
    cont = tok.is_continuation[orig] & cand
    # (a segment may start with a "##" piece cut off by truncation: it is its own word)
    cont[:, 1:] &= cand[:, :-1]
    cont[:, 0] = False
    assert cont.sum() > 100  # the synthetic corpus has multi-piece words
    # a continuation piece is chosen exactly when the piece before it is
    prev_chosen = np.zeros_like(chosen)
    prev_chosen[:, 1:] = chosen[:, :-1]
    assert (chosen[cont] == prev_chosen[cont]).all()
    rate = chosen.sum() / ((b["attention_mask"] > 0) & ~tok.is_special[orig]).sum()
    assert 0.12 < rate < 0.16
