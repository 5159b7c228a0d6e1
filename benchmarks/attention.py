"""jaxbert's two attention paths timed against each other, paired in one process.

    python -m benchmarks.attention [--arch bert|modernbert] [--preset mini] [--batch-size 32]
                                   [--seq-len 128] [--max-predictions 20] [--vocab-size 30522]
                                   [--steps 20] [--warmup 2] [--corpus builtin]

jaxbert's attention has two paths with the same math (tests/test_jax_model.py checks they agree):
`jax.nn.dot_product_attention`, which it runs whenever there is no attention dropout to apply
(evaluation, fill-mask, classify's predictions, ModernBERT, `--no-dropout`), and the explicit
softmax it runs when training with attention dropout (`attention_probs`, then the product with
v). Which is faster on this machine? Here both are compiled from the same model with dropout off
(the explicit one by handing the model the explicit path in place of the op while it is traced)
and then called in alternation, the order flipped every step, so the machine's drift, which on
a shared 2-core VM can be larger than the difference, falls out of the paired ratio.

Timed per path: a training step (benchmarks.contenders' jaxbert step: forward, backward, AdamW,
as the throughput table runs it) and the evaluation forward (jaxbert.step.eval_step: encoder and
MLM head at the masked positions). Printed: median milliseconds per call, the median of the
step-by-step ratios explicit / op (below 1: the explicit softmax is faster), how many attention
calls the explicit compilations traced (the proof the swap took), and how far apart the two
paths' training losses drifted over the run (same weights, same batches: float rounding only).
A retrace while timing (which would compile the op where the explicit path was meant) is an
error.

On the installed jax, `dot_product_attention` with `implementation=None` is XLA's own lowering
on every backend (the cuDNN kernel is only taken when asked for by name), so the two paths
differ only in how the op arranges the same products: it folds heads into groups (for
grouped-query attention) and vmaps over them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time
from typing import Any, Callable
from unittest import mock

import numpy as np

PATHS = ("op", "explicit")
TRACED = {"explicit": 0}   # attention calls the step and forward traced through explicit_attention


def explicit_attention(q, k, v, mask=None, local_window_size=None):
    """What jaxbert's attention modules compute on their dropout path, with the arguments they
    pass jax.nn.dot_product_attention (any other is a TypeError, not silently dropped)."""
    import jax.numpy as jnp

    from bertcore.model.attention import window_mask
    from jaxbert.model import attention_probs

    TRACED["explicit"] += 1
    if local_window_size is not None:   # (half, half): |i - j| <= half, ModernBERT's window
        mask = mask & jnp.asarray(window_mask(q.shape[1], 2 * local_window_size[0]))
    return jnp.einsum("bnts,bsnd->btnd", attention_probs(q, k, mask).astype(v.dtype), v)


def build(args, tok, mcfg, path: str, first: dict) -> tuple[Callable, Callable]:
    """(train step, eval forward) for one path, both compiled (on `first`) before returning; the
    explicit path is swapped in for the op while they are traced."""
    import jax

    from benchmarks.contenders import setup_jaxbert, train_config
    from jaxbert.arch import init_params, pretraining_model
    from jaxbert.step import eval_step

    cfg = train_config(args)                              # the training step's, as eval_step's
    model = pretraining_model(mcfg)
    params = init_params(mcfg, jax.random.PRNGKey(0))
    evaluate = jax.jit(functools.partial(eval_step, model=model, cfg=cfg))
    dens = (np.float32(first["masked_weights"].sum()), np.float32(args.batch_size))
    swap = (mock.patch.object(jax.nn, "dot_product_attention", explicit_attention)
            if path == "explicit" else contextlib.nullcontext())
    with swap:
        step = setup_jaxbert(args, tok, mcfg)             # (initialisation traces the model too)
        if path == "explicit":
            TRACED["explicit"] = 0                        # count the step's and forward's only
        step(first)                                       # traces and compiles
        jax.block_until_ready(evaluate(params, first, *dens))

    def forward(b):
        jax.block_until_ready(evaluate(params, b, *dens))
    return step, forward


def _no_retrace(*args, **kwargs):
    raise RuntimeError("benchmarks.attention: a program was traced again while timing, so it "
                       "would not be the path it names; this is a bug in the benchmark")


def measure(args) -> dict[str, Any]:
    import jax

    from benchmarks.contenders import make_batches, model_config
    from jaxbert.cpu import apply_cpu_settings

    apply_cpu_settings()                 # as jaxbert's entry points do, before the backend starts
    batches, tok = make_batches(args)
    mcfg = model_config(args, tok).without_dropout()   # ModernBERT's has none anyway
    fns = {p: build(args, tok, mcfg, p, batches[0]) for p in PATHS}
    if TRACED["explicit"] == 0:
        raise RuntimeError("benchmarks.attention: the explicit path was never traced (does "
                           "jaxbert still call jax.nn.dot_product_attention?)")
    times = {(p, kind): [] for p in PATHS for kind in ("train", "forward")}
    losses = {p: [] for p in PATHS}
    with mock.patch.object(jax.nn, "dot_product_attention", _no_retrace):
        for i, b in enumerate(batches[1:]):        # batches[0] compiled them
            for p in (PATHS if i % 2 else PATHS[::-1]):
                step, forward = fns[p]
                t0 = time.perf_counter()
                losses[p].append(step(b))
                t1 = time.perf_counter()
                forward(b)
                if i >= args.warmup - 1:
                    times[p, "train"].append(t1 - t0)
                    times[p, "forward"].append(time.perf_counter() - t1)
    rows = []
    for kind in ("train", "forward"):
        op, ex = (np.array(times[p, kind]) for p in PATHS)
        rows.append(dict(kind=kind, op_ms=float(np.median(op)) * 1e3,
                         explicit_ms=float(np.median(ex)) * 1e3,
                         ratio=float(np.median(ex / op))))
    drift = float(np.max(np.abs(np.array(losses["op"]) - np.array(losses["explicit"]))))
    return dict(rows=rows, loss_drift=drift, steps=args.steps, traced=TRACED["explicit"])


def report(args, r: dict[str, Any], flags: list[str]) -> None:
    print(f"## jaxbert attention: jax.nn.dot_product_attention (op) against the explicit softmax\n"
          f"{args.arch} {args.preset}, B={args.batch_size}, L={args.seq_len}, "
          f"P={args.max_predictions}, V={args.vocab_size}, fp32, dropout off; "
          f"{r['steps']} paired calls per row\n")
    print("| call | op ms | explicit ms | explicit / op (median of paired ratios) |")
    print("| --- | ---: | ---: | ---: |")
    names = {"train": "training step", "forward": "evaluation forward"}
    for row in r["rows"]:
        print(f"| {names[row['kind']]} | {row['op_ms']:,.1f} | {row['explicit_ms']:,.1f} | "
              f"{row['ratio']:.3f} |")
    print(f"\nattention calls traced through the explicit path: {r['traced']} (training step and "
          f"forward, every layer); largest training-loss difference between the paths: "
          f"{r['loss_drift']:.2e}")
    print("\ncommand: python -m benchmarks.attention " + " ".join(flags))


def main(argv: list[str] | None = None) -> int:
    from bertcore.model.config import ARCHS, PRESETS
    from bertcore.infra.errors import UserError, cli_entry
    from benchmarks.contenders import parse_presets

    p = argparse.ArgumentParser(prog="python -m benchmarks.attention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="bert", choices=list(ARCHS),
                   help="the architecture (default: bert)")
    p.add_argument("--preset", default="mini", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=20)
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--steps", type=int, default=20, help="timed calls per path (paired)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed first calls per path, the first of which compiles")
    p.add_argument("--corpus", default="builtin")
    args = p.parse_args(argv)

    @cli_entry
    def run() -> int:
        if len(parse_presets(args.preset)) != 1:
            raise UserError(f"--preset takes one preset name, not {args.preset!r}")
        if args.steps < 1 or args.warmup < 1:
            raise UserError("--steps and --warmup must be at least 1 (the first call compiles)")
        report(args, measure(args), argv if argv is not None else sys.argv[1:])
        return 0
    return run()


if __name__ == "__main__":
    raise SystemExit(main())
