"""Tagged words for token classification (NER-style BIO/IOB2 tags), framework-free: both twins'
`tag.py` read it.

    read_sentences(path, ...)    .jsonl ({"words": [...], "tags": [...]} per line, the keys
                                 being flags) or CoNLL columns (word first, tag last, a blank
                                 line between sentences, -DOCSTART- lines skipped)
    TagMap                       tag string <-> id, one order for both twins (sorted)
    encode(tok, sentences, ...)  each word through the WordPiece, its FIRST piece labelled, the
                                 other pieces, [CLS], [SEP] and padding labelled IGNORE;
                                 truncated to max_len
    evaluate(logits, data, ...)  a twin's logits over a split -> loss, token accuracy, seqeval's
                                 entity-level precision / recall / F1, the predicted tags
    entities(tags)               seqeval's spans of a tag sequence: (type, first, last word)

A batch is `input_ids`, `token_type_ids`, `attention_mask`, `labels`: int32 arrays of shape
[B, L]; `labels` holds a tag id at the first piece of each word and IGNORE (-100, transformers'
ignore index) everywhere else, so the loss and the scores count each word once. Truncation is
transformers' run_ner's: the pieces past max_len - 2 are cut, and a word whose first piece is
cut is dropped, neither predicted nor scored (its gold tags are left out of the score too).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from bertcore.classify.data import eval_batches
from bertcore.data.readers import numbered_lines
from bertcore.data.tokenizer import WordPiece
from bertcore.infra.errors import UserError

IGNORE = -100            # the label of a position no loss or score counts (transformers' -100)
JSONL_SUFFIXES = (".jsonl",)
CONLL_SUFFIXES = (".conll", ".conll03", ".txt", ".bio", ".iob", ".iob2", ".tsv")
FORMATS = ("jsonl", "conll")


@dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    tags: tuple[str, ...] | None    # None: untagged (predict)
    where: str                      # "FILE:LINE" where it starts, for messages


# ---- readers ----------------------------------------------------------------------------------

def file_format(path: Path, fmt: str | None) -> str:
    """`fmt` when given, else the file's by its extension; one line naming the fix otherwise."""
    if fmt:
        if fmt not in FORMATS:
            raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CONLL_SUFFIXES:
        return "conll"
    raise UserError(f"{path}: cannot tell the format from {suffix or 'no extension'!r}; name it "
                    f"with --format jsonl or --format conll (or use a .jsonl / .conll file)")


def _read_jsonl(path: Path, words_key: str, tags_key: str, need_tags: bool) -> list[Sentence]:
    out = []
    example = f'{{"{words_key}": ["EU", "rejects"], "{tags_key}": ["B-ORG", "O"]}}'
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UserError(f"{where}: not a JSON object ({e}); each line must be like "
                            f"{example}") from None
        words = obj.get(words_key) if isinstance(obj, dict) else None
        if not _strings(words):
            raise UserError(f'{where}: no "{words_key}" list of strings; each line must be like '
                            f"{example} (--words-column names the key)")
        tags = obj.get(tags_key)
        if tags is None and need_tags:
            raise UserError(f'{where}: no "{tags_key}" field; every training or evaluation '
                            f"sentence needs one tag per word (--tags-column names the key)")
        if tags is not None and not _strings(tags):
            raise UserError(f'{where}: "{tags_key}" must be a list of strings, one tag per word')
        out.append(_sentence(words, tags, where, need_tags))
    return out


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _sentence(words: list[str], tags: list[str] | None, where: str, need_tags: bool) -> Sentence:
    if not words:
        raise UserError(f"{where}: a sentence with no words; remove it or give it words")
    if tags is not None and len(tags) != len(words):
        raise UserError(f"{where}: {len(words)} words but {len(tags)} tags; give exactly one tag "
                        f"per word")
    blank = [i for i, w in enumerate(words, 1) if not w.strip()]
    if blank:
        raise UserError(f"{where}: word {blank[0]} of {len(words)} is empty or blank; every word "
                        f"must have a character to tag")
    return Sentence(tuple(words), tuple(tags) if tags is not None and need_tags else None, where)


def _read_conll(path: Path, need_tags: bool) -> list[Sentence]:
    """CoNLL-2003 and alike: whitespace-separated columns, the word first and the tag last (the
    columns between, POS and chunk tags, are not used), a blank line ends a sentence."""
    out: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0

    def flush() -> None:
        if words:
            out.append(_sentence(list(words), list(tags) if need_tags else None,
                                 f"{path}:{start}", need_tags))
        words.clear()
        tags.clear()

    for number, line in numbered_lines(path):
        cols = line.split()
        if not cols:
            flush()
            continue
        if cols[0] == "-DOCSTART-":    # a document boundary, not a sentence
            flush()
            continue
        if need_tags and len(cols) < 2:
            raise UserError(f"{path}:{number}: one column ({line.strip()[:40]!r}); CoNLL lines "
                            f"are WORD [other columns] TAG, a blank line between sentences")
        if not words:
            start = number
        words.append(cols[0])
        tags.append(cols[-1])
    flush()
    return out


def read_sentences(path: str | Path, fmt: str | None = None, words_key: str = "words",
                   tags_key: str = "tags", need_tags: bool = True) -> list[Sentence]:
    """The sentences of a .jsonl or CoNLL file (`fmt` "jsonl" / "conll", else by extension).
    Never empty. Without `need_tags` (predict) the tags are not read."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path} {'is not a file' if path.exists() else 'does not exist'}; pass "
                        f"a .jsonl or CoNLL file of tagged words")
    fmt = file_format(path, fmt)
    sentences = (_read_jsonl(path, words_key, tags_key, need_tags) if fmt == "jsonl"
                 else _read_conll(path, need_tags))
    if not sentences:
        raise UserError(f"{path} holds no sentences; point to a {fmt} file with at least one "
                        f"tagged sentence")
    return sentences


# ---- tags -------------------------------------------------------------------------------------

class TagMap:
    """Tag strings in one fixed order (sorted), so both twins and every run agree on the ids."""

    def __init__(self, tags: Sequence[str]):
        self.tags = list(tags)
        self.index = {t: i for i, t in enumerate(self.tags)}

    @classmethod
    def from_sentences(cls, sentences: Sequence[Sentence]) -> "TagMap":
        return cls(sorted({t for s in sentences for t in s.tags or ()}))

    def __len__(self) -> int:
        return len(self.tags)

    def check(self, sentences: Sequence[Sentence], known_by: str) -> None:
        """Every tag of `sentences` must be one `known_by` (the model, the training data) has:
        the first other one is named with its sentence's file and line."""
        for s in sentences:
            for t in s.tags or ():
                if t not in self.index:
                    raise UserError(f"{s.where}: tag {t!r} is not one of {known_by}'s "
                                    f"{len(self.tags)} tags ({', '.join(self.tags[:12])}"
                                    f"{', ...' if len(self.tags) > 12 else ''}); use data with "
                                    f"the same tag set")

    def id2label(self) -> dict[str, str]:
        return {str(i): t for i, t in enumerate(self.tags)}


# ---- tokenisation -------------------------------------------------------------------------------

@dataclass
class Encoded:
    """A split as fixed-shape numpy arrays ([N, L] int32). `starts` marks the first piece of each
    kept word (what is predicted); `labels` holds its tag id there (IGNORE elsewhere, and
    everywhere in an untagged split); `kept[i]` is how many words of sentence i fit."""
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    starts: np.ndarray
    kept: np.ndarray
    truncated: int                 # sentences that lost pieces to max_len
    dropped_words: int             # words whose first piece was cut: not predicted, not scored

    def __len__(self) -> int:
        return len(self.kept)

    def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids[idx], "token_type_ids": self.token_type_ids[idx],
                "attention_mask": self.attention_mask[idx], "labels": self.labels[idx]}


def word_pieces(tok: WordPiece, words: Sequence[str]) -> list[list[int]]:
    """Each word's WordPiece ids. A word the tokenizer turns into nothing (a character its
    normaliser strips) becomes [UNK], so that every word has a first piece to tag."""
    return [ids or [tok.unk_id] for ids in tok.encode_batch(list(words))]


def encode(tok: WordPiece, sentences: Sequence[Sentence], tags: TagMap | None,
           max_len: int) -> Encoded:
    """[CLS] pieces of every word [SEP], truncated to `max_len`, padded with [PAD]; the first
    piece of each word labelled with its tag."""
    if max_len < 8:
        raise UserError(f"max-len={max_len} is too short; use at least 8")
    n = len(sentences)
    ids = np.full((n, max_len), tok.pad_id, np.int32)
    types = np.zeros((n, max_len), np.int32)
    mask = np.zeros((n, max_len), np.int32)
    labels = np.full((n, max_len), IGNORE, np.int32)
    starts = np.zeros((n, max_len), bool)
    kept = np.zeros(n, np.int32)
    pieces = iter(word_pieces(tok, [w for s in sentences for w in s.words]))
    budget, truncated, dropped = max_len - 2, 0, 0
    for i, s in enumerate(sentences):
        row, firsts, total = [tok.cls_id], [], 0
        for _ in s.words:
            p = next(pieces)
            total += len(p)
            if len(row) - 1 < budget:      # its first piece fits: the word is kept
                firsts.append(len(row))
                row += p[:budget - (len(row) - 1)]
        row.append(tok.sep_id)
        truncated += total > budget
        kept[i] = len(firsts)
        dropped += len(s.words) - len(firsts)
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
        starts[i, firsts] = True
        if tags is not None and s.tags is not None:
            labels[i, firsts] = [tags.index[t] for t in s.tags[:len(firsts)]]
    return Encoded(ids, types, mask, labels, starts, kept, truncated, dropped)


# ---- scoring ------------------------------------------------------------------------------------

def _seqeval():
    try:
        from seqeval import metrics
    except ImportError:
        raise UserError("scoring tags needs seqeval (entity-level F1); pip install seqeval "
                        "(or the extra: pip install twinbert[tag])") from None
    return metrics


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """seqeval's entities of one sentence's tags: (type, first word, last word), inclusive."""
    return [tuple(e) for e in _seqeval().sequence_labeling.get_entities(list(tags))]


def scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """seqeval's entity-level precision, recall and F1 (its default, conlleval's definition: an
    entity counts when its type and span are exactly right), and the share of words tagged
    right (token accuracy)."""
    m = _seqeval()
    words = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, predicted) for a, b in zip(g, p))
    return {"precision": float(m.precision_score(gold, predicted, zero_division=0)),
            "recall": float(m.recall_score(gold, predicted, zero_division=0)),
            "f1": float(m.f1_score(gold, predicted, zero_division=0)),
            "accuracy": right / words if words else math.nan}


def evaluate(logits: Callable[[dict], np.ndarray], data: Encoded, tags: TagMap,
             batch_size: int, gold: Sequence[Sentence] | None = None, progress: bool = False
             ) -> dict[str, Any]:
    """The twin's logits [B, L, T] over a split -> each sentence's predicted tags (its kept
    words), and with `gold` (the sentences `data` encodes) the mean cross-entropy over the
    labelled pieces and `scores` against the gold tags of the kept words."""
    predicted: list[list[str]] = []
    nll, count = 0.0, 0
    for b, (batch, real) in enumerate(tqdm(eval_batches(data, batch_size),
                                           total=-(-len(data) // batch_size),
                                           disable=not progress, desc="evaluate", leave=False)):
        z = np.asarray(logits(batch), np.float64)[:real]                  # (real, L, T)
        z = z - z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        y = batch["labels"][:real]
        labelled = y != IGNORE
        nll -= float(np.take_along_axis(logp, np.where(labelled, y, 0)[..., None], -1)[..., 0]
                     [labelled].sum())
        count += int(labelled.sum())
        best = logp.argmax(-1)
        for i in range(real):
            row = b * batch_size + i
            predicted.append([tags.tags[t] for t in best[i][data.starts[row]]])
    out: dict[str, Any] = {"predictions": predicted}
    if gold is not None:
        truth = [list(s.tags[:len(p)]) for s, p in zip(gold, predicted)]
        out.update(loss=nll / count if count else math.nan, **scores(truth, predicted))
    return out
