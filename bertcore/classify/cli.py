"""The framework-free half of `python -m torchbert.classify` / `python -m jaxbert.classify`.

Both twins parse the same flags (`parser`), resolve `--init-from` the same way (`resolve_init`),
start from the same numpy weights (`initial_state`), read and score the same numpy batches
(bertcore.classify.data: `evaluate`), train in pretraining's loop (bertcore.train.loop) on the
same task (bertcore.classify.run: `ClassifyRun`) and print the same reports (`run_evaluate`,
`run_predict`). Only "one AdamW step" and "logits of a batch" (plus their own checkpoints, for
--resume) are the twins' (the loop's `Twin`). The RUNDIR's layout, classify_config.json and
best/ among it, is bertcore.train.rundir's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bertcore.classify.data import (Classifier, Columns, Example, LabelMap, encode, evaluate,
                                    read_examples)
from bertcore.model.config import ElectraConfig, ModelConfig
from bertcore.infra.errors import UserError
from bertcore.infra.flags import RANGES, check_fields, check_flags
from bertcore.model.hf import (ELECTRA_PREFIXES, check_classifier_state, classifier_param_table,
                               electra_split, fresh_classifier_params, head_prefixes,
                               normalize_hf_names)
from bertcore.modeldirs.resolve import ELECTRA_MODELS, electra_export, find_model_dir, layout_of
from bertcore.train import init_from
from bertcore.train.init_from import InitSource
from bertcore.train.cli import check_unheld, same_path
from bertcore.train.report import REPORT_TO_HELP, parse_report_to
from bertcore.train.rundir import CLASSIFY_CONFIG, RunDir
from bertcore.train.schedule import warmup_linear
from bertcore.train.stopping import Stopper, add_stopping_flags


@dataclass(frozen=True)
class ClassifyConfig:
    """A fine-tuning run (BERT paper's recipe: a few epochs, small lr, warmup then linear decay)."""
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
    # What is learned and from which fields: recorded so evaluate and predict read the same ones.
    task: str = "classification"    # or "regression": one output, a float label, MSE loss
    text_column: str = "text"
    text_pair_column: str | None = None   # the second text of a sentence pair; None: single
    label_column: str = "label"

    @property
    def columns(self) -> Columns:
        return Columns(self.text_column, self.text_pair_column, self.label_column)

    def lr_at(self, total_steps: int):
        """lr(step, xp) for update `step` (0-based): bertcore.train.schedule's warmup + linear
        decay."""
        warmup = math.ceil(self.warmup_ratio * total_steps)
        return lambda step, xp=np: warmup_linear(step, peak=self.lr, warmup=warmup,
                                                 total=total_steps, xp=xp)

    def validate(self) -> None:
        """Each setting's range (bertcore.infra.flags.RANGES, the table the flag stage and
        TrainConfig use): a flag or an edited classify_config.json."""
        check_fields(self, [f for f in FIELDS if f in RANGES])
        if not isinstance(self.dropout, bool):
            raise UserError(f"dropout={self.dropout!r} must be true or false")
        if self.task not in TASKS:
            raise UserError(f"task={self.task!r} must be one of {', '.join(TASKS)}")
        for name in ("text_column", "text_pair_column", "label_column"):
            value = getattr(self, name)
            if not (isinstance(value, str) and value) and not (
                    name == "text_pair_column" and value is None):
                raise UserError(f"{name.replace('_', '-')}={value!r} must name a column")
        named = [c for c in (self.text_column, self.text_pair_column, self.label_column) if c]
        if len(set(named)) < len(named):
            raise UserError(f"--text-column {self.text_column}, --text-pair-column "
                            f"{self.text_pair_column} and --label-column {self.label_column} name "
                            f"the same column twice; give each its own")


TASKS = ("classification", "regression")


FIELDS = [f.name for f in dataclasses.fields(ClassifyConfig)]


# ---- --init-from ------------------------------------------------------------------------------

def resolve_init(path: str | Path, framework: str, tokenizer: str | None = None) -> InitSource:
    """bertcore.train.init_from.resolve_init, keeping the classifier head (and its labels) of a
    classifier's weights, so fine-tuning can go on with the same labels. An ELECTRA generator
    is refused: ELECTRA fine-tunes the discriminator."""
    path = _discriminator_of(Path(path).expanduser(), framework)
    src = init_from.resolve_init(path, framework, tokenizer, keep_classifier=True)
    if src.weights_from == "hf" and isinstance(src.config, ElectraConfig):
        md = find_model_dir(src.path)
        if md is not None and md.electra == "generator":
            cls, what = ELECTRA_MODELS["generator"]
            raise UserError(f"--init-from {src.path} is {what} ({cls}); ELECTRA fine-tunes the "
                            f"discriminator, the encoder pretraining keeps: pass the "
                            f"{ELECTRA_MODELS['discriminator'][0]} directory trained with it, or "
                            f"the ELECTRA pretraining RUNDIR")
    return src


def _discriminator_of(path: Path, framework: str) -> Path:
    """What ELECTRA fine-tunes where --init-from names both of its models: an export's
    discriminator/ (a run's hf/, parity.convert --to hf), or the other twin's ELECTRA run's
    hf/discriminator (the run's checkpoints are that twin's format); else `path` as given."""
    if (found := electra_export(path, "discriminator")) is not None:
        return found
    if layout_of(path) == "pretraining-run":
        md = find_model_dir(path)
        if md is not None and md.framework != framework and isinstance(md.config, ElectraConfig):
            return electra_export(path / "hf", "discriminator") or path
    return path


def initial_state(weights: dict[str, np.ndarray], src: InitSource, config: ModelConfig,
                  labels: LabelMap, seed: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """The classifier's starting weights (HF names, numpy) from a pretrained model's weights.
    BERT: `bert.*` as they are (a missing pooler starts fresh). ModernBERT: `model.*` and the MLM
    head's `head.*` (dense, norm: transformers' ModernBertForSequenceClassification reuses them
    under the same names; a missing head starts fresh), the decoder left out. ELECTRA: the
    discriminator's `electra.*` (a pretraining pair's `discriminator.electra.*`), the generator
    and the replaced-token head left out (ElectraForSequenceClassification's head is its own,
    `classifier.dense` and `classifier.out_proj`). `classifier.*` is kept only from a classifier
    with the same labels, else fresh: transformers' initialisation
    (bertcore.model.hf.fresh_classifier_params) from `seed`, the same numbers in both twins. Returns
    (state, notes)."""
    table = classifier_param_table(config, len(labels))
    # Pretraining heads that are not part of a classifier: BERT's `cls.*`, ModernBERT's decoder.
    pretraining_only = tuple(x for x in head_prefixes(config)
                             if not any(p.hf_name.startswith(x) for p in table))
    if isinstance(config, ElectraConfig):
        # A run's pair: its discriminator, whose encoder is the one ELECTRA keeps (the generator
        # only served pretraining); then, as a transformers discriminator, without its head.
        if any(k.startswith(ELECTRA_PREFIXES) for k in weights):
            weights = electra_split(weights)["discriminator"]
        pretraining_only = ("discriminator_predictions.",)
    named = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
    named = {k: np.asarray(v, np.float32) for k, v in normalize_hf_names(named, config).items()
             if not k.startswith(pretraining_only)}
    head = {k: np.asarray(v, np.float32) for k, v in weights.items()
            if k.startswith("classifier.")}
    notes = [src.note] if src.note else []
    fresh = [p.hf_name for p in table if p.hf_name not in named and
             p.hf_name.startswith(head_prefixes(config) + ("classifier.",))]
    if head and src.labels != labels.labels:
        notes.append(f"{src.path}'s classifier has other labels; a fresh one is trained")
    elif head:
        named.update(head)
        fresh = [n for n in fresh if not n.startswith("classifier.")]
    named.update(fresh_classifier_params(config, len(labels), fresh,
                                         np.random.default_rng([seed, 0xC1A5])))
    if any(n.startswith("bert.pooler.") for n in fresh):
        notes.append(f"{src.path} has no pooler; it starts fresh")
    if any(n.startswith("head.") for n in fresh):
        notes.append(f"{src.path} has no MLM head (head.dense, head.norm); it starts fresh")
    check_classifier_state(named, config, len(labels), source=str(src.path))
    return {p.hf_name: named[p.hf_name] for p in table}, notes


# ---- the command line -------------------------------------------------------------------------

def check_classify_args(args: argparse.Namespace) -> None:
    """The flag stage of both twins' classify commands (the parser runs it as it parses, before
    anything is read or written): each number given against bertcore.infra.flags.RANGES, the flags
    that contradict each other, texts to predict that are empty."""
    check_flags(args)
    if args.cmd == "train":
        if args.resume and args.overwrite:
            raise UserError("--resume continues the run in RUNDIR and --overwrite replaces it; "
                            "give one of them")
        parse_report_to(getattr(args, "report_to", None))
        Stopper.from_args(args)       # a bad --stop-signals or --time-budget: refused now
    if args.cmd == "predict":
        empty = [i for i, text in enumerate(args.text, 1) if not text.strip()]
        if empty:
            raise UserError(f"predict: text {empty[0]} of {len(args.text)} is empty "
                            f"({args.text[empty[0] - 1]!r}); give each text to classify as a "
                            f"non-empty argument")


def check_resume_args(args: argparse.Namespace, files: RunDir) -> None:
    """`train --resume`'s checks that need RUNDIR, before the run is read: another process
    holding it is named first; then --data, --validation or --init-from other than the run's
    are refused (a resumed run keeps its own: they would be ignored)."""
    check_unheld(files.path)
    if not (files.path / CLASSIFY_CONFIG).is_file() or not files.is_run():
        return      # ClassifyRun says what is missing
    info = files.info()
    run_init = (info.get("init_from") or {}).get("path")
    for name, given, run in (("--data", args.data, info.get("data")),
                             ("--validation", args.validation, info.get("validation")),
                             ("--init-from", args.init_from, run_init)):
        if given and not (run and same_path(given, run)):
            verb = "started from" if name == "--init-from" else "trains on"
            raise UserError(f"--resume: the run {verb} {run or 'no ' + name}, not {name} {given} "
                            f"(a resumed run keeps its own); drop {name}, or start a new run "
                            f"with --out")


class ClassifyParser(argparse.ArgumentParser):
    """The classify parser: its flags are checked as they are parsed (check_classify_args)."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        check_classify_args(ns)
        return ns, rest


def parser(framework: str) -> argparse.ArgumentParser:
    """`python -m {framework}bert.classify`'s flags (framework: "torch" or "jax")."""
    prog = f"python -m {framework}bert.classify"
    p = ClassifyParser(
        prog=prog, description="Fine-tune BERT, ModernBERT or ELECTRA for sequence "
        "classification or regression, of single texts or sentence pairs (a classifier on the "
        "pooled [CLS], ModernBERT's cls/mean pooling per its config's classifier_pooling, or "
        "ELECTRA's head on [CLS] over the discriminator: Hugging Face's "
        "BertForSequenceClassification, ModernBertForSequenceClassification or "
        "ElectraForSequenceClassification), evaluate it, predict.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=f"""examples:
  {prog} train --init-from runs/{framework}bert-mini --data ~/.cache/twinbert/aclImdb --out runs/imdb
  {prog} evaluate runs/imdb --data ~/.cache/twinbert/aclImdb      (its test/ split)
  {prog} predict runs/imdb "a wonderful film" "a dull, slow mess"
  {prog} train --init-from DIR --data sts-train.tsv --task regression \\
      --text-column sentence1 --text-pair-column sentence2 --label-column score --out runs/sts
  {prog} predict runs/sts "a man plays a guitar" "a man plays music"   (a pair: two texts)
data: an aclImdb tree (train|test x pos|neg), or .jsonl ({{"text": ..., "label": ...}}) / .csv /
.tsv (a header naming the columns): fields text and label, renamed by --text-column and
--label-column; --text-pair-column names a second text (sentence pairs, [CLS] A [SEP] B [SEP])""")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{train,evaluate,predict}",
                           parser_class=argparse.ArgumentParser)   # checked once, by p
    t = sub.add_parser("train", help="fine-tune from a pretraining RUNDIR or a HF BERT or "
                                     "ModernBERT dir")
    t.add_argument("--init-from", metavar="DIR", help="a pretraining RUNDIR of this twin (its "
                   "latest checkpoint), a RUNDIR holding hf/, or a Hugging Face BERT or "
                   "ModernBERT directory")
    t.add_argument("--data", help="training data: an aclImdb tree (train/) or a file")
    t.add_argument("--validation", metavar="FILE", help="validation data (default: "
                   "--val-fraction of --data, held out with --seed)")
    t.add_argument("--tokenizer", metavar="TOKDIR", help="tokenizer (default: --init-from's)")
    d = ClassifyConfig()
    for name, parse, text in (("max-len", int, "tokens per example; longer ones are truncated"),
                              ("batch-size", int, "examples per step"), ("epochs", int, ""),
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
    t.add_argument("--task", choices=TASKS, help="classification: a class name per example, "
                   "cross-entropy; regression: a number per example (STS-B's similarity), one "
                   "output, mean squared error, Pearson/Spearman [classification]")
    _column_flags(t, "[text]", "[none: single texts]", "[label]")
    t.add_argument("--out", metavar="RUNDIR",
                   help=f"run directory [runs/{framework}bert-classify]")
    t.add_argument("--resume", action="store_true", help="continue RUNDIR from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing RUNDIR")
    t.add_argument("--stop-after", type=int, metavar="N",
                   help="checkpoint and exit after step N (--resume continues exactly)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--report-to", default="none", metavar="NAME[,NAME]",
                   help=REPORT_TO_HELP + " [none]")
    add_stopping_flags(t)
    for name, what in (("evaluate", "accuracy (and F1) on labelled data"),
                       ("predict", "the label of each text")):
        c = sub.add_parser(name, help=what)
        c.add_argument("model", help="a classify RUNDIR (its best/ weights) or a Hugging Face "
                                     "BertForSequenceClassification or "
                                     "ModernBertForSequenceClassification directory")
        c.add_argument("--batch-size", type=int, default=64, help="examples per batch [64]")
        c.add_argument("--json", action="store_true", help="print JSON")
        _column_flags(c, *["[the run's; a Hugging Face directory: text]",
                           "[the run's; a Hugging Face directory: none]",
                           "[the run's; a Hugging Face directory: label]"])
    e, r = sub.choices["evaluate"], sub.choices["predict"]
    e.add_argument("--data", required=True, help="an aclImdb tree or a labelled file")
    e.add_argument("--split", default="test", help="split of an aclImdb tree [test]")
    r.add_argument("text", nargs="*", help="texts to classify; for a sentence-pair model, two "
                                          "at a time (first, second, first, second, ...)")
    r.add_argument("--file", help="a .jsonl/.csv/.tsv file with a text column (and the pair's "
                                  "second), or .txt (a line each; single texts)")
    return p


def _column_flags(p: argparse.ArgumentParser, text: str, pair: str, label: str) -> None:
    """--text-column, --text-pair-column, --label-column: the fields of a .jsonl/.csv/.tsv file
    (as pretraining's --text-column names a corpus's)."""
    p.add_argument("--text-column", metavar="NAME", help=f"the field of the text {text}")
    p.add_argument("--text-pair-column", metavar="NAME", help="the field of a sentence pair's "
                   f"second text (transformers' text_pair) {pair}")
    p.add_argument("--label-column", metavar="NAME", help=f"the field of the label {label}")


def data_columns(args: argparse.Namespace, clf: Classifier) -> Columns:
    """evaluate's and predict's fields: the model's (its run's), each renamed by a flag given."""
    own = clf.columns
    return Columns(args.text_column or own.text, args.text_pair_column or own.text_pair,
                   args.label_column or own.label)


# ---- evaluate and predict: the twin gives logits, the rest is here ----------------------------

Logits = Callable[[dict], np.ndarray]


def run_evaluate(args: argparse.Namespace, clf: Classifier, logits: Logits) -> dict[str, Any]:
    """`evaluate MODEL --data PATH`: accuracy (and F1) on labelled data, or a regression's
    Pearson, Spearman and MSE; prints and returns it."""
    regression = clf.labels.regression
    examples = read_examples(args.data, args.split, columns=data_columns(args, clf),
                             regression=regression)
    clf.labels.check(examples, f"{args.data}", f"the model ({clf.path})")
    data = encode(clf.tokenizer, examples, clf.labels, clf.max_len)
    res = evaluate(logits, data, args.batch_size, len(clf.labels), progress=not args.json,
                   regression=regression)
    names = ("pearson", "spearman", "mse") if regression else ("accuracy", "f1")
    out = {"model": str(clf.path), "data": str(args.data), "examples": len(data),
           "truncated": data.truncated, "loss": res["loss"],
           **{k: res[k] for k in names if k in res}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        if regression:
            what = (f"Pearson {out['pearson']:.4f}, Spearman {out['spearman']:.4f}, "
                    f"MSE {out['mse']:.4f}")
        else:
            what = f"accuracy {out['accuracy']:.4f}" + (
                f", F1 ({clf.labels.labels[1]}) {out['f1']:.4f}" if "f1" in out else "")
        print(f"{out['examples']} examples ({data.truncated} truncated to {clf.max_len} tokens): "
              f"{what}" + ("" if regression else f", loss {out['loss']:.4f}"))
    return out


def run_predict(args: argparse.Namespace, clf: Classifier, logits: Logits) -> list[dict]:
    """`predict MODEL TEXT... | --file F`: the most likely label of each text (or pair) and its
    probability; a regression's score."""
    columns = data_columns(args, clf)
    pairs = columns.text_pair is not None
    if args.file:
        path = Path(args.file)
        if path.suffix == ".txt":
            if pairs:
                raise UserError(f"{path}: a .txt file holds single texts, and {clf.path} reads "
                                f"sentence pairs ({columns.text_pair}); pass a .jsonl/.csv/.tsv "
                                f"file with the fields {columns.text} and {columns.text_pair}")
            examples = [Example(line) for line in path.read_text(encoding="utf-8").splitlines()
                        if line.strip()]
        else:
            examples = read_examples(path, "predict", need_label=False, columns=columns,
                                     regression=clf.labels.regression)
    elif pairs:
        if len(args.text) % 2:
            raise UserError(f"predict: {len(args.text)} texts for a sentence-pair model "
                            f"({clf.path}); give the texts two at a time, each first text "
                            f"followed by its second")
        examples = [Example(a, b) for a, b in zip(args.text[::2], args.text[1::2])]
    else:
        examples = [Example(t) for t in args.text]
    if not examples:
        raise UserError("nothing to classify; pass texts or --file FILE")
    empty = [i for i, e in enumerate(examples, 1) if not e.text.strip()]
    if empty:
        raise UserError(f"{args.file or 'predict'}: text {empty[0]} of {len(examples)} is empty; "
                        f"give each text to classify some words")
    data = encode(clf.tokenizer, examples, None, clf.max_len)
    res = evaluate(logits, data, args.batch_size, len(clf.labels),
                   regression=clf.labels.regression)
    both = [{"text": e.text, **({"text_pair": e.text_pair} if pairs else {})} for e in examples]
    if clf.labels.regression:
        rows = [{**t, "score": float(v)} for t, v in zip(both, res["predictions"])]
    else:
        rows = [{**t, "label": clf.labels.labels[int(p)],
                 "probabilities": dict(zip(clf.labels.labels, map(float, probs)))}
                for t, p, probs in zip(both, res["predictions"], res["probabilities"])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return rows
    for r in rows:
        # A pair's two texts side by side, as transformers' tokenizer joins them.
        text = r["text"] + (f" [SEP] {r['text_pair']}" if pairs else "")
        head = (f"{r['score']:<12.4f}" if clf.labels.regression else
                f"{r['label']:<12} {r['probabilities'][r['label']]:7.2%}")
        print(f"{head}  {text[:120]}")
    return rows
