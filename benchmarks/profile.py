"""Where a training step's time goes, in each twin, with its framework's own profiler.

    python -m benchmarks.profile [--contenders torchbert,jaxbert] [--arch bert|modernbert]
                                 [--preset mini]
                                 [--batch-size 32] [--seq-len 128] [--steps 2] [--top 15]

Each contender runs benchmarks.contenders' step (the same model, optimizer and bertcore
batches as the throughput table) in its own subprocess: warm-up steps first (compilation), then
--steps profiled steps. Printed per contender: the top operations by time per step, and the
share of the step spent in matrix multiplies, which is what bounds both twins on a CPU.

- torchbert: torch.profiler, self CPU time per aten operator (profiler overhead included).
- jaxbert: jax.profiler's trace (`create_perfetto_trace=True`), time per executed XLA
  instruction, each named with the model code it came from (the `op_name` metadata of the
  compiled program: forward `jvp(...)`, backward `transpose(jvp(...))`, or the optimizer).
  XLA fuses elementwise work into its neighbours, so one row can hold several jax operations,
  and it runs independent instructions on its threads at once, so their sum can exceed the
  step's wall time.
With --trace-dir the raw traces stay on disk (open jax's perfetto_trace.json.gz in
ui.perfetto.dev, torch's trace.json in chrome://tracing).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_CONTENDERS = ("torchbert", "jaxbert")
# aten operators that are matrix multiplies (linear layers, attention's batched products).
TORCH_MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul",
                 "aten::linear", "aten::_scaled_dot_product_flash_attention_for_cpu",
                 "aten::_scaled_dot_product_flash_attention_for_cpu_backward"}


# ---- torchbert -------------------------------------------------------------------------------

def profile_torch(step, batches, trace_dir: str | None) -> dict[str, Any]:
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for b in batches:
            step(b)
        wall = (time.perf_counter() - t0) * 1e3 / len(batches)
    if trace_dir:
        (Path(trace_dir) / "torchbert").mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(Path(trace_dir) / "torchbert" / "trace.json"))
    n = len(batches)
    ops = [(e.key, e.self_cpu_time_total / 1e3 / n, e.count // n) for e in prof.key_averages()]
    ops = [o for o in ops if o[1] > 0]
    total = sum(ms for _, ms, _ in ops)
    matmul = sum(ms for name, ms, _ in ops if name in TORCH_MATMULS)
    rows = [{"op": name, "ms": ms, "calls": calls, "where": ""} for name, ms, calls in ops]
    return {"wall_ms": wall, "total_ms": total, "matmul_ms": matmul, "rows": rows}


# ---- jaxbert ---------------------------------------------------------------------------------

def _op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the model code it came from (its op_name metadata)."""
    found = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.-]+) = [^\n]*?op_name=\"([^\"]*)\"", hlo_text,
                         re.M):
        found[m.group(1)] = m.group(2)
    return found


def where(op_name: str) -> str:
    """'jit(f)/while/body/transpose(jvp(BertForPreTraining))/bert/encoder/...' ->
    'backward: bert/encoder/...'."""
    pass_ = ("backward" if "transpose(jvp(" in op_name else
             "forward" if "jvp(" in op_name else "update")
    path = re.sub(r"^.*?(transpose\()?jvp\([^)]*\)\)?/", "", op_name)   # drop the jit/AD frame
    path = re.sub(r"^jit\([^)]*\)/", "", path)
    return f"{pass_}: {path}"


def profile_jax(step, batches, trace_dir: str | None) -> dict[str, Any]:
    import jax

    with tempfile.TemporaryDirectory(prefix="jaxprof") as tmp:
        out = Path(trace_dir) / "jaxbert" if trace_dir else Path(tmp)
        with jax.profiler.trace(str(out), create_perfetto_trace=True):
            t0 = time.perf_counter()
            for b in batches:
                step(b)
            wall = (time.perf_counter() - t0) * 1e3 / len(batches)
        traces = sorted(out.glob("plugins/profile/*/perfetto_trace.json.gz"))
        if not traces:
            return {"error": f"jax.profiler wrote no perfetto trace under {out}"}
        events = json.load(gzip.open(traces[-1])).get("traceEvents", [])
    names = _op_names(step.hlo_text(batches[0]))
    ms, calls = collections.Counter(), collections.Counter()
    for e in events:
        op = (e.get("args") or {}).get("hlo_op")
        if e.get("ph") == "X" and op:
            ms[op] += e.get("dur", 0) / 1e3 / len(batches)
            calls[op] += 1
    if not ms:
        return {"error": "the trace has no XLA instruction events (this jax version's profiler "
                         "does not record them on this backend)"}
    rows = [{"op": op, "ms": t, "calls": calls[op] // len(batches),
             "where": where(names.get(op, ""))} for op, t in ms.items()]
    matmul = sum(r["ms"] for r in rows if re.search(r"dot_general|/dot\b|einsum",
                                                    names.get(r["op"], "")))
    return {"wall_ms": wall, "total_ms": sum(ms.values()), "matmul_ms": matmul, "rows": rows}


# ---- one contender, in a subprocess ------------------------------------------------------------

def worker(args) -> dict[str, Any]:
    from benchmarks.contenders import prepare

    batches, step, _ = prepare(args)   # the benchmark's own set-up and warm-up steps
    profile = profile_torch if args.worker == "torchbert" else profile_jax
    result = profile(step, batches[args.warmup:], args.trace_dir)
    if "rows" in result:
        result["rows"] = sorted(result["rows"], key=lambda r: -r["ms"])[:args.top]
    return result


def report(args, name: str, r: dict[str, Any]) -> None:
    modern = args.arch == "modernbert"
    print(f"\n### {name}: {'modernbert ' if modern else ''}{args.preset}, B={args.batch_size}, "
          f"L={args.seq_len}, P={args.max_predictions}, V={args.vocab_size}, fp32, "
          f"{'no dropout (as published)' if modern else 'dropout on'}, "
          f"{args.steps} profiled step(s)\n")
    if "error" in r:
        print(f"error: {r['error']}")
        return
    print(f"step: {r['wall_ms']:,.0f} ms (wall, under the profiler); operations: "
          f"{r['total_ms']:,.0f} ms, of which matrix multiplies {r['matmul_ms']:,.0f} ms "
          f"({r['matmul_ms'] / r['total_ms']:.0%})\n")
    print("| ms/step | share | calls | operation | model code |")
    print("| ---: | ---: | ---: | --- | --- |")
    for row in r["rows"]:
        print(f"| {row['ms']:,.1f} | {row['ms'] / r['total_ms']:.1%} | {row['calls']} | "
              f"{row['op']} | {row['where']} |")


def main(argv: list[str] | None = None) -> int:
    from bertcore.model.config import ARCHS, PRESETS
    from bertcore.infra.errors import UserError, cli_entry
    from benchmarks.contenders import make_batches, parse_contenders, parse_presets, run_worker

    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS),
                   help=f"comma-separated subset of {', '.join(DEFAULT_CONTENDERS)}")
    p.add_argument("--arch", default="bert", choices=list(ARCHS),
                   help="the architecture both twins train (default: bert)")
    p.add_argument("--preset", default="mini", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=20)
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--steps", type=int, default=2, help="profiled steps (averaged)")
    p.add_argument("--warmup", type=int, default=2, help="unprofiled first steps (compilation)")
    p.add_argument("--top", type=int, default=15, help="operations listed per contender")
    p.add_argument("--corpus", default="builtin")
    p.add_argument("--trace-dir", help="keep the raw traces here (default: not kept)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    @cli_entry
    def run() -> int:
        parse_presets(args.preset)
        if args.steps < 1 or args.warmup < 1:
            raise UserError("--steps and --warmup must be at least 1 (the first step compiles)")
        if args.worker:
            print(json.dumps(worker(args)))
            return 0
        names = parse_contenders(args.contenders, allowed=DEFAULT_CONTENDERS)
        make_batches(args)  # build and cache tokenizer + shards once, before the workers
        flags = argv if argv is not None else sys.argv[1:]
        for name in names:
            report(args, name, run_worker(name, flags, module="benchmarks.profile"))
        print("\ncommand: python -m benchmarks.profile " + " ".join(flags))
        return 0

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
