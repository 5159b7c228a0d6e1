"""Corpus files as streams of documents: .txt, .jsonl (plain, .gz or .zst), Parquet, Arrow,
folders, globs.

| file | documents |
| --- | --- |
| `.txt`, `.txt.gz`, `.txt.zst` | separated by blank lines; lines inside a document are kept |
| `.jsonl`, `.jsonl.gz`, `.jsonl.zst` | one JSON object per line, its string `"text"` field |
| `.parquet` | one row of the string column `text` (`--text-column`), a row group at a time |
| `.arrow` | the same, a record batch at a time (the files `datasets` caches and saves) |

A row of Parquet or Arrow is one document, as a line of .jsonl is: the same documents written to
a .txt file (a blank line between them) read back as the same strings.

Everything streams: a line, a row group, a memory-mapped record batch or a decompression buffer
at a time, so memory does not grow with the file. A folder means every such file below it,
sorted, recursive (names starting with `.` skipped); a glob pattern (`data/*.parquet`,
`shards/**/*.jsonl.gz`) every matching file, sorted. Bad bytes, bad JSON, corrupt compression,
a Parquet/Arrow file without the string text column, or a file or folder that cannot be read
(permissions, a folder where a file should be, a disk error) raise UserError naming the path and
the fix.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

from bertcore.infra.errors import UserError

TEXT_SUFFIXES = (".txt", ".jsonl")
COMPRESSED = (".gz", ".zst")
TABLES = (".parquet", ".arrow")   # columnar files: the documents are a column of rows
TEXT_COLUMN = "text"


def format_of(path: Path) -> tuple[str, str] | None:
    """(format, compression) of a corpus file, e.g. ("jsonl", "gz"); None if unsupported."""
    name = path.name.lower()
    for suffix in TABLES:
        if name.endswith(suffix):
            return suffix[1:], ""
    for comp in ("", *COMPRESSED):
        for suffix in TEXT_SUFFIXES:
            if name.endswith(suffix + comp):
                return suffix[1:], comp[1:]
    return None


def _not_utf8(path: Path, offset: int, byte: int) -> UserError:
    return UserError(
        f"{path} is not UTF-8 text (byte 0x{byte:02x} at byte offset {offset}). Convert it, "
        f"e.g. `iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}`")


def unreadable(e: OSError, path: object = None) -> UserError:
    """The one line for a corpus file or folder that cannot be read (`e`: the OSError)."""
    where = e.filename if e.filename is not None else path
    if isinstance(e, IsADirectoryError):
        return UserError(f"corpus file {where} is a folder; pass the folder itself as --corpus "
                         f"(every corpus file below it is read), or a file")
    if isinstance(e, PermissionError) and where is not None:
        try:    # a file in a folder that cannot be looked into: the folder is the one to name
            os.listdir(Path(where).parent)
        except OSError:
            where = Path(where).parent
    return UserError(f"cannot read {where} ({e.strerror or e}); make it readable (check its "
                     f"permissions) or leave it out of --corpus")


def _open(path: Path) -> BinaryIO:
    comp = (format_of(path) or ("", ""))[1]
    if comp == "gz":
        return gzip.open(path, "rb")
    if comp == "zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"),
                                                                            closefd=True))
    return open(path, "rb")


def _corrupt(path: Path, e: Exception) -> UserError:
    return UserError(f"{path} is not a valid compressed file ({type(e).__name__}: {e}); it is "
                     f"truncated or corrupt: download or compress it again")


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its newline), decoding UTF-8 strictly, one line at a
    time."""
    offset = 0
    try:
        import zstandard
        zstd_error: type[Exception] = zstandard.ZstdError
    except ImportError:   # only .zst files need it
        zstd_error = OSError
    try:
        with _open(path) as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise _not_utf8(path, offset + e.start, raw[e.start]) from None
                if number == 1:
                    line = line.removeprefix("\ufeff")  # tolerate a byte-order mark
                offset += len(raw)
                yield number, line.rstrip("\r\n")
    except (gzip.BadGzipFile, EOFError, zlib.error, zstd_error) as e:
        raise _corrupt(path, e) from None
    except OSError as e:
        raise unreadable(e, path) from None


def read_text_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise unreadable(e, path) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e.start, raw[e.start]) from None


def iter_txt(path: Path) -> Iterator[str]:
    """Documents separated by blank lines; lines inside a document are kept (joined by newline)."""
    doc: list[str] = []
    for _, line in numbered_lines(path):
        if line.strip():
            doc.append(line.strip())
        elif doc:
            yield "\n".join(doc)
            doc = []
    if doc:
        yield "\n".join(doc)


def iter_jsonl(path: Path) -> Iterator[str]:
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"{path}:{number}: bad JSON line ({type(e).__name__}: {e}). Each line must be a "
                'JSON object with a string "text" field, e.g. {"text": "A document."}') from None
        if text.strip():
            yield text.strip()


def _pyarrow(path: Path):
    try:
        import pyarrow as pa
    except ImportError:
        raise UserError(f"reading {path} needs pyarrow; pip install pyarrow") from None
    return pa


def check_text_column(where: object, schema, column: str = TEXT_COLUMN) -> None:
    """UserError unless the Arrow `schema` has a string column `column` (Parquet, Arrow and
    `datasets` corpora)."""
    import pyarrow as pa

    names = list(schema.names)
    if column not in names:
        raise UserError(f"{where} has no {column!r} column (columns: {', '.join(names) or 'none'}"
                        f"); pass --text-column with the one that holds the documents")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or getattr(pa.types, "is_string_view", lambda t: False)(kind)):
        raise UserError(f"{where}: column {column!r} holds {kind}, not strings; pass "
                        f"--text-column with a column of strings, or store the documents as "
                        f"strings")


def column_documents(column) -> Iterator[str]:
    """The documents of a string column (Arrow array or chunked array): a row each, stripped;
    empty and null rows skipped."""
    for text in column.to_pylist():
        if text and text.strip():
            yield text.strip()


def iter_parquet(path: Path, column: str = TEXT_COLUMN) -> Iterator[str]:
    """A string column, one row group at a time (a row group is the unit Parquet compresses)."""
    pa = _pyarrow(path)
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path} is not a readable Parquet file ({e}); check the file") from None
    check_text_column(path, pf.schema_arrow, column)
    for group in range(pf.num_row_groups):
        try:
            values = pf.read_row_group(group, columns=[column]).column(column)
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: cannot read row group {group} ({e}); the file is "
                            f"truncated or corrupt") from None
        yield from column_documents(values)


def iter_arrow(path: Path, column: str = TEXT_COLUMN) -> Iterator[str]:
    """A string column of an Arrow IPC file, one record batch at a time, memory-mapped.

    `datasets` writes the streaming IPC format (its cache-*.arrow and save_to_disk's
    data-*.arrow); the random-access "file" format (Feather v2, `pyarrow.ipc.new_file`) is read
    too."""
    pa = _pyarrow(path)

    def batches(reader) -> Iterator:
        # A reader over the stream format iterates its batches; one over the file format
        # indexes them.
        if hasattr(reader, "num_record_batches"):
            return (reader.get_batch(i) for i in range(reader.num_record_batches))
        return iter(reader)

    try:
        source = pa.memory_map(str(path))
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path} is not a readable Arrow file ({e}); check the file") from None
    with source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            try:
                source.seek(0)
                reader = pa.ipc.open_file(source)
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{path} is not a readable Arrow IPC file ({e}); check the "
                                f"file") from None
        check_text_column(path, reader.schema, column)
        index = reader.schema.get_field_index(column)
        number = 0
        it = batches(reader)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{path}: cannot read record batch {number} ({e}); the file "
                                f"is truncated or corrupt") from None
            number += 1
            yield from column_documents(batch.column(index))


def iter_file(path: Path, column: str = TEXT_COLUMN) -> Iterator[str]:
    """The documents of one corpus file; `column`: the text column of a Parquet or Arrow file."""
    k = format_of(path)
    if k is None:
        raise UserError(f"unsupported corpus file type {path.suffix or '(none)'!r} for {path}. "
                        "Use a .txt file (blank line between documents), a .jsonl file "
                        '({"text": ...} per line), either compressed as .gz or .zst, a .parquet '
                        "or .arrow file with a text column, a dataset directory saved with "
                        "save_to_disk, or a folder or glob of them")
    if k[0] == "parquet":
        return iter_parquet(path, column)
    if k[0] == "arrow":
        return iter_arrow(path, column)
    return iter_txt(path) if k[0] == "txt" else iter_jsonl(path)


def _raise(e: OSError) -> None:
    raise unreadable(e)


def corpus_files(root: Path) -> list[Path]:
    """The corpus files below a folder, sorted, recursive, hidden names skipped (symbolic links
    to folders not followed). A folder that cannot be listed is an error, not an empty one."""
    found = []
    for folder, dirs, files in os.walk(root, onerror=_raise):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [p for p in (Path(folder) / f for f in files)
                  if not p.name.startswith(".") and format_of(p) is not None and p.is_file()]
    return sorted(found)


def glob_files(pattern: str) -> list[Path]:
    """Corpus files matching a glob pattern (`**` recurses), sorted; folders expand."""
    out: list[Path] = []
    for name in sorted(glob.glob(pattern, recursive=True)):
        p = Path(name)
        out += corpus_files(p) if p.is_dir() else [p] if format_of(p) is not None else []
    if not out:
        raise UserError(f"no corpus file matches {pattern!r}; check the pattern (files must end "
                        f"in .txt, .jsonl, .gz/.zst of those, .parquet or .arrow)")
    return out


def is_glob(source: str) -> bool:
    return any(c in source for c in "*?[")


def iter_files(paths: list[Path], column: str = TEXT_COLUMN) -> Iterator[str]:
    for p in paths:
        yield from iter_file(p, column)


def total_bytes(paths: list[Path]) -> int | None:
    """Bytes of text the files hold when that is their size on disk (for a progress ETA)."""
    if any((format_of(p) or ("", "x"))[1] or format_of(p)[0] in ("parquet", "arrow")
           for p in paths):
        return None   # compressed or columnar: the text size is unknown until read
    return sum(p.stat().st_size for p in paths)
