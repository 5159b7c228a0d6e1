"""The data a training run reads: its tokenizer and pretokenized shards, from `--data` (a
prepared directory) or from `--corpus`, tokenized once and cached under the cache root:

    CACHE/tokenizers/<corpus key>-v<vocab size>/    the WordPiece trained on the corpus
    CACHE/shards/<corpus key>-<tokenizer fingerprint>/   bertcore.data.prepare's output
    CACHE/locks/                                   one builder per corpus at a time

Used by both twins' train set-up (bertcore.train.setup) and by the benchmarks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bertcore.data.corpus import corpus_key, iter_documents
from bertcore.data.prepare import prepare
from bertcore.data.shards import Shards, dir_is_prepared
from bertcore.data.tokenizer import WordPiece, load_tokenizer, train_tokenizer
from bertcore.infra.errors import UserError
from bertcore.infra.files import cache_root, file_lock, remove_stale_temps

logger = logging.getLogger(__name__)


def resolve_data(args: Any, progress: bool = True) -> tuple[WordPiece, Shards]:
    """The tokenizer and shards a run reads: --data, or --corpus tokenized once and cached."""
    if args.data:
        data = Path(args.data)
        if not data.exists():
            raise UserError(f"--data {data} does not exist; build it with "
                            f"python -m bertcore.data prepare --out {data}")
        tok = load_tokenizer(args.tokenizer or data / "tokenizer")
        return tok, Shards(data, tok)
    column, split = getattr(args, "text_column", None), getattr(args, "split", None)
    key = corpus_key(args.corpus, column, split)
    # One process builds a corpus's cache entries; another run started on the same corpus at the
    # same time (the other twin, say) waits for them instead of training a second tokenizer
    # (training is not bit-reproducible, docs/data.md) and tokenizing the corpus again.
    lock = cache_root() / "locks" / f"{key}-v{args.vocab_size}.lock"
    with file_lock(lock, lambda: logger.info(f"waiting for another process that is building the "
                                             f"cache for {args.corpus} (lock {lock})")):
        if args.tokenizer:
            tok = load_tokenizer(args.tokenizer)
        else:
            tok_dir = cache_root() / "tokenizers" / f"{key}-v{args.vocab_size}"
            remove_stale_temps(tok_dir)     # of builders killed before us (we hold the lock)
            if not (tok_dir / "tokenizer.json").is_file():
                logger.info(f"training a {args.vocab_size}-entry WordPiece tokenizer on "
                            f"{args.corpus} (once; cached in {tok_dir})")
                train_tokenizer(iter_documents(args.corpus, column, split),
                                args.vocab_size).save(tok_dir)
            tok = load_tokenizer(tok_dir)
        data = cache_root() / "shards" / f"{key}-{tok.fingerprint}"
        remove_stale_temps(data)
        if not dir_is_prepared(data):
            logger.info(f"tokenizing {args.corpus} into {data} (once)")
            stats = prepare(iter_documents(args.corpus, column, split), tok, data,
                            source=args.corpus, progress=progress)
            logger.info(f"  {stats.documents} documents, {stats.sentences} sentences, "
                        f"{stats.tokens} tokens in {stats.seconds:.1f}s "
                        f"({stats.mb_per_second:.1f} MB/s)")
    return tok, Shards(data, tok)
