"""The command-line flags both `python -m torchbert.train` and `python -m jaxbert.train` take.

One parser for both twins, so their flags cannot drift apart; each twin adds its own few
(`--device`/`--compile` in torch, `--parallel` and multi-host flags in jax).
Training flags default to None here and fall back to `TrainConfig`'s defaults in
`bertcore.train.run.train_config_from_args`, so `--resume` can tell which flags the user really
gave.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

try:
    import fcntl
except ImportError:     # Windows: no advisory locks (bertcore.infra.files takes none either)
    fcntl = None

from bertcore.model.config import ARCHS, ELECTRA_PRESETS, SCHEDULES, TrainConfig
from bertcore.data.hfdata import add_dataset_flags
from bertcore.infra.errors import HelpFormatter, UserError
from bertcore.infra.files import Locked
from bertcore.infra.flags import check_flags
from bertcore.model.sizes import check_vocab_size
from bertcore.train.recipes import RECIPES, apply_recipe, recipe_help
from bertcore.train.report import REPORT_TO_HELP, parse_report_to
from bertcore.train.rundir import LOCK_FILE, RunDir
from bertcore.train.stopping import Stopper, add_stopping_flags

logger = logging.getLogger(__name__)

_D = TrainConfig()  # the defaults shown in --help
DEFAULT_PRESET = "tiny"
DTYPES = {"auto": "auto", "fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16"}


def _dtype(name: str) -> str:
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"{name!r}: choose auto, fp32 or bf16")
    return DTYPES[name]


def resolve_dtype(name: str, accelerator: bool) -> str:
    """'fp32' or 'bf16' for --dtype NAME: auto is bf16 on an accelerator, fp32 on a CPU (where
    bf16 matmuls are emulated and slower, and fp32 keeps the parity bars)."""
    name = DTYPES[name]
    return ("bf16" if accelerator else "fp32") if name == "auto" else name


def resolve_pad_vocab(multiple: int | None, accelerator: bool) -> int:
    """--pad-vocab M: M as given (at least 1), else 64 on an accelerator and 1 (off) on a CPU,
    where an odd-sized matmul costs nothing extra and padding would only add a copy."""
    if multiple is None:
        return 64 if accelerator else 1
    if multiple < 1:
        raise UserError(f"--pad-vocab {multiple}: use a positive multiple (1 turns padding off)")
    return multiple


def check_train_args(args: argparse.Namespace) -> None:
    """The flag stage of both twins' train command: every flag on its own (each number against
    bertcore.infra.flags.RANGES, the table ClassifyConfig and TrainConfig share) and together (a new
    run's TrainConfig, the flags that contradict or would be ignored), with no file read or
    written. The parser runs it as it parses (TrainParser), before the twin picks a device or
    joins other processes; `setup_run` runs it again for a namespace made without the parser."""
    def at_least(name: str, low: int) -> None:
        v = getattr(args, name, None)
        if v is not None and (not isinstance(v, int) or v < low):
            raise UserError(f"--{name.replace('_', '-')} {v} must be at least {low}")

    at_least("eval_every", 0)
    at_least("eval_batches", 1)
    at_least("stop_after", 1)
    resolve_pad_vocab(getattr(args, "pad_vocab", None), accelerator=False)
    check_flags(args)
    check_vocab_size(getattr(args, "vocab_size", None))   # before the tokenizer trainer runs
    resume = getattr(args, "resume", False)
    if resume and getattr(args, "overwrite", False):
        raise UserError("--resume continues the run in RUNDIR and --overwrite deletes it to "
                        "start over; give one of them")
    if getattr(args, "init_from", None) and getattr(args, "config", None):
        raise UserError(f"--init-from {args.init_from} takes the model's config from its "
                        f"weights, so --config {args.config} would be ignored; drop --config (or "
                        f"--init-from)")
    _check_processes(args)
    _check_arch_flags(args)
    if not resume:
        # A new run's settings together (a resumed run's are checked against the run's own).
        given = {k: getattr(args, k) for k in _TRAIN_FIELDS if getattr(args, k, None) is not None}
        cfg = TrainConfig().replace(**given)
        stop_after = getattr(args, "stop_after", None)
        if stop_after is not None and stop_after > cfg.steps:
            raise UserError(f"--stop-after {stop_after} is beyond --steps {cfg.steps}: the "
                            f"run ends at step {cfg.steps} first; lower --stop-after or raise "
                            f"--steps")
    Stopper.from_args(args)
    parse_report_to(getattr(args, "report_to", None))   # a missing package: refused now


_TRAIN_FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
ELECTRA_FLAGS = ("generator_size", "generator_layers", "disc_weight")


def _check_arch_flags(args: argparse.Namespace) -> None:
    """Flags that only one architecture reads, given with another --arch: refused, not ignored.
    (Without --arch, a --config or --init-from may still be ELECTRA: configs.py checks those.)"""
    arch = getattr(args, "arch", None)
    if arch in (None, "electra"):
        return
    given = [f for f in ELECTRA_FLAGS if getattr(args, f, None) is not None]
    if given:
        raise UserError(f"--{given[0].replace('_', '-')} applies to --arch electra; this run is "
                        f"--arch {arch}: drop the flag")
    if getattr(args, "preset", None) == "electra-small":
        raise UserError(f"--preset electra-small is ELECTRA-Small; with --arch {arch} pick one "
                        f"of tiny, mini, small, medium, base, large")


def _check_processes(args: argparse.Namespace) -> None:
    """jaxbert's multi-host flags: all three or none, and a process id below their number."""
    n, i = getattr(args, "num_processes", None), getattr(args, "process_id", None)
    coordinator = getattr(args, "coordinator", None)
    if n is None and i is None and not coordinator:
        return
    if not (coordinator and n is not None and i is not None):
        given = " ".join(f"{f} {v}" for f, v in (("--coordinator", coordinator),
                                                 ("--num-processes", n), ("--process-id", i))
                         if v is not None)
        raise UserError(f"{given}: multi-host needs all of --coordinator HOST:PORT, "
                        f"--num-processes N and --process-id I (on one machine, drop them)")
    if i >= n:
        raise UserError(f"--process-id {i} is out of range for --num-processes {n}: give each "
                        f"process an id from 0 to {n - 1}")


def check_unheld(rundir: Path) -> None:
    """Refuse a RUNDIR whose lock (bertcore.train.rundir.RunDir.lock) another process holds,
    naming that process: what `--resume` says first, before it looks for run.json or a
    checkpoint (which a run that has just started has not written yet). Reads only."""
    if fcntl is None:
        return
    try:
        f = open(Path(rundir) / LOCK_FILE, encoding="utf-8")   # never created here
    except OSError:
        return      # no lock file: nobody holds it
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = f.read().strip() or "unknown"
            raise Locked(f"run directory {rundir} is in use by another process (pid {pid}); wait "
                         f"for it to end or stop it, then --resume") from None
        fcntl.flock(f, fcntl.LOCK_UN)


def same_path(a: str | Path, b: str | Path) -> bool:
    """Do two paths, as given, name the same file (or are the same string)?"""
    return str(a) == str(b) or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def check_resume_args(args: argparse.Namespace, files: RunDir) -> None:
    """The --resume checks that need RUNDIR (after the flag stage, before anything else reads
    the run): another process holding it is named first; then --data, --corpus or --init-from
    other than the run's are refused (a resumed run keeps its own: they would be ignored)."""
    check_unheld(files.path)
    if not files.is_run():
        return      # setup_run says what is missing
    info = files.info()
    data = getattr(args, "data", None)
    if data and not same_path(data, info.get("data") or ""):
        raise UserError(f"--resume: the run trains on {info.get('data')}, not --data {data} "
                        f"(a resumed run keeps its data); drop --data, or start a new run with "
                        f"--out")
    corpus = getattr(args, "corpus", None)
    if getattr(args, "corpus_given", False) and not data:
        run_corpus = info.get("corpus")
        if run_corpus is None:
            raise UserError(f"--resume: the run trains on its --data {info.get('data')}, not "
                            f"--corpus {corpus} (a resumed run keeps its data); drop --corpus")
        if not same_path(corpus, run_corpus):
            raise UserError(f"--resume: the run trains on --corpus {run_corpus}, not --corpus "
                            f"{corpus} (a resumed run keeps its data); drop --corpus, or start "
                            f"a new run with --out")
    init = getattr(args, "init_from", None)
    if init and not (info.get("init_from") and same_path(init, info["init_from"])):
        started = (f"started from {info['init_from']}" if info.get("init_from") else
                   "started from fresh weights")
        raise UserError(f"--resume: the run {started}, and goes on from its own checkpoint; "
                        f"drop --init-from {init}")


class TrainParser(argparse.ArgumentParser):
    """The training parser: after parsing, `--recipe`'s flags fill the ones not given."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        # --corpus defaults to None here so that --resume can tell it was given
        ns.corpus_given = ns.corpus is not None
        ns.corpus = ns.corpus or "builtin"
        ns = apply_recipe(ns)
        check_train_args(ns)     # the flag stage: before anything is read or written
        steps = ns.steps or _D.steps
        if ns.warmup_steps is not None and ns.warmup_steps > steps and not ns.resume:
            # Warned, not refused: `--recipe budget --steps 100` (its warmup is 200) is a fair
            # way to try a recipe, and the recipe's flags written out must behave the same.
            logger.warning(f"warning: --warmup-steps {ns.warmup_steps} is beyond --steps "
                           f"{steps}: the learning rate never reaches its peak --lr "
                           f"{ns.lr or _D.lr:g}")
        return ns, rest


def train_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = TrainParser(
        prog=prog, description=description,
        formatter_class=HelpFormatter,
        epilog="With no arguments: trains the 'tiny' preset for a few minutes on the built-in "
               "corpus, to a loss below its word frequencies' (tokenizer and shards are built once "
               "and cached in $TWINBERT_CACHE or ~/.cache/twinbert).")
    m = p.add_argument_group("model")
    # No default here either ("bert" applies): --resume must tell a given --arch from none.
    m.add_argument("--arch", default=None, choices=list(ARCHS),
                   help="bert (2018: learned positions, post-LN, NSP) | modernbert (Warner et al. "
                        "2024: RoPE, pre-norm, GeGLU, local/global attention, MLM only) | electra "
                        "(Clark et al. 2020: a small generator fills the masked slots, the encoder "
                        "learns to spot replaced tokens, from every token) [bert]")
    # No default here (DEFAULT_PRESET applies): --resume must tell a given --preset from none.
    m.add_argument("--preset", default=None, choices=list(ELECTRA_PRESETS),
                   help=f"model size (Google's BERT miniatures, base, large; for --arch "
                        f"modernbert and electra the same depths and widths, base and large as "
                        f"published; electra-small: ELECTRA-Small as published, --arch electra) "
                        f"[{DEFAULT_PRESET}]; tiny is the no-argument demo, mini and up want more "
                        f"steps than a few minutes' worth")
    m.add_argument("--config", metavar="CONFIG_JSON",
                   help="a Hugging Face BERT or ModernBERT config.json instead of --preset (its "
                        "model_type picks the architecture)")
    m.add_argument("--generator-size", type=float, metavar="F",
                   help="--arch electra: the generator's width as a fraction of the "
                        "discriminator's (the paper's best: 1/4 to 1/2) [0.25]")
    m.add_argument("--generator-layers", type=float, metavar="F",
                   help="--arch electra: the generator's depth as a fraction of the "
                        "discriminator's [1.0]")
    m.add_argument("--layer-norm-position", choices=["post", "pre"], default=None,
                   help="post = original BERT (default); pre = pre-LN variant")
    m.add_argument("--init-from", metavar="RUNDIR|HF_DIR",
                   help="start from these weights (not their optimizer, step or data position): "
                        "a run of this twin, a run of the other twin (its RUNDIR/hf export), or a "
                        "Hugging Face BERT or ModernBERT directory; the model's own config and "
                        "tokenizer apply")
    m.add_argument("--attention-dropout", type=float, metavar="P",
                   help="attention_probs_dropout_prob (ModernBERT: attention_dropout) (default: "
                        "the preset's 0.1; ModernBERT's 0). 0 lets training "
                        "use the fused attention kernels (MosaicBERT's and Cramming's choice); "
                        "above 0, jaxbert (and torchbert on a CPU) computes the [B, N, L, L] "
                        "probabilities explicitly")

    c = p.add_argument_group("compute")
    c.add_argument("--dtype", default="auto", type=_dtype,
                   help="compute dtype: auto (bf16 on GPU/TPU, fp32 on CPU) | fp32 | bf16; "
                        "parameters and optimizer state stay fp32")
    c.add_argument("--remat", action="store_true",
                   help="activation checkpointing: recompute each encoder layer in the backward "
                        "pass instead of storing its activations (less memory, ~1/3 more compute)")
    c.add_argument("--pad-vocab", type=int, metavar="M",
                   help="run the MLM decoder matmul on the vocabulary padded with zero rows to a "
                        "multiple of M (aligned tensor-core tiles); weights, checkpoints and "
                        "exports keep the true vocabulary and the loss is unchanged (default: 64 "
                        "on GPU/TPU, 1 = off on CPU)")

    d = p.add_argument_group("data")
    d.add_argument("--corpus", default=None,
                   help="builtin | imdb | an aclImdb dir | a .txt/.jsonl/.parquet/.arrow file or "
                        "folder | a directory saved with datasets' save_to_disk | "
                        "hf:NAME[:CONFIG] (a Hub dataset, streamed); tokenized once and cached "
                        "(ignored with --data) [builtin]")
    add_dataset_flags(d)
    d.add_argument("--data", metavar="DATADIR",
                   help="a directory made by `python -m bertcore.data prepare`")
    d.add_argument("--tokenizer", metavar="TOKDIR",
                   help="tokenizer directory (default: the one in DATADIR, or one trained on "
                        "--corpus and cached)")
    d.add_argument("--eval-data", metavar="DATADIR",
                   help="held-out data to evaluate on (default: the split `prepare "
                        "--eval-fraction` wrote beside the training data, if any)")
    d.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="steps between evaluations (0: at every checkpoint and at the end)")
    d.add_argument("--eval-batches", type=int, default=20, metavar="K",
                   help="fixed held-out batches per evaluation")
    d.add_argument("--vocab-size", type=int, default=4096,
                   help="vocabulary size when a tokenizer has to be trained for --corpus (4096 "
                        "suits the small built-in corpus; BERT's is 30522)")

    t = p.add_argument_group("training (defaults from bertcore.model.config.TrainConfig)")
    t.add_argument("--recipe", choices=list(RECIPES), help=recipe_help())
    t.add_argument("--steps", type=int, help=f"optimizer steps [{_D.steps}]")
    t.add_argument("--batch-size", type=int,
                   help=f"global batch, all ranks and accumulation steps together "
                        f"[{_D.batch_size}]")
    t.add_argument("--seq-len", type=int, help=f"tokens per sequence [{_D.seq_len}]")
    t.add_argument("--max-predictions", type=int,
                   help=f"MLM slots per sequence, P [{_D.max_predictions}]")
    t.add_argument("--mask-prob", type=float, help=f"share of tokens to predict [{_D.mask_prob}]")
    t.add_argument("--mask-replace-prob", type=float, metavar="P",
                   help=f"share of the chosen slots set to [MASK] [{_D.mask_replace_prob}; "
                        f"--arch electra: 0.85]")
    t.add_argument("--random-replace-prob", type=float, metavar="P",
                   help=f"share of the chosen slots set to a random token (the rest keep "
                        f"theirs) [{_D.random_replace_prob}; --arch electra: 0]")
    t.add_argument("--disc-weight", type=float, metavar="W",
                   help=f"--arch electra: loss = generator MLM + W x discriminator "
                        f"[{_D.disc_weight}, the paper's]")
    t.add_argument("--whole-word-mask", action="store_true", default=None,
                   help="mask every piece of a chosen word together")
    t.add_argument("--no-nsp", dest="nsp", action="store_false", default=None,
                   help="MLM only: no next-sentence prediction")
    t.add_argument("--lr", type=float, help=f"peak learning rate [{_D.lr}]")
    t.add_argument("--schedule", choices=list(SCHEDULES), help=f"LR schedule [{_D.schedule}]")
    t.add_argument("--warmup-steps", type=int, help=f"[{_D.warmup_steps}]")
    t.add_argument("--weight-decay", type=float,
                   help=f"AdamW decay, not on biases/LayerNorm [{_D.weight_decay}]")
    t.add_argument("--beta1", type=float, help=f"[{_D.beta1}]")
    t.add_argument("--beta2", type=float, help=f"[{_D.beta2}]")
    t.add_argument("--eps", type=float, help=f"AdamW epsilon [{_D.eps}]")
    t.add_argument("--grad-clip", type=float,
                   help=f"max global grad norm, 0 = off [{_D.grad_clip}]")
    t.add_argument("--grad-accum", type=int, help=f"micro-batches per step [{_D.grad_accum}]")
    t.add_argument("--no-dropout", dest="dropout", action="store_false", default=None,
                   help="turn dropout off (exact comparisons between runs and twins)")
    t.add_argument("--seed", type=int, help=f"seeds init, data and dropout [{_D.seed}]")

    r = p.add_argument_group("run directory")
    r.add_argument("--out", metavar="RUNDIR",
                   help="where config, metrics, checkpoints go (default: runs/<twin>-<preset>; "
                        "--arch modernbert or electra: runs/<twin>-<arch>-<preset>)")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in RUNDIR from its latest checkpoint")
    r.add_argument("--overwrite", action="store_true",
                   help="delete an existing run in RUNDIR and start over")
    r.add_argument("--log-every", type=int, help=f"steps between metrics lines [{_D.log_every}]")
    r.add_argument("--checkpoint-every", type=int, help=f"[{_D.checkpoint_every}]")
    r.add_argument("--keep-checkpoints", type=int,
                   help=f"newest checkpoints kept [{_D.keep_checkpoints}]")
    r.add_argument("--stop-after", type=int, metavar="N",
                   help="checkpoint and exit after step N (split a run into jobs; --resume "
                        "continues it exactly)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    r.add_argument("--report-to", default="none", metavar="NAME[,NAME]",
                   help=REPORT_TO_HELP)

    add_stopping_flags(p)
    return p
