"""Sentence-pair instances at corpus scale: google-research/bert's recipe, vectorised.

google-research/bert's `create_instances_from_document` walks each document's sentences: a chunk
takes consecutive sentences until it reaches a target length (`seq_len - 3`, or with probability
`short_seq_prob` a random length from 2); it is split into A and B at a random sentence boundary;
half of the time B is replaced by a random span of another document (label 1), and then the
chunk's unused sentences go back to the pool, so the next chunk starts where A ended.

Doing that with a Python loop per sentence costs time and memory in proportion to the corpus at
every start. Here everything that decides *where chunks start* is a pure function of the
sentence index (counter-based hashes of (seed, epoch, sentence)), so:

- `chunk_starts` finds an epoch's chunk starts with numpy over blocks of sentences: each sentence
  knows its successor (`next[i]` = the chunk end, or A's end for a random B), and the starts are
  what the document starts reach through `next`, found by pointer doubling. The epoch is then one
  compact array, the chunk-start sentence of each instance (uint32 while the corpus has fewer
  than 2**32 sentences; 4 bytes an instance, ~0.05 MB per million tokens).
- `instance_rows` turns chunk starts into (a_start, a_len, b_start, b_len, label) rows when a
  batch needs them, recomputing the chunk from the same hashes; the draws that do not move chunk
  starts (the token split of a one-sentence chunk, the random document and sentence of B, the
  front/back truncation) come from a Generator the caller seeds per window of batches.

Block sizes only bound memory: the result does not depend on them.

`epoch_order` is the epoch as training reads it: the chunk starts shuffled by a Generator (a
Fisher-Yates pass over the whole array, so no batch is known before the whole epoch is). Given a
file, it keeps the result there as a `.npy` and memory-maps it: built once per (data, settings,
seed, epoch) under a file lock, written atomically, then opened in milliseconds by every rank and
every resume, its pages shared through the page cache.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from bertcore.infra.files import file_lock

# Columns of the instance table.
A_START, A_LEN, B_START, B_LEN, LABEL = range(5)

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S63, _S40 = (np.uint64(s) for s in (30, 27, 31, 63, 40))
BLOCK_SENTENCES = 1 << 15   # sentences per block while finding chunk starts (memory, not results)
THREADS = min(os.cpu_count() or 1, 8)   # blocks computed at once (time and memory, not results)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective 64-bit hash with good avalanche."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _keys(seed: Sequence[int]) -> tuple[np.uint64, np.uint64]:
    k = np.random.SeedSequence(list(seed)).generate_state(2, np.uint64)
    return k[0], k[1]


class _Draws:
    """The per-sentence decisions that shape chunks, hashed from (key, sentence index)."""

    def __init__(self, seed: Sequence[int], max_tokens: int, short_seq_prob: float):
        self.k1, self.k2 = _keys(seed)
        self.max_tokens = max_tokens
        self.short_cut = np.uint64(int(short_seq_prob * (1 << 24)))

    def target(self, i: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            h = _mix(i.astype(np.uint64) * _GOLDEN + self.k1)
        # Top 24 bits: short or not; low 32 bits: the short length, uniform in [2, max_tokens].
        short = (h >> _S40) < self.short_cut
        length = 2 + (h & np.uint64(0xFFFFFFFF)) % np.uint64(max(self.max_tokens - 1, 1))
        return np.where(short, length.astype(np.int64), self.max_tokens)

    def nsp(self, i: np.ndarray, n_chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(is_random, a_sentences): B random with probability 1/2; A takes 1..n_chunk-1."""
        with np.errstate(over="ignore"):
            h = _mix(i.astype(np.uint64) * _GOLDEN + self.k2)
        is_random = (h >> _S63).astype(bool)
        span = np.maximum(n_chunk - 1, 1).astype(np.uint64)
        a_sents = 1 + ((h & np.uint64((1 << 62) - 1)) % span).astype(np.int64)
        return is_random, a_sents


def _chunks(i, off_at, search, doc_end, draws: _Draws, nsp: bool):
    """For chunk starts i: chunk end, length, target, is_random, A's end (sentence indices).

    `off_at(k)` gives sentence offsets, `search(values)` the first sentence whose offset is >=
    each value, `doc_end` each start's document end."""
    target = draws.target(i)
    start_tok = off_at(i)
    end = np.minimum(np.maximum(search(start_tok + target), i + 1), doc_end)
    length = off_at(end) - start_tok
    if not nsp:
        return end, length, target, None, None
    n_chunk = end - i
    is_random, a_sents = draws.nsp(i, n_chunk)
    single = n_chunk == 1
    is_random |= single & (length < 2)   # one token: nothing to split, B must be random
    a_end = np.where(single, end, i + a_sents)
    return end, length, target, is_random, a_end


def chunk_starts(sent_offsets: np.ndarray, doc_offsets: np.ndarray, seq_len: int,
                 seed: Sequence[int], nsp: bool = True, short_seq_prob: float = 0.1,
                 block_sentences: int = BLOCK_SENTENCES) -> np.ndarray:
    """The chunk-start sentence of every instance of one epoch, in document order."""
    blocks, dtype = _start_blocks(sent_offsets, doc_offsets, seq_len, seed, nsp, short_seq_prob,
                                  block_sentences)
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=dtype)


def _start_blocks(sent_offsets, doc_offsets, seq_len, seed, nsp, short_seq_prob,
                  block_sentences=BLOCK_SENTENCES):
    """`chunk_starts` as a list of per-block arrays (and their dtype), blocks computed on
    threads: numpy releases the GIL in the searches, hashes and gathers that dominate."""
    max_tokens = seq_len - 3 if nsp else seq_len - 2   # room for [CLS] A [SEP] (B [SEP])
    draws = _Draws(seed, max_tokens, short_seq_prob)
    n_sents = len(sent_offsets) - 1
    dtype = np.uint32 if n_sents < 2**32 else np.int64
    bounds = np.searchsorted(doc_offsets[:-1], np.arange(0, n_sents + block_sentences,
                                                         block_sentences), side="left")
    # An empty range is a long document's middle: its block starts earlier.
    spans = [(int(d0), int(d1)) for d0, d1 in zip(bounds[:-1], bounds[1:]) if d0 < d1]

    def block(span):
        d0, d1 = span
        s0, s1 = int(doc_offsets[d0]), int(doc_offsets[d1])
        n = s1 - s0
        off = np.asarray(sent_offsets[s0:s1 + 1], dtype=np.int64)
        firsts = np.asarray(doc_offsets[d0:d1 + 1], dtype=np.int64) - s0
        doc_end = np.repeat(firsts[1:], np.diff(firsts))
        local = np.arange(n, dtype=np.int64)
        end, _, _, is_random, a_end = _chunks(
            local + s0, lambda k: off[k - s0], lambda v: np.searchsorted(off, v) + s0,
            doc_end + s0, draws, nsp)
        nxt = (np.where(is_random, a_end, end) if nsp else end) - s0
        # Starts are what the document starts reach through nxt. Pointer doubling: after step
        # k, `marked` holds every start within 2**k hops of a document start.
        jump = np.append(nxt, n)
        marked = np.zeros(n + 1, dtype=bool)
        marked[firsts[:-1]] = True
        while True:
            reached = jump[np.flatnonzero(marked)]
            if marked[reached].all():
                break
            marked[reached] = True
            jump = jump[jump]
        return (np.flatnonzero(marked[:n]) + s0).astype(dtype)

    threads = min(THREADS, len(spans))
    if threads <= 1:
        return [block(s) for s in spans], dtype
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(block, spans)), dtype


def epoch_order(sent_offsets: np.ndarray, doc_offsets: np.ndarray, seq_len: int,
                seed: Sequence[int], nsp: bool = True, short_seq_prob: float = 0.1,
                path: str | Path | None = None) -> np.ndarray:
    """`chunk_starts` shuffled in place by `default_rng([*seed, 0])`: the epoch in training order.

    With `path`, a read-only memory map of `path` (a .npy), built there first if it is missing.
    If `path` cannot be written, the epoch is built in memory: the same array either way."""
    if path is None:
        starts = chunk_starts(sent_offsets, doc_offsets, seq_len, seed, nsp, short_seq_prob)
        np.random.default_rng([*seed, 0]).shuffle(starts)
        return starts
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Other ranks wait here, then open the file (on Windows, without fcntl, they all build
        # it: the same bytes).
        with file_lock(path.with_name(path.name + ".lock")):
            try:
                return np.load(path, mmap_mode="r")
            except (OSError, ValueError):
                pass
            blocks, dtype = _start_blocks(sent_offsets, doc_offsets, seq_len, seed, nsp,
                                          short_seq_prob)
            n = sum(len(b) for b in blocks)
            if n == 0:
                return np.zeros(0, dtype=dtype)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                out = np.lib.format.open_memmap(tmp, "w+", dtype, (n,))
                at = 0
                while blocks:   # no concatenated copy: each block goes to the file and is freed
                    b = blocks.pop(0)
                    out[at:at + len(b)] = b
                    at += len(b)
                # On the plain ndarray view: a memmap would take shuffle's slow generic path
                # (the same permutation, one Python-level swap at a time).
                np.random.default_rng([*seed, 0]).shuffle(out.view(np.ndarray))
                out.flush()
                del out
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return np.load(path, mmap_mode="r")
    except OSError:   # a read-only or full file system: build it in memory
        return epoch_order(sent_offsets, doc_offsets, seq_len, seed, nsp, short_seq_prob)


def _truncate(a_len: np.ndarray, b_len: np.ndarray, max_tokens: int):
    """google-research/bert's `truncate_seq_pair` (trim the longer side, ties trim B), in
    closed form: the longer side gives up the excess until both are even, then they end at
    ceil(max/2) and floor(max/2)."""
    excess = np.maximum(a_len + b_len - max_tokens, 0)
    diff = a_len - b_len
    fits = np.abs(diff) >= excess
    ta = np.where(fits, np.where(diff > 0, a_len - excess, a_len), (max_tokens + 1) // 2)
    tb = np.where(fits, np.where(diff > 0, b_len, b_len - excess), max_tokens // 2)
    return ta, tb


def instance_rows(starts: np.ndarray, sent_offsets: np.ndarray, doc_offsets: np.ndarray,
                  seq_len: int, seed: Sequence[int], rng: np.random.Generator, nsp: bool = True,
                  short_seq_prob: float = 0.1) -> np.ndarray:
    """int64 [n, 5] rows (a_start, a_len, b_start, b_len, label) for chunk starts `starts`.

    `seed` must be the one `chunk_starts` used; `rng` supplies the draws that do not move chunk
    starts, in a fixed order for the whole array (so the caller seeds it per window)."""
    max_tokens = seq_len - 3 if nsp else seq_len - 2
    draws = _Draws(seed, max_tokens, short_seq_prob)
    i = np.asarray(starts, dtype=np.int64)
    n = len(i)
    doc = np.searchsorted(doc_offsets, i, side="right") - 1
    doc_end = np.asarray(doc_offsets[doc + 1], dtype=np.int64)

    def off_at(k):
        return np.asarray(sent_offsets[k], dtype=np.int64)

    def search(v):
        return np.searchsorted(sent_offsets, v)

    end, length, target, is_random, a_end = _chunks(i, off_at, search, doc_end, draws, nsp)
    a_start = off_at(i)
    rows = np.zeros((n, 5), dtype=np.int64)
    rows[:, A_START] = a_start
    if not nsp:
        rows[:, A_LEN] = np.minimum(length, max_tokens)
        return rows
    # Draws in a fixed order, one per row each, whether or not a row uses them.
    tok_split = rng.integers(1, np.maximum(length, 2))
    n_docs = len(doc_offsets) - 1
    other = rng.integers(0, max(n_docs - 1, 1), size=n)
    pick = rng.random(n)
    # A: whole sentences up to a_end, or, for one long sentence with an actual next B, a prefix
    # cut at a token (google would force a random B there, which skews NSP towards label 1).
    single = (end - i) == 1
    a_len = np.where(single & ~is_random, tok_split, off_at(a_end) - a_start)
    # Random B: a run of sentences of another document (uniform over the others), from a random
    # sentence, about as long as the room left.
    rd = np.where(other >= doc, other + 1, other) if n_docs > 1 else doc
    r0 = np.asarray(doc_offsets[rd], dtype=np.int64)
    r1 = np.asarray(doc_offsets[rd + 1], dtype=np.int64)
    j = r0 + np.minimum((pick * (r1 - r0)).astype(np.int64), r1 - r0 - 1)
    rb_start = off_at(j)
    want = np.maximum(target - a_len, 1)
    rb_end = np.minimum(np.maximum(search(rb_start + want), j + 1), r1)
    b_start = np.where(is_random, rb_start, a_start + a_len)
    b_len = np.where(is_random, off_at(rb_end) - rb_start, length - a_len)
    ta, tb = _truncate(a_len, b_len, max_tokens)
    # The tokens removed from each side come from the front or the back at random: a binomial
    # split, the distribution of google's per-token coin flip.
    rows[:, A_START] = a_start + rng.binomial(a_len - ta, 0.5)
    rows[:, B_START] = b_start + rng.binomial(b_len - tb, 0.5)
    rows[:, A_LEN], rows[:, B_LEN], rows[:, LABEL] = ta, tb, is_random
    return rows


def create_instances(sent_offsets: np.ndarray, doc_offsets: np.ndarray, seq_len: int,
                     seed: Sequence[int], nsp: bool = True,
                     short_seq_prob: float = 0.1) -> np.ndarray:
    """Every instance of one epoch as int64 [N, 5] rows, in document order (for tests and
    tools; training materialises only a window of rows at a time)."""
    starts = chunk_starts(sent_offsets, doc_offsets, seq_len, seed, nsp, short_seq_prob)
    rng = np.random.default_rng([*seed, 0])
    return instance_rows(starts, sent_offsets, doc_offsets, seq_len, seed, rng, nsp,
                         short_seq_prob)
