"""Everything about a training run that is not the framework: shared by both train.py files.

`setup_run(args, framework)` checks every flag, resolves the model and train configs, the
tokenizer and the pretokenized data (building and caching them for a corpus), then locks and
prepares RUNDIR through bertcore.train.rundir's `RunDir`:

    RUNDIR/run.json            which twin owns the run, the data it reads
    RUNDIR/config.json         the model (Hugging Face config.json fields)
    RUNDIR/train_config.json   TrainConfig
    RUNDIR/tokenizer/          the tokenizer (fill-mask and export need it)
    RUNDIR/metrics.jsonl       one JSON object per logged step
    RUNDIR/summary.json        written at the end
    RUNDIR/loss.png            the loss curve
    RUNDIR/checkpoints/        written by the twin's checkpoint.py
    RUNDIR/hf/                 the final weights as a Hugging Face directory, with its model
                               card hf/README.md (bertcore.card) written after summary.json
    RUNDIR/tb/, RUNDIR/wandb/  --report-to's dashboards (bertcore.train.report)

`Run.log(step, metrics)` appends metrics (and mirrors them to --report-to's dashboards), updates
the progress bar and stops a diverged run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tqdm.auto import tqdm

from bertcore.config import (MODERNBERT_PRESETS, PRESETS, BertConfig, ModelConfig,
                             ModernBertConfig, TrainConfig, arch_of, load_model_config,
                             special_ids)
from bertcore.data.batches import BatchIterator
from bertcore.data.prepare import prepare
from bertcore.data.shards import Shards, dir_is_prepared
from bertcore.data.tokenizer import WordPiece, load_tokenizer, train_tokenizer
from bertcore.errors import UserError
from bertcore.files import atomic_path, cache_root, check_apart, file_lock, remove_stale_temps
from bertcore.hf import save_hf_files
from bertcore.train import evaluation
from bertcore.train.cli import DEFAULT_PRESET, check_resume_args, check_train_args
from bertcore.train.init_from import InitSource, resolve_init
from bertcore.train.metrics import median, peak_rss_mb, plot_metrics, read_metrics
from bertcore.train.report import Reporters, parse_report_to, tagged
from bertcore.train.rundir import RunDir, RunFiles

logger = logging.getLogger(__name__)

TRAIN_FIELDS = [f for f in TrainConfig.__dataclass_fields__]


class TrainingDiverged(UserError):
    """The loss or gradient norm stopped being finite."""


# ---- configs -------------------------------------------------------------------------------

def train_config_from_args(args: Any, base: TrainConfig | None = None) -> TrainConfig:
    """TrainConfig from the flags the user gave (None = not given) on top of `base`."""
    base = base or TrainConfig()
    given = {k: getattr(args, k) for k in TRAIN_FIELDS
             if getattr(args, k, None) is not None}
    return base.replace(**given)


def model_config_from_args(args: Any, tok: WordPiece) -> ModelConfig:
    """The model of a new run: --config's file or --arch's --preset, for this tokenizer, with
    --layer-norm-position and --attention-dropout applied."""
    vocab_size = tok.vocab_size
    arch = getattr(args, "arch", None)
    if args.config:
        mcfg = load_model_config(args.config)
        if arch and arch_of(mcfg) != arch:
            raise UserError(f"--arch {arch}: config {args.config} is a {arch_of(mcfg)} config "
                            f"(model_type); drop --arch or pass a {arch} config")
        if mcfg.vocab_size != vocab_size:
            raise UserError(f"config {args.config} has vocab_size={mcfg.vocab_size} but the "
                            f"tokenizer has {vocab_size} entries; use a matching --tokenizer or "
                            f"set vocab_size to {vocab_size}")
        if isinstance(mcfg, ModernBertConfig):
            # torchbert keeps the [PAD] row out of the lookup gradient (padding_idx): a config
            # naming another pad id would make the twins train different models.
            wrong = [f"{k}={getattr(mcfg, k)} (tokenizer: {v})"
                     for k, v in special_ids(tok).items() if getattr(mcfg, k) != v]
            if wrong:
                raise UserError(f"config {args.config} names other special tokens than the "
                                f"tokenizer ({', '.join(wrong)}); set them to the tokenizer's ids")
    elif arch == "modernbert":
        # ModernBERT's config names its special tokens; ours are the tokenizer's.
        mcfg = ModernBertConfig.from_preset(args.preset or DEFAULT_PRESET, vocab_size=vocab_size,
                                            **special_ids(tok))
    else:
        mcfg = BertConfig.from_preset(args.preset or DEFAULT_PRESET, vocab_size=vocab_size)
    return _model_flags(args, mcfg, "this config")


def _model_flags(args: Any, mcfg: ModelConfig, whose: str) -> ModelConfig:
    """--layer-norm-position and --attention-dropout applied to `mcfg` (ModernBERT has no
    LayerNorm placement to choose: it is pre-norm)."""
    if args.layer_norm_position and isinstance(mcfg, ModernBertConfig):
        raise UserError(f"--layer-norm-position applies to BERT; {whose} is ModernBERT, which "
                        f"is pre-norm by design; drop the flag")
    if args.layer_norm_position:
        mcfg = mcfg.replace(layer_norm_position=args.layer_norm_position)
    if getattr(args, "attention_dropout", None) is not None:
        mcfg = (mcfg.replace(attention_dropout=args.attention_dropout)
                if isinstance(mcfg, ModernBertConfig) else
                mcfg.replace(attention_probs_dropout_prob=args.attention_dropout))
    return mcfg


def init_model_config(init: InitSource, args: Any, tok: WordPiece) -> ModelConfig:
    """The model of a run that starts from --init-from's weights: their config (the preset and
    --config do not apply), with --attention-dropout applied; refuses another vocabulary."""
    if init.tokenizer.fingerprint != tok.fingerprint:
        raise UserError(f"--init-from {init.path} has another vocabulary "
                        f"({init.tokenizer.vocab_size} entries) than this run's tokenizer "
                        f"({tok.vocab_size}); tokenize the data with the model's own: "
                        f"--tokenizer {init.tokenizer_dir}")
    mcfg = init.config
    arch = getattr(args, "arch", None)
    if arch and arch != arch_of(mcfg):
        raise UserError(f"--arch {arch}: the weights of {init.path} are {arch_of(mcfg)}; drop "
                        f"the flag")
    if (args.layer_norm_position and isinstance(mcfg, BertConfig)
            and args.layer_norm_position != mcfg.layer_norm_position):
        raise UserError(f"--layer-norm-position {args.layer_norm_position}: the weights of "
                        f"{init.path} are {mcfg.layer_norm_position}-LN; drop the flag")
    return _model_flags(args, mcfg, f"--init-from {init.path}")


# ---- data: tokenizer + shards, cached for a corpus --------------------------------------------

def _corpus_key(corpus: str, text_column: str | None = None, split: str | None = None) -> str:
    """A cache key for a corpus (bertcore.data.corpus.corpus_key)."""
    from bertcore.data.corpus import corpus_key

    return corpus_key(corpus, text_column, split)


def resolve_data(args: Any, progress: bool = True) -> tuple[WordPiece, Shards]:
    """The tokenizer and shards a run reads: --data, or --corpus tokenized once and cached."""
    if args.data:
        data = Path(args.data)
        if not data.exists():
            raise UserError(f"--data {data} does not exist; build it with "
                            f"python -m bertcore.data prepare --out {data}")
        tok = load_tokenizer(args.tokenizer or data / "tokenizer")
        return tok, Shards(data, tok)
    from bertcore.data.corpus import iter_documents

    column, split = getattr(args, "text_column", None), getattr(args, "split", None)
    key = _corpus_key(args.corpus, column, split)
    # One process builds a corpus's cache entries; another run started on the same corpus at the
    # same time (the other twin, say) waits for them instead of training a second tokenizer
    # (training is not bit-reproducible, docs/data.md) and tokenizing the corpus again.
    lock = cache_root() / "locks" / f"{key}-v{args.vocab_size}.lock"
    with file_lock(lock, lambda: logger.info(f"waiting for another process that is building the "
                                             f"cache for {args.corpus} (lock {lock})")):
        if args.tokenizer:
            tok = load_tokenizer(args.tokenizer)
        else:
            tok_dir = cache_root() / "tokenizers" / f"{key}-v{args.vocab_size}"
            remove_stale_temps(tok_dir)     # of builders killed before us (we hold the lock)
            if not (tok_dir / "tokenizer.json").is_file():
                logger.info(f"training a {args.vocab_size}-entry WordPiece tokenizer on "
                            f"{args.corpus} (once; cached in {tok_dir})")
                train_tokenizer(iter_documents(args.corpus, column, split),
                                args.vocab_size).save(tok_dir)
            tok = load_tokenizer(tok_dir)
        data = cache_root() / "shards" / f"{key}-{tok.fingerprint}"
        remove_stale_temps(data)
        if not dir_is_prepared(data):
            logger.info(f"tokenizing {args.corpus} into {data} (once)")
            stats = prepare(iter_documents(args.corpus, column, split), tok, data,
                            source=args.corpus, progress=progress)
            logger.info(f"  {stats.documents} documents, {stats.sentences} sentences, "
                        f"{stats.tokens} tokens in {stats.seconds:.1f}s "
                        f"({stats.mb_per_second:.1f} MB/s)")
    return tok, Shards(data, tok)


# ---- the run directory --------------------------------------------------------------------

class Run:
    """One training run's directory, configs, data and logging, for either twin."""

    def __init__(self, rundir: Path, framework: str, model_config: BertConfig,
                 train_config: TrainConfig, tokenizer: WordPiece, shards: Shards, resume: bool,
                 is_main: bool = True, progress: bool = True, files: RunDir | None = None,
                 report_to: tuple[str, ...] = ()):
        self.rundir, self.framework = rundir, framework
        self.files = files or RunDir(rundir)    # locked by setup_run on the main process
        self.model_config, self.train_config = model_config, train_config
        self.tokenizer, self.shards = tokenizer, shards
        self.resume, self.is_main = resume, is_main
        self.show_progress = progress and is_main
        self._bar: tqdm | None = None
        self._t_last = self._t_start = time.perf_counter()
        self._step_last = 0
        self.history: list[dict[str, Any]] = []
        self.init_source: InitSource | None = None   # --init-from, for a new run (not a resume)
        # --report-to's dashboards: opened by `start` on the main process only (the other
        # processes write no run files, and report nothing).
        self.report_to = report_to if is_main else ()
        self.reports = Reporters([])
        self.hf_dir: Path | None = None     # the export, once written (its card needs summary)

    @property
    def metrics_path(self) -> Path:
        return self.files.metrics_path

    @property
    def checkpoint_dir(self) -> Path:
        return self.files.checkpoint_dir

    def batches(self, rank: int = 0, world_size: int = 1,
                state: dict | None = None) -> BatchIterator:
        return BatchIterator(self.shards, self.tokenizer, self.train_config, rank=rank,
                             world_size=world_size, state=state)

    # ---- logging ------------------------------------------------------------------------

    def start(self, step: int) -> None:
        """Begin (or continue, after a resume) at optimizer step `step`."""
        self._step_last, self._t_last = step, time.perf_counter()
        self._t_start = self._t_last
        if not self.is_main:
            return
        # Lines logged after the checkpoint we resume from will be logged again.
        self.history = self.files.truncate_metrics(step)
        self.reports = Reporters.open(
            self.report_to, self.rundir,
            {"framework": self.framework, "task": "pretrain",
             "model": self.model_config.to_dict(), "train": self.train_config.to_dict()},
            step, [(m["step"], _tagged(m)) for m in self.history])
        if self.show_progress:
            self._bar = tqdm(total=self.train_config.steps, initial=step, unit="step",
                             desc=f"{self.framework}bert", dynamic_ncols=True)

    def reset_clock(self, step: int) -> None:
        """Measure throughput from now on (jaxbert calls it after the first, compiling step)."""
        self._step_last, self._t_last = step, time.perf_counter()

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Record the metrics after optimizer step `step` (1-based); stop if not finite.

        `metrics` are host floats. Adds tokens_per_second (B x L positions per second since the
        last log) and elapsed seconds."""
        now = time.perf_counter()
        c = self.train_config
        steps = step - self._step_last
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        row["tokens_per_second"] = steps * c.batch_size * c.seq_len / max(now - self._t_last,
                                                                             1e-9)
        row["elapsed"] = now - self._t_start
        self._t_last, self._step_last = now, step
        for k in ("loss", "grad_norm"):
            if k in row:
                self.guard(step, row[k], k)
        if self.is_main:
            self.files.append_metrics(row)
            self.history.append(row)
            self.reports.scalars(step, _tagged(row))
            if self._bar is not None:
                self._bar.set_postfix(loss=f"{row['loss']:.3f}",
                                      tok_s=f"{row['tokens_per_second']:.0f}", refresh=False)
                self._bar.update(step - self._bar.n)
        return row

    def export_hf(self, params: dict[str, Any]) -> Path | None:
        """RUNDIR/hf/: the model's final weights (HF names, numpy) as a Hugging Face directory
        with the tokenizer, written atomically by the main process. Either twin's
        --init-from and classify, transformers and fill-mask read it."""
        if not self.is_main:
            return None
        with atomic_path(self.rundir / "hf", is_dir=True) as tmp:
            save_hf_files(tmp, self.model_config, params, self.rundir / "tokenizer")
        self.hf_dir = self.rundir / "hf"
        return self.hf_dir

    # ---- held-out evaluation (bertcore.train.evaluation) ---------------------------------------

    def eval_batches(self, eval_data: str | None, n: int) -> list[dict] | None:
        """The run's fixed eval batches, or None when it has no held-out data."""
        shards = evaluation.eval_shards(eval_data, self.shards, self.tokenizer)
        if shards is None:
            return None
        self.note(f"evaluating on {n} fixed batches of {shards.path}")
        return evaluation.eval_batches(shards, self.tokenizer, self.train_config, n)

    def eval_due(self, step: int, last: int, every: int) -> bool:
        """Evaluate after this step? Every `every` steps (0: at each checkpoint) and at the end."""
        every = every or self.train_config.checkpoint_every
        return step % every == 0 or step == last

    def log_eval(self, step: int, row: dict[str, Any]) -> None:
        """Append an eval line (split "eval") to metrics.jsonl and show it above the bar."""
        row = {"step": step, **row}
        if self.is_main:
            self.files.append_metrics(row)
            self.history.append(row)
            self.reports.scalars(step, _tagged(row))
            self.note(f"eval @ step {step}: mlm_loss {row['mlm_loss']:.3f}, perplexity "
                      f"{row['perplexity']:.1f}, mlm_accuracy {row['mlm_accuracy']:.3f}")

    def guard(self, step: int, value: float, name: str = "loss") -> None:
        """Stop a diverged run (before it can write a checkpoint), keeping the last good one."""
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"{name} became {value} at step {step}; the last good checkpoint is kept in "
                f"{self.checkpoint_dir}. Lower --lr, raise --warmup-steps or use "
                f"--layer-norm-position pre, then --resume")

    def note(self, text: str) -> None:
        """A message to the user, from the main process only (the console handler writes it
        above the progress bar)."""
        if self.is_main:
            logger.info(text)

    def flush_reports(self) -> None:
        """Write the dashboards' buffered points (at each checkpoint: a run killed later keeps
        its curves up to there, which is where --resume continues them)."""
        self.reports.flush()

    def close_reports(self, failed: bool = False) -> None:
        """Close the dashboards (`finish` does; the loop again when a step raised: `failed`)."""
        self.reports.close(failed)

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write summary.json and loss.png, the run's last files, close the dashboards and let
        go of RUNDIR's lock; return the summary."""
        if self._bar is not None:
            self._bar.close()
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
        self.files.write_file("summary.json", json.dumps(summary, indent=2) + "\n")
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
        """hf/README.md: the export's model card (bertcore.card), from the run's summary."""
        from bertcore.card import pretraining_card, run_corpus, write_model_card

        info = self.files.info()
        write_model_card(self.hf_dir, pretraining_card(
            self.hf_dir, self.model_config, framework=self.framework, name=self.rundir.name,
            train=summary["train_config"], steps=summary["steps"], corpus=run_corpus(info),
            data=info.get("data"), init_from=info.get("init_from"),
            learned_line=learned_line, held_out=summary["learned"].get("eval"),
            train_seconds=summary.get("train_seconds")))


def _tagged(row: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl row's dashboard scalars: train/loss, ..., eval/mlm_loss, ..."""
    return tagged(row, row.get("split", "train"))


# ---- set-up ---------------------------------------------------------------------------------

# The flags that may change on --resume: the rest decide what the next batch and update are.
RESUMABLE_CHANGES = ("steps", "log_every", "checkpoint_every", "keep_checkpoints")


def model_changes(args: Any, run: RunFiles) -> list[str]:
    """The model flags given to --resume that would build another model than the run's (a run
    started --init-from took its model from those weights: --preset and --config never applied).
    A preset names a depth, width and head count; a --config file, every field."""
    saved, changed = run.config, []
    modern = isinstance(saved, ModernBertConfig)
    arch = getattr(args, "arch", None)
    if arch and arch != arch_of(saved):
        changed.append("arch")
    if not run.info.get("init_from"):
        if args.config:
            given = load_model_config(args.config)
            # what --layer-norm-position and --attention-dropout set is compared on its own
            if type(given) is not type(saved) or (
                    given.replace(attention_dropout=saved.attention_dropout) if modern else
                    given.replace(layer_norm_position=saved.layer_norm_position,
                                  attention_probs_dropout_prob=saved.attention_probs_dropout_prob)
            ) != saved:
                changed.append("config")
        elif args.preset and ((MODERNBERT_PRESETS if modern else PRESETS)[args.preset][:3]
                              != (saved.num_hidden_layers, saved.hidden_size,
                                  saved.num_attention_heads)):
            changed.append("preset")
    if args.layer_norm_position and (modern or
                                     args.layer_norm_position != saved.layer_norm_position):
        changed.append("layer_norm_position")
    dropout = getattr(args, "attention_dropout", None)
    if dropout is not None and dropout != (saved.attention_dropout if modern else
                                           saved.attention_probs_dropout_prob):
        changed.append("attention_dropout")
    return changed


def _inputs(args: Any) -> dict[str, Any]:
    """The paths a run reads, by flag (for bertcore.files.check_apart)."""
    corpus = getattr(args, "corpus", None)
    return {"--corpus": None if corpus in (None, "builtin", "imdb") else corpus,
            "--data": args.data, "--tokenizer": args.tokenizer,
            "--eval-data": getattr(args, "eval_data", None),
            "--init-from": getattr(args, "init_from", None), "--config": args.config}


def setup_run(args: Any, framework: str, is_main: bool = True) -> Run:
    """Check every flag, resolve configs and data, then lock and prepare RUNDIR (nothing is
    written there before all checks pass). Data-parallel jobs call it on the main process first
    and on the others after a barrier (they only read what it wrote)."""
    arch = "modernbert-" if getattr(args, "arch", None) == "modernbert" else ""
    rundir = Path(args.out or f"runs/{framework}bert-{arch}{args.preset or DEFAULT_PRESET}")
    files = RunDir(rundir)
    progress = not getattr(args, "no_progress", False)

    if not is_main:
        # Another data-parallel process: the main one has already set RUNDIR up (it runs
        # first, behind a barrier), so read what it wrote instead of checking again.
        saved = files.read()
        tok = load_tokenizer(rundir / "tokenizer")
        return Run(rundir, framework, saved.config, saved.train, tok,
                   Shards(saved.info["data"], tok), args.resume, is_main=False,
                   progress=progress, files=files)
    check_train_args(args)
    check_apart(rundir, _inputs(args))
    # data flags resolved here (a cleared cache rebuilt) stay out of the caller's namespace
    data_args = SimpleNamespace(**vars(args))
    init = None
    if args.resume:
        check_resume_args(args, files)   # who holds RUNDIR first, then data the run would ignore
        files.check_run_file()
        if not files.is_run():
            raise UserError(f"--resume: {rundir} holds no run to resume (no run.json); drop "
                            f"--resume to start a new run there")
        saved = files.read()
        if saved.framework != framework:
            raise UserError(
                f"{rundir} is a {saved.framework}bert run; resume it with python -m "
                f"{saved.framework}bert.train, or convert it with python -m parity.convert "
                f"{rundir} NEW_RUNDIR --to {framework}")
        if not files.has_checkpoint():
            raise UserError(f"--resume: {files.checkpoint_dir} has no checkpoint yet; drop "
                            f"--resume to start the run again")
        info, model_config = saved.info, saved.config
        train_config = train_config_from_args(args, saved.train)
        changed = [k for k in TRAIN_FIELDS if getattr(train_config, k) != getattr(saved.train, k)
                   and k not in RESUMABLE_CHANGES] + model_changes(args, saved)
        if changed:
            raise UserError(f"--resume with changed settings ({', '.join(changed)}); resume "
                            f"with the run's own settings or start a new run with --out")
        if train_config.steps != saved.train.steps and saved.train.schedule in ("linear",
                                                                                 "cosine"):
            # The schedule's total is --steps: another total would change every later rate.
            raise UserError(f"--resume with --steps {train_config.steps}: the run's "
                            f"{saved.train.schedule} learning-rate schedule decays to 0 at its "
                            f"--steps {saved.train.steps}, so another total would change the "
                            f"rate of every step from here; resume with --steps "
                            f"{saved.train.steps} (--stop-after N stops a job early), or start "
                            f"a new run")
        tok = load_tokenizer(rundir / "tokenizer")
        data = Path(info["data"])
        if not dir_is_prepared(data) and not info.get("corpus"):
            # A --data run: its prepared directory is the user's, and only they can bring it back.
            raise UserError(f"--resume: the run's data directory {data} is missing or incomplete; "
                            f"restore it, or prepare it again with the run's tokenizer: python -m "
                            f"bertcore.data prepare --corpus CORPUS --tokenizer {rundir}/tokenizer "
                            f"--out {data}")
        if not dir_is_prepared(data):
            # The cached shards were cleared: rebuild them from the run's corpus.
            data_args.data, data_args.tokenizer = None, str(rundir / "tokenizer")
            data_args.corpus = info["corpus"]
            data_args.text_column, data_args.split = info.get("text_column"), info.get("split")
            tok, shards = resolve_data(data_args, progress)
        else:
            shards = Shards(data, tok)
    else:
        files.check_target(args.overwrite)   # before the data work: refuse early
        init = (resolve_init(args.init_from, framework, fallback_tokenizer=args.tokenizer)
                if getattr(args, "init_from", None) else None)
        if init is not None and not args.data and not args.tokenizer:
            data_args.tokenizer = str(init.tokenizer_dir)   # tokenize --corpus with its vocab
        tok, shards = resolve_data(data_args, progress)
        if init is None:
            model_config = model_config_from_args(args, tok)
        else:
            model_config = init_model_config(init, args, tok)
        train_config = train_config_from_args(args)
        if isinstance(model_config, ModernBertConfig):
            # ModernBERT has no next-sentence head (nor RoBERTa's lineage before it): MLM only,
            # whether or not --no-nsp was given.
            train_config = train_config.replace(nsp=False)
        info = {"framework": framework, "data": str(shards.path.resolve()),
                "corpus": args.corpus if not args.data else None,
                # --text-column and --split as given (None: the default), to rebuild the cache
                **{k: getattr(args, k, None) for k in ("text_column", "split")
                   if not args.data and getattr(args, k, None) is not None},
                "init_from": str(init.path.resolve()) if init is not None else None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if model_config.vocab_size != tok.vocab_size:
        raise UserError(f"the model's vocab_size={model_config.vocab_size} differs from the "
                        f"tokenizer's {tok.vocab_size}; use the tokenizer the model was made for")
    train_config.validate(model_config)
    held_out = evaluation.eval_shards(getattr(args, "eval_data", None), shards, tok)
    if held_out is None and getattr(args, "eval_every", 0):
        raise UserError(f"--eval-every {args.eval_every}: this run has no held-out data to "
                        f"evaluate on; pass --eval-data DATADIR (or prepare the data with "
                        f"--eval-fraction F), or drop --eval-every")

    # Every check has passed: from here on RUNDIR is ours alone, and written.
    files.lock()
    try:
        if args.resume:
            files.write_file("train_config.json", json.dumps(
                train_config.to_dict(), indent=2, sort_keys=True) + "\n")
        else:
            files.check_target(args.overwrite)   # again: another process may have been quicker
            files.create(info, {
                "config.json": lambda p: model_config.to_json_file(p),
                "train_config.json": lambda p: train_config.to_json_file(p),
                "tokenizer": tok.save})
    except BaseException:
        files.discard()
        raise
    run = Run(rundir, framework, model_config, train_config, tok, shards, args.resume,
              progress=progress, files=files,
              report_to=parse_report_to(getattr(args, "report_to", None)))
    full = round(train_config.mask_prob * (train_config.seq_len - 3))  # [CLS] and two [SEP]
    if not args.resume and full > train_config.max_predictions:
        # Masking predicts min(mask-prob of the tokens, P) a sequence (bertcore.data.masking):
        # a higher --mask-prob (ModernBERT's and RoBERTa's 30%) wants a larger P to take effect.
        run.note(f"--mask-prob {train_config.mask_prob:g} of a full {train_config.seq_len}-token "
                 f"sequence is {full} predictions, but --max-predictions "
                 f"{train_config.max_predictions} caps it; pass --max-predictions {full} for "
                 f"the full rate")
    if not args.resume:
        run.init_source = init
        if init is not None:
            run.note(f"starting from the weights of {init.path} (not its optimizer, step or "
                     f"data position){'; ' + init.note if init.note else ''}")
    return run
