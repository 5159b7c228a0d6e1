"""Corpora from Hugging Face `datasets`: a save_to_disk directory (a Dataset, or a DatasetDict's
--split), Arrow files, and hf:NAME, as --corpus of prepare, tokenizer train and a twin's train.

Every dataset here is built by the test; nothing is downloaded. A real Hub dataset cannot be
read offline: what is tested of hf:NAME is its offline failure (one line, at once) and the same
loading and streaming code on a local folder of Parquet files, which `load_dataset` takes as a
NAME too."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from helpers import (assert_one_line_error, base_args, metrics, run_cli, synthetic_documents,
                     train_cli)

datasets = pytest.importorskip("datasets")

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test here may reach the Hub, nor write to the user's Hugging Face cache."""
    for k, v in {**OFFLINE, "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(k, v)


def builtin_docs(n: int = 40) -> list[str]:
    """Real prose with lines inside documents (the built-in corpus's first documents)."""
    from bertcore.data.corpus import builtin_documents

    docs = list(itertools.islice(builtin_documents(), n))
    assert any("\n" in d for d in docs)
    return docs


def save(docs: list[str], path: Path, column: str = "text") -> Path:
    ds = datasets.Dataset.from_dict({"id": list(range(len(docs))), column: docs})
    ds.save_to_disk(str(path))
    return path


def prepare_cli(corpus, tok: Path, out: Path, *extra: str) -> None:
    from bertcore.data.__main__ import main

    assert main(["prepare", "--corpus", str(corpus), "--tokenizer", str(tok), "--out", str(out),
                 "--workers", "1", "--no-progress", *extra]) == 0


def contents(data: Path) -> dict[str, bytes]:
    """Every file of a data directory, its meta.json without the source it names."""
    out = {}
    for p in sorted(data.rglob("*")):
        if p.is_file():
            raw = p.read_bytes()
            if p.name == "meta.json":
                raw = json.dumps({k: v for k, v in json.loads(raw).items() if k != "source"},
                                 sort_keys=True).encode()
            out[p.relative_to(data).as_posix()] = raw
    return out


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    from bertcore.data.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "tok"
    train_tokenizer(builtin_docs() + synthetic_documents(40), 400).save(path)
    return path


def test_a_saved_dataset_prepares_into_the_same_shards_as_its_text_in_a_file(tmp_path, tok_dir):
    """The done-criterion: a row is one document of a .txt file (blank line between them), so
    both give identical shards, held-out split included."""
    docs = builtin_docs()
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    saved = save(docs, tmp_path / "saved")
    for corpus, out in ((text, "from-text"), (saved, "from-dataset")):
        prepare_cli(corpus, tok_dir, tmp_path / out, "--eval-fraction", "0.25")
    a, b = contents(tmp_path / "from-text"), contents(tmp_path / "from-dataset")
    assert "eval/tokens-00000.bin" in a and a == b
    meta = json.loads((tmp_path / "from-dataset" / "meta.json").read_text())
    assert meta["source"] == str(saved)
    assert meta["documents"] + json.loads(
        (tmp_path / "from-dataset" / "eval" / "meta.json").read_text())["documents"] == len(docs)


def test_a_dataset_dict_split_and_text_column(tmp_path, tok_dir):
    from bertcore.data.corpus import iter_documents

    docs = synthetic_documents(30, seed=1)
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"body": docs[:20], "n": list(range(20))}),
        test=datasets.Dataset.from_dict({"body": docs[20:], "n": list(range(10))}))
    dd.save_to_disk(str(tmp_path / "dd"))
    assert list(iter_documents(str(tmp_path / "dd"), "body")) == docs[:20]    # split train
    assert list(iter_documents(str(tmp_path / "dd"), "body", "test")) == docs[20:]
    (tmp_path / "test.txt").write_text("\n\n".join(docs[20:]), encoding="utf-8")
    prepare_cli(tmp_path / "dd", tok_dir, tmp_path / "a", "--split", "test",
                "--text-column", "body")
    prepare_cli(tmp_path / "test.txt", tok_dir, tmp_path / "b")
    assert contents(tmp_path / "a") == contents(tmp_path / "b")


def test_arrow_files(tmp_path):
    """save_to_disk's data-*.arrow (the IPC stream format datasets writes) and an IPC file
    (Feather v2) of several record batches, alone, in a glob and with --text-column."""
    import pyarrow as pa

    from bertcore.data.corpus import iter_documents

    docs = synthetic_documents(25, seed=2)
    save(docs[:10], tmp_path / "saved")
    [stream] = (tmp_path / "saved").glob("*.arrow")
    assert list(iter_documents(str(stream))) == docs[:10]
    table = pa.table({"n": list(range(15)), "body": docs[10:]})
    with pa.ipc.new_file(str(tmp_path / "more.arrow"), table.schema) as w:
        for batch in table.to_batches(max_chunksize=4):   # four record batches
            w.write_batch(batch)
    assert list(iter_documents(str(tmp_path / "more.arrow"), "body")) == docs[10:]
    assert list(iter_documents(str(tmp_path / "saved" / "*.arrow"))) == docs[:10]


def test_wrong_column_split_and_flags_are_one_line(tmp_path, tok_dir):
    docs = synthetic_documents(10)
    save(docs, tmp_path / "saved", column="body")
    datasets.DatasetDict(train=datasets.Dataset.from_dict({"text": docs})).save_to_disk(
        str(tmp_path / "dd"))
    (tmp_path / "c.txt").write_text("\n\n".join(docs), encoding="utf-8")
    for corpus, extra, needle in (
            ("saved", [], "has no 'text' column (columns: id, body); pass --text-column"),
            ("saved", ["--text-column", "id"], "column 'id' holds int64, not strings"),
            ("saved", ["--split", "test"], "one saved Dataset, not a DatasetDict"),
            ("dd", ["--split", "test"], "has no split 'test' (splits: train); pass --split"),
            ("c.txt", ["--text-column", "body"], "--text-column body: "),
            ("c.txt", ["--split", "train"], "--split train: ")):
        proc = run_cli("-m", "bertcore.data", "prepare", "--corpus", str(tmp_path / corpus),
                       "--tokenizer", str(tok_dir), "--out", str(tmp_path / "out"),
                       "--no-progress", *extra, env=OFFLINE)
        assert_one_line_error(proc, needle)
    assert not (tmp_path / "out").exists()


def test_hub_name_offline_is_one_line_at_once(tmp_path, tok_dir):
    t0 = time.perf_counter()
    proc = run_cli("-m", "bertcore.data", "prepare", "--corpus", "hf:wikitext:wikitext-2-raw-v1",
                   "--tokenizer", str(tok_dir), "--out", str(tmp_path / "out"), "--no-progress",
                   env={**OFFLINE, "HF_HOME": str(tmp_path / "hf")}, timeout=120)
    assert_one_line_error(proc, "could not load hf:wikitext:wikitext-2-raw-v1 (split train) "
                                "from the Hugging Face Hub (no network?", "save_to_disk")
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "out").exists()
    proc = run_cli("-m", "bertcore.tokenizer", "train", "--corpus", "hf:", "--out",
                   str(tmp_path / "tok"), env=OFFLINE)
    assert_one_line_error(proc, "hf:NAME or hf:NAME:CONFIG")


def test_streaming_reads_batches_without_loading_a_framework(tmp_path):
    """iter_hub's load_dataset(NAME, split=..., streaming=True) and batched reading, on a local
    folder of Parquet files (a NAME load_dataset takes offline), in a process that must end
    with neither torch nor jax imported (datasets' IterableDataset imports torch when made,
    unless told not to)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = synthetic_documents(25, seed=3)
    folder = tmp_path / "hub-like"
    folder.mkdir()
    pq.write_table(pa.table({"text": docs[:12], "n": list(range(12))}),
                   folder / "train-00000.parquet", row_group_size=5)
    pq.write_table(pa.table({"text": docs[12:], "n": list(range(13))}),
                   folder / "train-00001.parquet", row_group_size=5)
    (tmp_path / "expected.json").write_text(json.dumps(docs))
    code = f"""
import json, sys
import bertcore.data.corpus, bertcore.train.cli, bertcore.data.__main__
assert "datasets" not in sys.modules   # imported only when a datasets corpus is read
from bertcore.data import hfdata
from bertcore.data.corpus import iter_documents
hfdata.BATCH_ROWS = 4
got = list(iter_documents("hf:{folder}"))
assert got == json.loads(open("{tmp_path / 'expected.json'}").read()), got
try:
    iter_documents("hf:{folder}", "nope")
except Exception as e:
    print(e)
print(sorted(m for m in ("torch", "jax", "flax", "tensorflow") if m in sys.modules))
"""
    proc = run_cli("-c", code, env={**OFFLINE, "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "has no 'nope' column (columns: text, n)" in lines[0]
    assert lines[-1] == "[]"


def test_missing_datasets_package_is_one_line(tmp_path, monkeypatch):
    import sys

    from bertcore.data.corpus import iter_documents
    from bertcore.infra.errors import UserError

    save(["A document."], tmp_path / "saved")
    monkeypatch.setitem(sys.modules, "datasets", None)    # import datasets raises ImportError
    for corpus in (str(tmp_path / "saved"), "hf:wikitext"):
        with pytest.raises(UserError, match=r"needs the datasets package; pip install datasets"):
            iter_documents(corpus)
    # An .arrow file needs pyarrow only.
    [arrow] = (tmp_path / "saved").glob("*.arrow")
    assert list(iter_documents(str(arrow))) == ["A document."]


def test_cache_keys(tmp_path):
    from bertcore.data.corpus import corpus_key

    saved = save(["One document.", "Another one."], tmp_path / "saved")
    key = corpus_key(str(saved))
    assert key == corpus_key(str(saved), "text", None) == corpus_key(str(saved))
    assert corpus_key(str(saved), "body") != key
    time.sleep(0.01)
    save(["One document.", "Another, changed."], tmp_path / "saved")   # saved again
    assert corpus_key(str(saved)) != key
    hub = corpus_key("hf:org/name:cfg")
    assert hub.startswith("hf-org-name-")
    assert len({hub, corpus_key("hf:org/name"), corpus_key("hf:org/name:cfg", split="test"),
                corpus_key("hf:org/name:cfg", "body")}) == 4
    assert corpus_key("hf:org/name:cfg", "text", "train") == hub
    pattern = str(saved / "*.arrow")
    assert corpus_key(pattern) == corpus_key(pattern)


@pytest.mark.slow
def test_torch_trains_on_a_saved_dataset_and_rebuilds_its_cache_on_resume(tmp_path, cache_env):
    docs = synthetic_documents(300)
    datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"body": docs[:50]}),
        test=datasets.Dataset.from_dict({"body": docs})).save_to_disk(str(tmp_path / "dd"))
    out = tmp_path / "run"
    args = base_args(tmp_path / "dd", out, "--split", "test", "--text-column", "body",
                     "--steps", "2", "--checkpoint-every", "1")
    train_cli("torch", *args, "--stop-after", "1", env={**cache_env, **OFFLINE})
    info = json.loads((out / "run.json").read_text())
    assert (info["corpus"], info["text_column"], info["split"]) == (str(tmp_path / "dd"), "body",
                                                                    "test")
    data = Path(info["data"])
    assert json.loads((data / "meta.json").read_text())["documents"] == len(docs)
    # The cached shards cleared: --resume rebuilds them from the same split and column.
    for p in sorted(data.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    data.rmdir()
    train_cli("torch", *args, "--resume", env={**cache_env, **OFFLINE})
    assert json.loads((data / "meta.json").read_text())["documents"] == len(docs)
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1, 2]


def test_a_stream_that_breaks_midway_is_one_line(tmp_path, monkeypatch):
    """A file of a streamed dataset gone while it is read (as a lost connection would be):
    one UserError naming how far it got, not a traceback."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bertcore.data import hfdata
    from bertcore.data.corpus import iter_documents
    from bertcore.infra.errors import UserError

    docs = synthetic_documents(20, seed=4)
    folder = tmp_path / "hub-like"
    folder.mkdir()
    for i in (0, 1):
        pq.write_table(pa.table({"text": docs[10 * i:10 * i + 10]}),
                       folder / f"train-0000{i}.parquet")
    monkeypatch.setattr(hfdata, "BATCH_ROWS", 5)
    it = iter_documents(f"hf:{folder}")
    assert [next(it) for _ in range(6)] == docs[:6]
    (folder / "train-00001.parquet").unlink()
    with pytest.raises(UserError, match=r"reading hf:.* \(split train\) stopped after 10 "
                                        r"documents \(FileNotFoundError"):
        list(it)
