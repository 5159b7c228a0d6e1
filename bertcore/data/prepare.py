"""`prepare`: split, tokenize and write a corpus as a data directory (format in
bertcore.data.shards).

The parent process reads documents (any reader of bertcore.data.corpus) and hands chunks of about a
megabyte of text to `workers` processes, which split sentences and tokenize; results come back in
order and are appended to the shard files and the int64 offset files. At most two chunks per
worker are in flight, so memory stays flat however large the corpus is. Everything is written
under a temporary name and swapped in when complete (bertcore.infra.files.replace_output): an
interrupted or failed prepare leaves nothing behind and never touches an existing directory, and
one that holds files prepare does not write is refused, never replaced.

With `eval_fraction` F, each document goes to a held-out split when a hash of its text falls
below F: deterministic, independent of the corpus order and of `workers`, and the same text
(duplicates included) always lands on the same side. The held-out documents become DATADIR/eval,
a complete data directory that `Shards(DATADIR / "eval")` opens on its own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from bertcore.data.shards import (DATA_OUTPUT, DOC_OFFSETS, EVAL_DIR, FORMAT, META, OFFSET_DTYPE,
                                  SENT_OFFSETS, TOKENIZER_DIR, shard_file, token_dtype)
from bertcore.data.tokenizer import BatchIds, WordPiece
from bertcore.infra.errors import UserError
from bertcore.infra.files import replace_output

SHARD_TOKENS = 1 << 28      # start a new shard file after ~268M tokens (512 MB at uint16)
CHUNK_CHARS = 1 << 20       # text handed to a worker at a time


@dataclass
class PrepareStats:
    documents: int
    sentences: int
    tokens: int
    text_bytes: int
    seconds: float
    eval_documents: int = 0
    eval_tokens: int = 0

    @property
    def mb_per_second(self) -> float:
        return self.text_bytes / 1e6 / max(self.seconds, 1e-9)


# ---- the work of one chunk (runs in a worker process, or inline) ------------------------------

_WORKER: dict = {}


def _init_worker(tokenizer_json: str, delimiters: str, dtype: str, eval_fraction: float) -> None:
    # One process per core does the parallel work; tokenizers' own threads would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _WORKER.update(ids=BatchIds(Tokenizer.from_str(tokenizer_json), dtype), delimiters=delimiters,
                   eval_fraction=eval_fraction)


def is_eval(text_bytes: bytes, eval_fraction: float) -> bool:
    """Whether a document is held out: the first 8 bytes of its BLAKE2b, as a fraction of 2**64."""
    if eval_fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(text_bytes, digest_size=8).digest(), "little")
    return h < eval_fraction * 2**64


def _encode_chunk(docs: list[str], batch_ids: BatchIds | None = None,
                  delimiters: str | None = None, eval_fraction: float | None = None):
    """Per split (train, eval): (tokens, tokens per sentence, sentences per document, bytes)."""
    from bertcore.data.corpus import split_sentences

    w = _WORKER
    batch_ids = batch_ids or w["ids"]
    delimiters = w["delimiters"] if delimiters is None else delimiters
    eval_fraction = w["eval_fraction"] if eval_fraction is None else eval_fraction
    out = []
    groups: tuple[list[str], list[str]] = ([], [])
    nbytes = [0, 0]
    for doc in docs:
        raw = doc.encode("utf-8")
        k = int(is_eval(raw, eval_fraction))
        groups[k].append(doc)
        nbytes[k] += len(raw)
    for split, chunk in enumerate(groups):
        sents, per_doc = [], []
        for doc in chunk:
            s = split_sentences(doc, delimiters)
            sents.extend(s)
            per_doc.append(len(s))
        flat, lens = batch_ids(sents)
        # Drop sentences that tokenized to nothing, then documents left empty.
        doc_of = np.repeat(np.arange(len(per_doc)), per_doc)
        keep = lens > 0
        per_doc = np.bincount(doc_of[keep], minlength=len(per_doc))
        out.append((flat, lens[keep], per_doc[per_doc > 0], nbytes[split]))
    return out


# ---- writing ----------------------------------------------------------------------------------

class _Writer:
    """Appends chunks to one data directory: shard files and the two int64 offset files."""

    def __init__(self, folder: Path, dtype: np.dtype, shard_tokens: int):
        self.folder, self.dtype, self.shard_tokens = folder, dtype, shard_tokens
        folder.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict] = []
        self.docs = self.sents = self.tokens = self.nbytes = 0
        self.f_sent = open(folder / SENT_OFFSETS, "wb")
        self.f_doc = open(folder / DOC_OFFSETS, "wb")
        zero = np.zeros(1, OFFSET_DTYPE).tobytes()
        self.f_sent.write(zero)
        self.f_doc.write(zero)
        self.f_tok = None

    def add(self, flat: np.ndarray, lens: np.ndarray, per_doc: np.ndarray, nbytes: int) -> None:
        self.nbytes += nbytes
        if not len(per_doc):
            return
        if self.f_tok is None or self.shards[-1]["tokens"] >= self.shard_tokens:
            self._next_shard()
        self.f_tok.write(flat.tobytes())
        self.shards[-1]["tokens"] += len(flat)
        self.f_sent.write((self.tokens + np.cumsum(lens, dtype=OFFSET_DTYPE)).tobytes())
        self.f_doc.write((self.sents + np.cumsum(per_doc, dtype=OFFSET_DTYPE)).tobytes())
        self.docs += len(per_doc)
        self.sents += len(lens)
        self.tokens += len(flat)

    def _next_shard(self) -> None:
        if self.f_tok is not None:
            self.f_tok.close()
        name = shard_file(len(self.shards))
        self.f_tok = open(self.folder / name, "wb")
        self.shards.append({"file": name, "tokens": 0})

    def close(self, tokenizer: WordPiece, meta: dict) -> None:
        for f in (self.f_tok, self.f_sent, self.f_doc):
            if f is not None:
                f.close()
        tokenizer.save(self.folder / TOKENIZER_DIR)
        meta = {"format": FORMAT, **meta, "tokenizer_fingerprint": tokenizer.fingerprint,
                "vocab_size": tokenizer.vocab_size, "dtype": self.dtype.name,
                "documents": self.docs, "sentences": self.sents, "tokens": self.tokens,
                "text_bytes": self.nbytes, "shards": self.shards}
        (self.folder / META).write_text(json.dumps(meta, indent=2) + "\n")


def _chunks(documents: Iterable[str], max_docs: int) -> Iterator[list[str]]:
    chunk, size = [], 0
    for doc in documents:
        chunk.append(doc)
        size += len(doc)
        if size >= CHUNK_CHARS or len(chunk) >= max_docs:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _results(chunks: Iterator[list[str]], tokenizer: WordPiece, workers: int, args: tuple):
    """Encoded chunks in corpus order, from `workers` processes (inline when 1, or when the whole
    corpus is one chunk: starting processes would cost more than it saves)."""
    first = list(itertools.islice(chunks, 2))
    chunks = itertools.chain(first, chunks)
    delimiters, dtype, eval_fraction = args
    if workers <= 1 or len(first) < 2:
        batch_ids = BatchIds(tokenizer.tokenizer, dtype)
        for chunk in chunks:
            yield _encode_chunk(chunk, batch_ids, delimiters, eval_fraction)
        return
    # spawn, not fork: the parent may hold threads (tokenizers', tqdm's, a framework's).
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, _init_worker, (tokenizer.tokenizer.to_str(), *args)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_encode_chunk, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def prepare(documents: Iterable[str], tokenizer: WordPiece, out_dir: str | Path, *,
            source: str = "", delimiters: str = ".?!", chunk_documents: int = 1000,
            progress: bool = True, workers: int | None = None, eval_fraction: float = 0.0,
            shard_tokens: int = SHARD_TOKENS, total_bytes: int | None = None) -> PrepareStats:
    """Split documents into sentences, tokenize them and write a data directory at `out_dir`.

    `workers`: processes (default: the machine's cores). `total_bytes`: the corpus size, if
    known, for the progress bar's ETA."""
    if not 0 <= eval_fraction < 1:
        raise UserError(f"--eval-fraction {eval_fraction} is outside [0, 1); use e.g. 0.01")
    workers = workers or os.cpu_count() or 1
    out_dir = Path(out_dir)
    dtype = token_dtype(tokenizer.vocab_size)
    start = time.perf_counter()
    bar = tqdm(desc="tokenizing", total=total_bytes, unit="B", unit_scale=True,
               disable=not progress, mininterval=0.5)
    with replace_output(out_dir, DATA_OUTPUT) as tmp:
        train = _Writer(tmp, dtype, shard_tokens)
        held = _Writer(tmp / EVAL_DIR, dtype, shard_tokens) if eval_fraction > 0 else None
        args = (delimiters, dtype.name, eval_fraction)
        for parts in _results(_chunks(documents, chunk_documents), tokenizer, workers, args):
            train.add(*parts[0])
            if held is not None:
                held.add(*parts[1])
            bar.update(parts[0][3] + parts[1][3])
        bar.close()
        if train.docs == 0:
            raise UserError(f"corpus {source or '(given)'} produced no tokens; check that it "
                            f"holds text")
        meta = {"source": source, "delimiters": delimiters, "split": "train",
                "eval_fraction": eval_fraction}
        if held is not None:
            if held.docs == 0:
                raise UserError(f"--eval-fraction {eval_fraction} held out none of the "
                                f"{train.docs} documents of {source or 'the corpus'}; raise it")
            held.close(tokenizer, {**meta, "split": "eval"})
            meta["eval"] = EVAL_DIR
        train.close(tokenizer, meta)
    stats = PrepareStats(train.docs, train.sents, train.tokens, train.nbytes,
                         time.perf_counter() - start)
    if held is not None:
        stats.eval_documents, stats.eval_tokens = held.docs, held.tokens
        stats.text_bytes += held.nbytes
    return stats
