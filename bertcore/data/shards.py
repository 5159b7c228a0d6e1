"""Pretokenized corpora: tokenize once, memory-map at train time (nanoGPT's memmap idea).

A data directory (format twinbert-shards-v2) holds
    tokens-00000.bin ...  every sentence's token ids back to back, split into shard files at
                          document boundaries (uint16 for vocabularies of at most 65536 ids, else
                          uint32); together they form one token space
    sent_offsets.bin      int64 [sentences + 1]: sentence i is tokens [off[i], off[i+1])
    doc_offsets.bin       int64 [documents + 1]: document d is sentences [off[d], off[d+1])
    meta.json             format, tokenizer fingerprint, vocab size, dtype, counts, the shard
                          files and their token counts, source, split
    tokenizer/            a copy of the tokenizer that made the ids (so the directory stands alone)
    eval/                 optional (prepare --eval-fraction): the held-out documents, a complete
                          data directory of its own
    epochs/               optional: the epoch orders training builds (bertcore.data.instances)
    unigram.json          optional: the context-free baseline's counts, cached by training's
                          summary (bertcore.train.baseline)
Nothing else: `prepare --overwrite` replaces only these (DATA_OUTPUT), never a user's files.
Offsets are int64 and computed once by `prepare` (bertcore.data.prepare, the writer, which takes the
names and types below from here), so opening the data is O(1) in memory: everything here is
memory-mapped, shared through the page cache by every rank on a host, and nothing limits a
corpus to 4 GiB or 2**32 tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bertcore.data.tokenizer import WordPiece, load_tokenizer
from bertcore.infra.errors import UserError
from bertcore.infra.files import Output, cache_root

# ---- the format: what prepare writes and Shards reads -------------------------------------------
FORMAT = "twinbert-shards-v2"
META = "meta.json"
SENT_OFFSETS = "sent_offsets.bin"
DOC_OFFSETS = "doc_offsets.bin"
OFFSET_DTYPE = np.dtype(np.int64)
TOKENIZER_DIR = "tokenizer"
EVAL_DIR = "eval"
EPOCHS_DIR = "epochs"
UNIGRAM = "unigram.json"
SHARD_FILE = r"tokens-\d{5,}\.bin"
# A data directory as prepare's output: what `prepare --overwrite` (and the cache, rebuilding an
# old one) may replace; the files of format v1 too.
DATA_OUTPUT = Output("a prepared data directory",
                     frozenset({META, SENT_OFFSETS, DOC_OFFSETS, TOKENIZER_DIR, EVAL_DIR,
                                EPOCHS_DIR, UNIGRAM, "tokens.bin", "sent_lens.bin",
                                "doc_sents.bin"}),
                     (SHARD_FILE,))


def shard_file(index: int) -> str:
    """The name of the `index`-th token file."""
    return f"tokens-{index:05d}.bin"


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned type that holds every id: uint16 up to 65536 ids, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


class TokenStore:
    """The shard files as one read-only token array: integer, slice or index-array access.

    A sentence never crosses a shard, but an instance's B may come from another shard than its
    A, so index arrays are gathered shard by shard."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.starts = np.concatenate([[0], np.cumsum([len(a) for a in arrays], dtype=np.int64)])
        self.dtype = arrays[0].dtype if arrays else np.dtype(np.uint16)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.concatenate(self.arrays) if self.arrays else np.zeros(0, self.dtype)
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                s = int(np.searchsorted(self.starts, start, side="right")) - 1
                if s < len(self.arrays) and stop <= self.starts[s + 1]:
                    return self.arrays[s][start - self.starts[s]:stop - self.starts[s]]
            return self[np.arange(start, stop, step)]
        idx = np.asarray(key, dtype=np.int64)
        if idx.ndim == 0:
            if not -len(self) <= idx < len(self):
                raise IndexError(f"token {int(idx)} out of range for {len(self)} tokens")
            return self[np.array([idx % len(self)])][0]
        if len(self.arrays) == 1:
            return self.arrays[0][idx]
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        out = np.empty(idx.shape, dtype=self.dtype)
        # bincount, not np.unique: unique imports numpy.ma, a delay at the first batch.
        for s in np.flatnonzero(np.bincount(shard.ravel(), minlength=len(self.arrays))):
            hit = shard == s
            out[hit] = self.arrays[s][idx[hit] - self.starts[s]]
        return out


class Shards:
    """A prepared data directory, memory-mapped.

    tokens[sent_offsets[i]:sent_offsets[i+1]] is sentence i; sentences
    doc_offsets[d]:doc_offsets[d+1] make document d.
    """

    def __init__(self, path: str | Path, tokenizer: WordPiece | None = None):
        self.path = path = Path(path)
        meta_file = path / META
        if not meta_file.is_file():
            raise UserError(f"{path} is not a prepared data directory (no meta.json); build one "
                            f"with python -m bertcore.data prepare --out {path}")
        try:
            self.meta = meta = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{meta_file} is corrupt ({e}); prepare the data again")
        if meta.get("format") != FORMAT:
            old = (" (v1 kept one tokens.bin and rebuilt the offsets in memory at every start)"
                   if meta.get("format") == "twinbert-shards-v1" else "")
            raise UserError(f"{path} has format {meta.get('format')!r}{old}, expected {FORMAT!r}; "
                            f"prepare the data again with python -m bertcore.data prepare")
        if tokenizer is not None and tokenizer.fingerprint != meta["tokenizer_fingerprint"]:
            raise UserError(
                f"{path} was built with another tokenizer (fingerprint "
                f"{meta['tokenizer_fingerprint']}, yours is {tokenizer.fingerprint}); prepare the "
                f"data again with this tokenizer or pass the one in {path / 'tokenizer'}")
        self.vocab_size = int(meta["vocab_size"])
        dtype = np.dtype(meta["dtype"])
        again = f"prepare it again with python -m bertcore.data prepare --out {path}"
        arrays = []
        for shard in meta["shards"]:
            f = path / shard["file"]
            if not f.is_file():
                raise UserError(f"shard file {f} listed in {meta_file} is missing; {again}")
            if f.stat().st_size != shard["tokens"] * dtype.itemsize:
                raise UserError(f"shard file {f} has {f.stat().st_size} bytes, meta.json says "
                                f"{shard['tokens']} tokens of {dtype.name} (truncated or edited); "
                                f"{again}")
            if shard["tokens"]:
                arrays.append(np.memmap(f, dtype=dtype, mode="r"))
        self.tokens = TokenStore(arrays)
        try:
            self.sent_offsets = np.memmap(path / SENT_OFFSETS, dtype=OFFSET_DTYPE, mode="r")
            self.doc_offsets = np.memmap(path / DOC_OFFSETS, dtype=OFFSET_DTYPE, mode="r")
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read the offsets in {path} ({e}); {again}")
        if (len(self.tokens) != meta["tokens"] or len(self.sent_offsets) != meta["sentences"] + 1
                or len(self.doc_offsets) != meta["documents"] + 1
                or self.sent_offsets[0] != 0 or self.sent_offsets[-1] != meta["tokens"]
                or self.doc_offsets[0] != 0 or self.doc_offsets[-1] != meta["sentences"]):
            raise UserError(f"the data in {path} does not match its meta.json (truncated or "
                            f"edited files); {again}")
        # Offsets that go back (a corrupted byte) would cut sentences of negative length or
        # beyond the tokens; with the ends checked above, rising everywhere keeps each within.
        for name, off in ((SENT_OFFSETS, self.sent_offsets), (DOC_OFFSETS, self.doc_offsets)):
            at = first_descent(off)
            if at is not None:
                raise UserError(self.damaged(f"{name} goes back at entry {at + 1}: "
                                             f"{int(off[at])} then {int(off[at + 1])}"))

    def damaged(self, found: str) -> str:
        """What to say about token files found damaged while reading them (FOUND: what was
        seen), with the fix: the cache rebuilds what is deleted, prepare remakes its own output."""
        if cache_root().resolve() in self.path.resolve().parents:
            fix = f"delete {self.path} and run again, which rebuilds it"
        else:
            fix = (f"prepare it again with python -m bertcore.data prepare --out {self.path} "
                   f"--overwrite")
        return f"the token files in {self.path} are damaged ({found}); {fix}"

    @property
    def num_documents(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sent_offsets) - 1

    def tokenizer(self) -> WordPiece:
        return load_tokenizer(self.path / TOKENIZER_DIR)

    @property
    def eval_path(self) -> Path | None:
        """The held-out split written by prepare --eval-fraction, if any (open it with Shards)."""
        return self.path / self.meta["eval"] if self.meta.get("eval") else None

    def __repr__(self) -> str:
        m = self.meta
        return (f"Shards({str(self.path)!r}: {m['documents']} documents, {m['sentences']} "
                f"sentences, {m['tokens']} tokens)")


OFFSETS_BLOCK = 1 << 22     # offsets read at a time by `first_descent` (32 MB of int64)


def first_descent(offsets: np.ndarray, block: int = OFFSETS_BLOCK) -> int | None:
    """The first i where offsets[i + 1] < offsets[i], or None when they never go back: block by
    block through the memory map (8 bytes a sentence read once, in memory one block at a time),
    so opening a corpus of a billion sentences costs a second, not its size in memory."""
    n = len(offsets)
    for lo in range(0, max(n - 1, 0), block):
        a = np.asarray(offsets[lo:min(lo + block + 1, n)])
        bad = np.flatnonzero(a[1:] < a[:-1])
        if len(bad):
            return lo + int(bad[0])
    return None


def dir_is_prepared(path: str | Path) -> bool:
    """A data directory in this version's format (an older one has to be prepared again)."""
    try:
        meta = json.loads((Path(path) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT

