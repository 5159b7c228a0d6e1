"""Data-pipeline speed: prepare throughput (MB/s of raw text) and batch-iterator throughput.

    python -m benchmarks.data_pipeline [--corpus builtin] [--batch-size 32] [--seq-len 128]

Prints one markdown table. The iterator figure is what a training loop sees: sequences and
tokens (B x L positions) per second from `BatchIterator.__next__`, masking included, after the
first epoch's instances are built (that build is reported separately). With `--consumption`
(tokens/s of the fastest twin) it also prints the ratio of supply to demand.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bertcore.batches import BatchIterator
from bertcore.config import TrainConfig
from bertcore.corpus import iter_documents
from bertcore.errors import UserError, cli_entry
from bertcore.shards import Shards, prepare
from bertcore.tokenizer import train_tokenizer


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="builtin", help="corpus to prepare (default: builtin)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=20)
    p.add_argument("--batches", type=int, default=2000, help="batches to time")
    p.add_argument("--whole-word-mask", action="store_true")
    p.add_argument("--consumption", type=float, default=None,
                   help="tokens/s the fastest twin trains at, to report supply/demand")
    p.add_argument("--train-speed-json", metavar="FILE",
                   help="results of `python -m benchmarks.train_speed --json FILE`: takes the "
                        "fastest twin's tokens/s as --consumption")
    args = p.parse_args(argv)
    if args.train_speed_json:
        import json

        try:
            rows = json.loads(Path(args.train_speed_json).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {args.train_speed_json} ({e}); write it with "
                            f"python -m benchmarks.train_speed --json FILE")
        twins = [r["tokens_per_second"] for r in rows
                 if r.get("contender") in ("torchbert", "jaxbert") and "tokens_per_second" in r]
        if not twins:
            raise UserError(f"{args.train_speed_json} has no torchbert/jaxbert figures")
        args.consumption = max(twins)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tok = train_tokenizer(iter_documents(args.corpus), args.vocab_size)
        t_tok = time.perf_counter() - t0
        stats = prepare(iter_documents(args.corpus), tok, Path(tmp) / "data", progress=False)
        shards = Shards(Path(tmp) / "data", tok)
        cfg = TrainConfig(batch_size=args.batch_size, seq_len=args.seq_len,
                          max_predictions=args.max_predictions,
                          whole_word_mask=args.whole_word_mask)
        it = BatchIterator(shards, tok, cfg)
        t0 = time.perf_counter()
        next(it)
        t_first = time.perf_counter() - t0
        times = []
        for _ in range(args.batches):
            t0 = time.perf_counter()
            next(it)
            times.append(time.perf_counter() - t0)
    per_batch = float(np.median(times))
    seqs = args.batch_size / per_batch
    toks = seqs * args.seq_len
    print(f"data pipeline on {platform.processor() or platform.machine()}, "
          f"{stats.text_bytes / 1e6:.1f} MB corpus '{args.corpus}', B={args.batch_size}, "
          f"L={args.seq_len}, P={args.max_predictions}"
          f"{', whole-word' if args.whole_word_mask else ''}\n")
    print("| quantity | value |\n| --- | --- |")
    print(f"| tokenizer training | {t_tok:.1f} s ({stats.text_bytes / 1e6 / t_tok:.1f} MB/s) |")
    print(f"| prepare (split + tokenize + write) | {stats.seconds:.1f} s, "
          f"{stats.mb_per_second:.2f} MB/s of text, {stats.tokens / stats.seconds:,.0f} tokens/s |")
    print(f"| first batch (builds epoch 0's {it.batches_per_epoch * args.batch_size:,} "
          f"instances) | {t_first * 1e3:.0f} ms |")
    print(f"| iterator, median over {args.batches} batches | {per_batch * 1e3:.2f} ms/batch, "
          f"{1 / per_batch:,.0f} batches/s, {seqs:,.0f} sequences/s, {toks:,.0f} tokens/s |")
    if args.consumption:
        print(f"| supply / demand of the fastest twin ({args.consumption:,.0f} tokens/s) | "
              f"{toks / args.consumption:,.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
