"""A pretraining run, whichever twin trains it: `Run`, the task bertcore.train.loop trains
(bertcore.train.task's `Task`). It draws the batches (bertcore.data.batches), gives each update
its rate (bertcore.train.schedule), logs a line every --log-every steps (tokens per second,
elapsed time), evaluates on held-out batches (bertcore.train.evaluation), and at the end writes
RUNDIR/hf/ (the Hugging Face export), summary.json, loss.png and the export's model card.
bertcore.train.setup makes it; RUNDIR's layout is bertcore.train.rundir's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bertcore.model.config import ElectraConfig, ModelConfig, TrainConfig, arch_of
from bertcore.data.batches import BatchIterator
from bertcore.data.shards import Shards
from bertcore.data.tokenizer import WordPiece
from bertcore.infra.files import atomic_path
from bertcore.model.hf import ELECTRA_ROLES, electra_split, save_hf_files
from bertcore.train import evaluation
from bertcore.train.init_from import InitSource
from bertcore.train.metrics import median, peak_rss_mb, plot_metrics, read_metrics
from bertcore.train.report import tagged
from bertcore.train.rundir import RunDir
from bertcore.train.schedule import make_schedule
from bertcore.train.task import Task

logger = logging.getLogger(__name__)


class Run(Task):
    """One pretraining run's configs and data, and its record (bertcore.train.task)."""

    name = "pretrain"
    divergence_fix = ("start again with a lower --lr, a longer --warmup-steps or "
                      "--layer-norm-position pre (--overwrite replaces this run)")
    from_checkpoint = ", or from its last good weights: --init-from {rundir} --out NEW"

    def __init__(self, rundir: Path, framework: str, model_config: ModelConfig,
                 train_config: TrainConfig, tokenizer: WordPiece, shards: Shards, resume: bool,
                 is_main: bool = True, progress: bool = True, files: RunDir | None = None,
                 report_to: tuple[str, ...] = ()):
        # RUNDIR is locked by bertcore.train.setup on the main process
        super().__init__(rundir, framework, files or RunDir(rundir), is_main=is_main,
                         progress=progress, report_to=report_to)
        self.model_config, self.train_config = model_config, train_config
        self.tokenizer, self.shards = tokenizer, shards
        self.resume = resume
        self.init_source: InitSource | None = None   # --init-from, for a new run (not a resume)
        self.hf_dir: Path | None = None     # the export, once written (its card needs summary)
        self.eval_set: list[dict] | None = None
        self.eval_every = 0
        self.last_eval: dict[str, Any] | None = None
        self._lr_at = make_schedule(train_config, model_config.hidden_size)

    # ---- what the loop asks --------------------------------------------------------------------

    @property
    def steps(self) -> int:
        return self.train_config.steps

    def batches(self, rank: int = 0, world: int = 1, state: dict | None = None
                ) -> BatchIterator:
        return BatchIterator(self.shards, self.tokenizer, self.train_config, rank=rank,
                             world_size=world, state=state)

    def lr(self, step: int) -> float:
        return float(self._lr_at(step - 1))

    def log_due(self, step: int) -> bool:
        return step % self.train_config.log_every == 0

    def save_due(self, step: int) -> bool:
        return step % self.train_config.checkpoint_every == 0

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Record the metrics after optimizer step `step` (1-based); stop if not finite.

        `metrics` are host floats. Adds tokens_per_second (B x L positions per second since the
        last log) and elapsed seconds."""
        c = self.train_config
        steps, seconds = self.lap(step)
        # (ELECTRA: the discriminator's precision and recall from its summed shares)
        row = {"step": step, **evaluation.detection_rates({k: float(v)
                                                           for k, v in metrics.items()})}
        row["tokens_per_second"] = steps * c.batch_size * c.seq_len / seconds
        row["elapsed"] = self.elapsed
        for k in ("loss", "grad_norm"):
            if k in row:
                self.guard(step, row[k], k)
        self.append(step, row)
        self.advance_bar(step, loss=f"{row['loss']:.3f}",
                         tok_s=f"{row['tokens_per_second']:.0f}")
        return row

    # ---- held-out evaluation (bertcore.train.evaluation) ---------------------------------------

    def set_eval(self, eval_data: str | None, n: int, every: int) -> None:
        """The run's fixed eval batches (none when it has no held-out data), every `every`
        steps (0: at each checkpoint) and at the end."""
        self.eval_every = every or self.train_config.checkpoint_every
        shards = evaluation.eval_shards(eval_data, self.shards, self.tokenizer)
        if shards is None:
            return
        self.note(f"evaluating on {n} fixed batches of {shards.path}")
        self.eval_set = evaluation.eval_batches(shards, self.tokenizer, self.train_config, n)

    def eval_due(self, step: int, last: int) -> bool:
        return bool(self.eval_set) and (step % self.eval_every == 0 or step == last)

    def evaluate(self, step: int, twin: Any) -> None:
        self.last_eval = twin.evaluate(self.eval_set)
        self.log_eval(step, self.last_eval)

    def log_eval(self, step: int, row: dict[str, Any]) -> None:
        """Append an eval line (split "eval") to metrics.jsonl and show it above the bar."""
        row = {"step": step, **row}
        self.append(step, row)
        self.note(f"eval @ step {step}: mlm_loss {row['mlm_loss']:.3f}, perplexity "
                  f"{row['perplexity']:.1f}, mlm_accuracy {row['mlm_accuracy']:.3f}")

    # ---- the record's shape ----------------------------------------------------------------------

    def report_config(self) -> dict[str, Any]:
        return {"framework": self.framework, "task": self.name,
                "model": self.model_config.to_dict(), "train": self.train_config.to_dict()}

    def tagged(self, row: dict[str, Any]) -> dict[str, float]:
        """A metrics.jsonl row's dashboard scalars: train/loss, ..., eval/mlm_loss, ..."""
        return tagged(row, row.get("split", "train"))

    # ---- the end ---------------------------------------------------------------------------------

    def end(self, twin: Any, step: int, info: dict[str, Any]) -> dict[str, Any]:
        """hf/ (the final weights), then summary.json, loss.png and the card."""
        self.export_hf(twin.weights())
        return self.finish({**twin.summary(), "eval": self.last_eval, **info})

    def done_line(self, step: int, seconds: float, twin: Any) -> str:
        return (f"done: {step} steps in {seconds:.0f}s{twin.done_detail()}; run files in "
                f"{self.rundir}/ (metrics.jsonl, summary.json, loss.png, checkpoints/, hf/)")

    def export_hf(self, params: dict[str, Any]) -> Path | None:
        """RUNDIR/hf/: the model's final weights (HF names, numpy) as a Hugging Face directory
        with the tokenizer, written atomically by the main process. Either twin's
        --init-from and classify, transformers and fill-mask read it."""
        if not self.is_main:
            return None
        with atomic_path(self.rundir / "hf", is_dir=True) as tmp:
            if isinstance(self.model_config, ElectraConfig):
                # ELECTRA: two transformers models, hf/discriminator (ElectraForPreTraining: the
                # encoder to fine-tune) and hf/generator (ElectraForMaskedLM: fill-mask).
                for role, state in electra_split(params).items():
                    (tmp / role).mkdir()
                    save_hf_files(tmp / role, self.model_config, state,
                                  self.files.tokenizer_dir, role=role)
            else:
                save_hf_files(tmp, self.model_config, params, self.files.tokenizer_dir)
        self.hf_dir = self.rundir / "hf"
        return self.hf_dir

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write summary.json and loss.png, the run's last files, close the dashboards and let
        go of RUNDIR's lock; return the summary."""
        self.close_bar()
        if not self.is_main:
            return {}
        self.close_reports()
        try:
            return self._finish(extra)
        finally:
            self.files.unlock()

    def _finish(self, extra: dict[str, Any] | None) -> dict[str, Any]:
        hist = [m for m in read_metrics(self.metrics_path) if "split" not in m]   # train lines
        tail = hist[-5:]
        summary = {
            "framework": self.framework, "rundir": str(self.rundir),
            "steps": hist[-1]["step"] if hist else 0,
            "first_loss": hist[0]["loss"] if hist else None,
            "final_loss": sum(m["loss"] for m in tail) / len(tail) if tail else None,
            "final_mlm_accuracy": tail[-1].get("mlm_accuracy") if tail else None,
            "tokens_per_second": median([m["tokens_per_second"] for m in hist[1:]] or
                                         [m["tokens_per_second"] for m in hist]),
            "peak_rss_mb": peak_rss_mb(),
            "model_config": self.model_config.to_dict(),
            "train_config": self.train_config.to_dict(),
            **(extra or {}),
        }
        # What the run learned against a model that ignores context (bertcore.train.baseline).
        from bertcore.train.baseline import unigram_baseline
        from bertcore.train.metrics import learned, learned_lines

        baseline = unigram_baseline(self.shards, self.tokenizer)
        summary["learned"] = learned(read_metrics(self.metrics_path), baseline)
        self.files.write_summary(summary)
        lines = learned_lines(summary["learned"], self.framework, self.rundir,
                              arch_of(self.model_config))
        if self.hf_dir is not None:
            self.write_card(summary, lines[0] if lines else None)
        plot_metrics(self.metrics_path, self.rundir / "loss.png",
                     title=f"{self.framework}bert {self.rundir.name}", baseline=baseline)
        for line in lines:
            logger.info(line)
        return summary

    def write_card(self, summary: dict[str, Any], learned_line: str | None) -> None:
        """hf/README.md: the export's model card (bertcore.modeldirs.card), from the run's
        summary."""
        from bertcore.modeldirs.card import pretraining_card, run_corpus, write_model_card

        info = self.files.info()
        # ELECTRA's export is two models, each a directory with its own card.
        dirs = ([self.hf_dir / role for role in ELECTRA_ROLES]
                if isinstance(self.model_config, ElectraConfig) else [self.hf_dir])
        for hf_dir in dirs:
            write_model_card(hf_dir, pretraining_card(
                hf_dir, self.model_config, framework=self.framework, name=self.rundir.name,
                train=summary["train_config"], steps=summary["steps"], corpus=run_corpus(info),
                data=info.get("data"), init_from=info.get("init_from"),
                learned_line=learned_line, held_out=summary["learned"].get("eval"),
                train_seconds=summary.get("train_seconds")))
