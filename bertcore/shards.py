"""Pretokenized corpora: tokenize once, memory-map at train time (nanoGPT's uint16 memmap idea).

A data directory holds
    tokens.bin      every sentence's token ids back to back (uint16 for vocabularies of at most 65536
                    ids, else uint32)
    sent_lens.bin   uint32, tokens per sentence
    doc_sents.bin   uint32, sentences per document
    meta.json       format, tokenizer fingerprint, vocab size, dtype, counts, source
    tokenizer/      a copy of the tokenizer that made the ids (so the directory stands alone)
Documents and sentences are contiguous in tokens.bin, so a run of consecutive sentences is one
slice. `prepare` streams: it holds one chunk of documents at a time, so memory does not grow with
the corpus. The directory is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from .errors import UserError, atomic_path
from .tokenizer import WordPiece, load_tokenizer

FORMAT = "twinbert-shards-v1"


@dataclass
class PrepareStats:
    documents: int
    sentences: int
    tokens: int
    text_bytes: int
    seconds: float

    @property
    def mb_per_second(self) -> float:
        return self.text_bytes / 1e6 / max(self.seconds, 1e-9)


def prepare(documents: Iterable[str], tokenizer: WordPiece, out_dir: str | Path, *,
            source: str = "", delimiters: str = ".?!", chunk_documents: int = 1000,
            progress: bool = True) -> PrepareStats:
    """Split documents into sentences, tokenize them in batches and write a data directory."""
    from .corpus import split_sentences

    out_dir = Path(out_dir)
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    n_docs = n_sents = n_tokens = n_bytes = 0
    start = time.perf_counter()
    bar = tqdm(desc="tokenizing", unit=" docs", disable=not progress, mininterval=0.5)
    with atomic_path(out_dir, is_dir=True) as tmp:
        with open(tmp / "tokens.bin", "wb") as f_tok, open(tmp / "sent_lens.bin", "wb") as f_len, \
                open(tmp / "doc_sents.bin", "wb") as f_doc:

            def flush(chunk: list[str]) -> None:
                nonlocal n_docs, n_sents, n_tokens, n_bytes
                sents, per_doc = [], []
                for doc in chunk:
                    n_bytes += len(doc.encode("utf-8"))
                    s = split_sentences(doc, delimiters)
                    sents.extend(s)
                    per_doc.append(len(s))
                ids = tokenizer.encode_batch(sents)
                lens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
                # Drop sentences that tokenized to nothing, then documents left empty.
                doc_of = np.repeat(np.arange(len(per_doc)), per_doc)
                keep = lens > 0
                kept_per_doc = np.bincount(doc_of[keep], minlength=len(per_doc))
                kept_per_doc = kept_per_doc[kept_per_doc > 0]
                flat = np.fromiter((t for x in ids for t in x), dtype=dtype, count=int(lens.sum()))
                f_tok.write(flat.tobytes())
                f_len.write(lens[keep].astype(np.uint32).tobytes())
                f_doc.write(kept_per_doc.astype(np.uint32).tobytes())
                n_docs += len(kept_per_doc)
                n_sents += int(keep.sum())
                n_tokens += len(flat)
                bar.update(len(chunk))

            chunk: list[str] = []
            for doc in documents:
                chunk.append(doc)
                if len(chunk) >= chunk_documents:
                    flush(chunk)
                    chunk = []
            if chunk:
                flush(chunk)
        bar.close()
        if n_docs == 0:
            raise UserError(f"corpus {source or '(given)'} produced no tokens; check that it "
                            f"holds text")
        tokenizer.save(tmp / "tokenizer")
        meta = {
            "format": FORMAT, "source": source, "tokenizer_fingerprint": tokenizer.fingerprint,
            "vocab_size": tokenizer.vocab_size, "dtype": np.dtype(dtype).name,
            "documents": n_docs, "sentences": n_sents, "tokens": n_tokens,
            "text_bytes": n_bytes, "delimiters": delimiters,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return PrepareStats(n_docs, n_sents, n_tokens, n_bytes, time.perf_counter() - start)


class Shards:
    """A prepared data directory, memory-mapped.

    tokens[sent_offsets[i]:sent_offsets[i+1]] is sentence i; sentences
    doc_offsets[d]:doc_offsets[d+1] make document d.
    """

    def __init__(self, path: str | Path, tokenizer: WordPiece | None = None):
        self.path = path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise UserError(f"{path} is not a prepared data directory (no meta.json); build one "
                            f"with python -m bertcore.data prepare --out {path}")
        try:
            self.meta = meta = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{meta_file} is corrupt ({e}); prepare the data again")
        if meta.get("format") != FORMAT:
            raise UserError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}; "
                            f"prepare the data again")
        if tokenizer is not None and tokenizer.fingerprint != meta["tokenizer_fingerprint"]:
            raise UserError(
                f"{path} was built with another tokenizer (fingerprint "
                f"{meta['tokenizer_fingerprint']}, yours is {tokenizer.fingerprint}); prepare the "
                f"data again with this tokenizer or pass the one in {path / 'tokenizer'}")
        self.vocab_size = int(meta["vocab_size"])
        dtype = np.dtype(meta["dtype"])
        try:
            self.tokens = np.memmap(path / "tokens.bin", dtype=dtype, mode="r")
            sent_lens = np.fromfile(path / "sent_lens.bin", dtype=np.uint32)
            doc_sents = np.fromfile(path / "doc_sents.bin", dtype=np.uint32)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read the data in {path} ({e}); prepare it again")
        if (len(self.tokens) != meta["tokens"] or len(sent_lens) != meta["sentences"]
                or len(doc_sents) != meta["documents"] or int(sent_lens.sum()) != meta["tokens"]
                or int(doc_sents.sum()) != meta["sentences"]):
            raise UserError(f"the data in {path} does not match its meta.json (truncated or "
                            f"edited files); prepare it again")
        self.sent_offsets = np.concatenate([[0], np.cumsum(sent_lens, dtype=np.int64)])
        self.doc_offsets = np.concatenate([[0], np.cumsum(doc_sents, dtype=np.int64)])

    @property
    def num_documents(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sent_offsets) - 1

    def tokenizer(self) -> WordPiece:
        return load_tokenizer(self.path / "tokenizer")

    def __repr__(self) -> str:
        m = self.meta
        return (f"Shards({str(self.path)!r}: {m['documents']} documents, {m['sentences']} "
                f"sentences, {m['tokens']} tokens)")


def dir_is_prepared(path: str | Path) -> bool:
    return (Path(path) / "meta.json").is_file()


def cache_root() -> Path:
    """Where built tokenizers, shards and downloads are cached: $TWINBERT_CACHE, else
    $XDG_CACHE_HOME/twinbert, else ~/.cache/twinbert (one root for everything)."""
    from .corpus import default_cache_dir

    return default_cache_dir()
