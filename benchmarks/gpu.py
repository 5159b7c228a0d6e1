"""BERT-base pretraining throughput and model-FLOPs utilisation (MFU) on one GPU.

    python -m benchmarks.gpu [--arch bert|modernbert] [--preset base] [--batch-size 64]
                             [--seq-lens 128,512] [--steps 20] [--warmup 3] [--peak-tflops T]
                             [--contenders jaxbert,torchbert,hf-torch]

Each contender trains in its own subprocess (benchmarks.contenders' worker and setup
functions) on identical bertcore batches: bf16 compute with fp32 parameters and optimizer state
(torch: `torch.autocast("cuda", bfloat16)`; jax: the model's `dtype=bfloat16`), dropout on,
BERT's 30522-token vocabulary, P = ceil(0.15 L) MLM slots per sequence (20 at L=128, 77 at
L=512) unless --max-predictions. Reported: tokens/s (B x L positions per second, median over
the timed steps, compilation and warm-up excluded), ms/step, peak GPU memory and MFU.

Model FLOPs (the work the model needs, the same for every contender: an implementation that
does more, e.g. the HF peer's MLM decoder over all L positions, gets no credit for it), per
sequence of L positions with P prediction slots, H = hidden size, n = layers, V = vocabulary:

    F = 6 * L * N_encoder  +  12 * n * H * L^2  +  6 * P * N_mlm  +  6 * N_cls

    N_encoder = parameters of the n encoder layers (q, k, v, output, intermediate and output
                dense kernels and biases, LayerNorms) = n * (4H^2 + 2HI + 9H + I), I = 4H
    N_mlm     = the MLM head applied at the P predicted positions: transform dense + LayerNorm
                and the decoder (tied to the word embeddings, but a real H x V matmul) + bias
              = H^2 + 3H + HV + V
    N_cls     = pooler + NSP classifier, once per sequence = H^2 + 3H + 2

6 = 2 FLOPs per multiply-add x (1 forward + 2 backward). 12 * n * H * L^2 is attention's
scores (QK^T) and weighted sum (AV): 2 * 2 * L * H per position and layer forward, x 3 with the
backward. Embedding lookups, softmax, GELU, LayerNorm arithmetic and the optimizer are not
counted (the usual convention, Chowdhery et al. 2022, appendix B). Then

    MFU = F * (tokens/s / L) / peak dense bf16 FLOP/s of the device

with the peak from PEAK_TFLOPS by device name (H100 SXM 989 TFLOP/s, ...) or --peak-tflops.

--arch modernbert times ModernBERT (the preset of that name: base is the published 22 layers;
MLM only, no NSP; the peer is hf-modernbert, transformers' ModernBertForMaskedLM). Its model
FLOPs follow the same convention, with

    N_encoder = n * (4H^2 + 3HI) + its norms and any biases (Wqkv H -> 3H, Wo, Wi H -> 2I
                GeGLU, Wo I -> H; the final norm included)
    attention = 12 * H * (n_global * L^2 + n_local * W), W = the (query, key) pairs inside the
                local window (|i - j| <= local_attention / 2): only what a local layer needs
    N_mlm     = dense + norm of the head, the tied H x V decoder and its bias
    N_cls     = 0 (no pooler, no NSP)

With no GPU (torch.cuda.is_available() false and no jax GPU backend) it prints a note and exits
0: run it through the device tool or on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

from benchmarks.contenders import CONTENDERS, make_batches, model_config, parse_contenders, \
    parse_presets, run_worker, versions, worker

DEFAULT_CONTENDERS = ("jaxbert", "torchbert", "hf-torch")
ARCH_DEFAULT_CONTENDERS = {"bert": DEFAULT_CONTENDERS,
                           "modernbert": ("jaxbert", "torchbert", "hf-modernbert")}
JAX_CONTENDERS = ("jaxbert", "hf-flax")

# Peak dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets, matched in order
# against the device name (torch.cuda.get_device_name / jax device_kind).
PEAK_TFLOPS: list[tuple[str, float]] = [
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"\bH100|\bH800", 989.0),       # SXM ("NVIDIA H100 80GB HBM3")
    (r"\bH200|\bGH200", 989.0),
    (r"\bB200", 2250.0),
    (r"\bA100|\bA800", 312.0),
    (r"\bL40S\b", 362.0),
    (r"\bL4\b", 121.0),
]

NO_GPU_NOTE = ("no GPU found: this benchmark needs one; run it through the device tool or on a "
               "GPU machine")


def peak_tflops(device_name: str) -> float | None:
    for pattern, tflops in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return tflops
    return None


def param_counts(cfg) -> dict[str, int]:
    """Parameters of BertForPreTraining (or ModernBertForMaskedLM) by part, from a bertcore
    BertConfig (ModernBertConfig) (the tied decoder weight counted once, in the embeddings;
    `total` equals torchbert's num_parameters())."""
    from bertcore.model.config import ModernBertConfig

    if isinstance(cfg, ModernBertConfig):
        return _modernbert_param_counts(cfg)
    H, I, V, n = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    final_ln = 2 * H if cfg.layer_norm_position == "pre" else 0
    counts = {
        "embeddings": (V + cfg.max_position_embeddings + cfg.type_vocab_size) * H + 2 * H,
        "encoder": n * (4 * H * H + 2 * H * I + 9 * H + I) + final_ln,
        "mlm_head": H * H + 3 * H + V,            # transform + LayerNorm + decoder bias
        "cls": H * H + 3 * H + 2,                 # pooler + NSP
    }
    counts["total"] = sum(counts.values())
    return counts


def _modernbert_param_counts(cfg) -> dict[str, int]:
    H, I, V, n = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    norm = H * (2 if cfg.norm_bias else 1)
    layer = (4 * H * H + 3 * H * I + (4 * H if cfg.attention_bias else 0)
             + (2 * I + H if cfg.mlp_bias else 0) + 2 * norm)
    counts = {
        "embeddings": V * H + norm,
        # the final norm (counted with the encoder) makes up for layer 0's missing attention
        # norm: n full layers' worth
        "encoder": n * layer,
        "mlm_head": H * H + (H if cfg.classifier_bias else 0) + norm
                    + (V if cfg.decoder_bias else 0),
        "cls": 0,
    }
    counts["total"] = sum(counts.values())
    return counts


def flops_per_sequence(cfg, seq_len: int, max_predictions: int) -> float:
    """Model FLOPs of one training step's forward + backward per sequence (module docstring)."""
    from bertcore.model.attention import window_mask
    from bertcore.model.config import ModernBertConfig

    c, H, L = param_counts(cfg), cfg.hidden_size, seq_len
    n_mlm = c["mlm_head"] + H * cfg.vocab_size    # + the tied decoder matmul
    pairs = cfg.num_hidden_layers * L * L
    if isinstance(cfg, ModernBertConfig):
        n_global = sum(cfg.is_global(i) for i in range(cfg.num_hidden_layers))
        window = int(window_mask(L, cfg.local_attention).sum())
        pairs = n_global * L * L + (cfg.num_hidden_layers - n_global) * window
    return (6 * L * c["encoder"] + 12 * H * pairs
            + 6 * max_predictions * n_mlm + 6 * c["cls"])


def default_predictions(seq_len: int) -> int:
    return min(seq_len, math.ceil(0.15 * seq_len))


# ---- finding the GPU -------------------------------------------------------------------------

def gpu_frameworks() -> dict[str, bool]:
    """Which frameworks see a GPU. Jax is asked in a subprocess (it is started while torch is
    imported here) so that this process never holds GPU memory the workers need."""
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    probe = subprocess.Popen([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=env)
    try:
        import torch

        has_torch = torch.cuda.is_available()
    except ImportError:
        has_torch = False
    out, _ = probe.communicate()
    return {"torch": has_torch, "jax": probe.returncode == 0 and out.strip() == "gpu"}


def gpu_worker(args) -> dict[str, Any]:
    """In a subprocess: check the contender's framework sees a GPU, time it (contenders'
    worker, on cuda / in bf16), add the device name and peak GPU memory."""
    if args.worker in JAX_CONTENDERS:
        import jax

        if jax.default_backend() != "gpu":
            return {"error": f"jax has no GPU backend here ({jax.default_backend()}); "
                             f"install jax[cuda12]"}
        dev = jax.devices()[0]
        name = dev.device_kind
    else:
        import torch

        if not torch.cuda.is_available():
            return {"error": "torch sees no CUDA device"}
        name = torch.cuda.get_device_name()
    result = worker(args)
    if args.worker in JAX_CONTENDERS:
        peak = (dev.memory_stats() or {}).get("peak_bytes_in_use", 0)
    else:
        peak = torch.cuda.max_memory_allocated()
    return {**result, "device_name": name, "gpu_peak_mb": peak / 2**20}


# ---- the command line ------------------------------------------------------------------------

def parse_args(argv: list[str] | None):
    from bertcore.model.config import ARCHS, PRESETS

    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="bert", choices=list(ARCHS),
                   help="the architecture every contender trains (default: bert)")
    p.add_argument("--preset", default="base", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-lens", default="128,512", help="comma-separated sequence lengths")
    p.add_argument("--max-predictions", type=int, default=None,
                   help="MLM slots per sequence (default: ceil(0.15 x seq-len))")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak dense bf16 TFLOP/s (default: from its name)")
    p.add_argument("--contenders", default=None,
                   help=f"comma-separated subset of {', '.join(CONTENDERS)} (default: "
                        + "; ".join(f"{', '.join(v)} for {k}"
                                    for k, v in ARCH_DEFAULT_CONTENDERS.items()) + ")")
    p.add_argument("--corpus", default="builtin")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)  # one length (workers)
    args = p.parse_args(argv)
    args.contenders = args.contenders or ",".join(ARCH_DEFAULT_CONTENDERS[args.arch])
    # What the contenders' worker and setup functions read.
    args.threads, args.dtype, args.device = None, "bfloat16", "cuda"
    return args


def main(argv: list[str] | None = None) -> int:
    from bertcore.infra.errors import UserError, cli_entry

    args = parse_args(argv)

    @cli_entry
    def run() -> int:
        if args.worker:
            print(json.dumps(gpu_worker(args)))
            return 0
        parse_presets(args.preset)
        names = parse_contenders(args.contenders, arch=args.arch)
        try:
            seq_lens = ([args.seq_len] if args.seq_len else
                        [int(s) for s in args.seq_lens.split(",") if s.strip()])
        except ValueError:
            raise UserError(f"--seq-lens {args.seq_lens!r}: give integers like 128,512") from None
        found = gpu_frameworks()
        if not any(found.values()):
            print(NO_GPU_NOTE)
            return 0
        for L in seq_lens:  # build and cache tokenizer + shards once; bad flags fail here
            _, args.data_tok = make_batches(SimpleNamespace(
                arch=args.arch, corpus=args.corpus, batch_size=1, seq_len=L, warmup=0, steps=1,
                max_predictions=args.max_predictions or default_predictions(L)))
        results = []
        for L in seq_lens:
            P = args.max_predictions or default_predictions(L)
            argv_L = ["--arch", args.arch, "--preset", args.preset,
                      "--batch-size", str(args.batch_size),
                      "--seq-len", str(L), "--max-predictions", str(P), "--vocab-size",
                      str(args.vocab_size), "--steps", str(args.steps), "--warmup",
                      str(args.warmup), "--corpus", args.corpus]
            # One contender at a time (not contenders.measure's interleaving): processes alive
            # at once would share the GPU's memory, most of which jax preallocates.
            for name in names:
                fw = "jax" if name in JAX_CONTENDERS else "torch"
                r = (run_worker(name, argv_L, module="benchmarks.gpu") if found[fw] else
                     {"contender": name, "error": f"{fw} sees no GPU here"})
                results.append({**r, "seq_len": L, "max_predictions": P})
                print(f"  measured {name} at L={L}", file=sys.stderr)
        report(args, results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        return 0

    return run()


def config(args, seq_len: int):
    """The model config the workers train."""
    return model_config(SimpleNamespace(arch=args.arch, preset=args.preset, seq_len=seq_len,
                                        vocab_size=args.vocab_size), args.data_tok)


def report(args, results: list[dict]) -> None:
    names = {r["device_name"] for r in results if "device_name" in r}
    device = ", ".join(sorted(names)) or "unknown GPU"
    peak = args.peak_tflops or peak_tflops(device)
    modern = args.arch == "modernbert"
    print(f"\n### gpu: {'modernbert ' if modern else ''}{args.preset}, "
          f"V={config(args, 128).vocab_size}, B={args.batch_size}, bf16 compute, fp32 params, "
          f"{'MLM only, no dropout (as published)' if modern else 'dropout on'}\n")
    print(f"{time.strftime('%Y-%m-%d')}, {device}, peak "
          f"{f'{peak:g} TFLOP/s bf16 dense' if peak else 'unknown (pass --peak-tflops)'}, "
          f"{versions()}\n")
    print("| L | P | contender | tokens/s | ms/step | first steps (s) | peak GPU memory (MB) "
          "| MFU |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        if "error" in r:
            print(f"| {r['seq_len']} | {r['max_predictions']} | {r['contender']} | "
                  f"error: {r['error']} | | | | |")
            continue
        flops = flops_per_sequence(config(args, r["seq_len"]), r["seq_len"],
                                   r["max_predictions"])
        mfu = (f"{flops * r['tokens_per_second'] / r['seq_len'] / (peak * 1e12):.1%}"
               if peak else "n/a")
        print(f"| {r['seq_len']} | {r['max_predictions']} | {r['contender']} | "
              f"{r['tokens_per_second']:,.0f} | {r['ms_per_step']:,.1f} | "
              f"{r['warmup_seconds']:.1f} | {r['gpu_peak_mb']:,.0f} | {mfu} |")
    per_seq = {(r["seq_len"], r["max_predictions"]) for r in results}
    print("\nmodel FLOPs per sequence (formula in --help): " + ", ".join(
        f"L={L}, P={P}: {flops_per_sequence(config(args, L), L, P) / 1e9:,.1f} GFLOP"
        for L, P in sorted(per_seq)))
    print(f"\ncommand: python -m benchmarks.gpu "
          f"{'--arch modernbert ' if modern else ''}--preset {args.preset} --batch-size "
          f"{args.batch_size} --seq-lens {args.seq_lens} --steps {args.steps} --warmup "
          f"{args.warmup} --contenders {args.contenders}"
          + (f" --max-predictions {args.max_predictions}" if args.max_predictions else "")
          + (f" --peak-tflops {args.peak_tflops:g}" if args.peak_tflops else ""))


if __name__ == "__main__":
    raise SystemExit(main())
