"""The agreement report's command line: torchbert vs jaxbert vs Hugging Face, in one process.

    python -m parity.check [--preset tiny|mini] [--steps 100] [--out DIR]
                           [--layer-norm-position post|pre|both]
                           [--arch bert|modernbert|electra|all]

fp32 on CPU. One initialisation (torch's, converted to Flax with bertcore/model/hf.py's table), one
stream of bertcore batches (a small synthetic corpus), and then, for each LayerNorm position:

    forward      hidden states, pooled output, sparse + dense MLM logits, NSP logits
                 (torch vs jax, and each vs transformers.BertForPreTraining, post-LN only, or vs
                 ModernBertForMaskedLM); ELECTRA: discriminator and generator logits, each twin
                 vs transformers' ElectraForPreTraining / ElectraForMaskedLM from its export
    samples      ELECTRA: the generator's sampled tokens, twins vs bertcore's numpy reference
    loss         twins (and HF's own loss from labels), relative
    gradients    per tensor ||g_t - g_j|| / ||g_t||, worst tensor reported
    AdamW step   one step of each twin's own train_step/make_optimizer (decay mask, clipping,
                 schedule): updated parameters
    curves       N steps from the same init and batches, relative at every step
    resume       torch N/2 -> parity.convert (files on disk) -> jax N/2 vs torch N; and reverse
    dropout on   mean loss of both twins over N steps within a statistical tolerance

Every bar comes from parity/thresholds.py. Writes report.md, report.json and loss_curves.png into
--out (default runs/parity-<preset>); exits 1 if any row fails.

This module is the command line and run_check; the parts: cases.py (presets, the Case, both twins
built from it), model_rows.py (forward, loss, gradients, AdamW step), curve_rows.py (curves,
resume, dropout statistics), electra_rows.py (ELECTRA's forward, samples, loss and gradients),
report.py (rows, table, plot, files). XLA matmuls run at "highest"
precision only inside the row functions (cases.highest_precision says why).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import tempfile
import time
from pathlib import Path

import jax
import torch

from bertcore.infra.errors import cli_entry, notes_to_stderr

from .cases import PRESETS, make_case
from . import electra_rows
from .curve_rows import bf16_rows, dropout_rows, training_rows
from .model_rows import adamw_rows, eval_rows, forward_rows, loss_grad_rows
from .report import Report, write_report

logger = logging.getLogger(__name__)
ARCHS = ("bert", "modernbert", "electra", "all")


def row_parts(variant: str, curves: dict) -> tuple:
    """The row functions of one variant, in report order. ELECTRA's first rows are its own
    (two models, the samples, the pair's loss); from eval on, every variant's are the same."""
    if variant == "electra":
        first = (electra_rows.forward_rows, electra_rows.sampling_rows,
                 electra_rows.loss_grad_rows)
    else:
        first = (forward_rows, loss_grad_rows)
    return first + (eval_rows, adamw_rows, functools.partial(training_rows, curves=curves),
                    functools.partial(dropout_rows, curves=curves), bf16_rows)


def run_check(preset: str = "tiny", steps: int = 100, positions=("post", "pre"),
              workdir: Path | None = None, seed: int = 0, threads: int | None = None,
              ) -> Report:
    """Every row for `preset` and each LayerNorm position. `threads` sets torch's intra-op
    threads for the run (1 is fastest on a busy small machine, where spinning OpenMP threads
    fight other processes), restored afterwards."""
    report = Report(preset, steps)
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="parity-") as tmp, \
                jax.default_device(jax.devices("cpu")[0]):
            work = Path(workdir or tmp)
            for ln in positions:
                case = make_case(preset, ln, work, steps, seed)
                curves: dict = {}
                for part in row_parts(ln, curves):
                    t = time.perf_counter()
                    rows = part(case)
                    report.rows += rows
                    name = getattr(part, "func", part).__name__
                    logger.info(f"[{preset}/{ln}] {name}: {sum(r.passed for r in rows)}/"
                                f"{len(rows)} pass ({time.perf_counter() - t:.1f}s)")
                report.curves[ln] = curves
    finally:
        torch.set_num_threads(old_threads)
    report.seconds = time.perf_counter() - t0
    return report


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m parity.check",
        description="Agreement report of torchbert, jaxbert and transformers' BertForPreTraining "
                    "(or ModernBertForMaskedLM, or ElectraForPreTraining + ElectraForMaskedLM) "
                    "(fp32 CPU): forward, loss, gradients, one AdamW step, training curves, "
                    "cross-framework resume, dropout statistics. Exit status 1 if a row fails.",
        epilog="Time on a busy 2-core CPU with --threads 1: tiny about 1.5 minutes, mini about 8 "
               "(most of it the 100-step runs: 250 steps per twin and LayerNorm position).")
    p.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model size [tiny]")
    p.add_argument("--steps", type=int, default=100, help="training steps for the curves [100]")
    p.add_argument("--layer-norm-position", default="both", choices=["post", "pre", "both"],
                   help="which BERT variants to check [both]")
    p.add_argument("--arch", default="bert", choices=list(ARCHS),
                   help="bert (the --layer-norm-position variants), modernbert (ModernBERT vs "
                        "the twins and transformers' ModernBertForMaskedLM), electra (the "
                        "generator + discriminator pair vs transformers' ElectraForMaskedLM and "
                        "ElectraForPreTraining) or all [bert]")
    p.add_argument("--seed", type=int, default=0, help="init, data and dropout seed [0]")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads [torch's default; 1 is best on a busy machine]")
    p.add_argument("--out", help="report directory [runs/parity-<preset>]")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2 (the resume rows split the run in halves)")
    return args


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    from jaxbert.runtime import enable_compilation_cache
    enable_compilation_cache()   # the twins' XLA programs compile once per machine, not per run
    positions = ("post", "pre") if args.layer_norm_position == "both" else \
        (args.layer_norm_position,)
    positions = {"bert": positions, "modernbert": ("modernbert",), "electra": ("electra",),
                 "all": positions + ("modernbert", "electra")}[args.arch]
    notes_to_stderr()   # stdout is the report table; progress goes to stderr
    report = run_check(args.preset, args.steps, positions, seed=args.seed, threads=args.threads)
    out = Path(args.out or f"runs/parity-{args.preset}")
    write_report(report, out)
    print(report.table())
    print(f"\n{sum(r.passed for r in report.rows)}/{len(report.rows)} rows pass; report and plot "
          f"in {out}/ (report.md, loss_curves.png)")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
