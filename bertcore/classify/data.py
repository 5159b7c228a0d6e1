"""Labelled data for sequence classification, framework-free: both twins' `classify.py` read it.

    read_examples(path, split)   aclImdb (train|test x pos|neg), .jsonl, .csv or .tsv; the
                                 fields named by `Columns` (a text, a pair's second text, a
                                 label: a class name, or a number for regression)
    LabelMap                     label string <-> id, one order for both twins (sorted); or the
                                 one output of a regression (`LabelMap.regression_head()`)
    encode(tok, examples, ...)   [CLS] a [SEP] (b [SEP]) truncated to max_len (longest first, as
                                 `tokenizers` truncates a pair), padded: numpy
    hold_out(examples, ...)      a validation split taken from train, seeded
    train_batches / eval_batches the exact numpy batches both twins consume
    scores(labels, predictions)  accuracy, and F1 of label id 1 when there are two labels
    regression_scores(y, pred)   Pearson and Spearman correlations, mean squared error
    evaluate(logits, data, ...)  a twin's logits over a split -> loss, scores, predictions
    write_classifier_dir / open_classifier
                                 a fine-tuned model as a Hugging Face BertForSequenceClassification
                                 or ModernBertForSequenceClassification directory (config.json
                                 with id2label + model.safetensors)

A batch is `input_ids`, `token_type_ids`, `attention_mask`, `labels`: int32 arrays of shape
[B, L] (labels [B]; float32 for a regression). Training batches are a permutation of the
rows drawn from (seed, epoch), so a run resumed at step s of an epoch sees exactly the rows
it would have seen.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from bertcore.model.config import ElectraConfig, ModelConfig, ModernBertConfig
from bertcore.data.corpus import BR_TAGS
from bertcore.data.imdb import find_aclimdb
from bertcore.data.readers import numbered_lines, read_text_file
from bertcore.data.tokenizer import WordPiece, load_tokenizer
from bertcore.infra.errors import UserError
from bertcore.infra.files import atomic_path
from bertcore.model.hf import (check_classifier_state, normalize_hf_names, read_hf_safetensors,
                               safetensors_files)
from bertcore.modeldirs.resolve import ModelDir, open_model_dir
from bertcore.train.rundir import CLASSIFY_CONFIG

logger = logging.getLogger(__name__)

IMDB_LABELS = ("neg", "pos")
SUFFIXES = (".jsonl", ".csv", ".tsv")
# A regression's one output, named as transformers names the outputs of a config without labels
# (its id2label for num_labels=1), so an exported regressor's config.json is transformers' own.
REGRESSION_LABEL = "LABEL_0"


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None = None
    # A class: always a string (JSON 1 and CSV "1" are the same label). A regression: a float.
    label: str | float | None = None


@dataclass(frozen=True)
class Columns:
    """Which fields of a .jsonl/.csv/.tsv file hold what: the text, the second text of a sentence
    pair (None: single texts; `text_pair` is transformers' tokenizers' name for it) and the
    label. classify train's --text-column, --text-pair-column and --label-column; a run records
    them (classify_config.json) so evaluate and predict read the same fields."""
    text: str = "text"
    text_pair: str | None = None
    label: str = "label"

    def example(self) -> str:
        """One JSONL line of this layout, for messages."""
        pair = f', "{self.text_pair}": "..."' if self.text_pair else ""
        return f'{{"{self.text}": "..."{pair}, "{self.label}": ...}}'


# ---- readers ----------------------------------------------------------------------------------

def _read_aclimdb(root: Path, split: str, columns: Columns, regression: bool) -> list[Example]:
    if columns.text_pair or regression:
        what = ("--text-pair-column " + columns.text_pair if columns.text_pair
                else "--task regression")
        raise UserError(f"{root} is an aclImdb tree (single reviews labelled neg/pos), which has "
                        f"no second texts nor numeric labels for {what}; pass a .jsonl/.csv/.tsv "
                        f"file, or drop {what.split()[0]}")
    if split not in ("train", "test"):
        raise UserError(f"{root} is an aclImdb tree; its splits are train and test, not {split}")
    missing = [f"{split}/{lab}" for lab in IMDB_LABELS if not (root / split / lab).is_dir()]
    if missing:
        raise UserError(f"{root} is not in the aclImdb layout: {', '.join(missing)} missing "
                        f"(expected train/pos, train/neg, test/pos, test/neg folders of .txt "
                        f"reviews); download it with python -m bertcore.corpus download-imdb")
    out = []
    for lab in IMDB_LABELS:   # fixed order, files sorted by name: the same list on every machine
        folder = root / split / lab
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".txt")):
            text = BR_TAGS.sub("\n", read_text_file(folder / name)).strip()
            if text:
                out.append(Example(text, None, lab))
    return out


def _label(value, where: str, regression: bool = False) -> str | float | None:
    if value is None or value == "":
        return None
    if regression:
        # A number as JSON writes it, or as CSV text ("3.8"); NaN and infinities are no score.
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            raise UserError(f"{where}: label {value!r} is not a number; a regression "
                            f"(--task regression) needs a finite number as every label, like "
                            f"3.8 (for class names use --task classification)")
        return number
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{where}: label {value!r} must be a string or an integer")
    return str(value)


def _pair(value, where: str, columns: Columns) -> str | None:
    """The second text of a pair, when `columns` reads pairs: missing or empty is refused."""
    if columns.text_pair is None:
        return None
    if not isinstance(value, str) or not value.strip():
        found = "is empty" if isinstance(value, str) else (
            "is missing" if value is None else f"is {value!r}, not a string")
        raise UserError(f'{where}: the second text ("{columns.text_pair}") {found}; every example '
                        f"of a sentence-pair task (--text-pair-column {columns.text_pair}) needs "
                        f"both texts")
    return value


def _unread_pairs(path: Path, fields, columns: Columns) -> None:
    """A file with a `text_pair` field read as single texts: said once, not an error (a pair
    task is asked for by --text-pair-column; the field may be another column the user keeps)."""
    if columns.text_pair is None and "text_pair" in fields:
        logger.warning(f"{path} has a text_pair field, which is not read (single texts); pass "
                       f"--text-pair-column text_pair to train on sentence pairs")


def _read_jsonl(path: Path, need_label: bool, columns: Columns, regression: bool
                ) -> list[Example]:
    out, warned = [], False
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UserError(f"{where}: not a JSON object ({e}); each line must be like "
                            f"{columns.example()}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(columns.text), str):
            raise UserError(f'{where}: no string "{columns.text}" field; each line must be like '
                            f"{columns.example()}" + ("" if columns.text_pair else
                                                      " (--text-column names the text's field)"))
        label = _label(obj.get(columns.label), where, regression)
        if need_label and label is None:
            raise UserError(f'{where}: no "{columns.label}" field; every training or evaluation '
                            f"example needs one")
        if not warned:
            _unread_pairs(path, obj, columns)
            warned = True
        out.append(Example(obj[columns.text], _pair(obj.get(columns.text_pair), where, columns),
                           label))
    return out


def _read_csv(path: Path, need_label: bool, columns: Columns, regression: bool
              ) -> list[Example]:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    # The whole file through the strict UTF-8 reader (a quoted field may span lines); GLUE's
    # .tsv files quote nothing, so a '"' inside a sentence stays text there.
    text = read_text_file(path).removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter,
                            quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    header = reader.fieldnames or []
    needed = ([columns.text] + ([columns.text_pair] if columns.text_pair else [])
              + ([columns.label] if need_label else []))
    absent = [c for c in needed if c not in header]
    if absent:
        raise UserError(f"{path} has no {' or '.join(repr(c) for c in absent)} column (its "
                        f"header: {', '.join(header) or 'none'}); the first line must name the "
                        f"columns {', '.join(needed)} (or name yours with --text-column, "
                        f"--text-pair-column, --label-column)")
    _unread_pairs(path, header, columns)
    out = []
    for number, row in enumerate(reader, 2):
        where = f"{path}:{number}"
        label = _label(row.get(columns.label), where, regression)
        if need_label and label is None:
            raise UserError(f"{where}: the label is empty; every example needs one")
        out.append(Example(row[columns.text] or "",
                           _pair(row.get(columns.text_pair), where, columns), label))
    return out


def read_examples(path: str | Path, split: str = "train", need_label: bool = True,
                  columns: Columns = Columns(), regression: bool = False) -> list[Example]:
    """The examples of `path`: an aclImdb tree (`split` picks train/ or test/), or one
    .jsonl/.csv/.tsv file (all of it; `split` only names it in messages), its fields named by
    `columns`; labels are floats for a `regression`. Never empty."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path} does not exist; pass an aclImdb directory or a "
                        f".jsonl/.csv/.tsv file")
    if path.is_dir():
        root = find_aclimdb(path)
        if root is None:
            raise UserError(f"{path} is not in the aclImdb layout (expected train/pos, "
                            f"train/neg, test/pos, test/neg folders of .txt reviews); pass such "
                            f"a folder or a .jsonl/.csv/.tsv file")
        examples, where = _read_aclimdb(root, split, columns, regression), f"{root}/{split}"
    elif path.suffix == ".jsonl":
        examples, where = _read_jsonl(path, need_label, columns, regression), str(path)
    elif path.suffix in (".csv", ".tsv"):
        examples, where = _read_csv(path, need_label, columns, regression), str(path)
    else:
        raise UserError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use .jsonl "
                        f'({{"text": ..., "label": ...}} per line), .csv or .tsv (a header with '
                        f"text and label columns), or an aclImdb directory")
    if not examples:
        raise UserError(f"{where} holds no examples (the {split} split is empty); point to data "
                        f"with at least one labelled text")
    return examples


def is_aclimdb_path(path: str | Path) -> bool:
    return Path(path).expanduser().is_dir() and find_aclimdb(path) is not None


# ---- labels -----------------------------------------------------------------------------------

class LabelMap:
    """Label strings in one fixed order: sorted, numerically when every label is an integer
    ("2" after "10" would surprise), so both twins and every run agree on the ids. A regression
    (`regression_head()`) has one output and no classes: its labels are numbers, its one name
    transformers' LABEL_0."""

    def __init__(self, labels: Sequence[str], regression: bool = False):
        self.labels = list(labels)
        self.index = {lab: i for i, lab in enumerate(self.labels)}
        self.regression = regression
        assert not regression or len(self.labels) == 1, self.labels

    @classmethod
    def regression_head(cls) -> "LabelMap":
        """A regression's one output (transformers' problem_type "regression", num_labels 1)."""
        return cls([REGRESSION_LABEL], regression=True)

    @property
    def task(self) -> str:
        return "regression" if self.regression else "classification"

    @classmethod
    def from_examples(cls, examples: Sequence[Example]) -> "LabelMap":
        found = {e.label for e in examples if e.label is not None}
        numeric = all(lab.lstrip("-").isdigit() for lab in found)
        return cls(sorted(found, key=(lambda s: (int(s), s)) if numeric else None))

    def __len__(self) -> int:
        return len(self.labels)

    def check(self, examples: Sequence[Example], what: str, trained_on: str = "the training data"
              ) -> None:
        """Every label of `examples` must be one the model knows: name the others. (A
        regression's labels are numbers, each checked as it was read.)"""
        if self.regression:
            return
        unknown = sorted({e.label for e in examples if e.label is not None} - set(self.index))
        if unknown:
            raise UserError(f"the label sets differ: {what} has labels "
                            f"{', '.join(map(repr, unknown))} that {trained_on} does not have "
                            f"({', '.join(map(repr, self.labels))}); use data with the same "
                            f"label set")

    def id2label(self) -> dict[str, str]:
        return {str(i): lab for i, lab in enumerate(self.labels)}


# ---- tokenisation -------------------------------------------------------------------------------

@dataclass
class Encoded:
    """A split as fixed-shape numpy arrays ([N, L] int32; labels [N]: int32 class ids, -1 where
    unlabelled, or a regression's float32 scores, NaN where unlabelled)."""
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    truncated: int                 # examples cut to fit max_len

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids[idx], "token_type_ids": self.token_type_ids[idx],
                "attention_mask": self.attention_mask[idx], "labels": self.labels[idx]}


def _truncate_pair(a: list[int], b: list[int] | None, budget: int) -> tuple[list, list | None]:
    """Longest-first truncation, as `tokenizers` (transformers' fast tokenizers, truncation=True)
    computes it, so a pair encodes to transformers' ids: the shorter text is kept whole when the
    longer one can give up the rest; else each gets half of `budget`, the longer text the odd
    token (tokenizers' TruncationStrategy::LongestFirst; the slow Python tokenizers pop one token
    at a time and give a tie's odd token to the first text instead)."""
    if b is None:
        return a[:budget], None
    if len(a) + len(b) <= budget:
        return list(a), list(b)
    short, long_ = sorted((len(a), len(b)))
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short, long_ = budget // 2, budget // 2 + budget % 2
    n_a, n_b = (long_, short) if len(a) > len(b) else (short, long_)
    return list(a[:n_a]), list(b[:n_b])


def encode(tok: WordPiece, examples: Sequence[Example], labels: LabelMap | None,
           max_len: int) -> Encoded:
    """[CLS] text [SEP] (text_pair [SEP]), truncated to `max_len`, padded with [PAD]; token type
    0 up to the first [SEP], 1 after it (BERT's and ELECTRA's segment embeddings; ModernBERT has
    none and ignores them, as its tokenizer gives none). `labels`: class ids, a regression's
    floats, or None (predict: nothing to score)."""
    if max_len < 8:
        raise UserError(f"max-len={max_len} is too short; use at least 8")
    n = len(examples)
    ids = np.full((n, max_len), tok.pad_id, np.int32)
    types = np.zeros((n, max_len), np.int32)
    mask = np.zeros((n, max_len), np.int32)
    regression = labels is not None and labels.regression
    y = np.full(n, np.nan, np.float32) if regression else np.full(n, -1, np.int32)
    firsts = tok.encode_batch([e.text for e in examples])
    pair_rows = [i for i, e in enumerate(examples) if e.text_pair is not None]
    seconds = dict(zip(pair_rows, tok.encode_batch([examples[i].text_pair for i in pair_rows])))
    truncated = 0
    for i, (e, a) in enumerate(zip(examples, firsts)):
        b = seconds.get(i)
        budget = max_len - (3 if b is not None else 2)
        a2, b2 = _truncate_pair(a, b, budget)
        truncated += (len(a2) + len(b2 or [])) < (len(a) + len(b or []))
        row = [tok.cls_id, *a2, tok.sep_id]
        seg = [0] * len(row)
        if b2 is not None:
            row += [*b2, tok.sep_id]
            seg += [1] * (len(b2) + 1)
        ids[i, :len(row)], types[i, :len(row)], mask[i, :len(row)] = row, seg, 1
        if labels is not None and e.label is not None:
            y[i] = float(e.label) if regression else labels.index[e.label]
    return Encoded(ids, types, mask, y, truncated)


# ---- splits and batches -------------------------------------------------------------------------

def hold_out(examples: Sequence[Example], fraction: float, seed: int
             ) -> tuple[list[Example], list[Example]]:
    """(train, validation): a seeded random `fraction` of the examples set aside."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"val-fraction={fraction} must be between 0 and 1")
    n_val = math.ceil(len(examples) * fraction)
    if len(examples) < 2 or n_val >= len(examples):
        raise UserError(f"{len(examples)} example(s) are too few to hold out a validation split "
                        f"(--val-fraction {fraction}); add data or pass --validation FILE")
    order = np.random.default_rng([seed, 0x7a1]).permutation(len(examples))
    val = set(order[:n_val].tolist())
    return ([e for i, e in enumerate(examples) if i not in val],
            [e for i, e in enumerate(examples) if i in val])


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches only: every training step has the same shape (one XLA program in jax)."""
    return n // batch_size


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of an epoch: a function of (seed, epoch) alone, so a resume redraws it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(data: Encoded, batch_size: int, seed: int, epoch: int, start: int = 0
                  ) -> Iterator[dict[str, np.ndarray]]:
    """Batches `start`, `start + 1`, ... of `epoch` (the last partial batch is left out)."""
    order = epoch_order(len(data), seed, epoch)
    for b in range(start, steps_per_epoch(len(data), batch_size)):
        yield data.rows(order[b * batch_size:(b + 1) * batch_size])


def eval_batches(data: Encoded, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(batch, real rows) in order; the last batch is padded to `batch_size` with copies of row 0
    so every batch has one shape, and only its first `real rows` count."""
    for s in range(0, len(data), batch_size):
        idx = np.arange(s, min(s + batch_size, len(data)))
        real = len(idx)
        yield data.rows(np.concatenate([idx, np.zeros(batch_size - real, np.int64)])), real


# ---- metrics ------------------------------------------------------------------------------------

def scores(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy, and for two labels the F1 of label id 1 (the positive class: "pos" of neg/pos,
    "1" of 0/1). Rows labelled -1 (unlabelled) are not counted."""
    keep = labels >= 0
    y, p = labels[keep], predictions[keep]
    out = {"accuracy": float((y == p).mean()) if len(y) else float("nan")}
    if num_labels == 2:
        tp = int(((p == 1) & (y == 1)).sum())
        fp = int(((p == 1) & (y != 1)).sum())
        fn = int(((p != 1) & (y == 1)).sum())
        out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return out


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x`, tied values sharing the mean of their ranks (what Spearman's
    correlation ranks by: [10, 20, 20, 30] -> [1, 2.5, 2.5, 4])."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Runs of equal values: each run's first index in sorted order and its length.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    lengths = np.diff(np.r_[starts, len(x)])
    mean_rank = starts + (lengths + 1) / 2.0               # positions start..start+len-1, +1
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(mean_rank, lengths)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation in float64; NaN when either side is constant (no correlation is
    defined there, and a constant prediction should not look like a good or a bad one)."""
    x = np.asarray(x, np.float64) - np.mean(x)
    y = np.asarray(y, np.float64) - np.mean(y)
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def regression_scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlations (Pearson of average ranks) and the mean squared error,
    GLUE's STS-B metrics; rows labelled NaN (unlabelled) are not counted."""
    keep = ~np.isnan(labels)
    y, p = np.asarray(labels, np.float64)[keep], np.asarray(predictions, np.float64)[keep]
    if not len(y):
        return {"pearson": float("nan"), "spearman": float("nan"), "mse": float("nan")}
    return {"pearson": pearson(p, y), "spearman": pearson(average_ranks(p), average_ranks(y)),
            "mse": float(np.mean((p - y) ** 2))}


def evaluate(logits: Callable[[dict], np.ndarray], data: Encoded, batch_size: int,
             num_labels: int, progress: bool = False, regression: bool = False
             ) -> dict[str, Any]:
    """Loss (mean cross-entropy, float64 from the twin's logits), accuracy, F1, predictions. A
    `regression`: loss is the mean squared error (transformers' MSELoss on the one output), with
    Pearson, Spearman and MSE, predictions the outputs."""
    out, n = [], len(data)
    for batch, real in tqdm(eval_batches(data, batch_size), total=-(-n // batch_size),
                            disable=not progress, desc="evaluate", leave=False):
        out.append(np.asarray(logits(batch), np.float64)[:real])
    z = np.concatenate(out)
    if regression:
        res = regression_scores(data.labels, z[:, 0])
        return {"loss": res["mse"], **res, "predictions": z[:, 0]}
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    pred = logp.argmax(-1)
    labelled = data.labels >= 0
    loss = float(-logp[labelled, data.labels[labelled]].mean()) if labelled.any() else math.nan
    return {"loss": loss, **scores(data.labels, pred, num_labels), "predictions": pred,
            "probabilities": np.exp(logp)}


# ---- Hugging Face classifier directories -------------------------------------------------------

def classifier_class(config: ModelConfig) -> str:
    """The transformers class a classifier of this config is: its config.json's architectures."""
    if isinstance(config, ElectraConfig):
        return "ElectraForSequenceClassification"
    return ("ModernBertForSequenceClassification" if isinstance(config, ModernBertConfig)
            else "BertForSequenceClassification")


def hf_config(config: ModelConfig, labels: LabelMap) -> dict[str, Any]:
    """config.json of transformers' BertForSequenceClassification,
    ModernBertForSequenceClassification or ElectraForSequenceClassification (num_labels from
    id2label, 1 for a regression, whose problem_type says so; model_type from the config;
    ELECTRA's keeps the pretraining run's generator fractions, which transformers ignores and
    --resume compares)."""
    out = {**config.to_dict(), "architectures": [classifier_class(config)],
           "id2label": labels.id2label(), "label2id": {k: int(i) for i, k in
                                                       labels.id2label().items()},
           "problem_type": ("regression" if labels.regression
                            else "single_label_classification")}
    if not isinstance(config, ModernBertConfig):
        # BERT's and ELECTRA's head dropout is hidden_dropout_prob (ModernBERT's config has
        # its own field).
        out["classifier_dropout"] = None
    return out


def write_classifier_dir(out: Path, config: ModelConfig, labels: LabelMap,
                         state: dict[str, np.ndarray], tokenizer: Path | None = None,
                         info: dict | None = None, card: str | None = None) -> Path:
    """config.json + model.safetensors (+ tokenizer files, + classifier.json, + `card` as the
    model card README.md), atomically."""
    from safetensors.numpy import save_file

    check_classifier_state(state, config, len(labels), source="the classifier state")
    with atomic_path(out, is_dir=True) as tmp:
        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(config, labels), indent=2,
                                                    sort_keys=True) + "\n", encoding="utf-8")
        if info is not None:
            (tmp / "classifier.json").write_text(json.dumps(info, indent=2) + "\n")
        if card is not None:
            (tmp / "README.md").write_text(card, encoding="utf-8")
        for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                  "special_tokens_map.json"):
            if tokenizer is not None and (tokenizer / f).is_file():
                shutil.copy2(tokenizer / f, tmp / f)
    return out


@dataclass
class Classifier:
    """A trained classifier, framework-free: what evaluate and predict hand to a twin."""
    path: Path
    config: ModelConfig
    labels: LabelMap
    state: dict[str, np.ndarray]
    tokenizer: WordPiece
    max_len: int
    columns: Columns = Columns()   # the fields its run read (a Hugging Face directory: the
    #                                defaults, single texts); evaluate's flags may rename them


def open_classifier(path: str | Path | ModelDir) -> Classifier:
    """A classify RUNDIR (its best/ weights) or a Hugging Face BertForSequenceClassification or
    ModernBertForSequenceClassification dir (bertcore.modeldirs.resolve's "classify-run" and
    "hf-classifier"), given as a path or as the ModelDir already opened."""
    md = named = path if isinstance(path, ModelDir) else open_model_dir(path)
    rundir = md if md.layout == "classify-run" else None
    if rundir is not None:
        if md.weights_dir is None:
            raise UserError(f"{md.path} has no best/ weights yet; fine-tune it first (train --out "
                            f"{md.path})")
        md = md.open_weights()
    if md.layout == "pretraining-run":
        raise UserError(f"{md.path} is a pretraining run, not a classifier; fine-tune it first: "
                        f"classify train --init-from {md.path} --data DATA")
    if md.layout == "hf" and safetensors_files(md.path) is None:
        raise UserError(f"{md.path} has no model.safetensors (a pytorch_model.bin: load and "
                        f"re-save it with transformers' save_pretrained(..., "
                        f"safe_serialization=True))")
    if md.electra == "generator":
        raise UserError(f"{md.path} is an ELECTRA generator (ElectraForMaskedLM), not a "
                        f"classifier; fine-tune ELECTRA's discriminator first: classify train "
                        f"--init-from DIR --data DATA, DIR the ElectraForPreTraining directory "
                        f"trained with it or the pretraining RUNDIR")
    if md.layout == "hf" or md.labels is None:
        raise UserError(f"{md.path} is a Hugging Face model directory but not a sequence "
                        f"classifier (no id2label in its config.json, or no classifier.* "
                        f"weights); fine-tune it first: classify train --init-from {md.path} "
                        f"--data DATA")
    hf, config = md.path, md.config
    # transformers' rule: problem_type "regression", or none given and a single output.
    problem = (_json_object(hf / "config.json") or {}).get("problem_type")
    regression = problem == "regression" or (problem is None and len(md.labels) == 1)
    labels = LabelMap.regression_head() if regression else LabelMap(md.labels)
    found = read_hf_safetensors(hf)
    head = {k: v for k, v in found[0].items() if k.startswith("classifier.")}
    state = {**normalize_hf_names({k: v for k, v in found[0].items() if k not in head}, config),
             **head}
    check_classifier_state(state, config, len(labels), source=str(found[1]))
    if rundir is not None and rundir.settings is None:
        raise UserError(f"{rundir.path}/{CLASSIFY_CONFIG} is unreadable (no JSON object); fix or "
                        f"remove it")
    max_len = (int(rundir.settings["max_len"]) if rundir
               else min(config.max_position_embeddings, 512))
    settings = rundir.settings if rundir else {}
    columns = Columns(settings.get("text_column") or "text", settings.get("text_pair_column"),
                      settings.get("label_column") or "label")
    tok = load_tokenizer(rundir.tokenizer_dir if rundir else hf)
    if tok.vocab_size != config.vocab_size:
        raise UserError(f"{named.path}: the tokenizer has {tok.vocab_size} entries, the model "
                        f"vocab_size={config.vocab_size}; the vocabularies differ")
    return Classifier(named.path, config, labels, {k: np.asarray(v, np.float32) for k, v in
                                                   state.items()}, tok, max_len, columns)


def _json_object(path: Path) -> dict | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None

