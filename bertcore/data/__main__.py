"""`python -m bertcore.data`: pretokenize a corpus, and look at what the batches hold.

    python -m bertcore.data prepare --corpus builtin --tokenizer TOKDIR --out DATADIR
    python -m bertcore.data show DATADIR [--seq-len 128] [--batch-size 2]
"""

from __future__ import annotations

import argparse
import logging
import time

from bertcore.model.config import ModernBertConfig, TrainConfig
from bertcore.data.prepare import prepare
from bertcore.data.shards import DATA_OUTPUT, Shards
from bertcore.data.tokenizer import load_tokenizer
from bertcore.infra.errors import HelpFormatter, UserError, cli_entry
from bertcore.infra.files import check_apart, check_output, writing

logger = logging.getLogger(__name__)

# prepare --seq-len: a training seq-len, from TrainConfig's least to the longest position table
# of any model (ModernBERT's).
SEQ_LEN_MIN, SEQ_LEN_MAX = 8, ModernBertConfig.max_position_embeddings


def _prepare(args: argparse.Namespace) -> int:
    from bertcore.data.corpus import corpus_bytes, iter_documents

    if args.seq_len is not None and not SEQ_LEN_MIN <= args.seq_len <= SEQ_LEN_MAX:
        raise UserError(f"--seq-len {args.seq_len} is outside [{SEQ_LEN_MIN}, {SEQ_LEN_MAX}]: it "
                        f"is the seq-len of the training runs whose first epoch to build (e.g. "
                        f"128); leave it out to build none")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers} must be at least 1")
    corpus = None if args.corpus in ("builtin", "imdb") else args.corpus
    out = check_apart(args.out, {"--corpus": corpus, "--tokenizer": args.tokenizer})
    check_output(out, DATA_OUTPUT, overwrite=args.overwrite)
    tok = load_tokenizer(args.tokenizer)
    with writing(out, "the data directory"):   # prepare swaps it in complete, or leaves the old
        stats = prepare(iter_documents(args.corpus, args.text_column, args.split), tok, out,
                        source=args.corpus,
                        delimiters=args.delimiters, progress=not args.no_progress,
                        workers=args.workers, eval_fraction=args.eval_fraction,
                        total_bytes=corpus_bytes(args.corpus))
    logger.info(f"{stats.documents} documents, {stats.sentences} sentences, {stats.tokens} tokens "
                f"from {stats.text_bytes / 1e6:.1f} MB of text in {stats.seconds:.1f}s "
                f"({stats.mb_per_second:.2f} MB/s) -> {out}")
    if args.eval_fraction:
        logger.info(f"held out {stats.eval_documents} documents, {stats.eval_tokens} tokens -> "
                    f"{out / 'eval'}")
    if args.seq_len:
        cfg = TrainConfig(seq_len=args.seq_len, max_predictions=min(20, args.seq_len))
        from bertcore.data.batches import BatchIterator

        it = BatchIterator(Shards(out, tok), tok, cfg.replace(batch_size=1))
        t0 = time.perf_counter()
        n = it.batches_per_epoch   # builds DATADIR/epochs/<key>-epoch0.npy
                                   # (bertcore.data.instances)
        logger.info(f"at seq-len {args.seq_len}: {n} sequences per epoch (seed {cfg.seed}); "
                    f"epoch 0's order built in {time.perf_counter() - t0:.1f}s -> {it.epoch_cache}")
    return 0


def _data_dir(path: str) -> str:
    """`show`'s DATADIR, or one line naming the data of the model directory given instead."""
    from bertcore.modeldirs.resolve import layout_of
    from bertcore.train.rundir import RunDir

    layout = layout_of(path)
    if layout == "pretraining-run":
        data = RunDir(path).info().get("data")
        raise UserError(f"{path} is a training run, not a prepared data directory; it trained "
                        f"on {data}: python -m bertcore.data show {data}")
    if layout is not None:
        raise UserError(f"{path} is a model directory ({layout}), not a prepared data "
                        f"directory; show takes what python -m bertcore.data prepare --out wrote")
    return path


def _show(args: argparse.Namespace) -> int:
    from bertcore.data.batches import BatchIterator

    shards = Shards(_data_dir(args.datadir))
    tok = shards.tokenizer()
    cfg = TrainConfig(batch_size=args.batch_size, seq_len=args.seq_len,
                      max_predictions=args.max_predictions, nsp=not args.no_nsp,
                      whole_word_mask=args.whole_word_mask, seed=args.seed)
    print(shards)
    batch = next(BatchIterator(shards, tok, cfg))
    for i in range(args.batch_size):
        n = int(batch["attention_mask"][i].sum())
        print(f"\n--- row {i}" + (f"  next_sentence_label={batch['next_sentence_label'][i]}"
                                  if "next_sentence_label" in batch else ""))
        print(" ".join(tok.id_to_token(t) for t in batch["input_ids"][i][:n]))
        pos = batch["masked_positions"][i][batch["masked_weights"][i] > 0]
        targets = batch["masked_ids"][i][batch["masked_weights"][i] > 0]
        print("predict: " + ", ".join(f"{p}={tok.id_to_token(t)}" for p, t in zip(pos, targets)))
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from bertcore.data.hfdata import add_dataset_flags

    p = argparse.ArgumentParser(prog="python -m bertcore.data",
                                description="Pretokenize corpora into memory-mapped shards.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="tokenize a corpus once into DATADIR",
                        formatter_class=HelpFormatter)
    pr.add_argument("--corpus", default="builtin",
                    help="builtin | imdb | an aclImdb dir | a .txt/.jsonl file (or .gz/.zst), "
                         "a .parquet/.arrow file with a text column, a folder or a quoted glob, "
                         "a directory saved with datasets' save_to_disk, or hf:NAME[:CONFIG] "
                         "(a Hugging Face Hub dataset, streamed)")
    add_dataset_flags(pr)
    pr.add_argument("--tokenizer", required=True, metavar="TOKDIR",
                    help="tokenizer directory (python -m bertcore.tokenizer train)")
    pr.add_argument("--out", required=True, metavar="DATADIR")
    pr.add_argument("--seq-len", type=int, default=None,
                    help="optional: also build the first epoch's order for this seq-len (seed "
                         "0, MLM+NSP: the training defaults) in DATADIR/epochs, so the first run "
                         "starts at once instead of building it, and report its size (the shards "
                         "themselves work for any seq-len)")
    pr.add_argument("--delimiters", default=".?!", help="sentence-ending characters")
    pr.add_argument("--workers", type=int, default=None,
                    help="processes that split and tokenize (default: the machine's cores)")
    pr.add_argument("--eval-fraction", type=float, default=0.0, metavar="F",
                    help="hold out about this fraction of the documents (chosen by a hash of "
                         "their text: deterministic) as a separate data dir, DATADIR/eval")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing DATADIR")
    pr.add_argument("--no-progress", action="store_true")
    pr.set_defaults(fn=_prepare)
    sh = sub.add_parser("show", help="print the first batch of DATADIR as tokens",
                        formatter_class=HelpFormatter)
    sh.add_argument("datadir")
    sh.add_argument("--batch-size", type=int, default=2)
    sh.add_argument("--seq-len", type=int, default=64)
    sh.add_argument("--max-predictions", type=int, default=10)
    sh.add_argument("--whole-word-mask", action="store_true")
    sh.add_argument("--no-nsp", action="store_true")
    sh.add_argument("--seed", type=int, default=0)
    sh.set_defaults(fn=_show)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
