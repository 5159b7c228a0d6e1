"""The batch iterator: the seam between bertcore and the twins.

Every batch is a dict of numpy arrays. The contract (keys, shapes, dtypes, meaning) is `BATCH_SPEC`
below, the one place it is defined; `check_batch` tests a batch against it
(docs/design.md, "The batch contract").

Determinism: the *global* batch of step s depends only on (seed, s). Rank r of W gets rows
[r*B/W, (r+1)*B/W) of it, and the random numbers for masking are drawn for the whole global batch
before slicing, so K ranks together see exactly the batch one process would: the property the
data-parallel tests rely on. Each epoch rebuilds its instances and their order from
(seed, epoch), as one compact array of chunk starts (bertcore.data.instances), kept memory-mapped in
an epoch cache (`epoch_cache_dir`) so that ranks and resumes open it instead of rebuilding it.
`state()` is a small JSON-able dict; `BatchIterator(..., state=s)` continues with the identical
next batch, in either twin.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

from bertcore.model.config import TrainConfig
from bertcore.data.instances import LABEL, epoch_order, instance_rows
from bertcore.data.masking import assemble, mask_tokens
from bertcore.data.shards import EPOCHS_DIR, Shards
from bertcore.data.tokenizer import WordPiece
from bertcore.infra.errors import UserError
from bertcore.infra.files import cache_root


class BatchField(NamedTuple):
    shape: tuple[str, ...]   # B = rows of this batch, L = seq_len, P = max_predictions
    dtype: type
    meaning: str


# The batch contract: what BatchIterator yields and both twins consume.
BATCH_SPEC: dict[str, BatchField] = {
    "input_ids": BatchField(("B", "L"), np.int32, "token ids after masking, [PAD] after the end"),
    "token_type_ids": BatchField(("B", "L"), np.int32, "0 for [CLS] A [SEP], 1 for B [SEP]; "
                                                       "0 on padding"),
    "attention_mask": BatchField(("B", "L"), np.int32, "1 real token, 0 padding"),
    "masked_positions": BatchField(("B", "P"), np.int32, "positions of the predicted tokens, "
                                                         "ascending; unused slots last, at 0"),
    "masked_ids": BatchField(("B", "P"), np.int32, "original ids at those positions; 0 in "
                                                   "unused slots"),
    "masked_weights": BatchField(("B", "P"), np.float32, "1.0 real prediction, 0.0 unused slot"),
    "next_sentence_label": BatchField(("B",), np.int32, "0 = B follows A, 1 = B is a random "
                                                        "span; absent when NSP is off"),
    "sample_seeds": BatchField(("B", "P"), np.int32, "ELECTRA only: a seed in [0, 2^31 - 1) "
                                                     "per slot for the generator's sample "
                                                     "(bertcore.model.sampling)"),
}
NSP_KEYS = frozenset({"next_sentence_label"})   # required with NSP on, optional with it off
ELECTRA_KEYS = frozenset({"sample_seeds"})      # present in objective="electra" batches only


def check_batch(batch: dict[str, Any], batch_size: int, seq_len: int, max_predictions: int,
                nsp: bool) -> None:
    """Raise ValueError, naming the key and the problem, unless `batch` meets BATCH_SPEC.

    `batch_size` is the rows of this batch (per rank and micro-batch, not the global batch).
    """
    if not isinstance(batch, dict):
        raise ValueError(f"a batch is a dict of numpy arrays, got {type(batch).__name__}")
    sizes = {"B": batch_size, "L": seq_len, "P": max_predictions}
    unknown = sorted(set(batch) - set(BATCH_SPEC))
    if unknown:
        raise ValueError(f"batch key {unknown[0]!r} is not in the batch contract "
                         f"(keys: {', '.join(BATCH_SPEC)})")
    for key, field in BATCH_SPEC.items():
        if key not in batch:
            if (key in NSP_KEYS and not nsp) or key in ELECTRA_KEYS:
                continue
            raise ValueError(f"batch key {key!r} is missing" +
                             (" (it is required with NSP on)" if key in NSP_KEYS else ""))
        value = batch[key]
        if not isinstance(value, np.ndarray):
            raise ValueError(f"batch key {key!r} is a {type(value).__module__}."
                             f"{type(value).__name__}, not a numpy array")
        want = tuple(sizes[d] for d in field.shape)
        if value.shape != want:
            raise ValueError(f"batch key {key!r} has shape {list(value.shape)}, expected "
                             f"[{', '.join(field.shape)}] = {list(want)}")
        if value.dtype != field.dtype:
            raise ValueError(f"batch key {key!r} has dtype {value.dtype}, expected "
                             f"{np.dtype(field.dtype)}")


# The format names the stream: instances from bertcore.data.instances (chunk starts hashed from
# (seed, epoch, sentence), rows a window of batches at a time). A state of another format drew
# other batches for the same seed, so it cannot be resumed exactly.
STATE_FORMAT = "twinbert-batches-v2"
WINDOW = 64   # batches whose instance rows are made in one call (part of the stream's format)
# Distinct stream names, so instance building and masking never share random numbers.
_INSTANCES, _MASKING, _DROPOUT = 0x1257, 0x3A5C, 0xD207


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed for the dropout of optimizer step `step` on `rank`.

    torchbert reseeds its generator with it every step, the torch mirror of jaxbert's
    `fold_in(key, step)`: dropout depends only on (seed, step, rank), so a resumed run draws
    the same masks with no RNG state to save."""
    return int(np.random.SeedSequence([seed, _DROPOUT, step, rank])
               .generate_state(1, np.uint64)[0] >> np.uint64(1))


def epoch_cache_dir(shards: Shards) -> Path:
    """Where the epochs of a data directory are cached: DATADIR/epochs when DATADIR is writable
    (prepare replaces the whole directory, cache included), else a folder of the cache root
    named by the directory's path and its meta.json's identity."""
    if os.access(shards.path, os.W_OK):
        return shards.path / EPOCHS_DIR
    st = (shards.path / "meta.json").stat()
    ident = f"{shards.path.resolve()}|{st.st_ino}|{st.st_mtime_ns}|{st.st_size}"
    return cache_root() / "epochs" / hashlib.sha256(ident.encode()).hexdigest()[:16]


class BatchIterator(Iterator[dict]):
    def __init__(self, shards: Shards, tokenizer: WordPiece, cfg: TrainConfig, *, rank: int = 0,
                 world_size: int = 1, state: dict[str, Any] | None = None,
                 epoch_cache: str | Path | None = "auto"):
        """`epoch_cache`: "auto" (`epoch_cache_dir`), a folder, or None to build every epoch in
        memory; the batches are the same either way."""
        cfg.check_rows_divide(world_size, "ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.shards, self.tok, self.cfg = shards, tokenizer, cfg
        self.rank, self.world_size = rank, world_size
        self.global_batch = cfg.batch_size
        self.local_batch = cfg.batch_size // world_size
        self.epoch, self.index, self.step = 0, 0, 0
        self.epoch_cache = epoch_cache_dir(shards) if epoch_cache == "auto" else epoch_cache
        if state is not None:
            self._load_state(state)
        self._starts: np.ndarray | None = None
        self._starts_epoch = self._window = -1
        self._window_rows = np.zeros((0, 5), dtype=np.int64)

    # ---- position ---------------------------------------------------------------------------

    def _signature(self) -> dict[str, Any]:
        c = self.cfg
        return {"seed": c.seed, "batch_size": c.batch_size, "seq_len": c.seq_len,
                "max_predictions": c.max_predictions, "mask_prob": c.mask_prob,
                "whole_word_mask": c.whole_word_mask, "nsp": c.nsp,
                "short_seq_prob": c.short_seq_prob,
                "tokenizer_fingerprint": self.shards.meta["tokenizer_fingerprint"],
                "tokens": self.shards.meta["tokens"],
                # Newer settings only where they differ from the defaults, so the states of
                # runs made before them still match.
                **{k: getattr(c, k) for k, default in (("mask_replace_prob", 0.8),
                                                       ("random_replace_prob", 0.1),
                                                       ("objective", "mlm"))
                   if getattr(c, k) != default}}

    def state(self) -> dict[str, Any]:
        """Where the iterator stands: the next batch is the one for `step`."""
        return {"format": STATE_FORMAT, "epoch": self.epoch, "index": self.index,
                "step": self.step, **self._signature()}

    def _load_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise UserError(f"batch-iterator state has format {state.get('format')!r}, expected "
                            f"{STATE_FORMAT!r}; the checkpoint is from another version of the "
                            f"data pipeline, whose batches this one cannot reproduce: start a new "
                            f"run, or resume it with the twinbert version that wrote it")
        sig = self._signature()
        diff = [k for k in sig if state.get(k) != sig[k]]
        if diff:
            detail = ", ".join(f"{k}: checkpoint {state.get(k)!r} vs now {sig[k]!r}" for k in diff)
            raise UserError(f"cannot resume the data stream, settings differ ({detail}); resume "
                            f"with the original settings")
        self.epoch, self.index, self.step = int(state["epoch"]), int(state["index"]), \
            int(state["step"])

    # ---- epochs -----------------------------------------------------------------------------

    def _epoch_starts(self) -> np.ndarray:
        """The epoch's instances in shuffled order, as chunk-start sentences (4 bytes each)."""
        if self._starts_epoch != self.epoch:
            c = self.cfg
            self._starts = None   # free the old epoch before building the next
            starts = epoch_order(self.shards.sent_offsets, self.shards.doc_offsets, c.seq_len,
                                 self._instance_seed(), nsp=c.nsp,
                                 short_seq_prob=c.short_seq_prob, path=self._epoch_file())
            if len(starts) < self.global_batch:
                raise UserError(self._too_few(len(starts)))
            self._starts, self._starts_epoch = starts, self.epoch
            self._window = -1
        return self._starts

    def _too_few(self, n: int) -> str:
        """Why an epoch has fewer sequences than one batch, and the fix. A sequence starts at a
        sentence and a sentence longer than it is cut, so a corpus whose sentences are long
        (text without sentence ends or line breaks) makes few sequences however large it is."""
        c, meta = self.cfg, self.shards.meta
        head = (f"the corpus in {self.shards.path} makes only {n} sequences of seq-len "
                f"{c.seq_len}, fewer than one batch of {self.global_batch}")
        sentences, tokens = max(self.shards.num_sentences, 1), len(self.shards.tokens)
        if tokens / sentences <= c.seq_len:
            return f"{head}; use a larger corpus or a smaller --batch-size"
        prepare = "python -m bertcore.data prepare"
        return (f"{head}, though it holds {tokens} tokens: each sequence starts at a sentence "
                f"and a longer sentence is cut, and its {self.shards.num_sentences} sentences "
                f"average {tokens // sentences} tokens (--delimiters "
                f"{meta.get('delimiters', '.?!')!r} found few sentence ends); give the text "
                f"line breaks between sentences, or {prepare} it with --delimiters that end its "
                f"sentences")

    def _epoch_file(self) -> Path | None:
        """This epoch's file in the epoch cache, named by everything that shapes the epoch; the
        files of this stream two or more epochs back are removed."""
        if self.epoch_cache is None:
            return None
        c, folder = self.cfg, Path(self.epoch_cache)
        # STATE_FORMAT changes whenever the batches of a seed do (tests pin them), so a file
        # from another version of the pipeline is never read as this one's.
        key = json.dumps([STATE_FORMAT, self.shards.meta, c.seq_len, c.nsp, c.short_seq_prob,
                          c.seed], sort_keys=True)
        stem = hashlib.sha256(key.encode()).hexdigest()[:16]
        try:
            for old in folder.glob(f"{stem}-epoch*"):   # .npy and .npy.lock
                e = old.name[len(stem) + 6:].split(".")[0]
                if e.isdigit() and int(e) < self.epoch - 1:
                    old.unlink(missing_ok=True)
        except OSError:
            pass   # pruning is housekeeping; epoch_order reports nothing either
        return folder / f"{stem}-epoch{self.epoch}.npy"

    def _instance_seed(self) -> list[int]:
        return [self.cfg.seed, _INSTANCES, self.epoch]

    def _rows(self, index: int) -> np.ndarray:
        """Global batch `index` of this epoch as instance rows [G, 5]. Rows are made a window
        of WINDOW batches at a time (one vectorised call), seeded by (seed, epoch, window), so
        a rank, a resumed run and a fresh run all see the same rows."""
        starts, G, c = self._epoch_starts(), self.global_batch, self.cfg
        w = index // WINDOW
        if self._window != w:
            lo = w * WINDOW * G
            hi = min((w + 1) * WINDOW, len(starts) // G) * G
            rng = np.random.default_rng([*self._instance_seed(), 1, w])
            self._window_rows = instance_rows(
                starts[lo:hi], self.shards.sent_offsets, self.shards.doc_offsets, c.seq_len,
                self._instance_seed(), rng, nsp=c.nsp, short_seq_prob=c.short_seq_prob)
            self._window = w
        k = (index - w * WINDOW) * G
        return self._window_rows[k:k + G]

    @property
    def batches_per_epoch(self) -> int:
        return len(self._epoch_starts()) // self.global_batch

    # ---- batches ----------------------------------------------------------------------------

    def __next__(self) -> dict[str, np.ndarray]:
        if self.index >= self.batches_per_epoch:   # drop the last partial batch
            self.epoch, self.index = self.epoch + 1, 0
        rows = self._rows(self.index)
        rows = rows[self.rank * self.local_batch:(self.rank + 1) * self.local_batch]
        batch = self.make_batch(rows, self.step)
        self.index += 1
        self.step += 1
        return batch

    def make_batch(self, rows: np.ndarray, step: int) -> dict[str, np.ndarray]:
        c, tok = self.cfg, self.tok
        L, P, G = c.seq_len, c.max_predictions, self.global_batch
        batch = assemble(self.shards.tokens, rows, L, tok.cls_id, tok.sep_id, tok.pad_id,
                         nsp=c.nsp)
        # A damaged token file (same size, other bytes) would otherwise fail deep in masking.
        top = int(batch["input_ids"].max())
        if top >= tok.vocab_size:
            raise UserError(self.shards.damaged(f"token id {top}, beyond the tokenizer's "
                                                f"{tok.vocab_size}"))
        # Random numbers for the whole global batch, then this rank's rows.
        rng = np.random.default_rng([c.seed, _MASKING, step])
        sl = slice(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)
        uniforms = rng.random((G, L))[sl]
        replace_u = rng.random((G, P))[sl]
        random_pick = rng.integers(0, 2**31 - 1, size=(G, P))[sl]
        batch.update(mask_tokens(
            batch["input_ids"], batch["attention_mask"], uniforms, replace_u, random_pick,
            is_special=tok.is_special,
            is_continuation=tok.is_continuation if c.whole_word_mask else None,
            replacement_ids=tok.replacement_ids, mask_id=tok.mask_id, mask_prob=c.mask_prob,
            max_predictions=P, mask_replace_prob=c.mask_replace_prob,
            random_replace_prob=c.random_replace_prob))
        if c.objective == "electra":
            # One 31-bit seed per masked slot for the generator's sample
            # (bertcore.model.sampling), drawn after the masks so they stay as they were.
            batch["sample_seeds"] = rng.integers(0, 2**31 - 1, size=(G, P),
                                                 dtype=np.int32)[sl]
        if c.nsp:
            batch["next_sentence_label"] = rows[:, LABEL].astype(np.int32)
        return batch

    def __iter__(self) -> "BatchIterator":
        return self


def split_micro_batches(batch: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """A batch of R rows as `n` equal micro-batches, stacked: each array [R, ...] becomes
    [n, R/n, ...] (a reshape, no copy). Micro-batch i is `{k: v[i] for k, v in ...items()}`.
    Both twins use it: torchbert loops over i; jaxbert's `lax.scan` runs over the leading axis."""
    rows = len(batch["input_ids"])
    if rows % n:   # TrainConfig.check_rows_divide refuses such settings before a batch is drawn
        raise ValueError(f"a batch of {rows} rows does not split into {n} equal micro-batches")
    return {k: v.reshape(n, rows // n, *v.shape[1:]) for k, v in batch.items()}
