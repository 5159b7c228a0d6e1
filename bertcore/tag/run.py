"""A token-tagging run, framework-free: `TagRun`, the task bertcore.train.loop trains for both
twins' `tag.py train` (pretraining's loop: signals, --time-budget, exact resume, dashboards, the
divergence guard), the twin of bertcore/classify/run.py's ClassifyRun. The run reads and encodes
its tagged sentences, writes its RUNDIR (described in bertcore/tag/cli.py), draws shuffled full
batches epoch after epoch (classify's `EpochBatches`), scores the validation split after each
epoch (seqeval's entity F1), keeps best/ and writes summary.json at the end. The twin supplies
the loop's `Twin` hooks (an AdamW step, logits, its weights and checkpoints).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from bertcore.classify.data import hold_out, steps_per_epoch
from bertcore.classify.run import EpochBatches
from bertcore.data.tokenizer import load_tokenizer
from bertcore.infra.errors import UserError
from bertcore.infra.files import check_apart
from bertcore.model.config import ModernBertConfig, model_config_from_dict
from bertcore.model.sizes import check_training_fits
from bertcore.tag.cli import FIELDS, TagConfig
from bertcore.tag.data import Encoded, Sentence, TagMap, encode, evaluate, read_sentences
from bertcore.tag.model import hf_config, initial_state, resolve_init, write_tagger_dir
from bertcore.train.cli import check_unheld, same_path
from bertcore.train.init_from import InitSource
from bertcore.train.metrics import read_metrics
from bertcore.train.report import parse_report_to, tagged
from bertcore.train.rundir import CONFIG, TAG_CONFIG, TOKENIZER, RunDir
from bertcore.train.task import Task

logger = logging.getLogger(__name__)

SCORES = ("loss", "accuracy", "precision", "recall", "f1")


class TagRun(Task):
    """RUNDIR, configs, tags and the encoded splits of one tagging run, for either twin, and the
    task bertcore.train.loop trains. Everything is read and checked before anything in RUNDIR is
    written or replaced; `begin` locks RUNDIR and writes it."""

    name = "tag"
    evaluate_before_checkpoint = True   # the epoch's checkpoint holds the best epoch so far and
                                        # the next epoch's zeroed loss sums

    def __init__(self, args: argparse.Namespace, framework: str):
        rundir = Path(args.out or f"runs/{framework}bert-tag")
        super().__init__(rundir, framework, RunDir(rundir), progress=not args.no_progress,
                         report_to=parse_report_to(getattr(args, "report_to", None)))
        self.resume, self.stop_after = args.resume, args.stop_after
        self.overwrite = args.overwrite
        if args.stop_after is not None and args.stop_after < 1:
            raise UserError(f"--stop-after {args.stop_after} must be at least 1")
        check_apart(self.rundir, {"--init-from": args.init_from, "--data": args.data,
                                  "--validation": args.validation, "--tokenizer": args.tokenizer})
        self.files.recover()   # a run an interrupted --overwrite left beside is back first
        self.notes: list[str] = []
        self.src: InitSource | None = None
        given = {k: getattr(args, k) for k in FIELDS if getattr(args, k, None) is not None}
        reading = {"format": args.format, "words_column": args.words_column,
                   "tags_column": args.tags_column}
        if args.resume:
            info = self._read_existing(args, framework)
            saved = TagConfig(**_json(self.rundir / TAG_CONFIG))
            changed = [k for k, v in given.items() if getattr(saved, k) != v]
            changed += [f"--{k.replace('_', '-')}" for k, v in reading.items()
                        if v is not None and v != info["reading"].get(k)]
            if changed:
                raise UserError(f"--resume with changed settings ({', '.join(changed)}); resume "
                                f"with the run's own settings or start a new run with --out")
            self.tag_config, data, validation = saved, info["data"], info.get("validation")
            self.reading = info["reading"]
            self.base_model = (info.get("init_from") or {}).get("path")
            raw = _json(self.rundir / CONFIG)
            self.model_config = model_config_from_dict(raw)
            self.tags = TagMap([raw["id2label"][str(i)] for i in range(len(raw["id2label"]))])
            self.tokenizer = load_tokenizer(self.files.tokenizer_dir)
        else:
            if not args.init_from or not args.data:
                raise UserError("train needs --init-from DIR (a pretraining RUNDIR or a Hugging "
                                "Face BERT, ModernBERT or ELECTRA directory) and --data (a .jsonl "
                                "or CoNLL file of tagged words)")
            self.tag_config = TagConfig(**given)
            self.reading = {"format": args.format, "words_column": args.words_column or "words",
                            "tags_column": args.tags_column or "tags"}
            self.src = resolve_init(args.init_from, framework, args.tokenizer)
            self.base_model = str(self.src.path.resolve())
            self.model_config, self.tokenizer = self.src.config, self.src.tokenizer
            data, validation = str(Path(args.data).resolve()), args.validation and str(
                Path(args.validation).resolve())
        self.tag_config.validate()
        if not self.tag_config.dropout:
            self.model_config = self.model_config.without_dropout()
            if isinstance(self.model_config, ModernBertConfig):   # the head's own rate too
                self.model_config = self.model_config.replace(classifier_dropout=0.0)
        max_len, max_positions = self.tag_config.max_len, self.model_config.max_position_embeddings
        if max_len > max_positions:
            raise UserError(f"max-len={max_len} exceeds the model's "
                            f"max_position_embeddings={max_positions}")
        check_training_fits(self.model_config, self.tag_config.batch_size, max_len,
                            "--batch-size or --max-len")   # bertcore.model.sizes: before any data
        self.data, self.validation = data, validation
        self.train, self.val, self.val_sentences = self._data(data, validation)
        self.steps_per_epoch = steps_per_epoch(len(self.train), self.tag_config.batch_size)
        if self.steps_per_epoch == 0:
            raise UserError(f"{len(self.train)} training sentences are fewer than --batch-size "
                            f"{self.tag_config.batch_size}; lower --batch-size")
        self._lr_at = self.tag_config.lr_at(self.steps)
        self.loss_sum, self.loss_n = 0.0, 0       # the epoch so far (its mean is train_loss)
        self.best: dict[str, Any] | None = None   # the best epoch's row (best/ holds it)
        self._resumed_step = 0
        if not args.resume:
            self.files.check_target(args.overwrite)   # last, so a bad flag is named first

    def _read_existing(self, args: argparse.Namespace, framework: str) -> dict[str, Any]:
        """`--resume`'s checks that need RUNDIR: its holder, that it is a tag run of this twin,
        and that --data, --validation and --init-from are the run's own (a resumed run keeps
        its own: they would be ignored)."""
        check_unheld(self.rundir)
        if not (self.rundir / TAG_CONFIG).is_file() or not self.files.is_run():
            raise UserError(f"--resume: {self.rundir} holds no tagging run (no {TAG_CONFIG} "
                            f"and run.json); drop --resume to start one there")
        info = self.files.info()
        if info.get("framework") != framework:
            raise UserError(f"{self.rundir} is a {info.get('framework')}bert run; resume it with "
                            f"python -m {info.get('framework')}bert.tag train --resume")
        run_init = (info.get("init_from") or {}).get("path")
        for name, given, run in (("--data", args.data, info.get("data")),
                                 ("--validation", args.validation, info.get("validation")),
                                 ("--init-from", args.init_from, run_init)):
            if given and not (run and same_path(given, run)):
                verb = "started from" if name == "--init-from" else "trains on"
                raise UserError(f"--resume: the run {verb} {run or 'no ' + name}, not {name} "
                                f"{given} (a resumed run keeps its own); drop {name}, or start "
                                f"a new run with --out")
        return info

    def _read(self, path: str) -> list[Sentence]:
        r = self.reading
        return read_sentences(path, r["format"], r["words_column"], r["tags_column"])

    def _data(self, data: str, validation: str | None
              ) -> tuple[Encoded, Encoded, list[Sentence]]:
        train = self._read(data)
        if validation:
            val = self._read(validation)
        else:   # a single file: hold a validation split out, seeded
            tcfg = self.tag_config
            train, val = hold_out(train, tcfg.val_fraction, tcfg.seed)
        if self.resume:
            self.tags.check(train + val, "the run's config.json")
        else:
            self.tags = TagMap.from_sentences(train)
            if len(self.tags) < 2:
                raise UserError(f"{data} has a single tag ({self.tags.tags[0]!r}); a tagger needs "
                                f"at least two (O and an entity's B-...)")
            self.tags.check(val, f"the training data ({data})")
        out, max_len = [], self.tag_config.max_len
        for name, sentences in (("train", train), ("validation", val)):
            enc = encode(self.tokenizer, sentences, self.tags, max_len)
            self.notes.append(f"{name}: {len(enc)} sentences, {enc.truncated} truncated to "
                              f"--max-len {max_len} ({enc.dropped_words} words dropped: not "
                              f"trained on, not scored)")
            out.append(enc)
        return out[0], out[1], val

    def begin(self, twin: Any) -> dict[str, Any] | None:
        """Lock RUNDIR, then restore the twin from the latest checkpoint (returning its extra,
        for the loop) or write the new run. Called once the twin holds its initial weights, so a
        failure before then leaves an existing RUNDIR untouched, even with --overwrite."""
        self.files.lock()
        extra = None
        if self.resume:
            if not self.files.has_checkpoint():
                raise UserError(f"--resume: {self.checkpoint_dir} has no checkpoint; start "
                                f"again with --overwrite")
            extra = twin.restore()
            self.note(f"resumed {self.rundir} at step {extra['step']}")
        else:
            self.create()
        for note in self.notes:
            logger.info(note)
        return extra

    def create(self) -> None:
        """Write the new RUNDIR (`begin` holds its lock)."""
        info = {"framework": self.framework, "task": "tag", "data": self.data,
                "validation": self.validation, "reading": self.reading,
                "init_from": {"path": str(self.src.path.resolve()), "kind": self.src.weights_from},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            self.files.check_target(self.overwrite)   # again, now that RUNDIR is ours
            self.files.create(info, {
                TOKENIZER: self.tokenizer.save,
                CONFIG: json.dumps(hf_config(self.model_config, self.tags), indent=2,
                                   sort_keys=True) + "\n",
                TAG_CONFIG: json.dumps(dataclasses.asdict(self.tag_config), indent=2) + "\n"})
        except BaseException:
            self.files.discard()
            raise

    def report_config(self) -> dict[str, Any]:
        """The run's settings, as --report-to's dashboards show them."""
        return {"framework": self.framework, "task": self.name, "data": self.data,
                "validation": self.validation, "tags": self.tags.tags,
                "model": self.model_config.to_dict(), "tag": dataclasses.asdict(self.tag_config)}

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run: the linear decay's end (full batches only)."""
        return self.tag_config.epochs * self.steps_per_epoch

    steps = total_steps

    # ---- what the loop asks --------------------------------------------------------------------

    def batches(self, rank: int = 0, world: int = 1, state: dict | None = None) -> EpochBatches:
        tcfg = self.tag_config
        step = (state or {}).get("step", self._resumed_step)
        return EpochBatches(self.train, tcfg.batch_size, tcfg.seed, tcfg.epochs, step)

    def lr(self, step: int) -> float:
        return float(self._lr_at(step - 1))

    def log_due(self, step: int) -> bool:
        return True       # every step's loss counts in its epoch's mean train_loss

    def save_due(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0

    def eval_due(self, step: int, last: int) -> bool:
        return step % self.steps_per_epoch == 0        # at the end of each epoch

    def log(self, step: int, row: dict[str, float]) -> None:
        loss = row["loss"]
        self.guard(step, loss)
        self.loss_sum, self.loss_n = self.loss_sum + loss, self.loss_n + 1
        self.advance_bar(step, loss=f"{loss:.3f}")

    def evaluate(self, step: int, twin: Any) -> None:
        """The epoch's line (train loss, validation scores) in metrics.jsonl; best/ when the
        validation entity F1 is the best yet (token accuracy breaks a tie, so a run whose F1
        is still 0 keeps the epoch that tags more words right)."""
        val = evaluate(twin.logits, self.val, self.tags, self.tag_config.batch_size,
                       self.val_sentences)
        row = {"epoch": step // self.steps_per_epoch, "step": step,
               "train_loss": self.loss_sum / max(self.loss_n, 1),
               **{f"val_{k}": val[k] for k in SCORES},
               "learning_rate": self.lr(step), "elapsed": self.elapsed}
        self.append(step, row)
        logger.info(" ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "elapsed"))
        key = (row["val_f1"], row["val_accuracy"])
        if self.best is None or key > (self.best["val_f1"], self.best["val_accuracy"]):
            self.best = row
            write_tagger_dir(self.rundir / "best", self.model_config, self.tags, twin.weights(),
                             self.files.tokenizer_dir, info=row)
        self.loss_sum, self.loss_n = 0.0, 0

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "loss_sum": self.loss_sum, "loss_n": self.loss_n}

    def restore(self, extra: dict[str, Any]) -> None:
        self.best, self.loss_sum, self.loss_n = extra["best"], extra["loss_sum"], extra["loss_n"]
        self._resumed_step = int(extra["step"])

    def tagged(self, row: dict[str, Any]) -> dict[str, float]:
        """An epoch's row as dashboard scalars: train_loss as train/loss, val_f1 as val/f1, the
        rest (epoch, learning_rate, elapsed) under train/."""
        out = {}
        for k, v in tagged(row, "").items():
            split, _, name = k.partition("_")
            out[f"{split}/{name}" if split in ("train", "val") and name else f"train/{k}"] = v
        return out

    def end(self, twin: Any, step: int, info: dict[str, Any]) -> dict[str, Any]:
        """summary.json once every epoch is done (a run stopped before has none: --resume
        continues it); lets go of RUNDIR."""
        self.close_bar()
        self.close_reports()
        try:
            if step < self.steps:
                return {"stopped_at": step}
            summary = {"framework": self.framework, "rundir": str(self.rundir), "steps": step,
                       "epochs": self.tag_config.epochs, "tags": self.tags.tags,
                       "best": self.best, "final": read_metrics(self.metrics_path)[-1],
                       "train_sentences": len(self.train),
                       "validation_sentences": len(self.val),
                       "train_seconds": info["train_seconds"]}
            self.files.write_summary(summary)
            return summary
        finally:
            self.files.unlock()

    def done_line(self, step: int, seconds: float, twin: Any) -> str:
        if step < self.steps:
            return f"stopped after step {step}; continue with train --out {self.rundir} --resume"
        return (f"done: {step} steps; best epoch {self.best['epoch']} val entity F1 "
                f"{self.best['val_f1']:.4f} (token accuracy {self.best['val_accuracy']:.4f}); "
                f"weights in {self.rundir}/best (evaluate: evaluate {self.rundir} --data DATA)")

    def initial_state(self, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        state, notes = initial_state(weights, self.src, self.model_config, self.tags,
                                     self.tag_config.seed)
        self.notes += notes
        return state


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); fix or remove it")
