"""The framework-free half of `python -m torchbert.tag` / `python -m jaxbert.tag`: token tagging
(NER-style BIO/IOB2 tags, one per word), the twin of bertcore/classify/cli.py.

Both twins parse the same flags (`parser`), start from the same numpy weights
(bertcore.tag.model: `initial_state`), read and score the same numpy batches (bertcore.tag.data:
`evaluate`, seqeval's entity-level F1), train in pretraining's loop (bertcore.train.loop) on the
same task (bertcore.tag.run: `TagRun`) and print the same reports (`run_evaluate`,
`run_predict`). Only "one AdamW step" and "logits of a batch" (plus their own checkpoints, for
--resume) are the twins'.

A tag RUNDIR: run.json (task "tag", the data, its format and columns, --init-from), config.json
with id2label (transformers' token classifier config), tag_config.json (TagConfig), tokenizer/,
checkpoints/, metrics.jsonl (a line per epoch: train loss, validation loss, token accuracy,
entity precision / recall / F1), best/ (the epoch with the best validation F1 as a Hugging Face
BertForTokenClassification, ModernBertForTokenClassification or ElectraForTokenClassification
directory, and tagger.json, its metrics line), summary.json once the last epoch is done; tb/ and
wandb/ with --report-to.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bertcore.infra.errors import UserError
from bertcore.infra.flags import check_fields, check_flags
from bertcore.tag.data import FORMATS, Sentence, encode, entities, evaluate, read_sentences
from bertcore.tag.model import Tagger
from bertcore.train.report import REPORT_TO_HELP, parse_report_to
from bertcore.train.schedule import warmup_linear
from bertcore.train.stopping import Stopper, add_stopping_flags


@dataclass(frozen=True)
class TagConfig:
    """A tagging run, classify's recipe (BERT paper's: a few epochs, small lr, warmup then linear
    decay) and number flags, saved as tag_config.json. Its own dataclass, not ClassifyConfig:
    the tagger has none of classify's task and column fields."""
    max_len: int = 128
    batch_size: int = 32
    epochs: int = 3
    lr: float = 5e-5
    warmup_ratio: float = 0.1       # share of all steps spent warming up
    weight_decay: float = 0.01      # not on biases and LayerNorm (bertcore.model.config's rule)
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    grad_clip: float = 1.0
    dropout: bool = True
    seed: int = 0                   # classifier init, validation hold-out, shuffling, dropout
    val_fraction: float = 0.1

    def lr_at(self, total_steps: int):
        """lr(step, xp) for update `step` (0-based): bertcore.train.schedule's warmup + linear
        decay."""
        warmup = math.ceil(self.warmup_ratio * total_steps)
        return lambda step, xp=np: warmup_linear(step, peak=self.lr, warmup=warmup,
                                                 total=total_steps, xp=xp)

    def validate(self) -> None:
        """Each setting's range (bertcore.infra.flags.RANGES, the table the flag stage, classify
        and TrainConfig use): a flag or an edited tag_config.json."""
        check_fields(self, [f for f in FIELDS if f != "dropout"])
        if not isinstance(self.dropout, bool):
            raise UserError(f"dropout={self.dropout!r} must be true or false")


FIELDS = [f.name for f in dataclasses.fields(TagConfig)]


def check_tag_args(args: argparse.Namespace) -> None:
    """The flag stage of both twins' tag commands (run as the parser parses, before anything is
    read or written): each number given against bertcore.infra.flags.RANGES, the flags that
    contradict each other, sentences to predict that are empty."""
    check_flags(args)
    if args.cmd == "train":
        if args.resume and args.overwrite:
            raise UserError("--resume continues the run in RUNDIR and --overwrite replaces it; "
                            "give one of them")
        parse_report_to(getattr(args, "report_to", None))
        Stopper.from_args(args)
    if args.cmd == "predict":
        empty = [i for i, text in enumerate(args.text, 1) if not text.strip()]
        if empty:
            raise UserError(f"predict: sentence {empty[0]} of {len(args.text)} is empty; give "
                            f"each sentence to tag as a non-empty argument")


class TagParser(argparse.ArgumentParser):
    """The tag parser: its flags are checked as they are parsed (check_tag_args)."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        check_tag_args(ns)
        return ns, rest


def _data_flags(p: argparse.ArgumentParser, defaults: bool) -> None:
    """How a data file is read. train saves them in run.json (defaults filled there); --resume
    keeps the run's."""
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="jsonl or conll [by extension: .jsonl; .conll/.txt/.bio/.iob/.tsv]")
    p.add_argument("--words-column", default=None if not defaults else "words", metavar="KEY",
                   help="JSONL key of the word list [words]")
    p.add_argument("--tags-column", default=None if not defaults else "tags", metavar="KEY",
                   help="JSONL key of the tag list [tags]")


def parser(framework: str) -> argparse.ArgumentParser:
    """`python -m {framework}bert.tag`'s flags (framework: "torch" or "jax")."""
    prog = f"python -m {framework}bert.tag"
    p = TagParser(
        prog=prog, description="Fine-tune BERT, ModernBERT or ELECTRA (its discriminator) for "
        "token tagging (named entities, BIO/IOB2 tags: Hugging Face's BertForTokenClassification, "
        "ModernBertForTokenClassification or ElectraForTokenClassification), evaluate it "
        "(seqeval's entity-level precision, recall, F1, and token accuracy), predict spans.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=f"""examples:
  {prog} train --init-from runs/{framework}bert-mini --data train.conll --out runs/ner
  {prog} evaluate runs/ner --data test.conll
  {prog} predict runs/ner "EU rejects German call to boycott British lamb ."
data: .jsonl ({{"words": [...], "tags": [...]}} per line) or CoNLL columns (the word first, the
tag last, a blank line between sentences, -DOCSTART- lines skipped). Each word's first word piece
is tagged; words cut off by --max-len are dropped (not predicted, not scored), as transformers'
run_ner does.""")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{train,evaluate,predict}",
                           parser_class=argparse.ArgumentParser)   # checked once, by p
    t = sub.add_parser("train", help="fine-tune from a pretraining RUNDIR or a Hugging Face "
                                     "BERT, ModernBERT or ELECTRA directory")
    t.add_argument("--init-from", metavar="DIR", help="a pretraining RUNDIR of this twin (its "
                   "latest checkpoint), a RUNDIR holding hf/, a Hugging Face BERT, ModernBERT or "
                   "ELECTRA (discriminator) directory, or a tag RUNDIR (its best/)")
    t.add_argument("--data", help="training data: a .jsonl or CoNLL file")
    t.add_argument("--validation", metavar="FILE", help="validation data (default: "
                   "--val-fraction of --data, held out with --seed)")
    t.add_argument("--tokenizer", metavar="TOKDIR", help="tokenizer (default: --init-from's)")
    _data_flags(t, defaults=False)
    d = TagConfig()
    for name, parse, text in (("max-len", int, "word pieces per sentence; longer ones are "
                                               "truncated, their last words dropped"),
                              ("batch-size", int, "sentences per step"), ("epochs", int, ""),
                              ("lr", float, "peak learning rate"),
                              ("warmup-ratio", float, "share of steps for linear warmup"),
                              ("weight-decay", float, "AdamW decay, not on biases/LayerNorm"),
                              ("grad-clip", float, "max global grad norm, 0 = off"),
                              ("seed", int, "init of the classifier, hold-out, order, dropout"),
                              ("val-fraction", float, "share of --data held out for validation")):
        default = getattr(d, name.replace("-", "_"))
        t.add_argument(f"--{name}", type=parse, help=f"{text} [{default}]".lstrip())
    t.add_argument("--no-dropout", dest="dropout", action="store_false", default=None,
                   help="turn dropout off (exact comparisons)")
    t.add_argument("--out", metavar="RUNDIR", help=f"run directory [runs/{framework}bert-tag]")
    t.add_argument("--resume", action="store_true", help="continue RUNDIR from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing RUNDIR")
    t.add_argument("--stop-after", type=int, metavar="N",
                   help="checkpoint and exit after step N (--resume continues exactly)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--report-to", default="none", metavar="NAME[,NAME]",
                   help=REPORT_TO_HELP + " [none]")
    add_stopping_flags(t)
    for name, what in (("evaluate", "entity F1 and token accuracy on tagged data"),
                       ("predict", "the entities of each sentence")):
        c = sub.add_parser(name, help=what)
        c.add_argument("model", help="a tag RUNDIR (its best/ weights) or a Hugging Face "
                                     "...ForTokenClassification directory")
        c.add_argument("--batch-size", type=int, default=64, help="sentences per batch [64]")
        c.add_argument("--json", action="store_true", help="print JSON")
        _data_flags(c, defaults=True)
    e, r = sub.choices["evaluate"], sub.choices["predict"]
    e.add_argument("--data", required=True, help="a tagged .jsonl or CoNLL file")
    r.add_argument("text", nargs="*", help="sentences to tag (split into words at whitespace)")
    r.add_argument("--file", help="a .jsonl (a words list per line) or CoNLL file (the first "
                                  "column; tags, if any, are not read)")
    return p


# ---- evaluate and predict: the twin gives logits, the rest is here ----------------------------

Logits = Callable[[dict], Any]


def run_evaluate(args: argparse.Namespace, tagger: Tagger, logits: Logits) -> dict[str, Any]:
    """`evaluate MODEL --data FILE`: seqeval's entity precision / recall / F1 and token accuracy
    on tagged data; prints and returns it."""
    sentences = read_sentences(args.data, args.format, args.words_column, args.tags_column)
    tagger.tags.check(sentences, f"the model ({tagger.path})")
    data = encode(tagger.tokenizer, sentences, tagger.tags, tagger.max_len)
    res = evaluate(logits, data, tagger.tags, args.batch_size, sentences, progress=not args.json)
    out = {"model": str(tagger.path), "data": str(args.data), "sentences": len(data),
           "truncated": data.truncated, "dropped_words": data.dropped_words,
           **{k: res[k] for k in ("loss", "precision", "recall", "f1", "accuracy")}}
    print(json.dumps(out, indent=2) if args.json else
          f"{out['sentences']} sentences ({data.truncated} truncated to {tagger.max_len} pieces, "
          f"{data.dropped_words} words dropped): entity F1 {out['f1']:.4f} (precision "
          f"{out['precision']:.4f}, recall {out['recall']:.4f}), token accuracy "
          f"{out['accuracy']:.4f}, loss {out['loss']:.4f}")
    return out


def run_predict(args: argparse.Namespace, tagger: Tagger, logits: Logits) -> list[dict]:
    """`predict MODEL SENTENCE... | --file F`: each sentence's tags and its entities (seqeval's
    spans: type and words)."""
    if args.file:
        sentences = read_sentences(args.file, args.format, args.words_column, args.tags_column,
                                   need_tags=False)
    else:
        sentences = [Sentence(tuple(t.split()), None, f"predict: sentence {i}")
                     for i, t in enumerate(args.text, 1)]
    if not sentences:
        raise UserError("nothing to tag; pass sentences or --file FILE")
    data = encode(tagger.tokenizer, sentences, None, tagger.max_len)
    res = evaluate(logits, data, tagger.tags, args.batch_size)
    rows = []
    for s, tags in zip(sentences, res["predictions"]):
        spans = [{"type": kind, "start": a, "end": b + 1, "words": list(s.words[a:b + 1])}
                 for kind, a, b in entities(tags)]
        rows.append({"words": list(s.words), "tags": tags, "entities": spans,
                     **({"dropped_words": len(s.words) - len(tags)}
                        if len(tags) < len(s.words) else {})})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            found = "; ".join(f"{e['type']}: {' '.join(e['words'])}" for e in r["entities"])
            print(f"{' '.join(r['words'])[:80]}\n    {found or '(no entities)'}")
    return rows
