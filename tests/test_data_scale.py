"""bertcore at corpus scale: vectorised instances against a per-sentence reference walk, sharded
and parallel prepare, resume at several world sizes, the eval split, compressed and Parquet
corpora, and the one-line errors for bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from bertcore.model.config import TrainConfig
from bertcore.data.batches import WINDOW, BatchIterator
from bertcore.data.corpus import iter_documents, split_sentences
from bertcore.data.instances import _Draws, _truncate, chunk_starts, create_instances, instance_rows
from bertcore.data.prepare import prepare
from bertcore.data.shards import Shards
from bertcore.data.tokenizer import train_tokenizer
from bertcore.infra.errors import UserError
from helpers import assert_one_line_error, run_cli, synthetic_documents


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(synthetic_documents(200), 150)


@pytest.fixture(scope="module")
def docs():
    # Some long documents and one-sentence ones, so chunks of every kind occur.
    return synthetic_documents(300, seed=4, max_sents=40) + ["Short one."] * 5


@pytest.fixture(scope="module")
def data(tmp_path_factory, tok, docs):
    out = tmp_path_factory.mktemp("scale") / "d"
    prepare(docs, tok, out, progress=False, workers=1)
    return Shards(out, tok)


def reference_starts(so, do, seq_len, seed, nsp, short_seq_prob):
    """google-research/bert's walk, one sentence at a time, with the same per-sentence draws."""
    max_tokens = seq_len - 3 if nsp else seq_len - 2
    draws = _Draws(seed, max_tokens, short_seq_prob)
    out = []
    for d in range(len(do) - 1):
        i, end = int(do[d]), int(do[d + 1])
        while i < end:
            out.append(i)
            target = int(draws.target(np.array([i]))[0])
            j, length = i, 0
            while True:   # fill the chunk until it reaches the target or the document ends
                length += int(so[j + 1] - so[j])
                j += 1
                if j >= end or length >= target:
                    break
            if not nsp:
                i = j
                continue
            is_random, a_sents = draws.nsp(np.array([i]), np.array([j - i]))
            if j - i == 1:
                i = j   # one sentence: A is all of it or a token prefix; the chunk is used
            else:       # a random B returns the chunk's unused sentences to the pool
                i = i + int(a_sents[0]) if is_random[0] else j
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("nsp", [True, False])
def test_chunk_starts_match_the_sequential_walk(data, nsp):
    so, do = data.sent_offsets, data.doc_offsets
    for seq_len in (16, 64, 128):
        want = reference_starts(so, do, seq_len, [1, 2], nsp, 0.1)
        for block in (5, 64, 1 << 15):   # blocks bound memory; they never change the result
            got = chunk_starts(so, do, seq_len, [1, 2], nsp, 0.1, block_sentences=block)
            assert got.dtype == np.uint32
            np.testing.assert_array_equal(got, want)


def test_truncate_matches_googles_loop():
    for max_tokens in (5, 6, 61):
        for a in range(0, 70, 3):
            for b in range(0, 70, 2):
                x, y = a, b
                while x + y > max_tokens:
                    if x > y:
                        x -= 1
                    else:
                        y -= 1
                ta, tb = _truncate(np.array([a]), np.array([b]), max_tokens)
                assert (ta[0], tb[0]) == (x, y), (a, b, max_tokens)


def test_instances_respect_documents_and_short_seq_prob(data):
    so, do = data.sent_offsets, data.doc_offsets
    inst = create_instances(so, do, 64, [7], short_seq_prob=0.0)
    full = create_instances(so, do, 64, [7], short_seq_prob=1.0)
    # Every target short (uniform in [2, 61]): more, shorter pairs than with none short (a chunk
    # still ends on a sentence boundary past its target, so the means stay close).
    assert len(full) > 1.2 * len(inst)
    assert (full[:, 1] + full[:, 3]).mean() < 0.95 * (inst[:, 1] + inst[:, 3]).mean()
    # A always lies inside one document.
    doc_start = np.asarray(so)[np.asarray(do)]
    a0, al = inst[:, 0], inst[:, 1]
    doc = np.searchsorted(doc_start, a0, side="right")
    assert (np.searchsorted(doc_start, a0 + al - 1, side="right") == doc).all()
    # A random B comes from another document.
    rand = inst[:, 4] == 1
    b_doc = np.searchsorted(doc_start, inst[rand, 2], side="right")
    assert (b_doc != doc[rand]).all() and 0.4 < rand.mean() < 0.6


def test_sharded_and_parallel_prepare_give_the_same_batches(tmp_path, tok, docs, data):
    # Small chunks and shards: several worker tasks and several shard files.
    prepare(docs, tok, tmp_path / "p", progress=False, workers=2, chunk_documents=40,
            shard_tokens=20_000)
    sh = Shards(tmp_path / "p", tok)
    assert len(sh.meta["shards"]) > 3 and sh.sent_offsets.dtype == np.int64
    np.testing.assert_array_equal(np.asarray(sh.tokens), np.asarray(data.tokens))
    np.testing.assert_array_equal(sh.sent_offsets, data.sent_offsets)
    np.testing.assert_array_equal(sh.doc_offsets, data.doc_offsets)
    cfg = TrainConfig(batch_size=8, seq_len=64, max_predictions=10)
    a, b = BatchIterator(data, tok, cfg), BatchIterator(sh, tok, cfg)
    for _ in range(WINDOW + 5):
        x, y = next(a), next(b)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


@pytest.mark.parametrize("world", [1, 2, 4])
def test_resume_mid_window_and_across_epochs_at_world_sizes(data, tok, world):
    cfg = TrainConfig(batch_size=8, seq_len=64, max_predictions=10, seed=5)
    whole = BatchIterator(data, tok, cfg)
    per_epoch = whole.batches_per_epoch
    steps = per_epoch + WINDOW // 2 + 3        # into the second epoch, mid-window
    want = [next(whole) for _ in range(steps + 4)]
    for r in range(world):
        it = BatchIterator(data, tok, cfg, rank=r, world_size=world)
        for _ in range(steps):
            next(it)
        resumed = BatchIterator(data, tok, cfg, rank=r, world_size=world,
                                state=json.loads(json.dumps(it.state())))
        rows = slice(r * 8 // world, (r + 1) * 8 // world)
        for w in want[steps:]:
            got = next(resumed)
            for k in got:
                np.testing.assert_array_equal(got[k], w[k][rows])


def test_old_state_format_refused(data, tok):
    cfg = TrainConfig(batch_size=8, seq_len=64, max_predictions=10)
    state = {**BatchIterator(data, tok, cfg).state(), "format": "twinbert-batches-v1"}
    with pytest.raises(UserError, match="twinbert-batches-v1.*start a new run"):
        BatchIterator(data, tok, cfg, state=state)


def test_old_shard_format_refused(data, tmp_path):
    import shutil

    shutil.copytree(data.path, tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "meta.json").read_text())
    (tmp_path / "old" / "meta.json").write_text(json.dumps({**meta,
                                                            "format": "twinbert-shards-v1"}))
    with pytest.raises(UserError, match="twinbert-shards-v1.*prepare the data again"):
        Shards(tmp_path / "old")


def _doc_token_lists(sh):
    so, do, toks = np.asarray(sh.sent_offsets), np.asarray(sh.doc_offsets), np.asarray(sh.tokens)
    return {tuple(toks[so[do[d]]:so[do[d + 1]]]) for d in range(len(do) - 1)}


def test_eval_split_is_disjoint_stable_and_standalone(tmp_path, tok):
    corpus = synthetic_documents(400, seed=9)
    prepare(corpus, tok, tmp_path / "a", progress=False, eval_fraction=0.2, workers=1)
    # The same documents in another order: the same documents are held out.
    order = np.random.default_rng(0).permutation(len(corpus))
    prepare([corpus[i] for i in order], tok, tmp_path / "b", progress=False, eval_fraction=0.2,
            workers=1)
    train, held = Shards(tmp_path / "a", tok), Shards(tmp_path / "a" / "eval")
    assert train.eval_path == tmp_path / "a" / "eval" and held.meta["split"] == "eval"
    assert held.num_documents + train.num_documents == 400
    assert 0.12 < held.num_documents / 400 < 0.28
    assert not _doc_token_lists(train) & _doc_token_lists(held)
    assert _doc_token_lists(held) == _doc_token_lists(Shards(tmp_path / "b" / "eval"))
    cfg = TrainConfig(batch_size=4, seq_len=32, max_predictions=5)
    assert next(BatchIterator(held, held.tokenizer(), cfg))["input_ids"].shape == (4, 32)
    with pytest.raises(UserError, match="outside"):
        prepare(corpus, tok, tmp_path / "c", progress=False, eval_fraction=1.5)


def test_compressed_parquet_folder_and_glob_corpora(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    docs = synthetic_documents(30, seed=3)
    folder = tmp_path / "corpus"
    folder.mkdir()
    with gzip.open(folder / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n\n".join(docs[:10]) + "\n")
    lines = "".join(json.dumps({"text": d}) + "\n" for d in docs[10:20])
    (folder / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    pq.write_table(pa.table({"id": list(range(10)), "text": docs[20:]}), folder / "c.parquet",
                   row_group_size=3)   # four row groups
    (folder / "notes.md").write_text("not a corpus file")
    assert list(iter_documents(str(folder))) == docs
    assert list(iter_documents(str(folder / "c.parquet"))) == docs[20:]
    assert list(iter_documents(str(folder / "*.gz"))) == docs[:10]
    assert list(iter_documents(str(tmp_path / "**" / "*.parquet"))) == docs[20:]
    with pytest.raises(UserError, match="no corpus file matches"):
        iter_documents(str(folder / "*.csv"))
    assert [s for d in iter_documents(str(folder / "a.txt.gz")) for s in split_sentences(d)]


def test_bad_corpus_files_one_line_nothing_overwritten(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tok.save(tmp_path / "tok")
    good = tmp_path / "data"
    prepare(synthetic_documents(20), tok, good, progress=False)
    before = (good / "tokens-00000.bin").read_bytes()
    pq.write_table(pa.table({"body": ["A document."]}), tmp_path / "x.parquet")
    raw = gzip.compress(("\n\n".join(synthetic_documents(200)) + "\n").encode())
    (tmp_path / "bad.txt.gz").write_bytes(raw[:len(raw) // 2])   # truncated
    (tmp_path / "junk.jsonl.gz").write_bytes(b"not gzip at all")
    for corpus, needle in (("x.parquet", "no 'text' column (columns: body)"),
                           ("bad.txt.gz", "truncated or corrupt"),
                           ("junk.jsonl.gz", "not a valid compressed file")):
        proc = run_cli("-m", "bertcore.data", "prepare", "--corpus", str(tmp_path / corpus),
                       "--tokenizer", str(tmp_path / "tok"), "--out", str(good), "--overwrite",
                       "--no-progress", "--workers", "1")
        assert_one_line_error(proc, needle)
        assert (good / "tokens-00000.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ---- epochs: the order must not change when the way an epoch is built or stored does ------------

def synthetic_offsets(n_docs, seed):
    rng = np.random.default_rng(seed)
    sents = rng.integers(1, 40, n_docs)
    sents[::17] = 1
    lens = rng.integers(1, 60, sents.sum())
    lens[::53] = 300   # some sentences longer than seq_len
    do = np.concatenate([[0], np.cumsum(sents)]).astype(np.int64)
    so = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return so, do


# Digests of the epoch order and its first rows, taken from the code of commit a90fdd3 (the
# epoch built in memory by chunk_starts and shuffled in place): pinned so that caching or
# speeding up the epoch can never change a batch.
PINNED = [((128, [1, 0x1257, 0], True), 19633, "c0009c3a83dd579c"),
          ((128, [1, 0x1257, 1], True), 19814, "87d8cf01c7d95e0d"),
          ((64, [9, 0x1257, 3], False), 23352, "f1c484649d1c79d4"),
          ((512, [2, 0x1257, 0], True), 8252, "bf2ff275c174d82e")]


@pytest.mark.parametrize("case", PINNED, ids=lambda c: f"L{c[0][0]}-nsp{c[0][2]}")
def test_epoch_order_is_pinned(case):
    import hashlib

    (seq_len, seed, nsp), n, digest = case
    so, do = synthetic_offsets(3000, 0)
    starts = chunk_starts(so, do, seq_len, seed, nsp, 0.1)
    np.random.default_rng([*seed, 0]).shuffle(starts)
    rows = instance_rows(starts[:500], so, do, seq_len, seed,
                         np.random.default_rng([*seed, 1, 0]), nsp, 0.1)
    assert (len(starts), hashlib.sha256(starts.tobytes() + rows.tobytes()).hexdigest()[:16]) \
        == (n, digest)


def reference_batches(data, tok, cfg, steps, rank=0, world=1):
    """The batches as commit a90fdd3 made them: each epoch's chunk starts built in memory,
    shuffled in place, rows a window of WINDOW batches at a time."""
    it = BatchIterator(data, tok, cfg, rank=rank, world_size=world)   # for make_batch only
    G, out, epoch, index, starts = cfg.batch_size, [], 0, 0, None
    for step in range(steps):
        if starts is None or index >= len(starts) // G:
            epoch, index = (epoch + 1, 0) if starts is not None else (0, 0)
            seed = [cfg.seed, 0x1257, epoch]
            starts = chunk_starts(data.sent_offsets, data.doc_offsets, cfg.seq_len, seed,
                                  cfg.nsp, cfg.short_seq_prob)
            np.random.default_rng([*seed, 0]).shuffle(starts)
        w = index // WINDOW
        lo, hi = w * WINDOW * G, min((w + 1) * WINDOW, len(starts) // G) * G
        rows = instance_rows(starts[lo:hi], data.sent_offsets, data.doc_offsets, cfg.seq_len,
                             seed, np.random.default_rng([*seed, 1, w]), cfg.nsp,
                             cfg.short_seq_prob)
        k = (index - w * WINDOW) * G
        rows = rows[k:k + G][rank * G // world:(rank + 1) * G // world]
        out.append(it.make_batch(rows, step))
        index += 1
    return out


@pytest.mark.parametrize("world,nsp", [(1, True), (2, True), (4, False)])
def test_batches_equal_the_reference_path(data, tok, world, nsp):
    cfg = TrainConfig(batch_size=8, seq_len=64, max_predictions=10, seed=3, nsp=nsp)
    per_epoch = BatchIterator(data, tok, cfg).batches_per_epoch
    steps = per_epoch + WINDOW + 2   # two epochs, past a window boundary
    for r in range(world):
        want = reference_batches(data, tok, cfg, steps, r, world)
        it = BatchIterator(data, tok, cfg, rank=r, world_size=world)
        for w in want:
            got = next(it)
            assert got.keys() == w.keys()
            for k in got:
                np.testing.assert_array_equal(got[k], w[k])


def test_epoch_cache_is_built_once_shared_and_pruned(data, tok, tmp_path, monkeypatch):
    cfg = TrainConfig(batch_size=8, seq_len=64, max_predictions=10, seed=11)
    cache = tmp_path / "epochs"
    plain = BatchIterator(data, tok, cfg, epoch_cache=None)
    per_epoch = plain.batches_per_epoch
    want = [next(plain) for _ in range(3 * per_epoch + 2)]
    it = BatchIterator(data, tok, cfg, epoch_cache=cache)
    for w in want[:per_epoch + 1]:
        np.testing.assert_array_equal(next(it)["input_ids"], w["input_ids"])
    files = sorted(p.name for p in cache.glob("*.npy"))
    assert [f.split("-")[1] for f in files] == ["epoch0.npy", "epoch1.npy"]
    assert not list(cache.glob(".*.tmp"))
    # Another rank, or a resume, opens the file: memory-mapped, read-only, no rebuild.
    import bertcore.data.instances as inst

    monkeypatch.setattr(inst, "chunk_starts", lambda *a, **k: pytest.fail("rebuilt"))
    again = BatchIterator(data, tok, cfg, epoch_cache=cache, state=it.state())
    assert isinstance(again._epoch_starts(), np.memmap)
    np.testing.assert_array_equal(next(again)["input_ids"], want[per_epoch + 1]["input_ids"])
    monkeypatch.undo()
    # A damaged file is rebuilt (replaced, not written in place: readers keep their mapping).
    (cache / "x").write_bytes((cache / files[1]).read_bytes()[:200])
    (cache / "x").replace(cache / files[1])
    fresh = BatchIterator(data, tok, cfg, epoch_cache=cache, state=it.state())
    for w in want[per_epoch + 1:]:
        np.testing.assert_array_equal(next(fresh)["input_ids"], w["input_ids"])
    # Files two epochs back are removed.
    assert sorted(p.name.split("-")[1] for p in cache.glob("*.npy")) == ["epoch2.npy",
                                                                        "epoch3.npy"]


def test_read_only_data_dir_caches_under_the_cache_root(data, tok, tmp_path, monkeypatch):
    import bertcore.data.batches as batches

    monkeypatch.setenv("TWINBERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(batches.os, "access", lambda path, mode: False)   # root writes anyway
    folder = batches.epoch_cache_dir(data)
    assert folder.parent == tmp_path / "cache" / "epochs"
    cfg = TrainConfig(batch_size=8, seq_len=64, max_predictions=10)
    want = next(BatchIterator(data, tok, cfg, epoch_cache=None))["input_ids"]
    np.testing.assert_array_equal(next(BatchIterator(data, tok, cfg))["input_ids"], want)
    assert list(folder.glob("*-epoch0.npy"))
    # Nowhere to write at all (here: the folder would be under a file): built in memory.
    (tmp_path / "file").write_text("")
    it = BatchIterator(data, tok, cfg, epoch_cache=tmp_path / "file" / "epochs")
    np.testing.assert_array_equal(next(it)["input_ids"], want)
