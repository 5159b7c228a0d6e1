import random
import string

import numpy as np
import pytest

from bertcore.data.tokenizer import SPECIALS, load_tokenizer, train_tokenizer
from bertcore.infra.errors import UserError
from helpers import synthetic_documents

TEXTS = [
    "Hello, world! This movie was [MASK] good.",
    "Café déjà vu: naïve façade, Ångström, Crème Brûlée!",
    "日本語のテキスト and 中文 mixed with English.",
    "Punctuation... (lots) of it; quotes \"like\" 'these' -- and #hashtags @mentions $5.00",
    "a" * 150 + " supercalifragilisticexpialidocious antidisestablishmentarianism",
    "[CLS] already [SEP] specials [MASK][MASK] inside",
    "   whitespace\t\tand\nnewlines   ",
]


def bert_style_vocab(path):
    """A vocab.txt laid out like Google's: [PAD], [unusedN], specials, chars, words, ## pieces."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(10)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("!\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~")
    chars += list("éàçïåûèüö日本語中文のテキスト")
    tokens += chars + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    tokens += ["hello", "world", "this", "movie", "was", "good", "the", "and", "with", "english",
               "mixed", "cafe", "deja", "vu", "##tion", "##ing", "##s", "punct", "##uation", "lots",
               "of", "it", "quotes", "like", "these", "super", "##cal", "already", "inside"]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


def test_ids_equal_bert_tokenizer_fast_on_a_bert_vocab(tmp_path):
    transformers = pytest.importorskip("transformers")
    bert_style_vocab(tmp_path / "vocab.txt")
    ours = load_tokenizer(tmp_path)
    # A directory holding only vocab.txt: how both transformers 4 (vocab_file=) and 5 (vocab=)
    # build a BERT tokenizer from a vocabulary, whatever their constructors' names.
    hf = transformers.BertTokenizerFast.from_pretrained(tmp_path, do_lower_case=True)
    for text in TEXTS:
        assert ours.encode(text) == hf(text)["input_ids"], text
    assert ours.encode(TEXTS[0], TEXTS[1]) == hf(TEXTS[0], TEXTS[1])["input_ids"]
    # [unusedN] and the named specials are never masking candidates
    assert ours.is_special[ours.mask_id] and ours.is_special[5] and not ours.is_special[20]


def test_train_save_load_round_trip_and_hf_loads_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    docs = synthetic_documents(200) + TEXTS
    tok = train_tokenizer(docs, 300)
    assert tok.tokens[:5] == SPECIALS
    assert tok.vocab_size <= 300
    tok.save(tmp_path / "tok")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        assert (tmp_path / "tok" / name).is_file()
    again = load_tokenizer(tmp_path / "tok")
    assert again.fingerprint == tok.fingerprint
    hf = transformers.BertTokenizerFast.from_pretrained(tmp_path / "tok")
    for text in TEXTS:
        assert tok.encode(text) == hf(text)["input_ids"]
    # vocab.txt alone gives the same tokenizer
    (tmp_path / "tok" / "tokenizer.json").unlink()
    only_vocab = load_tokenizer(tmp_path / "tok")
    assert only_vocab.fingerprint == tok.fingerprint
    assert [only_vocab.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]


def test_mask_token_in_text_stays_one_token():
    tok = train_tokenizer(synthetic_documents(100), 200)
    ids = tok.encode("the movie was [MASK] .", add_special_tokens=False)
    assert tok.mask_id in ids
    assert tok.is_continuation.sum() > 0  # some ## pieces were learned


def test_vocab_too_small_for_alphabet():
    with pytest.raises(UserError, match="too small.*alphabet"):
        train_tokenizer(synthetic_documents(50) + TEXTS, 30)


def test_missing_and_bad_tokenizer_dirs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither tokenizer.json nor vocab.txt"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "nospecial").mkdir()
    (tmp_path / "nospecial" / "vocab.txt").write_text("a\nb\nc\n")
    with pytest.raises(UserError, match="special tokens"):
        load_tokenizer(tmp_path / "nospecial")
    # a file that is no tokenizer (a run's config.json, a picture) is named, not its folder
    (tmp_path / "config.json").write_text('{"vocab_size": 200, "hidden_size": 32}')
    (tmp_path / "loss.png").write_bytes(b"\x89PNG")
    for name in ("config.json", "loss.png"):
        with pytest.raises(UserError, match=rf"tokenizer {tmp_path / name} is .*no.* tokenizer.*"
                                            rf"tokenizer.json and/or vocab.txt"):
            load_tokenizer(tmp_path / name)


def test_padding_and_truncation_in_tokenizer_json_are_turned_off(tmp_path):
    """A published tokenizer.json may pad and truncate to 128; loaded, texts keep their length."""
    import json

    tok = train_tokenizer(synthetic_documents(200), 300)
    tok.tokenizer.enable_padding(length=128, pad_id=tok.pad_id, pad_token="[PAD]")
    tok.tokenizer.enable_truncation(128)
    tok.save(tmp_path / "tok")
    saved = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert saved["padding"]["strategy"] == {"Fixed": 128}
    assert saved["truncation"]["max_length"] == 128
    assert len(tok.encode("the movie was great .")) == 128  # what the file asks for

    loaded = load_tokenizer(tmp_path / "tok")
    short = "the movie was great ."
    long = " ".join(["the movie was great and the actors were wonderful ."] * 30)
    tok.tokenizer.no_padding()
    tok.tokenizer.no_truncation()
    expected_short = tok.encode(short, add_special_tokens=False)
    expected_long = tok.encode(long, add_special_tokens=False)
    assert 3 <= len(expected_short) < 10 and len(expected_long) > 250
    assert loaded.pad_id not in expected_short + expected_long
    assert loaded.encode(short) == [loaded.cls_id] + expected_short + [loaded.sep_id]
    assert loaded.encode(long) == [loaded.cls_id] + expected_long + [loaded.sep_id]
    assert loaded.encode_batch([short, long]) == [expected_short, expected_long]
    # the file's own path loads the same way
    assert load_tokenizer(tmp_path / "tok" / "tokenizer.json").encode(long) == loaded.encode(long)


MIXED = TEXTS + [
    "Plain ASCII with MiXeD CaSe, digits 12345 and [mask] in lower case.",
    "form\x0cfeed and vertical\x0btab and DEL\x7f and NUL\x00 inside words",
    "bell\x07and escape\x1b[0m codes",
    "tab\tseparated\tcolumns\r\nand CRLF",
    "", " ", "[MASK]", "x" * 120,
    "Curly \u201cquotes\u201d and an em\u2014dash",
    "ALL CAPS SHOUTING ABOUT THE MOVIE!!!",
]


def split_ids(batch_ids, texts):
    flat, lens = batch_ids(texts)
    assert flat.dtype == batch_ids.dtype and len(lens) == len(texts)
    return [list(map(int, x)) for x in np.split(flat, np.cumsum(lens)[:-1])] if texts else []


def own_ids(tok, texts):
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def random_ascii_texts(n, seed=0):
    """Random ASCII mixing words, digits, every punctuation mark, brackets around special-token
    names, runs of whitespace and over-long words."""
    rng = random.Random(seed)
    parts = ["the", "Movie", "WAS", "good", "un", "##", "123", "4th", "x" * 120, "[", "]", "mask",
             "MASK", "[mask]", "[MASK", "SEP]", "\t", "\n", "\r\n", " ", "  "]
    parts += list(string.punctuation) + list(string.ascii_letters) + list(string.digits)
    return ["".join(rng.choice(parts) + rng.choice(["", " "]) for _ in range(rng.randint(0, 40)))
            for _ in range(n)]


@pytest.mark.parametrize("lowercase", [True, False])
def test_batch_ids_shortcut_gives_the_tokenizers_own_ids(tmp_path, lowercase):
    from tokenizers import AddedToken, normalizers

    from bertcore.data.tokenizer import _ASCII_WORDS, BatchIds

    docs = synthetic_documents(200) + TEXTS + [t.upper() for t in TEXTS]
    tok = train_tokenizer(docs, 400, lowercase=lowercase).tokenizer
    batch_ids = BatchIds(tok, np.uint16)
    assert batch_ids.lowercase is lowercase  # the shortcut is on for BERT's pipeline
    assert split_ids(batch_ids, MIXED) == own_ids(tok, MIXED)
    assert split_ids(batch_ids, MIXED) == own_ids(tok, MIXED)  # again, from the cache
    assert split_ids(batch_ids, []) == []
    fuzz = random_ascii_texts(2000)
    assert split_ids(batch_ids, fuzz) == own_ids(tok, fuzz)
    # a full cache starts again; the ids do not change
    small = BatchIds(tok, np.uint32, cache_words=50)
    for i in range(0, 400, 100):
        batch = fuzz[i:i + 100]
        assert split_ids(small, batch) == own_ids(tok, batch)
        words = {w for t in batch for w in _ASCII_WORDS[lowercase].findall(
            t.lower() if lowercase else t)}
        assert 0 < len(small._cache) <= max(50, len(words))
    # a published vocab.txt goes through our BERT pipeline too
    bert_style_vocab(tmp_path / "vocab.txt")
    hf_style = load_tokenizer(tmp_path).tokenizer
    assert split_ids(BatchIds(hf_style), MIXED + fuzz) == own_ids(hf_style, MIXED + fuzz)
    # an added token matched in the normalised text ("[Movie]" finds "[MOVIE]" when lowercasing)
    tok.add_tokens([AddedToken("[Movie]", normalized=True)])
    added = ["a [movie] [MOVIE] [Movie]", "[MoViE]!"]
    assert split_ids(BatchIds(tok), added) == own_ids(tok, added)
    # any other normaliser: no shortcut, the tokenizer itself
    tok.normalizer = normalizers.NFKC()
    other = BatchIds(tok)
    assert other.lowercase is None
    assert split_ids(other, MIXED) == own_ids(tok, MIXED)
