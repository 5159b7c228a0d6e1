"""WordPiece tokenizer: train, save, load (Hugging Face `tokenizers` does the work).

A tokenizer directory holds `tokenizer.json` (the fast tokenizer), `vocab.txt` (one token a line,
the format every BERT release ships) and `tokenizer_config.json`, so
`transformers.BertTokenizerFast.from_pretrained(dir)` loads what we save, and we load a directory
that holds either file (a plain BERT `vocab.txt` is enough).

    python -m bertcore.tokenizer train --corpus builtin --vocab-size 8192 --out TOKDIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tokenizers import (Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                        trainers)

from bertcore.infra.errors import UserError, cli_entry
from bertcore.infra.files import (Output, atomic_path, check_apart, check_output, replace_output,
                                  writing)
from bertcore.model.sizes import check_vocab_size

logger = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIALS = [PAD, UNK, CLS, SEP, MASK]
# What `save` writes: a tokenizer directory as the output of `train --out` (what --overwrite may
# replace).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")
TOKENIZER_OUTPUT = Output("a tokenizer", frozenset(TOKENIZER_FILES))


class WordPiece:
    """A loaded BERT WordPiece tokenizer plus the id tables the masking code needs."""

    def __init__(self, tokenizer: Tokenizer, lowercase: bool):
        self.tokenizer = tokenizer
        self.lowercase = lowercase
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        missing = [t for t in SPECIALS if t not in vocab]
        if missing:
            raise UserError(f"tokenizer vocabulary lacks the special tokens {missing}; add them "
                            f"to vocab.txt or retrain with python -m bertcore.tokenizer train")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            vocab[t] for t in SPECIALS)
        # Tokens in id order; holes (ids with no token) become "" and count as special.
        tokens = [""] * self.vocab_size
        for tok, i in vocab.items():
            tokens[i] = tok
        self.tokens = tokens
        # Specials are never masked nor used as random replacements: the five named tokens,
        # HF-style [unusedN] slots and any other bracketed added token.
        self.is_special = np.array(
            [t in SPECIALS or t == "" or (t.startswith("[") and t.endswith("]") and len(t) > 2)
             for t in tokens], dtype=bool)
        # "##" marks a piece that continues the previous word (whole-word masking moves them
        # together with their word).
        self.is_continuation = np.array([t.startswith("##") for t in tokens], dtype=bool)
        self.replacement_ids = np.flatnonzero(~self.is_special).astype(np.int32)

    # ---- identity ---------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """A hash of what decides the ids: the ordered vocabulary and the lowercase flag.

        Shards record it; loading shards with a tokenizer of another fingerprint is refused."""
        h = hashlib.sha256()
        h.update(f"lowercase={self.lowercase}\n".encode())
        h.update("\n".join(self.tokens).encode("utf-8"))
        return h.hexdigest()[:16]

    # ---- encoding ---------------------------------------------------------------------------

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True):
        return self.tokenizer.encode(text, pair, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text without [CLS]/[SEP] (multithreaded inside `tokenizers`)."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def id_to_token(self, i: int) -> str:
        return self.tokens[i]

    # ---- save -------------------------------------------------------------------------------

    def save(self, out_dir: str | Path) -> Path:
        """Write tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json
        (TOKENIZER_FILES), atomically."""
        out_dir = Path(out_dir)
        with atomic_path(out_dir, is_dir=True) as tmp:
            self.write_files(tmp)
        return out_dir

    def write_files(self, folder: Path) -> None:
        """`save`'s files, into the existing directory `folder`."""
        self.tokenizer.save(str(folder / "tokenizer.json"))
        (folder / "vocab.txt").write_text("\n".join(self.tokens) + "\n", encoding="utf-8")
        tok_config = {
            "tokenizer_class": "BertTokenizer", "do_lower_case": self.lowercase,
            "model_max_length": 512, "unk_token": UNK, "sep_token": SEP, "pad_token": PAD,
            "cls_token": CLS, "mask_token": MASK, "strip_accents": None,
            "tokenize_chinese_chars": True, "clean_up_tokenization_spaces": True,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
        specials = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS,
                    "mask_token": MASK}
        (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def _pipeline(tok: Tokenizer, lowercase: bool) -> Tokenizer:
    """BERT's normaliser, pre-tokeniser, [CLS]/[SEP] template and WordPiece decoder."""
    # strip_accents=None follows lowercase, exactly as BertTokenizerFast does.
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    # Special tokens are matched in raw text before normalisation ("[MASK]" stays one token).
    tok.add_special_tokens(SPECIALS)
    cls_id, sep_id = tok.token_to_id(CLS), tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0", pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)])
    return tok


# Text handed to the trainer at a time: a longer document (50 MB without a newline) is cut at a
# whitespace into pieces of at most this many characters. The trainer counts words, which never
# span whitespace, so the vocabulary is the same; its memory is that of one piece's words, not
# of the whole line's (3.6 GB for 50 MB of text as one string).
TRAIN_PIECE_CHARS = 1 << 20
_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")


def pieces(text: str, limit: int = TRAIN_PIECE_CHARS) -> Iterator[str]:
    """`text` cut after a whitespace into pieces of at most `limit` characters (where a run of
    `limit` characters holds no whitespace, inside it: a 'word' that long is [UNK] anyway)."""
    start, n = 0, len(text)
    while n - start > limit:
        m = _LAST_SPACE.search(text, start, start + limit)
        end = m.end() if m and m.end() > start else start + limit
        yield text[start:end]
        start = end
    yield text[start:]


def train_tokenizer(documents: Iterable[str], vocab_size: int, lowercase: bool = True,
                    min_frequency: int = 2) -> WordPiece:
    """Train a WordPiece vocabulary of `vocab_size` entries (specials first); fewer, with a
    warning, when the corpus (or `min_frequency`) leaves fewer."""
    if vocab_size < len(SPECIALS) + 1:
        raise UserError(f"vocab-size={vocab_size} is too small; use at least a few thousand")
    check_vocab_size(vocab_size)   # beyond 2^24 the Rust trainer aborts the process
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 0:
        raise UserError(f"--min-frequency {min_frequency} must be a count of at least 0 (pairs "
                        f"seen fewer times are not merged; default 2)")
    tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIALS, continuing_subword_prefix="##",
                                        show_progress=False)
    seen = [0]

    def counted(docs: Iterable[str]) -> Iterator[str]:
        for d in docs:
            seen[0] += 1
            if len(d) > TRAIN_PIECE_CHARS:
                yield from pieces(d, TRAIN_PIECE_CHARS)
            else:
                yield d

    tok.train_from_iterator(counted(documents), trainer)
    got = tok.get_vocab_size()
    if got > vocab_size:
        # The trainer always keeps every character of the corpus alphabet (plus "##" forms).
        raise UserError(f"vocab-size={vocab_size} is too small for the {len(SPECIALS)} special "
                        f"tokens and this corpus's alphabet ({got} entries needed); use "
                        f"--vocab-size {max(got * 2, 1000)} or more")
    if seen[0] == 0 or got <= len(SPECIALS):
        raise UserError("the corpus gave no text to train the tokenizer on; check --corpus")
    if got < vocab_size:
        # The trainer stops when no pair of pieces occurs min_frequency times: a small corpus
        # (its words all whole already), or a min_frequency too high for it (words left in
        # pieces or single characters, a vocabulary a model learns little from).
        logger.warning(f"warning: the tokenizer has only {got} of the {vocab_size} entries asked "
                       f"for: no more pairs of pieces occur at least {min_frequency} times "
                       f"(--min-frequency) in this corpus; lower --min-frequency or train on a "
                       f"larger corpus to fill it (or pass --vocab-size {got} to mean it)")
    return WordPiece(_pipeline(tok, lowercase), lowercase)


def load_tokenizer(path: str | Path) -> WordPiece:
    """Load a directory holding tokenizer.json and/or vocab.txt (or one of those files)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"tokenizer {path} does not exist; train one with "
                        f"python -m bertcore.tokenizer train --out {path}")
    d = path if path.is_dir() else path.parent
    expected = ("a tokenizer is a directory with tokenizer.json and/or vocab.txt (what python -m "
                "bertcore.tokenizer train --out writes), or one of those two files")
    if not path.is_dir() and path.suffix not in (".json", ".txt"):
        raise UserError(f"tokenizer {path} is a file that is no tokenizer; {expected}")
    lowercase = True
    cfg_file = d / "tokenizer_config.json"
    if cfg_file.is_file():
        try:
            lowercase = bool(json.loads(cfg_file.read_text()).get("do_lower_case", True))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{cfg_file} is not valid JSON ({e}); fix or delete it")
    tj = path if path.suffix == ".json" else d / "tokenizer.json"
    vt = path if path.suffix == ".txt" else d / "vocab.txt"
    try:
        if tj.is_file():
            tok = Tokenizer.from_file(str(tj))
            kind = json.loads(tok.to_str()).get("model", {}).get("type")
            if kind != "WordPiece":
                # e.g. the BPE of the published ModernBERT checkpoints: masking's word pieces
                # ("##"), the specials and the exported tokenizer files all assume WordPiece.
                raise UserError(f"tokenizer {tj} is a {kind} tokenizer; this project reads "
                                f"WordPiece tokenizers (BERT's) only; train one with python -m "
                                f"bertcore.tokenizer train")
            # Published tokenizer.json files often carry fixed padding and truncation (e.g. to 128
            # ids). Our ids must be each text's real tokens: batches pad and cut sequences
            # themselves, and `prepare` must neither fill shards with [PAD] nor drop words.
            tok.no_padding()
            tok.no_truncation()
            if tok.normalizer is not None:
                lowercase = json.loads(tok.normalizer.__getstate__()).get("lowercase", lowercase)
            return WordPiece(tok, lowercase)
        if vt.is_file():
            model = models.WordPiece.from_file(str(vt), unk_token=UNK, max_input_chars_per_word=100)
            tok = Tokenizer(model)
            missing = [t for t in SPECIALS if tok.token_to_id(t) is None]
            if missing:  # checked before _pipeline, which would append them
                raise UserError(f"{vt} lacks the special tokens {missing}; add them to it or "
                                f"retrain with python -m bertcore.tokenizer train")
            return WordPiece(_pipeline(tok, lowercase), lowercase)
    except UserError:
        raise
    except Exception as e:  # tokenizers raises plain Exceptions for unreadable files
        if not path.is_dir():
            raise UserError(f"tokenizer {path} is not a tokenizer file ({e}); {expected}")
        raise UserError(f"cannot read the tokenizer in {d} ({e}); retrain or replace it")
    raise UserError(f"{d} holds neither tokenizer.json nor vocab.txt; pass a tokenizer directory "
                    f"or train one with python -m bertcore.tokenizer train")


# ---- the same ids, faster (prepare's hot loop) ------------------------------------------------

# ASCII control characters that BertNormalizer's clean_text deletes (it turns tab, newline and
# carriage return into spaces, which the pre-tokenizer splits on anyway).
_DELETED_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# BertPreTokenizer on ASCII: runs of letters and digits, and each punctuation character alone
# (Rust's is_ascii_punctuation: !"#$%&'()*+,-./ :;<=>?@ [\]^_` {|}~); whitespace splits.
_ASCII_WORDS = {True: re.compile(r"[0-9a-z]+|[!-/:-@\[-`{-~]"),
                False: re.compile(r"[0-9A-Za-z]+|[!-/:-@\[-`{-~]")}


def _bert_pipeline_lowercase(state: dict) -> bool | None:
    """BertNormalizer's lowercase flag when a tokenizer (`state`: its tokenizer.json) is BERT's
    normaliser + pre-tokenizer + WordPiece (the shortcut below is exact for that pipeline only);
    None for anything else."""
    norm, pre = state.get("normalizer") or {}, state.get("pre_tokenizer") or {}
    if (norm.get("type"), pre.get("type"), state["model"].get("type")) != (
            "BertNormalizer", "BertPreTokenizer", "WordPiece"):
        return None
    return bool(norm.get("lowercase", True))


class BatchIds:
    """`flat, lens = batch_ids(texts)`: every text's token ids without [CLS]/[SEP], concatenated
    (`dtype`), and how many each text has: exactly what `tokenizer.encode_batch(texts,
    add_special_tokens=False)` gives, several times faster on English prose (docs/data.md;
figures in BENCHMARKS.md).

    `tokenizers` spends its time per word: BertNormalizer's accent stripping decomposes every
    character (NFD) and WordPiece looks up every candidate piece of every word again, though a
    corpus repeats the same few hundred thousand words. For plain ASCII text (no control
    characters, no added token such as "[MASK]" in it, any case) BERT's normaliser only lowercases
    and its pre-tokenizer only splits into runs of letters and digits and single punctuation marks,
    which `_ASCII_WORDS` does. Each such word's ids come from a cache filled by `tokenizers` itself
    (WordPiece sees words one at a time anyway, so a word's ids do not depend on its neighbours).
    Every other text, and any tokenizer that is not BERT's pipeline, goes through `tokenizers`
    whole. The cache holds at most `cache_words` words and starts again when full, so memory stays
    flat on any corpus. tests/test_tokenizer.py checks the ids against `tokenizers` on mixed and
    random text.
    """

    def __init__(self, tokenizer: Tokenizer, dtype=np.uint32, cache_words: int = 1 << 16):
        self.tokenizer, self.dtype, self.cache_words = tokenizer, np.dtype(dtype), cache_words
        state = json.loads(tokenizer.to_str())
        self.lowercase = _bert_pipeline_lowercase(state)
        added = [t["content"] for t in state.get("added_tokens", [])]
        # Added tokens are matched in the raw (or normalised) text before the pre-tokenizer: a
        # text that may hold one, in any case, takes the slow path.
        self._added = (re.compile("|".join(map(re.escape, added)), re.IGNORECASE)
                       if added else None)
        self._cache: dict[str, bytes] = {}

    def _bytes(self, texts: list[str]) -> list[bytes]:
        encs = self.tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
        return [np.asarray(e.ids, self.dtype).tobytes() for e in encs]

    def _word_bytes(self, words: list[str], per_text: int = 1000) -> list[bytes]:
        """The ids of each word, from texts of `per_text` words joined by spaces (one text per
        word would cost an Encoding object each; one text for all is slower in `tokenizers`):
        `word_ids` says which word of its text each id belongs to."""
        groups = [words[i:i + per_text] for i in range(0, len(words), per_text)]
        encs = self.tokenizer.encode_batch([" ".join(g) for g in groups], add_special_tokens=False)
        out, k = [], self.dtype.itemsize
        for group, e in zip(groups, encs):
            data = np.asarray(e.ids, self.dtype).tobytes()
            word_of = np.asarray(e.word_ids, np.int64)
            cuts = (np.searchsorted(word_of, np.arange(len(group) + 1)) * k).tolist()
            out += [data[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        return out

    def _plain(self, text: str) -> bool:
        return (text.isascii() and _DELETED_CONTROLS.search(text) is None
                and (self._added is None or self._added.search(text) is None))

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.lowercase is None:
            pieces = self._bytes(texts)
        else:
            find = _ASCII_WORDS[self.lowercase].findall
            lower = self.lowercase
            words = [find(t.lower() if lower else t) if self._plain(t) else None for t in texts]
            cache = self._cache
            new = list({w for ws in words if ws for w in ws if w not in cache})
            if len(cache) + len(new) > self.cache_words:
                cache.clear()
                new = list({w for ws in words if ws for w in ws})
            cache.update(zip(new, self._word_bytes(new)))
            slow = iter(self._bytes([t for t, ws in zip(texts, words) if ws is None]))
            join = b"".join
            pieces = [next(slow) if ws is None else join([cache[w] for w in ws]) for ws in words]
        lens = np.fromiter(map(len, pieces), np.int64, len(pieces)) // self.dtype.itemsize
        return np.frombuffer(b"".join(pieces), self.dtype), lens


# ---- command line --------------------------------------------------------------------------

@cli_entry
def main(argv: list[str] | None = None) -> int:
    from bertcore.data.corpus import iter_documents
    from bertcore.data.hfdata import add_dataset_flags

    p = argparse.ArgumentParser(prog="python -m bertcore.tokenizer",
                                description="Train a BERT WordPiece tokenizer on a corpus.")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a WordPiece vocabulary and save it to --out")
    t.add_argument("--corpus", default="builtin",
                   help="builtin | imdb | an aclImdb directory | a .txt/.jsonl/.parquet/.arrow "
                        "file or folder, a directory saved with datasets' save_to_disk, or "
                        "hf:NAME[:CONFIG] (default: builtin)")
    add_dataset_flags(t)
    t.add_argument("--vocab-size", type=int, default=30522,
                   help="entries in the vocabulary, specials included (default: 30522, BERT's)")
    t.add_argument("--min-frequency", type=int, default=2,
                   help="ignore pairs seen fewer times (default: 2)")
    t.add_argument("--no-lowercase", action="store_true", help="keep case (a cased vocabulary)")
    t.add_argument("--out", required=True, help="directory to write (replaced atomically)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)

    out = check_apart(args.out, {"--corpus": None if args.corpus in ("builtin", "imdb")
                                 else args.corpus})
    check_output(out, TOKENIZER_OUTPUT, overwrite=args.overwrite)
    start = time.perf_counter()
    wp = train_tokenizer(iter_documents(args.corpus, args.text_column, args.split),
                         args.vocab_size, lowercase=not args.no_lowercase,
                         min_frequency=args.min_frequency)
    with writing(out, "the tokenizer"), replace_output(out, TOKENIZER_OUTPUT) as tmp:
        wp.write_files(tmp)
    logger.info(f"trained a {wp.vocab_size}-entry WordPiece vocabulary on {args.corpus} in "
                f"{time.perf_counter() - start:.1f}s -> {out} (fingerprint {wp.fingerprint})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
