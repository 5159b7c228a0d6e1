"""Pretokenized shards: layout, round trip, refusal of mismatched tokenizers, streaming."""

import json

import numpy as np
import pytest

from bertcore.data.prepare import prepare
from bertcore.data.shards import Shards
from bertcore.data.tokenizer import train_tokenizer
from bertcore.infra.errors import UserError
from helpers import ROOT, program, synthetic_documents


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(synthetic_documents(200), 150)


def test_prepare_round_trips_sentences(tmp_path, tok):
    from bertcore.data.corpus import split_sentences

    docs = synthetic_documents(50, seed=1) + ["   ", "Only one sentence here."]
    stats = prepare(docs, tok, tmp_path / "d", progress=False, chunk_documents=7)
    sh = Shards(tmp_path / "d", tok)
    assert sh.tokens.dtype == np.uint16  # vocab < 65536
    assert stats.documents == sh.num_documents == 51  # the blank document is dropped
    expect = [s for d in docs for s in split_sentences(d)]
    assert sh.num_sentences == len(expect)
    for i in (0, 5, len(expect) - 1):
        got = sh.tokens[sh.sent_offsets[i]:sh.sent_offsets[i + 1]].tolist()
        assert got == tok.encode_batch([expect[i]])[0]
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["tokenizer_fingerprint"] == tok.fingerprint and meta["tokens"] == len(sh.tokens)
    assert (tmp_path / "d" / "tokenizer" / "vocab.txt").is_file()


def test_other_tokenizer_refused(tmp_path, tok):
    prepare(synthetic_documents(20), tok, tmp_path / "d", progress=False)
    other = train_tokenizer(synthetic_documents(200, seed=5) + ["zebra quokka"] * 50, 160)
    with pytest.raises(UserError, match="built with another tokenizer"):
        Shards(tmp_path / "d", other)


def test_truncated_or_missing_data_refused(tmp_path, tok):
    prepare(synthetic_documents(20), tok, tmp_path / "d", progress=False)
    with open(tmp_path / "d" / "tokens-00000.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(UserError, match="tokens-00000.bin has 10 bytes.*truncated"):
        Shards(tmp_path / "d", tok)
    (tmp_path / "d" / "tokens-00000.bin").unlink()
    with pytest.raises(UserError, match="tokens-00000.bin listed in .* is missing"):
        Shards(tmp_path / "d", tok)
    prepare(synthetic_documents(20), tok, tmp_path / "e", progress=False)
    with open(tmp_path / "e" / "sent_offsets.bin", "r+b") as f:
        f.truncate(16)
    with pytest.raises(UserError, match="does not match its meta.json"):
        Shards(tmp_path / "e", tok)
    with pytest.raises(UserError, match="not a prepared data directory"):
        Shards(tmp_path / "nothing", tok)


def test_damaged_tokens_are_one_error_with_the_fix(tmp_path, tok):
    """A token file overwritten at the same size passes the O(1) checks; the batch that reads
    an id beyond the vocabulary names the data directory and how to make it again."""
    from bertcore.model.config import TrainConfig
    from bertcore.data.batches import BatchIterator

    prepare(synthetic_documents(20), tok, tmp_path / "d", progress=False)
    f = tmp_path / "d" / "tokens-00000.bin"
    f.write_bytes(b"\xff" * f.stat().st_size)
    it = BatchIterator(Shards(tmp_path / "d", tok), tok,
                       TrainConfig(batch_size=4, seq_len=32, max_predictions=5), epoch_cache=None)
    with pytest.raises(UserError, match=rf"{tmp_path / 'd'} are damaged \(token id 65535.*"
                                        rf"bertcore.data prepare --out .* --overwrite"):
        next(it)


def test_failed_prepare_keeps_the_good_directory(tmp_path, tok):
    prepare(synthetic_documents(20), tok, tmp_path / "d", progress=False)
    before = (tmp_path / "d" / "tokens-00000.bin").read_bytes()

    def broken():
        yield from synthetic_documents(5)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        prepare(broken(), tok, tmp_path / "d", progress=False, chunk_documents=2)
    assert (tmp_path / "d" / "tokens-00000.bin").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temp dir left behind


def test_empty_corpus(tmp_path, tok):
    with pytest.raises(UserError, match="produced no tokens"):
        prepare(["", "  "], tok, tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_prepare_streams_in_bounded_memory(tmp_path, tok):
    """Peak memory of prepare does not grow with the corpus (run in fresh subprocesses)."""
    import os
    import subprocess

    tok.save(tmp_path / "tok")
    # the program imports the project and helpers.py
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    rss = []
    for n in (2000, 20000):
        out = subprocess.run(program("prepare_rss", str(n), str(tmp_path / f"d{n}"),
                                     str(tmp_path / "tok")),
                             capture_output=True, text=True, check=True, env=env)
        rss.append(int(out.stdout.split()[-1]))
    # 10x the corpus (~10 MB of text) may not add more than a few MB of peak memory
    assert rss[1] - rss[0] < 8 * 1024, rss


def test_an_old_format_is_not_prepared(tmp_path):
    """A cached data dir from an older version counts as not prepared, so a --corpus run
    rebuilds it (prepare replaces it atomically) instead of failing on the old format."""
    import json

    from bertcore.data.shards import FORMAT, dir_is_prepared
    d = tmp_path / "d"
    d.mkdir()
    assert not dir_is_prepared(d)
    (d / "meta.json").write_text(json.dumps({"format": "twinbert-shards-v1"}))
    assert not dir_is_prepared(d)
    (d / "meta.json").write_text("{torn")
    assert not dir_is_prepared(d)
    (d / "meta.json").write_text(json.dumps({"format": FORMAT}))
    assert dir_is_prepared(d)
