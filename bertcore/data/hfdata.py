"""Corpora that Hugging Face `datasets` holds: a directory saved with `save_to_disk`, and a Hub
name, `hf:NAME[:CONFIG]`, streamed.

| `--corpus` | read with | documents |
| --- | --- | --- |
| DIR saved by `Dataset.save_to_disk` | `datasets.load_from_disk` (memory-mapped) | its rows |
| DIR saved by `DatasetDict.save_to_disk` | the same, the split `--split` [train] | its rows |
| `hf:NAME`, `hf:NAME:CONFIG` | `datasets.load_dataset(..., streaming=True)` | its rows |

A row's `--text-column` [text] is one document, as a row of a Parquet file or a line of .jsonl
is (bertcore.data.readers), so a saved dataset prepares into the same shards as the same
documents written to a .txt file. Nothing holds the corpus in memory: a saved dataset's Arrow
files are memory-mapped and read `BATCH_ROWS` rows at a time, and a Hub dataset is streamed
(its files are read as they are iterated; nothing is downloaded first).

`datasets` is optional (`pip install datasets`) and imported only here, when such a corpus is
read. A dataset's own Arrow files (`*.arrow`) need only pyarrow: readers.iter_arrow.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Iterator

from bertcore.data.readers import TEXT_COLUMN, check_text_column, column_documents
from bertcore.infra.errors import UserError

__all__ = ["HUB_PREFIX", "BATCH_ROWS", "add_dataset_flags", "saved_kind", "parse_hub",
           "iter_saved_dataset", "iter_hub", "iter_dataset", "saved_identity"]

HUB_PREFIX = "hf:"
BATCH_ROWS = 1000        # rows per batch read from a dataset
DATASET_FILES = ("dataset_info.json", "state.json")   # what Dataset.save_to_disk writes
DATASET_DICT_FILE = "dataset_dict.json"               # what DatasetDict.save_to_disk writes


def _datasets(what: str):
    try:
        import datasets
    except ImportError:
        raise UserError(f"reading {what} needs the datasets package; pip install datasets "
                        f"(or pip install twinbert[datasets])") from None
    return datasets


def add_dataset_flags(parser) -> None:
    """--text-column and --split, beside a parser's (or argument group's) --corpus. Both default
    to None, so a corpus that has no columns or splits can refuse them when given."""
    parser.add_argument("--text-column", metavar="NAME",
                        help=f"the column that holds the documents in a Parquet, Arrow or "
                             f"datasets corpus (one row = one document) [{TEXT_COLUMN}]")
    parser.add_argument("--split", metavar="NAME",
                        help="the split of a DatasetDict directory or an hf: dataset [train]")


@contextlib.contextmanager
def _no_framework_import(datasets):
    """Build `datasets` objects without importing torch. An IterableDataset imports torch (when
    it is installed) as it is made, only to share its epoch counter with DataLoader workers;
    this pipeline is framework-free and also runs in the jax twin, where loading torch costs
    seconds and memory for nothing. Where torch is imported already, nothing changes."""
    saved = datasets.config.TORCH_AVAILABLE
    if "torch" not in sys.modules:
        datasets.config.TORCH_AVAILABLE = False
    try:
        yield
    finally:
        datasets.config.TORCH_AVAILABLE = saved


# ---- save_to_disk directories ---------------------------------------------------------------

def saved_kind(path: Path) -> str | None:
    """"dataset" or "dict" for a directory that save_to_disk wrote (told by its files), else
    None."""
    if not path.is_dir():
        return None
    if all((path / f).is_file() for f in DATASET_FILES):
        return "dataset"
    if (path / DATASET_DICT_FILE).is_file():
        return "dict"
    return None


def _splits(path: Path) -> list[str]:
    try:
        return list(json.loads((path / DATASET_DICT_FILE).read_text(encoding="utf-8"))["splits"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path / DATASET_DICT_FILE} is not a readable dataset_dict.json "
                        f"({type(e).__name__}: {e}); save the dataset again") from None


def _saved_split(path: Path) -> str | None:
    """The split a saved Dataset records it was (state.json's `_split`), if any."""
    try:
        return json.loads((path / "state.json").read_text(encoding="utf-8")).get("_split")
    except (OSError, ValueError, AttributeError):
        return None


def iter_saved_dataset(path: Path, split: str | None = None,
                       column: str = TEXT_COLUMN) -> Iterator[str]:
    """The documents of a save_to_disk directory; `split` picks one of a DatasetDict's (default
    train). Checked now (kind, split, column); read as it is iterated."""
    kind = saved_kind(path)
    if kind is None:
        raise UserError(f"{path} is not a directory written by save_to_disk (no "
                        f"{' + '.join(DATASET_FILES)} or {DATASET_DICT_FILE})")
    where = str(path)
    if kind == "dict":
        splits = _splits(path)
        split = split or "train"
        if split not in splits:
            raise UserError(f"{path} has no split {split!r} (splits: {', '.join(splits) or 'none'}"
                            f"); pass --split with one of them")
        where = f"{path} (split {split})"
    elif split is not None and split != _saved_split(path):
        raise UserError(f"--split {split}: {path} is one saved Dataset, not a DatasetDict with "
                        f"splits; drop --split")
    datasets = _datasets(where)
    try:
        ds = datasets.load_from_disk(str(path), keep_in_memory=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} could not be loaded as a saved dataset ({type(e).__name__}: "
                        f"{_first_line(e)}); save it again with save_to_disk") from None
    if kind == "dict":
        ds = ds[split]
    return iter_dataset(ds, column, where)


def saved_identity(path: Path) -> str:
    """What identifies a save_to_disk directory's content cheaply, for a cache key: the name,
    size and modification time of every file below it (saving again rewrites them)."""
    parts = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            parts.append(f"{p.relative_to(path).as_posix()}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


# ---- the Hub --------------------------------------------------------------------------------

def parse_hub(source: str) -> tuple[str, str | None] | None:
    """(NAME, CONFIG or None) of `hf:NAME[:CONFIG]`; None for any other source."""
    if not source.startswith(HUB_PREFIX):
        return None
    name, _, config = source[len(HUB_PREFIX):].partition(":")
    if not name.strip() or ":" in config:
        raise UserError(f"--corpus {source}: write a Hub dataset as hf:NAME or hf:NAME:CONFIG, "
                        f"e.g. hf:wikitext:wikitext-103-raw-v1")
    return name.strip(), config.strip() or None


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def iter_hub(source: str, split: str | None = None, column: str = TEXT_COLUMN) -> Iterator[str]:
    """The documents of a Hub dataset `hf:NAME[:CONFIG]`, split `split` (default train), streamed:
    loaded now (so a wrong name, split or a missing network fails at once, in one line), read
    as it is iterated."""
    name, config = parse_hub(source)
    split = split or "train"
    datasets = _datasets(source)
    where = f"{source} (split {split})"
    try:
        with _no_framework_import(datasets):
            ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except UserError:
        raise
    except Exception as e:   # whatever the Hub client raises: offline, not found, bad split
        raise UserError(f"could not load {source} (split {split}) from the Hugging Face Hub "
                        f"(no network? {type(e).__name__}: {_first_line(e)}); check the name, "
                        f"config and split, or save the dataset with save_to_disk where there "
                        f"is network and pass that directory") from None
    return _streamed(iter_dataset(ds, column, where), where)


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a lost connection raises while a dataset streams: OSError (ConnectionError, the Hub
    client's HTTP errors) and httpx's transport errors (timeouts, resets), which are not
    OSErrors."""
    try:
        import httpx
    except ImportError:
        return (OSError,)
    return (OSError, httpx.HTTPError)


def _streamed(docs: Iterator[str], where: str) -> Iterator[str]:
    """A streamed dataset's documents; a connection lost on the way is one line, not a trace."""
    count = 0
    try:
        for doc in docs:
            count += 1
            yield doc
    except _network_errors() as e:
        raise UserError(f"reading {where} stopped after {count} documents ({type(e).__name__}: "
                        f"{_first_line(e)}); try again, or save the dataset with save_to_disk "
                        f"and pass that directory") from None


# ---- either: rows in batches ----------------------------------------------------------------

def iter_dataset(ds, column: str = TEXT_COLUMN, where: str = "the dataset",
                 batch_rows: int | None = None) -> Iterator[str]:
    """The documents of a `datasets` Dataset or IterableDataset: column `column` of each row, read
    `batch_rows` [BATCH_ROWS] rows at a time as Arrow tables (no Python dict per row, no tensor
    format, only that column). The column is checked now when the dataset knows its features (a
    streamed one may not: then at its first batch)."""
    import datasets

    features = ds.features
    with _no_framework_import(datasets):
        if features is not None:
            check_text_column(where, features.arrow_schema, column)
            ds = ds.select_columns([column])
        ds = ds.with_format("arrow")
    return _batches(ds, column, where, batch_rows or BATCH_ROWS, checked=features is not None)


def _batches(ds, column: str, where: str, batch_rows: int, checked: bool) -> Iterator[str]:
    for table in ds.iter(batch_size=batch_rows):
        if not checked:
            check_text_column(where, table.schema, column)
            checked = True
        yield from column_documents(table.column(column))
