"""Training throughput and peak memory as the sequence grows and as the model grows.

    python -m benchmarks.scaling [--preset mini] [--seq-lens 128,256,512]
                                 [--presets tiny,mini,small,medium] [--seq-len 128]
                                 [--contenders torchbert,jaxbert,hf-torch]
                                 [--batch-size 16] [--steps 5] [--warmup 2] [--threads N]
                                 [--out runs/bench/scaling.png]

Two sweeps, each point timed as benchmarks.train_speed does (each contender in its own
subprocess, so peak RSS is its own; their timed steps interleaved) on identical bertcore
batches, fp32, dropout on, BERT's 30522-token vocabulary:
  seq_len   --preset at each of --seq-lens
  model     each of --presets at --seq-len
P = ceil(0.15 x seq_len) MLM slots per sequence (20, 39, 77) unless --max-predictions, so the
share of predicted positions stays BERT's 15%. Prints one markdown table per sweep (tokens/s,
ms/step, peak RSS, each twin's ratio to hf-torch) with the command under it, and writes a PNG
with two panels (tokens/s vs seq_len, tokens/s vs parameters; log scales) to --out.
Most of the defaults' time goes to hf-torch at L=512 (its dense MLM head over all 512
positions). An empty list (--seq-lens "") skips
a sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks.gpu import default_predictions, param_counts
from benchmarks.contenders import CONTENDERS, make_batches, measure, model_config, \
    parse_contenders, parse_presets, versions

DEFAULT_CONTENDERS = ("torchbert", "jaxbert", "hf-torch")
PEER = "hf-torch"


def parse_args(argv: list[str] | None):
    from bertcore.model.config import PRESETS

    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mini", help="the model of the seq_len sweep "
                   f"(one of {', '.join(PRESETS)})")
    p.add_argument("--seq-lens", default="128,256,512", help="the seq_len sweep")
    p.add_argument("--presets", default="tiny,mini,small,medium", help="the model sweep")
    p.add_argument("--seq-len", type=int, default=128, help="seq_len of the model sweep")
    p.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS),
                   help=f"comma-separated subset of {', '.join(CONTENDERS)}")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed steps per point (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps (compilation)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--max-predictions", type=int, default=None,
                   help="MLM slots per sequence (default: ceil(0.15 x seq_len))")
    p.add_argument("--vocab-size", type=int, default=30522, help="model vocabulary")
    p.add_argument("--corpus", default="builtin")
    p.add_argument("--out", default="runs/bench/scaling.png", help="the PNG chart")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return p.parse_args(argv)


def int_list(flag: str, text: str) -> list[int]:
    from bertcore.infra.errors import UserError

    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: give comma-separated integers like 128,256") from None
    if any(v <= 0 for v in values):
        raise UserError(f"{flag} {text!r}: lengths must be positive")
    return values


def point_argv(args, preset: str, seq_len: int) -> list[str]:
    """train_speed flags for one point."""
    argv = ["--preset", preset, "--seq-len", str(seq_len), "--batch-size", str(args.batch_size),
            "--max-predictions", str(args.max_predictions or default_predictions(seq_len)),
            "--vocab-size", str(args.vocab_size), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--corpus", args.corpus]
    return argv + (["--threads", str(args.threads)] if args.threads else [])


def command_line(args) -> str:
    cmd = (f"python -m benchmarks.scaling --preset {args.preset} --seq-lens '{args.seq_lens}' "
           f"--presets '{args.presets}' --seq-len {args.seq_len} --contenders {args.contenders} "
           f"--batch-size {args.batch_size} --steps {args.steps} --warmup {args.warmup} "
           f"--vocab-size {args.vocab_size}")
    for flag, value in (("--max-predictions", args.max_predictions), ("--threads", args.threads)):
        if value:
            cmd += f" {flag} {value}"
    if args.corpus != "builtin":
        cmd += f" --corpus {args.corpus}"
    return cmd + f" --out {args.out}"


def threads(args) -> str:
    return str(args.threads or os.environ.get("OMP_NUM_THREADS") or os.cpu_count())


def main(argv: list[str] | None = None) -> int:
    from bertcore.infra.errors import UserError, cli_entry

    args = parse_args(argv)

    @cli_entry
    def run() -> int:
        parse_presets(args.preset)
        presets = parse_presets(args.presets)
        names = parse_contenders(args.contenders)
        seq_lens = int_list("--seq-lens", args.seq_lens)
        if not seq_lens and not presets:
            raise UserError("nothing to measure: both --seq-lens and --presets are empty")
        points = [(args.preset, L) for L in seq_lens] + [(p, args.seq_len) for p in presets]
        for L in sorted({L for _, L in points}):
            # Builds and caches the tokenizer and shards once; a bad flag fails here, once.
            ns = SimpleNamespace(corpus=args.corpus, batch_size=1, seq_len=L, warmup=0, steps=1,
                                 max_predictions=args.max_predictions or default_predictions(L))
            _, args.data_tok = make_batches(ns)
        results: dict[tuple[str, int], dict[str, dict]] = {}
        for preset, L in dict.fromkeys(points):          # each point once, in order
            t0 = time.perf_counter()
            # The contenders of one point timed interleaved (contenders.measure).
            for r in measure(names, point_argv(args, preset, L), args.steps):
                results.setdefault((preset, L), {})[r["contender"]] = r
                what = (f"{r['tokens_per_second']:,.0f} tokens/s" if "tokens_per_second" in r
                        else f"error: {r['error']}")
                print(f"  {preset} L={L} {r['contender']}: {what}", file=sys.stderr)
            print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        header = (f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} cores, "
                  f"{versions()}")
        common = (f"V={config(args, args.preset, 128).vocab_size}, B={args.batch_size}, P="
                  f"{args.max_predictions or 'ceil(0.15 L)'}, fp32, dropout on, CPU threads "
                  f"{threads(args)}")
        if seq_lens:
            print(f"\n### scaling with seq_len: {args.preset}, {common}\n\n{header}\n")
            table(["seq_len"], [([str(L)], results[(args.preset, L)]) for L in seq_lens], names)
            print(f"\ncommand: {command_line(args)}")
        if presets:
            print(f"\n### scaling with model size: L={args.seq_len}, {common}\n\n{header}\n")
            rows = []
            for p in presets:
                n = param_counts(config(args, p, args.seq_len))["total"]
                rows.append(([p, f"{n / 1e6:.1f}"], results[(p, args.seq_len)]))
            table(["preset", "params (M)"], rows, names)
            print(f"\ncommand: {command_line(args)}")
        chart(args, seq_lens, presets, names, results)
        if args.json:
            Path(args.json).write_text(json.dumps(
                [{"preset": p, "seq_len": L, **r} for (p, L), by in results.items()
                 for r in by.values()], indent=2) + "\n")
        return 0

    return run()


def config(args, preset: str, seq_len: int):
    """The model config a worker trains at this point."""
    return model_config(SimpleNamespace(preset=preset, seq_len=seq_len,
                                        vocab_size=args.vocab_size), args.data_tok)


def table(keys: list[str], rows: list[tuple[list[str], dict[str, dict]]], names) -> None:
    print("| " + " | ".join(keys) + " | contender | tokens/s | ms/step | peak RSS (MB) | "
          f"vs {PEER} |")
    print("| " + " | ".join("---:" for _ in keys) + " | --- | ---: | ---: | ---: | ---: |")
    for key, by in rows:
        peer = by.get(PEER, {})
        for name in names:
            r, k = by[name], " | ".join(key)
            if "error" in r:
                print(f"| {k} | {name} | error: {r['error']} | | | |")
                continue
            ratio = (f"{r['tokens_per_second'] / peer['tokens_per_second']:.2f}x tokens/s, "
                     f"{r['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x RSS"
                     if name != PEER and "tokens_per_second" in peer else "")
            print(f"| {k} | {name} | {r['tokens_per_second']:,.0f} | {r['ms_per_step']:,.0f} | "
                  f"{r['peak_rss_mb']:,.0f} | {ratio} |")


def chart(args, seq_lens, presets, names, results) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("note: matplotlib is not installed (pip install 'twinbert[plot]'): no chart",
              file=sys.stderr)
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    params = {p: param_counts(config(args, p, args.seq_len))["total"] / 1e6 for p in presets}
    for name in names:
        for ax, xs, keys in ((ax1, seq_lens, [(args.preset, L) for L in seq_lens]),
                             (ax2, [params[p] for p in presets],
                              [(p, args.seq_len) for p in presets])):
            pts = [(x, results[k][name]["tokens_per_second"]) for x, k in zip(xs, keys)
                   if "tokens_per_second" in results[k][name]]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
    ax1.set(xscale="log", yscale="log", xlabel="seq_len", ylabel="tokens/s",
            title=f"{args.preset}, B={args.batch_size}")
    ax1.set_xticks(seq_lens, [str(L) for L in seq_lens])
    ax2.set(xscale="log", yscale="log", xlabel="parameters (millions)", ylabel="tokens/s",
            title=f"L={args.seq_len}, B={args.batch_size}")
    ax2.set_xticks(list(params.values()), [f"{p}\n{n:.3g}M" for p, n in params.items()])
    for ax in (ax1, ax2):
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(True, which="major", alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(f"twinbert training throughput, CPU threads {threads(args)}, fp32")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"\nchart: {out}")


if __name__ == "__main__":
    raise SystemExit(main())
