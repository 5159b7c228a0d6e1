"""The batch contract: shapes, dtypes, determinism, resume, ranks, epochs."""

import json

import numpy as np
import pytest

from bertcore.batches import BatchIterator, split_micro_batches
from bertcore.config import TrainConfig
from bertcore.errors import UserError
from helpers import build_shards

CFG = TrainConfig(batch_size=8, seq_len=64, max_predictions=10, seed=7)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_shards(tmp_path_factory.mktemp("batches"), n_docs=150)


def equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_contract_shapes_and_dtypes(data):
    b = next(BatchIterator(*data, CFG))
    B, L, P = 8, 64, 10
    spec = {"input_ids": ((B, L), np.int32), "token_type_ids": ((B, L), np.int32),
            "attention_mask": ((B, L), np.int32), "masked_positions": ((B, P), np.int32),
            "masked_ids": ((B, P), np.int32), "masked_weights": ((B, P), np.float32),
            "next_sentence_label": ((B,), np.int32)}
    assert set(b) == set(spec)
    for k, (shape, dtype) in spec.items():
        assert b[k].shape == shape and b[k].dtype == dtype, k
    nonsp = next(BatchIterator(*data, CFG.replace(nsp=False)))
    assert "next_sentence_label" not in nonsp and (nonsp["token_type_ids"] == 0).all()


def test_same_seed_same_batches_other_seed_differs(data):
    a, b = BatchIterator(*data, CFG), BatchIterator(*data, CFG)
    for _ in range(5):
        assert equal(next(a), next(b))
    c = BatchIterator(*data, CFG.replace(seed=8))
    assert not equal(next(BatchIterator(*data, CFG)), next(c))


def test_resume_from_state_continues_identically_across_epochs(data):
    it = BatchIterator(*data, CFG)
    per_epoch = it.batches_per_epoch
    for _ in range(per_epoch - 2):
        next(it)
    state = json.loads(json.dumps(it.state()))  # JSON-able
    expected = [next(it) for _ in range(5)]      # crosses into epoch 1
    assert it.epoch == 1
    resumed = BatchIterator(*data, CFG, state=state)
    for e in expected:
        assert equal(e, next(resumed))


def test_epochs_reshuffle(data):
    it = BatchIterator(*data, CFG)
    n = it.batches_per_epoch
    first = [next(it)["input_ids"] for _ in range(n)]
    second = [next(it)["input_ids"] for _ in range(n)]
    assert not all(np.array_equal(x, y) for x, y in zip(first, second))


def test_ranks_partition_the_global_batch(data):
    full = BatchIterator(*data, CFG)
    ranks = [BatchIterator(*data, CFG, rank=r, world_size=4) for r in range(4)]
    for _ in range(4):
        g = next(full)
        parts = [next(r) for r in ranks]
        for k in g:
            assert np.array_equal(np.concatenate([p[k] for p in parts]), g[k]), k


def test_micro_batches_and_divisibility_errors(data):
    b = next(BatchIterator(*data, CFG))
    parts = split_micro_batches(b, 4)
    assert all(len(p["input_ids"]) == 2 for p in parts)
    assert np.array_equal(np.concatenate([p["masked_ids"] for p in parts]), b["masked_ids"])
    with pytest.raises(UserError, match="grad-accum=3"):
        split_micro_batches(b, 3)
    with pytest.raises(UserError, match="not divisible by the world size 3"):
        BatchIterator(*data, CFG, world_size=3)


def test_resume_with_other_settings_refused(data):
    state = BatchIterator(*data, CFG).state()
    with pytest.raises(UserError, match="batch_size"):
        BatchIterator(*data, CFG.replace(batch_size=16), state=state)


def test_corpus_smaller_than_a_batch(data):
    with pytest.raises(UserError, match="fewer than one batch"):
        next(BatchIterator(*data, CFG.replace(batch_size=100000)))
