"""A fine-tuning run, framework-free: `ClassifyRun`, the task bertcore.train.loop trains for
both twins' `classify.py train` (the loop is pretraining's: signals, --time-budget, exact resume,
dashboards, the divergence guard). The run reads and encodes its labelled data, writes its RUNDIR
(the layout is described in bertcore/classify/cli.py), draws shuffled full batches epoch after
epoch (`EpochBatches`), evaluates on the validation split after each epoch, keeps best/ and
writes summary.json at the end. The twin supplies the loop's `Twin` hooks (an AdamW step,
logits, its weights and checkpoints).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bertcore.classify.cli import (FIELDS, ClassifyConfig, InitSource, check_resume_args,
                                   initial_state, resolve_init)
from bertcore.classify.data import (Encoded, LabelMap, encode, evaluate, hf_config, hold_out,
                                    is_aclimdb_path, read_examples, steps_per_epoch, train_batches,
                                    write_classifier_dir)
from bertcore.model.config import ModernBertConfig, model_config_from_dict
from bertcore.data.tokenizer import load_tokenizer
from bertcore.infra.errors import UserError
from bertcore.infra.files import check_apart
from bertcore.model.sizes import check_training_fits
from bertcore.train.metrics import read_metrics
from bertcore.train.report import parse_report_to, tagged
from bertcore.train.rundir import CLASSIFY_CONFIG, CONFIG, TOKENIZER, RunDir
from bertcore.train.task import Task

logger = logging.getLogger(__name__)


# ---- the run directory --------------------------------------------------------------------------

class ClassifyRun(Task):
    """RUNDIR, configs, labels and the encoded splits of one fine-tuning run, for either twin,
    and the task bertcore.train.loop trains. Everything is read and checked before anything in
    RUNDIR is written or replaced; `begin` locks RUNDIR (bertcore.train.rundir) and writes it."""

    name = "classify"
    evaluate_before_checkpoint = True   # the epoch's checkpoint holds the best epoch so far and
                                        # the next epoch's zeroed loss sums

    def __init__(self, args: argparse.Namespace, framework: str):
        rundir = Path(args.out or f"runs/{framework}bert-classify")
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
        if args.resume:
            check_resume_args(args, self.files)   # who holds RUNDIR, then ignored data
            info = self._read_existing(framework)
            saved = ClassifyConfig(**_json(self.rundir / CLASSIFY_CONFIG))
            changed = [k for k, v in given.items() if getattr(saved, k) != v]
            if changed:
                raise UserError(f"--resume with changed settings ({', '.join(changed)}); resume "
                                f"with the run's own settings or start a new run with --out")
            self.classify_config, data, validation = saved, info["data"], info.get("validation")
            self.base_model = (info.get("init_from") or {}).get("path")
            raw = _json(self.rundir / CONFIG)
            self.model_config = model_config_from_dict(raw)
            self.labels = (LabelMap.regression_head() if saved.task == "regression" else
                           LabelMap([raw["id2label"][str(i)] for i in range(len(raw["id2label"]))]))
            self.tokenizer = load_tokenizer(self.files.tokenizer_dir)
        else:
            if not args.init_from or not args.data:
                raise UserError("train needs --init-from DIR (a pretraining RUNDIR or a Hugging "
                                "Face BERT, ModernBERT or ELECTRA directory) and --data (an "
                                "aclImdb tree or a file)")
            self.classify_config = ClassifyConfig(**given)
            self.src = resolve_init(args.init_from, framework, args.tokenizer)
            self.base_model = str(self.src.path.resolve())
            self.model_config, self.tokenizer = self.src.config, self.src.tokenizer
            data, validation = str(Path(args.data).resolve()), args.validation and str(
                Path(args.validation).resolve())
        self.classify_config.validate()
        if not self.classify_config.dropout:
            self.model_config = self.model_config.without_dropout()
            if isinstance(self.model_config, ModernBertConfig):   # the head's own rate too
                self.model_config = self.model_config.replace(classifier_dropout=0.0)
        max_len, max_positions = (self.classify_config.max_len,
                                  self.model_config.max_position_embeddings)
        if max_len > max_positions:
            raise UserError(f"max-len={max_len} exceeds the model's "
                            f"max_position_embeddings={max_positions}")
        check_training_fits(self.model_config, self.classify_config.batch_size, max_len,
                            "--batch-size or --max-len")   # bertcore.model.sizes: before any data
        self.data, self.validation = data, validation
        self.train, self.val = self._data(data, validation)
        self.steps_per_epoch = steps_per_epoch(len(self.train), self.classify_config.batch_size)
        if self.steps_per_epoch == 0:
            raise UserError(f"{len(self.train)} training examples are fewer than --batch-size "
                            f"{self.classify_config.batch_size}; lower --batch-size")
        self._lr_at = self.classify_config.lr_at(self.steps)
        self.loss_sum, self.loss_n = 0.0, 0       # the epoch so far (its mean is train_loss)
        self.best: dict[str, Any] | None = None   # the best epoch's row (best/ holds it)
        self._resumed_step = 0
        if not args.resume:
            self.files.check_target(args.overwrite)   # last, so a bad flag is named first

    def _read_existing(self, framework: str) -> dict[str, Any]:
        if not (self.rundir / CLASSIFY_CONFIG).is_file():
            raise UserError(f"--resume: {self.rundir} holds no fine-tuning run (no "
                            f"classify_config.json); drop --resume to start one there")
        info = self.files.info()
        if info.get("framework") != framework:
            raise UserError(f"{self.rundir} is a {info.get('framework')}bert run; resume it with "
                            f"python -m {info.get('framework')}bert.classify train --resume")
        return info

    def _data(self, data: str, validation: str | None) -> tuple[Encoded, Encoded]:
        ccfg = self.classify_config
        regression = ccfg.task == "regression"
        train = read_examples(data, "train", columns=ccfg.columns, regression=regression)
        if validation:
            val = read_examples(validation, "validation", columns=ccfg.columns,
                                regression=regression)
        else:   # aclImdb and single files have no validation split: hold one out, seeded
            train, val = hold_out(train, ccfg.val_fraction, ccfg.seed)
        if self.resume:
            self.labels.check(train + val, f"{data}", "the run's config.json")
        elif regression:
            self.labels = LabelMap.regression_head()
            if len({e.label for e in train}) < 2:
                raise UserError(f"{data}: every label is {train[0].label}; a regression needs "
                                f"labels that vary (its correlations are undefined otherwise)")
        else:
            self.labels = LabelMap.from_examples(train)
            if len(self.labels) < 2:
                raise UserError(f"{data} has a single label ({self.labels.labels[0]!r}); a "
                                f"classifier needs examples of at least two labels")
            self.labels.check(val, f"the validation data ({validation or 'held out'})",
                              f"the training data ({data})")
        out, max_len = [], ccfg.max_len
        for name, examples in (("train", train), ("validation", val)):
            enc = encode(self.tokenizer, examples, self.labels, max_len)
            self.notes.append(f"{name}: {len(enc)} examples, {enc.truncated} truncated to "
                              f"--max-len {max_len} ({enc.truncated / len(enc):.1%})")
            out.append(enc)
        return out[0], out[1]

    def begin(self, twin: Any) -> dict[str, Any] | None:
        """Lock RUNDIR (from here to the end of the command it is this process's alone), then
        either restore the twin from the latest checkpoint (returning its extra, for the loop)
        or write the new run. Called once the twin holds its initial weights, so a failure before
        then leaves an existing RUNDIR untouched, even with --overwrite."""
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
        data, validation = self.data, self.validation
        info = {"framework": self.framework, "task": "classify", "data": data,
                "validation": validation, "aclimdb": is_aclimdb_path(data),
                "init_from": {"path": str(self.src.path.resolve()), "kind": self.src.weights_from},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            self.files.check_target(self.overwrite)   # again, now that RUNDIR is ours
            self.files.create(info, {
                TOKENIZER: self.tokenizer.save,
                CONFIG: json.dumps(hf_config(self.model_config, self.labels), indent=2,
                                          sort_keys=True) + "\n",
                CLASSIFY_CONFIG: json.dumps(dataclasses.asdict(self.classify_config),
                                                   indent=2) + "\n"})
        except BaseException:
            self.files.discard()
            raise

    def report_config(self) -> dict[str, Any]:
        """The run's settings, as --report-to's dashboards show them."""
        return {"framework": self.framework, "task": self.name, "data": self.data,
                "validation": self.validation, "labels": self.labels.labels,
                "model": self.model_config.to_dict(),
                "classify": dataclasses.asdict(self.classify_config)}

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run: the linear decay's end (full batches only)."""
        ccfg = self.classify_config
        return ccfg.epochs * steps_per_epoch(len(self.train), ccfg.batch_size)

    steps = total_steps

    # ---- what the loop asks --------------------------------------------------------------------

    def batches(self, rank: int = 0, world: int = 1, state: dict | None = None) -> "EpochBatches":
        ccfg = self.classify_config
        step = (state or {}).get("step", self._resumed_step)
        return EpochBatches(self.train, ccfg.batch_size, ccfg.seed, ccfg.epochs, step)

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

    @property
    def best_metric(self) -> str:
        """What picks best/: validation accuracy; a regression's Pearson correlation (STS-B's
        headline metric, as GLUE reports it)."""
        return "val_pearson" if self.labels.regression else "val_accuracy"

    def evaluate(self, step: int, twin: Any) -> None:
        """The epoch's line (train loss, validation scores) in metrics.jsonl; best/ when the
        validation accuracy (a regression: Pearson) is the best yet."""
        ccfg = self.classify_config
        val = evaluate(twin.logits, self.val, ccfg.batch_size, len(self.labels),
                       regression=self.labels.regression)
        row = {"epoch": step // self.steps_per_epoch, "step": step,
               "train_loss": self.loss_sum / max(self.loss_n, 1),
               **{f"val_{k}": val[k] for k in ("loss", "accuracy", "f1", "pearson", "spearman",
                                               "mse") if k in val},
               "learning_rate": self.lr(step), "elapsed": self.elapsed}
        self.append(step, row)
        logger.info(" ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "elapsed"))
        if self.best is None or _better(row[self.best_metric], self.best[self.best_metric]):
            self.best = row
            write_classifier_dir(self.rundir / "best", self.model_config, self.labels,
                                 twin.weights(), self.files.tokenizer_dir, info=row,
                                 card=self.card(row))
        self.loss_sum, self.loss_n = 0.0, 0

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "loss_sum": self.loss_sum, "loss_n": self.loss_n}

    def restore(self, extra: dict[str, Any]) -> None:
        self.best, self.loss_sum, self.loss_n = extra["best"], extra["loss_sum"], extra["loss_n"]
        self._resumed_step = int(extra["step"])

    def tagged(self, row: dict[str, Any]) -> dict[str, float]:
        """An epoch's row as dashboard scalars: train_loss as train/loss, val_accuracy as
        val/accuracy, the rest (epoch, learning_rate, elapsed) under train/."""
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
                       "epochs": self.classify_config.epochs, "task": self.labels.task,
                       "labels": self.labels.labels,
                       "best": self.best, "final": read_metrics(self.metrics_path)[-1],
                       "train_examples": len(self.train),
                       "validation_examples": len(self.val),
                       "train_seconds": info["train_seconds"]}
            self.files.write_summary(summary)
            return summary
        finally:
            self.files.unlock()

    def done_line(self, step: int, seconds: float, twin: Any) -> str:
        if step < self.steps:
            return f"stopped after step {step}; continue with train --out {self.rundir} --resume"
        metric = self.best_metric
        return (f"done: {step} steps; best epoch {self.best['epoch']} "
                f"{metric.replace('_', ' ')} {self.best[metric]:.4f}; weights in "
                f"{self.rundir}/best (evaluate: evaluate {self.rundir} --data DATA)")

    def card(self, best: dict[str, Any]) -> str:
        """The model card of best/ (bertcore.modeldirs.card) when it holds the epoch `best`."""
        from bertcore.modeldirs.card import classifier_card

        return classifier_card(self.rundir / "best", self.model_config, self.labels.labels,
                               framework=self.framework, name=self.rundir.name,
                               settings=dataclasses.asdict(self.classify_config),
                               base_model=self.base_model, data=self.data,
                               validation=self.validation, best=best,
                               train_examples=len(self.train))

    def initial_state(self, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        state, notes = initial_state(weights, self.src, self.model_config, self.labels,
                                     self.classify_config.seed)
        self.notes += notes
        return state


def _better(new: float, old: float) -> bool:
    """`new` beats `old`; NaN (a constant prediction's correlation) beats nothing and is beaten
    by any number, so a run whose first epoch predicted a constant still keeps a later best."""
    return not math.isnan(new) and (math.isnan(old) or new > old)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); fix or remove it")


class EpochBatches:
    """Shuffled full batches, epoch after epoch, from optimizer step `step` on (the data
    position is the step: epoch `step // steps_per_epoch`, that epoch's order seeded by
    (seed, epoch)); `state()` is the position for a checkpoint."""

    def __init__(self, data: Encoded, batch_size: int, seed: int, epochs: int, step: int = 0):
        self.data, self.batch_size, self.seed, self.epochs = data, batch_size, seed, epochs
        self.step = step
        self._spe = steps_per_epoch(len(data), batch_size)
        self._it: Iterator[dict[str, np.ndarray]] = iter(())
        self._epoch = -1

    def __iter__(self) -> "EpochBatches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        epoch = self.step // self._spe
        if epoch >= self.epochs:
            raise StopIteration
        if epoch != self._epoch:
            self._epoch = epoch
            self._it = iter(train_batches(self.data, self.batch_size, self.seed, epoch,
                                          self.step - epoch * self._spe))
        self.step += 1
        return next(self._it)

    def state(self) -> dict[str, int]:
        return {"step": self.step}
