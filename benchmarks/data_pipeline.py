"""Data-pipeline speed: prepare throughput (MB/s of raw text) and batch-iterator throughput.

    python -m benchmarks.data_pipeline [--corpus builtin] [--batch-size 32] [--seq-len 128]

Prints one markdown table. The iterator figure is what a training loop sees: sequences and
tokens (B x L positions) per second from `BatchIterator.__next__`, masking included, after the
first epoch's instances are built (that build is reported separately). With `--consumption`
(tokens/s of the fastest twin) it also prints the ratio of supply to demand.

    python -m benchmarks.data_pipeline --scale [--sizes 10,100,300] [--workdir DIR]

measures the pipeline at corpus scale. Per size (millions of tokens) it synthesises a folder of
.txt files by reshuffling the built-in corpus's sentences into new documents (seeded), runs
`python -m bertcore.data prepare` on it in a child process (MB/s of text; peak RSS of the
process tree, sampled from /proc), then starts a fresh process that opens the shards, draws the
first batch and 200 more: the time to the first batch, the peak anonymous memory it adds
(`RssAnon` of /proc/self/status sampled by a thread every 2 ms; pages of memory-mapped files are
page cache and do not count) and batches/s. That process runs twice: "cold" with the epoch cache
(DATADIR/epochs) emptied first, so it builds epoch 0, and "warm", a second fresh process that
opens the cached epoch, as another rank or a resumed run does. `--reuse-data` keeps a data
directory already prepared in `--workdir` (no prepare figures then).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bertcore.model.config import TrainConfig
from bertcore.data.batches import BatchIterator
from bertcore.data.corpus import iter_documents
from bertcore.data.prepare import prepare
from bertcore.data.shards import Shards
from bertcore.data.tokenizer import train_tokenizer
from bertcore.infra.errors import UserError, cli_entry


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
    p.add_argument("--scale", action="store_true",
                   help="measure prepare and start-up at corpus scale (see above)")
    p.add_argument("--sizes", default="10,100,300",
                   help="with --scale: corpus sizes in millions of tokens (default: %(default)s)")
    p.add_argument("--workdir", default=None,
                   help="with --scale: where corpora and data go (default: a temporary folder "
                        "under /tmp, removed at the end; give one to keep them)")
    p.add_argument("--reuse-data", action="store_true",
                   help="with --scale --workdir: probe data directories already prepared there "
                        "instead of preparing them again")
    p.add_argument("--tile", type=int, default=1, metavar="K",
                   help="with --scale: also probe each size's data repeated K times (tokens "
                        "shared, offsets written): the start path at K times the corpus without "
                        "preparing it (no prepare figures for those rows)")
    p.add_argument("--probe", metavar="DATADIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        return _probe(args)
    if args.scale:
        return _scale(args)
    if args.train_speed_json:
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


# ---- --scale -----------------------------------------------------------------------------------

def _status_kb(pid: int | str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (prepare's worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


class _Peak:
    """Samples a number in a thread until stopped; keeps the maximum."""

    def __init__(self, sample, interval: float):
        self.sample, self.interval, self.peak = sample, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())
        return self.peak


def _probe(args: argparse.Namespace) -> int:
    """A fresh process: open the shards, first batch, 200 more; print one JSON line."""
    from bertcore.data.tokenizer import load_tokenizer

    tok = load_tokenizer(Path(args.probe) / "tokenizer")
    cfg = TrainConfig(batch_size=args.batch_size, seq_len=args.seq_len,
                      max_predictions=args.max_predictions)
    base = _status_kb("self", "RssAnon")
    peak = _Peak(lambda: _status_kb("self", "RssAnon"), 0.002)
    t0 = time.perf_counter()
    it = BatchIterator(Shards(args.probe, tok), tok, cfg)
    next(it)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(200):
        next(it)
    t_200 = time.perf_counter() - t0
    added = peak.stop() - base
    print(json.dumps({"first_batch_s": t_first, "anon_added_mb": added / 1024,
                      "batches_per_s": 200 / t_200,
                      "instances": it.batches_per_epoch * args.batch_size}))
    return 0


def _synthesise(folder: Path, tokens: int, sentences: list[str], tokens_per_byte: float,
                seed: int) -> None:
    """About `tokens` tokens of documents (3-30 reshuffled sentences each), 64 MB per file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    want, written, part = tokens / tokens_per_byte, 0, 0
    while written < want:
        with open(folder / f"part-{part:04d}.txt", "w", encoding="utf-8") as f:
            size = 0
            while size < 64e6 and written + size < want:
                docs = []
                for k in rng.integers(3, 31, size=1000):
                    docs.append(" ".join(sentences[i] for i in rng.integers(0, len(sentences), k)))
                text = "\n\n".join(docs) + "\n\n"
                f.write(text)
                size += len(text.encode("utf-8"))
        written += size
        part += 1


def _probe_twice(data: Path, args: argparse.Namespace, env: dict) -> dict:
    """The probe, cold (the epoch cache emptied) then warm, each in a fresh process."""
    shutil.rmtree(data / "epochs", ignore_errors=True)
    r = {}
    for run in ("cold", "warm"):
        probe = subprocess.run(
            [sys.executable, "-m", "benchmarks.data_pipeline", "--probe", str(data),
             "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
             "--max-predictions", str(args.max_predictions)],
            env=env, capture_output=True, text=True)
        if probe.returncode:
            raise UserError(f"probe failed:\n{probe.stderr}")
        r[run] = json.loads(probe.stdout.strip().splitlines()[-1])
    return r


def _tile(src: Path, k: int, out: Path) -> None:
    """`src` repeated k times as a data directory: the same token shard files listed k times,
    sentence and document offsets shifted per copy."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    meta = json.loads((src / "meta.json").read_text())
    for shard in meta["shards"]:
        os.link(src / shard["file"], out / shard["file"])
    shutil.copytree(src / "tokenizer", out / "tokenizer")
    for name, step in (("sent_offsets.bin", meta["tokens"]), ("doc_offsets.bin",
                                                              meta["sentences"])):
        off = np.fromfile(src / name, dtype=np.int64)
        with open(out / name, "wb") as f:
            off[:1].tofile(f)
            for i in range(k):
                (off[1:] + i * step).tofile(f)
    meta.update({key: meta[key] * k for key in ("documents", "sentences", "tokens",
                                                 "text_bytes")},
                shards=meta["shards"] * k, source=f"{meta['source']} x{k}")
    (out / "meta.json").write_text(json.dumps(meta))


def _scale(args: argparse.Namespace) -> int:
    from bertcore.data.corpus import split_sentences

    sizes = [int(float(x) * 1e6) for x in args.sizes.split(",")]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="twinbert-scale-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        tok_dir = root / "tokenizer"
        if not (tok_dir / "tokenizer.json").is_file():
            train_tokenizer(iter_documents("builtin"), args.vocab_size).save(tok_dir)
        from bertcore.data.tokenizer import load_tokenizer

        tok = load_tokenizer(tok_dir)
        rows = []
        for n in sizes:
            corpus, data = root / f"corpus-{n // 10**6}M", root / f"data-{n // 10**6}M"
            if not corpus.exists():
                sentences = [s for d in iter_documents("builtin") for s in split_sentences(d)]
                sample = " ".join(sentences[:20000])
                tokens_per_byte = (len(tok.encode(sample, add_special_tokens=False))
                                   / len(sample.encode()))
                _synthesise(corpus, n, sentences, tokens_per_byte, seed=n)
            seconds = peak_rss = None
            if not (args.reuse_data and (data / "meta.json").is_file()):
                shutil.rmtree(data, ignore_errors=True)
                t0 = time.perf_counter()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bertcore.data", "prepare", "--corpus", str(corpus),
                     "--tokenizer", str(tok_dir), "--out", str(data), "--no-progress"],
                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                rss = _Peak(lambda: sum(_status_kb(p, "VmRSS") for p in _tree(proc.pid)), 0.05)
                out = proc.communicate()[0]
                seconds, peak_rss = time.perf_counter() - t0, rss.stop() / 1024
                if proc.returncode:
                    raise UserError(f"prepare failed:\n{out}")
            dirs = [(data, seconds, peak_rss)]
            if args.tile > 1:
                _tile(data, args.tile, root / f"{data.name}-x{args.tile}")
                dirs.append((root / f"{data.name}-x{args.tile}", None, None))
            for d, secs, rss_mb in dirs:
                meta = json.loads((d / "meta.json").read_text())
                rows.append((meta, secs, rss_mb, _probe_twice(d, args, env)))
                print(f"{meta['tokens'] / 1e6:.1f}M tokens: prepare {secs} s, {rows[-1][3]}",
                      file=sys.stderr, flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    print(f"data pipeline at scale on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, vocab {args.vocab_size}, B={args.batch_size}, "
          f"L={args.seq_len}, P={args.max_predictions}\n")
    print("| tokens | text | prepare MB/s | prepare peak RSS | first batch cold / warm "
          "| anon memory added cold / warm | per 1M tokens (cold) | batches/s (warm) |\n"
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for meta, seconds, rss_mb, r in rows:
        m, c, w = meta["tokens"] / 1e6, r["cold"], r["warm"]
        mbs = "-" if seconds is None else f"{meta['text_bytes'] / 1e6 / seconds:.2f}"
        rss = "-" if rss_mb is None else f"{rss_mb:,.0f} MB"
        print(f"| {m:,.1f}M | {meta['text_bytes'] / 1e6:,.0f} MB | {mbs} | {rss} | "
              f"{c['first_batch_s'] * 1e3:,.0f} / {w['first_batch_s'] * 1e3:,.0f} ms | "
              f"{c['anon_added_mb']:,.1f} / {w['anon_added_mb']:,.1f} MB | "
              f"{c['anon_added_mb'] / m:.3f} MB | {w['batches_per_s']:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
