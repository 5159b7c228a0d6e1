"""A fine-tuning run, framework-free: its RUNDIR (`ClassifyRun`) and the epoch loop (`fit`) both
twins' `classify.py train` run; the twin supplies only the `Twin` methods (an AdamW step, logits,
its weights, its checkpoints). The RUNDIR layout is described in bertcore/classify/cli.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from bertcore.classify.cli import (FIELDS, ClassifyConfig, InitSource, check_resume_args,
                                  initial_state, resolve_init)
from bertcore.classify.data import (Encoded, LabelMap, encode, evaluate, hf_config, hold_out,
                                    is_aclimdb_path, read_examples, steps_per_epoch, train_batches,
                                    write_classifier_dir)
from bertcore.config import ModernBertConfig, model_config_from_dict
from bertcore.data.tokenizer import load_tokenizer
from bertcore.errors import UserError
from bertcore.files import check_apart
from bertcore.train.metrics import read_metrics
from bertcore.train.report import Reporters, parse_report_to, tagged
from bertcore.train.rundir import RunDir

logger = logging.getLogger(__name__)


# ---- the run directory --------------------------------------------------------------------------

class ClassifyRun:
    """RUNDIR, configs, labels and the encoded splits of one fine-tuning run, for either twin.
    Everything is read and checked before anything in RUNDIR is written or replaced; `fit`
    locks RUNDIR (bertcore.train.rundir) before it writes."""

    def __init__(self, args: argparse.Namespace, framework: str):
        self.framework = framework
        self.rundir = Path(args.out or f"runs/{framework}bert-classify")
        self.files = RunDir(self.rundir)
        self.resume, self.stop_after = args.resume, args.stop_after
        self.overwrite = args.overwrite
        if args.stop_after is not None and args.stop_after < 1:
            raise UserError(f"--stop-after {args.stop_after} must be at least 1")
        self.report_to = parse_report_to(getattr(args, "report_to", None))
        self.reports = Reporters([])    # opened by `fit` once RUNDIR is written
        check_apart(self.rundir, {"--init-from": args.init_from, "--data": args.data,
                                  "--validation": args.validation, "--tokenizer": args.tokenizer})
        self.progress = not args.no_progress
        self.notes: list[str] = []
        self.src: InitSource | None = None
        given = {k: getattr(args, k) for k in FIELDS if getattr(args, k, None) is not None}
        if args.resume:
            check_resume_args(args, self.files)   # who holds RUNDIR, then ignored data
            info = self._read_existing(framework)
            saved = ClassifyConfig(**_json(self.rundir / "classify_config.json"))
            changed = [k for k, v in given.items() if getattr(saved, k) != v]
            if changed:
                raise UserError(f"--resume with changed settings ({', '.join(changed)}); resume "
                                f"with the run's own settings or start a new run with --out")
            self.classify_config, data, validation = saved, info["data"], info.get("validation")
            self.base_model = (info.get("init_from") or {}).get("path")
            raw = _json(self.rundir / "config.json")
            self.model_config = model_config_from_dict(raw)
            self.labels = LabelMap([raw["id2label"][str(i)] for i in range(len(raw["id2label"]))])
            self.tokenizer = load_tokenizer(self.rundir / "tokenizer")
        else:
            if not args.init_from or not args.data:
                raise UserError("train needs --init-from DIR (a pretraining RUNDIR or a Hugging "
                                "Face BERT or ModernBERT directory) and --data (an aclImdb tree "
                                "or a file)")
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
        self.data, self.validation = data, validation
        self.train, self.val = self._data(data, validation)
        if not args.resume:
            self.files.check_target(args.overwrite)   # last, so a bad flag is named first

    def _read_existing(self, framework: str) -> dict[str, Any]:
        if not (self.rundir / "classify_config.json").is_file():
            raise UserError(f"--resume: {self.rundir} holds no fine-tuning run (no "
                            f"classify_config.json); drop --resume to start one there")
        info = self.files.info()
        if info.get("framework") != framework:
            raise UserError(f"{self.rundir} is a {info.get('framework')}bert run; resume it with "
                            f"python -m {info.get('framework')}bert.classify train --resume")
        return info

    def _data(self, data: str, validation: str | None) -> tuple[Encoded, Encoded]:
        train = read_examples(data, "train")
        if validation:
            val = read_examples(validation, "validation")
        else:   # aclImdb and single files have no validation split: hold one out, seeded
            ccfg = self.classify_config
            train, val = hold_out(train, ccfg.val_fraction, ccfg.seed)
        if self.resume:
            self.labels.check(train + val, f"{data}", "the run's config.json")
        else:
            self.labels = LabelMap.from_examples(train)
            if len(self.labels) < 2:
                raise UserError(f"{data} has a single label ({self.labels.labels[0]!r}); a "
                                f"classifier needs examples of at least two labels")
            self.labels.check(val, f"the validation data ({validation or 'held out'})",
                              f"the training data ({data})")
        out, max_len = [], self.classify_config.max_len
        for name, examples in (("train", train), ("validation", val)):
            enc = encode(self.tokenizer, examples, self.labels, max_len)
            self.notes.append(f"{name}: {len(enc)} examples, {enc.truncated} truncated to "
                              f"--max-len {max_len} ({enc.truncated / len(enc):.1%})")
            out.append(enc)
        return out[0], out[1]

    def create(self) -> None:
        """Write the new RUNDIR, locked (`fit` calls it once the twin holds its initial weights,
        so a failure before then leaves an existing RUNDIR untouched, even with --overwrite)."""
        data, validation = self.data, self.validation
        info = {"framework": self.framework, "task": "classify", "data": data,
                "validation": validation, "aclimdb": is_aclimdb_path(data),
                "init_from": {"path": str(self.src.path.resolve()), "kind": self.src.weights_from},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            self.files.check_target(self.overwrite)   # again, now that RUNDIR is ours
            self.files.create(info, {
                "tokenizer": self.tokenizer.save,
                "config.json": json.dumps(hf_config(self.model_config, self.labels), indent=2,
                                          sort_keys=True) + "\n",
                "classify_config.json": json.dumps(dataclasses.asdict(self.classify_config),
                                                   indent=2) + "\n"})
        except BaseException:
            self.files.discard()
            raise

    def report_config(self) -> dict[str, Any]:
        """The run's settings, as --report-to's dashboards show them."""
        return {"framework": self.framework, "task": "classify", "data": self.data,
                "validation": self.validation, "labels": self.labels.labels,
                "model": self.model_config.to_dict(),
                "classify": dataclasses.asdict(self.classify_config)}

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run: the linear decay's end (full batches only)."""
        ccfg = self.classify_config
        return ccfg.epochs * steps_per_epoch(len(self.train), ccfg.batch_size)

    def card(self, best: dict[str, Any]) -> str:
        """The model card of best/ (bertcore.card) when it holds the epoch `best`."""
        from bertcore.card import classifier_card

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


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); fix or remove it")


# ---- the loop ------------------------------------------------------------------------------------

class Twin(Protocol):
    """What a twin's classify.py supplies to `fit`: one AdamW step (dropout drawn from the step
    number, so a resumed run redraws the same masks), logits, its weights and checkpoints."""
    def train_step(self, batch: dict[str, np.ndarray], lr: float, step: int) -> float: ...
    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray: ...
    def state(self) -> dict[str, np.ndarray]: ...
    def save(self, step: int, extra: dict[str, Any]) -> None: ...
    def restore(self) -> dict[str, Any]: ...


def fit(run: ClassifyRun, twin: Twin) -> dict[str, Any]:
    """Epochs of shuffled full batches, validation after each, best/ kept, checkpoint per epoch
    (and at --stop-after), metrics.jsonl one line per epoch. Returns the summary."""
    ccfg = run.classify_config
    spe = steps_per_epoch(len(run.train), ccfg.batch_size)
    if spe == 0:
        raise UserError(f"{len(run.train)} training examples are fewer than --batch-size "
                        f"{ccfg.batch_size}; lower --batch-size")
    # RUNDIR is this process's alone from here to the end of the command (bertcore.train.rundir).
    run.files.lock()
    try:
        summary = _fit(run, twin, spe)
        run.reports.close()
        return summary
    finally:
        run.reports.close(failed=True)   # a no-op once closed: here, the run failed
        run.files.unlock()


def _tagged(row: dict[str, Any]) -> dict[str, float]:
    """An epoch's row as dashboard scalars: train_loss as train/loss, val_accuracy as
    val/accuracy, the rest (epoch, learning_rate, elapsed) under train/."""
    out = {}
    for k, v in tagged(row, "").items():
        split, _, name = k.partition("_")
        out[f"{split}/{name}" if split in ("train", "val") and name else f"train/{k}"] = v
    return out


def _fit(run: ClassifyRun, twin: Twin, spe: int) -> dict[str, Any]:
    ccfg = run.classify_config
    total = run.total_steps
    lr_at = ccfg.lr_at(total)
    extra: dict[str, Any] = {"step": 0, "best": None, "loss_sum": 0.0, "loss_n": 0}
    if run.resume:
        extra = twin.restore()
        logger.info(f"resumed {run.rundir} at step {extra['step']}")
    else:
        run.create()
    metrics_path = run.files.metrics_path
    kept = run.files.truncate_metrics(extra["step"])
    run.reports = Reporters.open(run.report_to, run.rundir, run.report_config(), extra["step"],
                                 [(m["step"], _tagged(m)) for m in kept])
    for note in run.notes:
        logger.info(note)
    step, t0 = extra["step"], time.perf_counter()
    bar = tqdm(total=total, initial=step, unit="step", disable=not run.progress,
               desc=f"{run.framework}bert classify", dynamic_ncols=True)
    for epoch in range(step // spe, ccfg.epochs):
        for batch in train_batches(run.train, ccfg.batch_size, ccfg.seed, epoch,
                                   step - epoch * spe):
            step += 1
            loss = twin.train_step(batch, float(lr_at(step - 1)), step)
            if not math.isfinite(loss):
                raise UserError(f"the loss became {loss} at step {step}; lower --lr")
            extra.update(step=step, loss_sum=extra["loss_sum"] + loss,
                         loss_n=extra["loss_n"] + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            if step == run.stop_after and step % spe:
                twin.save(step, extra)
                run.reports.flush()
                bar.close()
                logger.info(f"stopped after step {step}; continue with train --out {run.rundir} "
                            f"--resume")
                return {"stopped_at": step}
        val = evaluate(twin.logits, run.val, ccfg.batch_size, len(run.labels))
        row = {"epoch": epoch + 1, "step": step,
               "train_loss": extra["loss_sum"] / max(extra["loss_n"], 1),
               **{f"val_{k}": val[k] for k in ("loss", "accuracy", "f1") if k in val},
               "learning_rate": float(lr_at(step - 1)), "elapsed": time.perf_counter() - t0}
        run.files.append_metrics(row)
        run.reports.scalars(step, _tagged(row))
        logger.info(" ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "elapsed"))
        if extra["best"] is None or row["val_accuracy"] > extra["best"]["val_accuracy"]:
            extra["best"] = row
            write_classifier_dir(run.rundir / "best", run.model_config, run.labels, twin.state(),
                                 run.rundir / "tokenizer", info=row, card=run.card(row))
        extra.update(loss_sum=0.0, loss_n=0)
        twin.save(step, extra)
        run.reports.flush()   # every point up to where --resume continues
        if run.stop_after and step >= run.stop_after and step < total:
            bar.close()
            logger.info(f"stopped after step {step}; continue with train --out {run.rundir} "
                        f"--resume")
            return {"stopped_at": step}
    bar.close()
    summary = {"framework": run.framework, "rundir": str(run.rundir), "steps": step,
               "epochs": ccfg.epochs, "labels": run.labels.labels, "best": extra["best"],
               "final": read_metrics(metrics_path)[-1], "train_examples": len(run.train),
               "validation_examples": len(run.val), "train_seconds": time.perf_counter() - t0}
    run.files.write_file("summary.json", json.dumps(summary, indent=2) + "\n")
    best = extra["best"]
    logger.info(f"done: {step} steps; best epoch {best['epoch']} val accuracy "
                f"{best['val_accuracy']:.4f}; "
                f"weights in {run.rundir}/best (evaluate: evaluate {run.rundir} --data DATA)")
    return summary
