"""The batch contract: shapes, dtypes, determinism, resume, ranks, epochs."""

import json

import numpy as np
import pytest

from bertcore.model.config import TrainConfig
from bertcore.data.batches import BATCH_SPEC, BatchIterator, check_batch, split_micro_batches
from bertcore.infra.errors import UserError
from helpers import build_shards

CFG = TrainConfig(batch_size=8, seq_len=64, max_predictions=10, seed=7)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_shards(tmp_path_factory.mktemp("batches"), n_docs=150)


def equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_contract_shapes_and_dtypes(data):
    b = next(BatchIterator(*data, CFG))
    check_batch(b, 8, 64, 10, nsp=True)
    assert set(b) == set(BATCH_SPEC) - {"sample_seeds"}
    nonsp = next(BatchIterator(*data, CFG.replace(nsp=False)))
    check_batch(nonsp, 8, 64, 10, nsp=False)
    assert "next_sentence_label" not in nonsp and (nonsp["token_type_ids"] == 0).all()
    with pytest.raises(ValueError, match="'next_sentence_label' is missing"):
        check_batch(nonsp, 8, 64, 10, nsp=True)
    rank = next(BatchIterator(*data, CFG, rank=1, world_size=2))   # B = this rank's rows
    check_batch(rank, 4, 64, 10, nsp=True)
    micro = split_micro_batches(rank, 2)
    for i in range(2):
        check_batch({k: v[i] for k, v in micro.items()}, 2, 64, 10, nsp=True)


@pytest.mark.parametrize("change, problem", [
    (lambda b: b.update(input_ids=b["input_ids"].astype(np.int64)),
     "'input_ids' has dtype int64, expected int32"),
    (lambda b: b.update(masked_weights=b["masked_weights"].astype(np.int32)),
     "'masked_weights' has dtype int32, expected float32"),
    (lambda b: b.update(masked_ids=b["masked_ids"][:, :9]),
     r"'masked_ids' has shape \[8, 9\], expected \[B, P\] = \[8, 10\]"),
    (lambda b: b.update(next_sentence_label=b["next_sentence_label"][:, None]),
     r"'next_sentence_label' has shape \[8, 1\], expected \[B\] = \[8\]"),
    (lambda b: b.pop("attention_mask"), "'attention_mask' is missing"),
    (lambda b: b.update(token_type_ids=b["token_type_ids"].tolist()),
     "'token_type_ids' is a builtins.list, not a numpy array"),
    (lambda b: b.update(labels=b["masked_ids"]), "'labels' is not in the batch contract"),
])
def test_check_batch_rejects_what_breaks_the_contract(data, change, problem):
    b = next(BatchIterator(*data, CFG))
    change(b)
    with pytest.raises(ValueError, match=problem):
        check_batch(b, 8, 64, 10, nsp=True)


def test_check_batch_sizes_come_from_the_caller(data):
    b = next(BatchIterator(*data, CFG))
    with pytest.raises(ValueError, match=r"'input_ids' has shape \[8, 64\], expected \[B, L\]"
                                         r" = \[8, 128\]"):
        check_batch(b, 8, 128, 10, nsp=True)
    with pytest.raises(ValueError, match=r"expected \[B, L\] = \[16, 64\]"):
        check_batch(b, 16, 64, 10, nsp=True)
    check_batch(b, 8, 64, 10, nsp=False)   # with NSP off the label is optional, still checked
    b["next_sentence_label"] = b["next_sentence_label"].astype(np.int64)
    with pytest.raises(ValueError, match="'next_sentence_label' has dtype int64"):
        check_batch(b, 8, 64, 10, nsp=False)


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
    micro = split_micro_batches(b, 4)
    assert all(v.shape[:2] == (4, 2) for v in micro.values())
    for k, v in b.items():     # micro-batch i holds rows 2i, 2i+1, in order, as views
        assert np.array_equal(micro[k].reshape(v.shape), v) and np.shares_memory(micro[k], v), k
    with pytest.raises(ValueError, match="does not split into 3 equal micro-batches"):
        split_micro_batches(b, 3)
    # the one rule (TrainConfig.check_rows_divide), named the same way wherever it is checked
    with pytest.raises(UserError, match="does not split into 3 ranks x grad-accum=1"):
        BatchIterator(*data, CFG, world_size=3)
    with pytest.raises(UserError, match="does not split into 1 process x grad-accum=3"):
        CFG.replace(grad_accum=3).validate()
    with pytest.raises(UserError, match="8 devices x grad-accum=2 .* multiple of 16"):
        CFG.replace(grad_accum=2).check_rows_divide(8, "devices")
    with pytest.raises(UserError, match="8 devices x grad-accum=2 .* multiple of 16"):
        CFG.replace(grad_accum=2).rows_per_part(8, "devices")
    assert CFG.replace(grad_accum=2).rows_per_part(2, "devices") == CFG.batch_size // 4


def test_resume_with_other_settings_refused(data):
    state = BatchIterator(*data, CFG).state()
    with pytest.raises(UserError, match="batch_size"):
        BatchIterator(*data, CFG.replace(batch_size=16), state=state)


def test_corpus_smaller_than_a_batch(data):
    with pytest.raises(UserError, match="fewer than one batch"):
        next(BatchIterator(*data, CFG.replace(batch_size=100000)))


def test_electra_batches_add_sample_seeds_and_keep_the_masks(data):
    """objective="electra" adds one seed per slot (drawn after the masks, so the masked tokens
    are those of the same seed's MLM batch with the same replacement shares), and 85/0/15
    masking leaves no random replacement: every chosen slot is [MASK] or its own token."""
    mlm = CFG.replace(nsp=False, mask_replace_prob=0.85, random_replace_prob=0.0)
    a = next(BatchIterator(*data, mlm))
    e = next(BatchIterator(*data, mlm.replace(objective="electra")))
    check_batch(e, 8, 64, 10, nsp=False)
    assert set(e) - set(a) == {"sample_seeds"}
    assert all(np.array_equal(a[k], e[k]) for k in a)
    seeds = e["sample_seeds"]
    assert seeds.dtype == np.int32 and seeds.min() >= 0 and len(np.unique(seeds)) > 70
    tok = data[1]
    live = e["masked_weights"] > 0
    rows = np.broadcast_to(np.arange(8)[:, None], live.shape)
    now = e["input_ids"][rows[live], e["masked_positions"][live]]
    assert np.all((now == tok.mask_id) | (now == e["masked_ids"][live]))
    assert 0.7 < (now == tok.mask_id).mean() < 0.97
