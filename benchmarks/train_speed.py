"""Training throughput of both twins and their Hugging Face peers, side by side, in one run.

    python -m benchmarks.train_speed [--arch bert|modernbert|electra] [--preset mini]
                                     [--batch-size 32] [--seq-len 128]
                                     [--steps 20] [--warmup 3] [--threads N]
                                     [--only torchbert,jaxbert,hf-torch,hf-flax]

Every contender trains on the *same* config and the *same* bertcore batches (the built-in corpus,
cached), fp32, dropout as configured (on by default, as in pretraining), in its own subprocess
so peak memory (ru_maxrss) is its own. The contenders are prepared (compiled, warmed up) one
after another, then their timed steps are interleaved, one step of each in turn, so a slow spell
of a shared machine slows every contender alike and the ratios of one run hold (their processes
live at once: memory adds up). Reported: tokens/s (B x L positions per second, median over the
timed steps), milliseconds per step, the first step (compilation and warm-up, excluded from the
median), peak RSS, and each twin's ratios to every peer (tokens/s and peak RSS; the issue's
targets are stated against hf-torch, and for ModernBERT against hf-modernbert).

--arch picks the architecture (the twins build each one): bert (default; NSP on, dropout on),
modernbert (ModernBertConfig's preset of the same name, about BERT's parameter count; MLM
only on single-segment batches, NSP off for every contender; no dropout, as published) or
electra (ElectraConfig's preset: the discriminator at the preset's size, embedding size 128 below
base, a generator a quarter as wide; replaced-token detection on single-segment batches masked
85/0/15, loss = generator MLM + 50 x discriminator BCE, dropout on, as `--arch electra` trains).

Peers:
  hf-torch       transformers.BertForPreTraining (PyTorch, SDPA attention, dense MLM head over
                 all L positions, labels -100 elsewhere), torch.optim.AdamW,
                 clip_grad_norm_(1.0): what the HF Trainer runs.
  hf-flax        transformers.FlaxBertForPreTraining with an optax.adamw jitted train step.
  hf-modernbert  (--arch modernbert) transformers.ModernBertForMaskedLM as configured by
                 default: SDPA attention, the dense MLM head over all L positions (its
                 config's sparse_prediction=False; --peer-sparse-prediction turns it on),
                 labels -100 elsewhere, torch.optim.AdamW, clip_grad_norm_(1.0). transformers
                 has no Flax ModernBERT: hf-flax is left out, with that reason.
  hf-electra     (--arch electra) transformers.ElectraForMaskedLM (the generator) +
                 ElectraForPreTraining (the discriminator) sharing one embedding module, as
                 the paper trains them, each with its own loss from labels (the generator's
                 dense MLM head over all L positions), replacements sampled from the
                 generator's softmax by torch.multinomial without gradient, loss = MLM + 50 x
                 BCE, torch.optim.AdamW, clip_grad_norm_(1.0)
                 (benchmarks.contenders.hf_electra_forward).

The twins' processes apply bertcore.infra.malloc's allocator settings first, as their train CLIs do
(freed memory kept for reuse: no page faults on each step's fresh buffers); the peers run with
the system's malloc, as their users run them. `--malloc-for-peers` gives the peers the same
settings, to show how much of each ratio is the allocator and how much the model code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.contenders import ARCH_CONTENDERS, CONTENDERS, make_batches, measure, \
    parse_contenders, parse_presets, serve, versions, worker

# every twin is compared with each present
PEERS = ("hf-torch", "hf-flax", "hf-modernbert", "hf-electra")


def main(argv: list[str] | None = None) -> int:
    from bertcore.model.config import ARCHS, PRESETS
    from bertcore.infra.errors import UserError, cli_entry

    p = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="bert", choices=list(ARCHS),
                   help="the architecture every contender trains (default: bert)")
    p.add_argument("--preset", default="mini", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=20)
    p.add_argument("--vocab-size", type=int, default=30522,
                   help="model vocabulary (default: BERT's 30522; the dense MLM head of the HF "
                        "peers costs B x L x V, the twins' sparse head B x P x V)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--corpus", default="builtin")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of {', '.join(CONTENDERS)} (default: "
                        + "; ".join(f"{', '.join(v)} for {k}" for k, v in ARCH_CONTENDERS.items())
                        + ")")
    p.add_argument("--peer-sparse-prediction", action="store_true",
                   help="hf-modernbert with its config's sparse_prediction=True: the MLM head "
                        "only at the labelled positions, as the twins' (default: its dense "
                        "default)")
    p.add_argument("--malloc-for-peers", action="store_true",
                   help="give the HF peers bertcore.infra.malloc's settings too (the twins always "
                        "have them, as their CLIs apply them)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    @cli_entry
    def run() -> int:
        parse_presets(args.preset)
        names = parse_contenders(args.only or ",".join(ARCH_CONTENDERS[args.arch]),
                                 arch=args.arch)
        if args.worker:
            if args.serve:
                serve(args)
            else:
                print(json.dumps(worker(args)))
            return 0
        make_batches(args)  # build and cache tokenizer + shards once, before the workers
        results = measure(names, argv or sys.argv[1:], args.steps)
        report(args, results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        failed = [r["contender"] for r in results if "error" in r]
        if failed:
            raise UserError(f"{', '.join(failed)} failed (see the table); fix the cause or "
                            f"leave them out with --only")
        return 0

    return run()


def report(args, results: list[dict]) -> None:
    by = {r["contender"]: r for r in results}
    modern = args.arch == "modernbert"
    what = (f"modernbert {args.preset}, MLM only" if modern else
            f"electra {args.preset} (generator 1/4 wide), replaced-token detection"
            if args.arch == "electra" else args.preset)
    sparse = (", hf-modernbert sparse_prediction" if modern and args.peer_sparse_prediction
              else "")
    print(f"\n### train_speed: {what}, V={args.vocab_size}, B={args.batch_size}, "
          f"L={args.seq_len}, P={args.max_predictions}, fp32, "
          f"{'no dropout (as published)' if modern else 'dropout on'}{sparse}, CPU threads "
          f"{args.threads or os.environ.get('OMP_NUM_THREADS') or os.cpu_count()}"
          f"{', peers with bertcore.infra.malloc too' if args.malloc_for_peers else ''}\n")
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} cores, "
          f"{versions()}\n")
    peers = [p for p in PEERS if "tokens_per_second" in by.get(p, {})]
    print("| contender | tokens/s | ms/step | first steps (s) | peak RSS (MB) |"
          + "".join(f" vs {p} |" for p in peers))
    print("| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(peers))
    for r in results:
        if "error" in r:
            print(f"| {r['contender']} | error: {r['error']} | | | |" + " |" * len(peers))
            continue
        ratios = "".join(
            f" {r['tokens_per_second'] / by[p]['tokens_per_second']:.2f}x tokens/s, "
            f"{r['peak_rss_mb'] / by[p]['peak_rss_mb']:.2f}x RSS |"
            if r["contender"] not in PEERS else " |" for p in peers)
        print(f"| {r['contender']} | {r['tokens_per_second']:,.0f} | {r['ms_per_step']:,.0f} | "
              f"{r['warmup_seconds']:.1f} | {r['peak_rss_mb']:,.0f} |{ratios}")
    print("\ncommand: python -m benchmarks.train_speed " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
