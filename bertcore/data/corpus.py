"""Corpus readers, sentence splitting, the built-in offline corpus, and the corpus command line.

A corpus is a stream of documents (str). `iter_documents(source)` understands:

    builtin            real English prose shipped with every Python: stdlib docstrings + pydoc
                       topics
    imdb               the aclImdb reviews under the cache dir (`download-imdb` without --out)
    DIR (aclImdb)      train/{pos,neg,unsup} + test/{pos,neg}, one review per .txt file; DIR is
                       the aclImdb folder or the one holding it (`download-imdb --out DIR`)
    FILE.txt           documents separated by blank lines (one sentence per line is fine)
    FILE.jsonl         one JSON object per line with a "text" field
    FILE.parquet       a row of the string column "text" per document, by row groups
    FILE.arrow         the same, by record batches (the Arrow files `datasets` caches and saves)
                       (.txt and .jsonl may be compressed: .gz, .zst; see bertcore.data.readers)
    DIR (save_to_disk) a `datasets` Dataset, or a DatasetDict's split (bertcore.data.hfdata)
    hf:NAME[:CONFIG]   a Hugging Face Hub dataset, streamed (bertcore.data.hfdata)
    DIR                every such file below it, sorted, recursive
    'GLOB'             every file matching a pattern, e.g. 'data/*.parquet', sorted

`text_column` (--text-column, default "text") names the column of Parquet, Arrow and `datasets`
corpora that holds the documents; `split` (--split, default "train") the split of a DatasetDict
directory or a Hub dataset (hfdata.add_dataset_flags adds both flags beside a --corpus).

Everything streams: files are read line by line or file by file, never the whole corpus at once.
Mistakes (missing path, empty corpus, non-UTF-8 bytes, bad JSON, a missing column) raise
UserError. The IMDB download itself (checksum, safe extraction) is bertcore.data.imdb; its
command line is here:

    python -m bertcore.corpus stats --corpus builtin
    python -m bertcore.corpus download-imdb --out DIR      then: --corpus DIR
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import os
import re
import sys
import sysconfig
import time
from pathlib import Path
from typing import Iterator

from bertcore.data.imdb import (IMDB_MD5, IMDB_SHA256, IMDB_SPLITS, IMDB_URL, download_imdb,
                                find_aclimdb, is_aclimdb)
from bertcore.data.hfdata import (HUB_PREFIX, add_dataset_flags, iter_hub, iter_saved_dataset,
                                  parse_hub, saved_identity, saved_kind)
from bertcore.data.readers import (TABLES, TEXT_COLUMN, corpus_files, format_of, glob_files,
                                   is_glob, iter_file, iter_files, read_text_file, total_bytes,
                                   unreadable)
from bertcore.infra.errors import UserError, cli_entry
from bertcore.infra.files import cache_root

__all__ = ["iter_documents", "split_sentences", "builtin_documents", "corpus_bytes", "corpus_key",
           "main", "BR_TAGS"]

# ---------------------------------------------------------------------------------------------
# Sentences

@functools.lru_cache(maxsize=16)
def _sentence_re(delimiters: str) -> re.Pattern:
    # Break after a delimiter that is followed by whitespace, and at every line break.
    parts = [r"\s*\n\s*"]
    if delimiters:
        parts.insert(0, rf"(?<=[{re.escape(delimiters)}])\s+")
    return re.compile("|".join(parts))


def split_sentences(text: str, delimiters: str = ".?!") -> list[str]:
    """Split `text` after any char of `delimiters` followed by whitespace, and on newlines."""
    return [s for s in (p.strip() for p in _sentence_re(delimiters).split(text)) if s]


# ---------------------------------------------------------------------------------------------
# Reading files (the file formats are bertcore.data.readers)

BR_TAGS = re.compile(r"\s*(?:<br\s*/?>\s*)+", re.IGNORECASE)   # IMDB reviews' line breaks


def _iter_aclimdb(root: Path) -> Iterator[str]:
    """Reviews in a fixed split order, files sorted by name; `<br />` runs become one newline."""
    for split in IMDB_SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".txt")):
            text = BR_TAGS.sub("\n", read_text_file(folder / name)).strip()
            if text:
                yield text


def _no_dataset_flags(source: str, text_column: str | None, split: str | None,
                      what: str) -> None:
    """Refuse --text-column / --split for a corpus they cannot apply to (rather than ignore
    them)."""
    if text_column is not None:
        raise UserError(f"--text-column {text_column}: {source} is {what}, which has no columns "
                        f"(it names the column of a Parquet, Arrow or datasets corpus); drop it")
    if split is not None:
        raise UserError(f"--split {split}: {source} is {what}, which has no splits (it picks the "
                        f"split of a DatasetDict directory or an hf: dataset); drop it")


def iter_documents(source: str, text_column: str | None = None,
                   split: str | None = None) -> Iterator[str]:
    """Stream the documents of `source` ("builtin", "imdb", a file, a directory, a glob, a
    save_to_disk directory or hf:NAME[:CONFIG]); `text_column` [text] and `split` [train] for
    the corpora that have them.

    The path (and a dataset's split and column) is checked now; an empty corpus raises
    UserError when iteration ends with nothing, and so does a file or folder that cannot be read
    (now or while iterating).
    """
    source = str(source)
    if source.startswith(HUB_PREFIX):
        return _documents(source, text_column, split)
    try:
        return _readable(_documents(source, text_column, split), source)
    except OSError as e:   # a folder that cannot be looked into, a file that cannot be opened
        raise unreadable(e, source) from None


def _readable(docs: Iterator[str], source: str) -> Iterator[str]:
    try:
        yield from docs
    except OSError as e:
        raise unreadable(e, source) from None


def _documents(source: str, text_column: str | None, split: str | None) -> Iterator[str]:
    """`iter_documents` without its net for unreadable files."""
    source = str(source)
    column = text_column or TEXT_COLUMN
    if source.startswith(HUB_PREFIX):
        docs, where = iter_hub(source, split, column), source
    elif source == "builtin":
        _no_dataset_flags(source, text_column, split, "the built-in corpus")
        docs, where = builtin_documents(), "the built-in corpus"
    elif source == "imdb":
        _no_dataset_flags(source, text_column, split, "the IMDB reviews")
        root = cache_root() / "aclImdb"
        if not is_aclimdb(root):
            raise UserError(
                f"IMDB corpus not found at {root}. Download it with `python -m bertcore.corpus "
                f"download-imdb` (or set TWINBERT_CACHE); if you downloaded it with --out DIR, "
                f"pass --corpus DIR instead of imdb")
        docs, where = _iter_aclimdb(root), str(root)
    else:
        path = Path(source).expanduser()
        where = str(path)
        if is_glob(source) and not path.exists():
            _no_dataset_flags(source, None, split, "a glob of corpus files")
            docs = iter_files(glob_files(str(path)), column)
        elif not path.exists():
            raise UserError(f"corpus path {path} does not exist. Pass --corpus builtin, imdb, "
                            "hf:NAME, or an existing file (.txt, .jsonl, .gz/.zst of those, "
                            ".parquet, .arrow), folder (a save_to_disk dataset, too) or glob "
                            "pattern")
        elif saved_kind(path):
            docs = iter_saved_dataset(path, split, column)
        elif path.is_dir():  # an aclImdb tree, the folder download-imdb --out filled, or any
            root = find_aclimdb(path)
            if root:
                _no_dataset_flags(source, text_column, split, "the IMDB reviews")
                docs = _iter_aclimdb(root)
            else:
                _no_dataset_flags(source, None, split, "a folder of corpus files")
                docs = iter_files(corpus_files(path), column)
        else:
            if (format_of(path) or ("",))[0] not in [t[1:] for t in TABLES]:
                _no_dataset_flags(source, text_column, None, "a text file")
            _no_dataset_flags(source, None, split, "one file")
            docs = iter_file(path, column)
    return _nonempty(docs, where)


def corpus_bytes(source: str) -> int | None:
    """The text size of a file corpus when it is known before reading it (for an ETA)."""
    try:
        return _corpus_bytes(source)
    except OSError as e:
        raise unreadable(e, source) from None


def _corpus_bytes(source: str) -> int | None:
    path = Path(str(source)).expanduser()
    if (source in ("builtin", "imdb") or str(source).startswith(HUB_PREFIX) or saved_kind(path)
            or (path.is_dir() and find_aclimdb(path))):
        return None
    if path.is_dir():
        return total_bytes(corpus_files(path))
    if path.is_file():
        return total_bytes([path])
    return total_bytes(glob_files(str(path))) if is_glob(str(source)) else None


def corpus_key(source: str, text_column: str | None = None, split: str | None = None) -> str:
    """A cache key for a corpus: its name plus what identifies its content cheaply.

    A file: its path, size and modification time. A save_to_disk directory or a glob: the path
    or pattern and every file's size and modification time. A folder: its path (its files are
    not looked at). `text_column` and `split` join the key when they differ from the defaults,
    so the keys of corpora read with the defaults do not depend on them.

    A Hub dataset (hf:NAME[:CONFIG]) is keyed by its name, config, split and column only, so
    its cached tokenizer and shards are used without reaching the Hub; a new revision pushed
    under the same name is not noticed: delete its entries in the cache (named hf-NAME-...) to
    read it again.
    """
    try:
        return _corpus_key(str(source), text_column, split)
    except OSError as e:
        raise unreadable(e, source) from None


def _corpus_key(source: str, text_column: str | None, split: str | None) -> str:
    if source == "builtin":
        # The built-in corpus is read from this Python's standard library.
        return f"builtin-py{sys.version_info.major}{sys.version_info.minor}"
    extra = "".join(f":{flag}={value}" for flag, value, default in
                    (("column", text_column, TEXT_COLUMN), ("split", split, "train"))
                    if value is not None and value != default)
    hub = parse_hub(source)
    if hub is not None:
        ident = f"{HUB_PREFIX}{hub[0]}:{hub[1] or ''}{extra}"
        name = "hf-" + hub[0]
    else:
        p = Path(source).expanduser()
        glob = is_glob(source) and not p.exists()
        if source != "imdb" and not p.exists() and not glob:
            raise UserError(f"corpus {source} does not exist; pass builtin, imdb, hf:NAME, or a "
                            f"path to a corpus file, folder, glob or save_to_disk directory")
        ident = str(p.resolve()) if p.exists() else source
        if p.is_file():
            st = p.stat()
            ident += f":{st.st_size}:{st.st_mtime_ns}"
        elif saved_kind(p):
            ident += ":" + saved_identity(p)
        elif glob:
            ident = str(Path.cwd() / p) + ":" + ";".join(
                f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
                for f in glob_files(str(p)))
        ident += extra
        name = p.name
    name = "".join(c if c.isalnum() else "-" for c in name)[:40] or "corpus"
    return f"{name}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


def _nonempty(docs: Iterator[str], where: str) -> Iterator[str]:
    count = 0
    for doc in docs:
        count += 1
        yield doc
    if count == 0:
        raise UserError(f"corpus {where} is empty (no non-blank documents in .txt/.jsonl files "
                        "or aclImdb reviews). Point --corpus at a file or directory with text")


# ---------------------------------------------------------------------------------------------
# Built-in corpus: the standard library's docstrings and comments, and the pydoc help topics

_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3",
              "turtledemo", "__pycache__", "__phello__", "ensurepip", "pydoc_data", "encodings",
              "lib-dynload"}
_MIN_DOC_CHARS = 300  # drop documents shorter than this
_RULES = re.compile(r"([-=*#~_+])\1{2,}")  # ----- and ===== separators
_COMMENT_BLOCK = re.compile(r"(?:^[ \t]*#(?![!]|\s*-\*-)[^\n]*\n)+", re.MULTILINE)
_NON_LETTER = re.compile(r"[\W\d_]")
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _clean(text: str, min_chars: int = 20) -> str:
    """Keep prose paragraphs, one per line, whitespace collapsed; drop code-like paragraphs."""
    kept = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln for ln in para.splitlines() if not ln.lstrip().startswith((">>>", "..."))]
        para = " ".join(_RULES.sub(" ", " ".join(lines)).split())
        chars = para.replace(" ", "")
        # The heuristic: more than 30% non-letters (symbols, digits) means code, tables or markup.
        if len(chars) >= min_chars and len(_NON_LETTER.findall(chars)) <= 0.3 * len(chars):
            kept.append(para)
    return "\n".join(kept)


def _docstring_groups(node: ast.Module | ast.ClassDef) -> Iterator[list[str]]:
    """One group per module (its docstring + top-level functions') and per class (+ methods')."""
    group = [ast.get_docstring(node) or ""]
    group += [ast.get_docstring(n) or "" for n in node.body if isinstance(n, _FUNCS)]
    yield group
    for child in node.body:  # only what a reader of the module sees: no classes inside functions
        if isinstance(child, ast.ClassDef):
            yield from _docstring_groups(child)


def _comments(source: str) -> str:
    """A module's full-line comment blocks, one paragraph each (shebangs and coding lines
    skipped)."""
    blocks = []
    for block in _COMMENT_BLOCK.findall(source):
        text = " ".join(line.strip().lstrip("#").strip() for line in block.splitlines())
        blocks.append(_clean(text, min_chars=60))
    return "\n".join(b for b in blocks if b)


def _stdlib_files() -> Iterator[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in _SKIP_DIRS and not d.startswith(("config-", ".")))
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith(("test_", "_sysconfigdata")):
                yield Path(dirpath) / name


def builtin_documents() -> Iterator[str]:
    """Real English text from any Python 3.10+ install, no download, deterministic order.

    Stdlib sources are parsed with `ast` (never imported). Documents, in order: per module, the
    module with its functions' docstrings, each class with its methods' docstrings, the module's
    comment blocks; then each `pydoc_data.topics` help topic (the language reference).
    """
    seen: set[str] = set()  # the same docstring appears in several modules (e.g. _pyio and io)
    for path in _stdlib_files():
        try:
            source = path.read_bytes()
            tree = ast.parse(source, filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue
        for group in _docstring_groups(tree):
            parts = []
            for doc in map(_clean, group):
                if doc and doc not in seen:
                    seen.add(doc)
                    parts.append(doc)
            if sum(map(len, parts)) >= _MIN_DOC_CHARS:
                yield "\n".join(parts)
        comments = _comments(source.decode("utf-8", errors="replace"))
        if len(comments) >= _MIN_DOC_CHARS:
            yield comments
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions package it separately
        return
    for name in sorted(topics):
        text = _clean(topics[name])
        if len(text) >= _MIN_DOC_CHARS:
            yield text


# ---------------------------------------------------------------------------------------------
# Command line

def _stats(source: str, delimiters: str, text_column: str | None = None,
           split: str | None = None) -> None:
    start = time.perf_counter()
    docs = sentences = chars = nbytes = 0
    for doc in iter_documents(source, text_column, split):
        docs += 1
        sentences += len(split_sentences(doc, delimiters))
        chars += len(doc)
        nbytes += len(doc.encode("utf-8"))
    seconds = time.perf_counter() - start
    print(f"corpus      {source}\n"
          f"documents   {docs:,}\n"
          f"sentences   {sentences:,}\n"
          f"characters  {chars:,}\n"
          f"size        {nbytes / 1e6:.2f} MB (UTF-8)\n"
          f"time        {seconds:.2f} s ({nbytes / 1e6 / max(seconds, 1e-9):.1f} MB/s)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bertcore.corpus",
        description="Corpus tools: count what a corpus holds, or download the IMDB reviews.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m bertcore.corpus stats --corpus builtin\n"
               "  python -m bertcore.corpus download-imdb\n"
               "  python -m bertcore.corpus stats --corpus imdb\n"
               "  python -m bertcore.corpus download-imdb --out data\n"
               "  python -m bertcore.corpus stats --corpus data")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stats = sub.add_parser(
        "stats", help="count documents, sentences and characters of a corpus",
        description="Read a corpus once and print its documents, sentences, characters, size "
                    "and read time.")
    stats.add_argument(
        "--corpus", required=True, metavar="SRC",
        help="'builtin' (stdlib docstrings + pydoc topics, offline), 'imdb' (after download-imdb "
             "without --out), the DIR given to download-imdb --out or an aclImdb directory, a .txt "
             "file (blank line between documents), a .jsonl file ({\"text\": ...} per line), a "
             ".parquet/.arrow file, a directory of such files, a directory saved with "
             "save_to_disk, or hf:NAME[:CONFIG] (a Hub dataset, streamed)")
    add_dataset_flags(stats)
    stats.add_argument("--delimiters", default=".?!",
                       help="characters that end a sentence when followed by a space "
                            "(default: %(default)s); newlines always do")

    dl = sub.add_parser(
        "download-imdb", help="download and verify the aclImdb movie reviews",
        description=f"Download {IMDB_URL} (84 MB), verify its published checksum and extract "
                    "it safely to OUT/aclImdb. Does nothing if that is already complete; leaves "
                    "nothing behind if it fails.")
    dl.add_argument("--out", default=None, metavar="DIR",
                    help="directory to hold aclImdb/; read it afterwards with --corpus DIR "
                         "(default: $TWINBERT_CACHE or ~/.cache/twinbert, where --corpus imdb "
                         "looks)")
    dl.add_argument("--url", default=IMDB_URL,
                    help="archive URL, e.g. a mirror (default: %(default)s)")
    check = dl.add_mutually_exclusive_group()
    check.add_argument("--sha256", metavar="HEX",
                       help=f"expected SHA-256 of the archive (default: {IMDB_SHA256})")
    check.add_argument("--md5", metavar="HEX", help=f"expected MD5 instead (official: {IMDB_MD5})")
    dl.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "stats":
        _stats(args.corpus, args.delimiters, args.text_column, args.split)
    else:
        download_imdb(args.out or cache_root(), args.url, sha256=args.sha256, md5=args.md5,
                      progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
