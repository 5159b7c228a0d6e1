"""torchbert.tag and jaxbert.tag (token tagging), held to the same behaviour: the data (each
word's first piece labelled, CoNLL and JSONL read alike, truncation drops words), seqeval's
scores on a hand-made case, train / evaluate / predict end to end, best/ loading in transformers
as BertForTokenClassification, ElectraForTokenClassification or ModernBertForTokenClassification
with the twin's own logits, and bad input refused in one line naming the file and line. Each
twin test runs once per twin."""

from __future__ import annotations

import importlib
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers

from bertcore.data.tokenizer import train_tokenizer
from bertcore.infra.errors import UserError
from bertcore.model.config import ElectraConfig, ModernBertConfig
from bertcore.tag.data import (IGNORE, Sentence, TagMap, encode, entities, evaluate,
                               read_sentences, scores)
from bertcore.tag.model import open_tagger
from helpers import assert_one_line_error, epoch_rows

CPU = torch.device("cpu")
MAX_LEN = 24
FAST = ("--max-len", str(MAX_LEN), "--batch-size", "8", "--no-progress")
ATOL = 1e-5
# jaxbert compiles each new program (a step, logits at each batch shape) in every command: its
# end-to-end runs take 30-45 s on 2 CPU cores, torchbert's a few.
JAX_SLOW = pytest.mark.parametrize("twin", ["torch", pytest.param("jax", marks=pytest.mark.slow)])

# A tagging task a tiny model learns from the words alone: first names are B-PER, a surname
# (only ever after a first name) I-PER, a city B-LOC, anything else O.
FIRST = "alice bob carol dave erin frank grace heidi".split()
LAST = "smith jones brown taylor".split()
CITIES = "paris london berlin rome madrid".split()
FILLER = "the met in visited and then went to from with a today we saw later home".split()


def tagged(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(3, 7)):
            r = rng.random()
            if r < 0.2:
                words.append(rng.choice(FIRST))
                tags.append("B-PER")
                if rng.random() < 0.5:
                    words.append(rng.choice(LAST))
                    tags.append("I-PER")
            elif r < 0.35:
                words.append(rng.choice(CITIES))
                tags.append("B-LOC")
            else:
                words.append(rng.choice(FILLER))
                tags.append("O")
        out.append({"words": words, "tags": tags})
    return out


def write_jsonl(path: Path, rows: list[dict], words: str = "words", tags: str = "tags") -> Path:
    path.write_text("".join(json.dumps({words: r["words"], tags: r["tags"]}) + "\n"
                            for r in rows), encoding="utf-8")
    return path


def write_conll(path: Path, rows: list[dict]) -> Path:
    """CoNLL-2003's shape: -DOCSTART-, four columns (word, POS, chunk, tag), blank lines."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for r in rows:
        lines += [f"{w} NN I-NP {t}" for w, t in zip(r["words"], r["tags"])] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def tokenizer():
    docs = [" ".join(r["words"]) for r in tagged(300, 9)]
    return train_tokenizer(docs, 120)


def bert_dir(path: Path, seed: int = 0) -> Path:
    """A tiny random transformers.BertForPreTraining saved by transformers, with our tokenizer."""
    tok = tokenizer()
    tok.save(path)
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=64)
    transformers.BertForPreTraining(cfg).save_pretrained(path)
    return path


def electra_dir(path: Path, seed: int = 0) -> Path:
    """A tiny random transformers.ElectraForPreTraining (the discriminator, 32 wide over 16-wide
    embeddings, so embeddings_project is there) saved by transformers."""
    tok = tokenizer()
    tok.save(path)
    torch.manual_seed(seed)
    own = ElectraConfig(vocab_size=tok.vocab_size, embedding_size=16, hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, generator_hidden_size=0.5,
                        pad_token_id=tok.pad_id)
    d = {k: v for k, v in own.to_dict("discriminator").items() if k != "architectures"}
    transformers.ElectraForPreTraining(transformers.ElectraConfig(**d)).save_pretrained(path)
    return path


def modernbert_dir(path: Path, seed: int = 0) -> Path:
    """A tiny random transformers.ModernBertForMaskedLM (global, local, global layers; a window
    narrower than the sentences) saved by transformers."""
    tok = tokenizer()
    tok.save(path)
    torch.manual_seed(seed)
    own = ModernBertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=2, max_position_embeddings=64, global_attn_every_n_layers=2,
        local_attention=8, pad_token_id=tok.pad_id, cls_token_id=tok.cls_id,
        bos_token_id=tok.cls_id, sep_token_id=tok.sep_id, eos_token_id=tok.sep_id)
    d = {k: v for k, v in own.to_dict().items() if k != "architectures"}
    transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**d)).save_pretrained(path)
    return path


MODELS = {"bert": (bert_dir, "BertForTokenClassification"),
          "electra": (electra_dir, "ElectraForTokenClassification"),
          "modernbert": (modernbert_dir, "ModernBertForTokenClassification")}


class TagCli:
    """A twin's tag command line in-process (`main(argv)`): the result has the returncode /
    stdout / stderr of a finished subprocess."""

    def __init__(self, twin: str, capsys):
        self.main = importlib.import_module(f"{twin}bert.tag").main
        self.capsys = capsys

    def __call__(self, *args: str, check: bool = True) -> SimpleNamespace:
        self.capsys.readouterr()
        rc = self.main(list(args))
        out, err = self.capsys.readouterr()
        if check:
            assert rc == 0, out[-3000:] + err[-3000:]
        return SimpleNamespace(returncode=rc, stdout=out, stderr=err)


def twin_logits(twin: str, tagger, b: dict[str, np.ndarray]) -> np.ndarray:
    if twin == "torch":
        from torchbert import tag as tt
        return tt.predict_logits(tt.load_tagger(tagger, CPU), b, CPU)
    from jaxbert import tag as jt
    model, params = jt.load_tagger(tagger)
    return jt.logits_fn(model)(params, b)


def transformers_logits(path: Path, cls_name: str, b: dict[str, np.ndarray]) -> np.ndarray:
    kw = {"attn_implementation": "eager"} if cls_name.startswith("ModernBert") else {}
    model, info = getattr(transformers, cls_name).from_pretrained(path, output_loading_info=True,
                                                                  **kw)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.eval()
    feed = {"input_ids": torch.from_numpy(b["input_ids"]).long(),
            "attention_mask": torch.from_numpy(b["attention_mask"]).long()}
    if not cls_name.startswith("ModernBert"):
        feed["token_type_ids"] = torch.from_numpy(b["token_type_ids"]).long()
    with torch.no_grad():
        return model(**feed).logits.numpy()


# ---- data -------------------------------------------------------------------------------------

def test_first_piece_is_labelled():
    """Each word's first piece carries its tag, its other pieces, [CLS], [SEP] and padding carry
    IGNORE; a word the vocabulary splits is one tag, not several."""
    tok = tokenizer()
    words = ("alice", "visited", "berlinmadrid", "today")   # the third: several pieces
    pieces = [tok.encode_batch([w])[0] for w in words]
    assert len(pieces[2]) > 1, pieces
    tags = TagMap(["B-LOC", "B-PER", "O"])
    enc = encode(tok, [Sentence(words, ("B-PER", "O", "B-LOC", "O"), "x:1")], tags, MAX_LEN)
    ids, labels = enc.input_ids[0], enc.labels[0]
    flat = [p for ps in pieces for p in ps]
    assert ids[0] == tok.cls_id and list(ids[1:1 + len(flat)]) == flat
    assert ids[1 + len(flat)] == tok.sep_id and (ids[2 + len(flat):] == tok.pad_id).all()
    want = np.full(MAX_LEN, IGNORE)
    at = 1
    for ps, t in zip(pieces, ("B-PER", "O", "B-LOC", "O")):
        want[at] = tags.index[t]
        at += len(ps)
    np.testing.assert_array_equal(labels, want)
    assert enc.starts[0].sum() == 4 and enc.kept[0] == 4
    assert enc.truncated == 0 and enc.dropped_words == 0


def test_truncation_drops_the_words_that_do_not_fit():
    """run_ner's rule: pieces past max_len - 2 are cut; a word whose first piece is cut is
    neither predicted nor scored; one whose first piece fits keeps its tag."""
    tok = tokenizer()
    words = tuple(["alice", "berlinmadrid"] + ["the"] * 10)
    n_first = len(tok.encode_batch(["alice"])[0])
    max_len = 2 + n_first + 1 + 3     # alice, the first piece of the long word, ... cut
    tags = TagMap(["B-LOC", "B-PER", "O"])
    s = Sentence(words, tuple(["B-PER", "B-LOC"] + ["O"] * 10), "x:1")
    enc = encode(tok, [s], tags, max(max_len, 8))
    kept = int(enc.kept[0])
    assert 2 <= kept < len(words) and enc.truncated == 1
    assert enc.dropped_words == len(words) - kept
    assert (enc.labels[0] != IGNORE).sum() == kept and enc.attention_mask[0].all()

    def perfect(batch):   # logits that tag every labelled piece right
        z = np.zeros(batch["labels"].shape + (len(tags),))
        np.put_along_axis(z, np.maximum(batch["labels"], 0)[..., None], 5.0, -1)
        return z

    res = evaluate(perfect, enc, tags, 4, [s])
    assert len(res["predictions"][0]) == kept and res["f1"] == 1.0 and res["accuracy"] == 1.0


def test_conll_and_jsonl_read_alike(tmp_path):
    """CoNLL (word first, tag last, -DOCSTART- skipped, no blank line at the end) and JSONL with
    other key names give the same sentences; the format comes from the extension or --format."""
    rows = tagged(5, 1)
    conll = write_conll(tmp_path / "a.conll", rows)
    jsonl = write_jsonl(tmp_path / "a.jsonl", rows, "tokens", "ner_tags")
    a = read_sentences(conll)
    b = read_sentences(jsonl, None, "tokens", "ner_tags")
    assert [(s.words, s.tags) for s in a] == [(s.words, s.tags) for s in b] == [
        (tuple(r["words"]), tuple(r["tags"])) for r in rows]
    assert a[0].where == f"{conll}:3" and b[1].where == f"{jsonl}:2"
    other = tmp_path / "a.data"
    other.write_text(conll.read_text(), encoding="utf-8")
    with pytest.raises(UserError, match="--format"):
        read_sentences(other)
    assert len(read_sentences(other, "conll")) == 5
    untagged = read_sentences(conll, need_tags=False)
    assert untagged[0].tags is None and untagged[0].words == a[0].words


def test_seqeval_scores_a_hand_made_case():
    """Entity-level scores as seqeval defines them: an entity counts only with its exact type
    and span. Gold has 4 entities; the prediction finds 2 of them exactly, gets one span wrong
    and invents one: precision 2/4, recall 2/4. Token accuracy counts words."""
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O", "B-LOC"]]
    s = scores(gold, pred)
    assert s["precision"] == pytest.approx(2 / 4) and s["recall"] == pytest.approx(2 / 4)
    assert s["f1"] == pytest.approx(0.5) and s["accuracy"] == pytest.approx(5 / 8)
    assert entities(gold[0]) == [("PER", 0, 1), ("LOC", 3, 3)]


def test_bad_data_is_named_with_its_line(tmp_path):
    rows = tagged(3, 2)
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    lines = bad.read_text().splitlines()
    lines[1] = json.dumps({"words": ["alice", "smith"], "tags": ["B-PER"]})
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=f"{bad}:2: 2 words but 1 tags"):
        read_sentences(bad)
    conll = tmp_path / "bad.conll"
    conll.write_text("alice B-PER\nsmith\n\n")
    with pytest.raises(UserError, match=f"{conll}:2: one column"):
        read_sentences(conll)
    empty = tmp_path / "empty.conll"
    empty.write_text("-DOCSTART- O\n\n\n")
    with pytest.raises(UserError, match="holds no sentences"):
        read_sentences(empty)
    good = read_sentences(write_jsonl(tmp_path / "ok.jsonl", rows + [
        {"words": ["x"], "tags": ["B-MISC"]}]))
    with pytest.raises(UserError, match=r"ok.jsonl:4: tag 'B-MISC' is not one of"):
        TagMap(["B-LOC", "B-PER", "I-PER", "O"]).check(good, "the model")


# ---- the commands -----------------------------------------------------------------------------

@JAX_SLOW
def test_train_evaluate_predict(twin, tmp_path, cache_in_env, capsys):
    """From a transformers BERT: train writes a metrics line per epoch (loss, token accuracy,
    entity precision / recall / F1), best/ is a BertForTokenClassification that transformers loads
    with the twin's own logits; evaluate scores a CoNLL file; predict prints spans."""
    model = bert_dir(tmp_path / "hf")
    train = write_jsonl(tmp_path / "train.jsonl", tagged(64, 0))
    test = write_conll(tmp_path / "test.conll", tagged(20, 1))
    out = tmp_path / "run"
    cli = TagCli(twin, capsys)
    cli("train", "--init-from", str(model), "--data", str(train), "--out", str(out),
        "--epochs", "2", "--lr", "3e-3", *FAST)
    rows = epoch_rows(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "val_precision", "val_recall",
            "val_f1"} <= set(rows[0])
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForTokenClassification"]
    assert cfg["id2label"] == {"0": "B-LOC", "1": "B-PER", "2": "I-PER", "3": "O"}
    assert json.loads((out / "summary.json").read_text())["tags"] == list(
        cfg["id2label"].values())

    tagger = open_tagger(out)
    enc = encode(tagger.tokenizer, read_sentences(test), tagger.tags, tagger.max_len)
    b = enc.rows(np.arange(8))
    real = b["attention_mask"].astype(bool)
    want = transformers_logits(out / "best", "BertForTokenClassification", b)
    np.testing.assert_allclose(twin_logits(twin, tagger, b)[real], want[real], rtol=0, atol=ATOL)

    res = json.loads(cli("evaluate", str(out), "--data", str(test), "--json").stdout)
    assert res["sentences"] == 20 and {"f1", "precision", "recall", "accuracy"} <= set(res)
    assert 0.0 <= res["f1"] <= 1.0 and res["accuracy"] > 0.3
    p = cli("predict", str(out), "alice smith visited paris", "we saw rome", "--json")
    rows = json.loads(p.stdout)
    assert [len(r["tags"]) for r in rows] == [4, 3]
    for r in rows:
        assert all(e["words"] == r["words"][e["start"]:e["end"]] for e in r["entities"])
    p = cli("predict", str(out), "--file", str(test))
    assert p.stdout.count("\n") == 40          # a line of words and a line of spans each


@JAX_SLOW
def test_resume_is_exact(twin, tmp_path, cache_in_env, capsys):
    """2 epochs straight == stopped mid-epoch + --resume (the shared loop, TagRun's state): the
    same metrics.jsonl (dropout on) and the same best/ weights, bit for bit; a changed setting
    on --resume is refused in one line."""
    cli = TagCli(twin, capsys)
    model = bert_dir(tmp_path / "hf")
    train = write_conll(tmp_path / "train.conll", tagged(40, 0))
    common = ("--init-from", str(model), "--data", str(train), "--epochs", "2", "--lr", "3e-3",
              *FAST)
    a, b = tmp_path / "straight", tmp_path / "resumed"
    cli("train", *common, "--out", str(a))
    cli("train", *common, "--out", str(b), "--stop-after", "6")    # 4 steps per epoch
    assert [r["step"] for r in epoch_rows(b)] == [4]
    p = cli("train", *common, "--out", str(b), "--resume", "--lr", "1e-3", check=False)
    assert_one_line_error(p, "changed settings (lr)")
    cli("train", *common, "--out", str(b), "--resume")
    assert [r["step"] for r in epoch_rows(a)] == [4, 8]
    assert epoch_rows(b) == epoch_rows(a)
    assert (b / "best" / "model.safetensors").read_bytes() == \
        (a / "best" / "model.safetensors").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["electra", "modernbert"])
def test_export_loads_in_transformers(twin, arch, tmp_path, cache_in_env, capsys):
    """ELECTRA (its discriminator) and ModernBERT: best/ is transformers'
    ElectraForTokenClassification / ModernBertForTokenClassification (no missing or unexpected
    weights) with the twin's logits."""
    make, cls_name = MODELS[arch]
    model = make(tmp_path / "hf")
    train = write_jsonl(tmp_path / "train.jsonl", tagged(32, 0))
    out = tmp_path / "run"
    TagCli(twin, capsys)("train", "--init-from", str(model), "--data", str(train), "--out",
                         str(out), "--epochs", "1", "--lr", "3e-3", *FAST)
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert cfg["architectures"] == [cls_name]
    tagger = open_tagger(out)
    sentences = [Sentence(tuple(r["words"]), None, "x") for r in tagged(8, 3)]
    b = encode(tagger.tokenizer, sentences, None, tagger.max_len).rows(np.arange(8))
    real = b["attention_mask"].astype(bool)
    want = transformers_logits(out / "best", cls_name, b)
    np.testing.assert_allclose(twin_logits(twin, tagger, b)[real], want[real], rtol=0, atol=ATOL)


@pytest.mark.slow
def test_learns_the_tags(twin, tmp_path, cache_in_env, capsys):
    """A few epochs on the word rule: validation entity F1 well above what tagging everything O
    (F1 0) gives, and `evaluate` on unseen sentences agrees."""
    model = bert_dir(tmp_path / "hf")
    train = write_jsonl(tmp_path / "train.jsonl", tagged(240, 0))
    test = write_jsonl(tmp_path / "test.jsonl", tagged(60, 1))
    out = tmp_path / "run"
    cli = TagCli(twin, capsys)
    cli("train", "--init-from", str(model), "--data", str(train), "--out", str(out),
        "--epochs", "4", "--lr", "3e-3", *FAST)
    rows = epoch_rows(out)
    assert max(r["val_f1"] for r in rows) >= 0.85, rows
    res = json.loads(cli("evaluate", str(out), "--data", str(test), "--json").stdout)
    assert res["f1"] >= 0.85, res


def test_bad_input(twin, tmp_path, capsys):
    """One `error:` line naming the file and line, exit 2, nothing written."""
    cli = TagCli(twin, capsys)
    model = bert_dir(tmp_path / "hf")
    rows = tagged(20, 0)
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    lines = bad.read_text().splitlines()
    lines[6] = json.dumps({"words": ["alice", "smith", "today"], "tags": ["B-PER", "I-PER"]})
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    p = cli("train", "--init-from", str(model), "--data", str(bad), "--out", str(out), *FAST,
            check=False)
    assert p.returncode == 2
    assert_one_line_error(p, f"{bad}:7", "3 words but 2 tags")
    assert not out.exists()
    empty = tmp_path / "empty.conll"
    empty.write_text("-DOCSTART- -X- -X- O\n\n")
    p = cli("train", "--init-from", str(model), "--data", str(empty), "--out", str(out), *FAST,
            check=False)
    assert p.returncode == 2
    assert_one_line_error(p, f"{empty} holds no sentences")

    # A tagger of BERT's weights and these tags, written without training (best/ is what
    # evaluate reads), then data with a tag it does not know.
    from bertcore.tag.model import write_tagger_dir, tagger_param_table
    from bertcore.model.config import load_model_config
    cfg = load_model_config(model / "config.json")
    tags = TagMap(["B-LOC", "B-PER", "I-PER", "O"])
    rng = np.random.default_rng(0)
    state = {p.hf_name: rng.normal(0, 0.02, p.hf_shape).astype(np.float32)
             for p in tagger_param_table(cfg, len(tags))}
    hf = write_tagger_dir(tmp_path / "tagger", cfg, tags, state, model)
    unknown = write_jsonl(tmp_path / "unknown.jsonl", rows[:3] + [
        {"words": ["acme", "corp"], "tags": ["B-ORG", "I-ORG"]}])
    p = cli("evaluate", str(hf), "--data", str(unknown), check=False)
    assert p.returncode == 2
    assert_one_line_error(p, f"{unknown}:4", "'B-ORG'")
    p = cli("evaluate", str(model), "--data", str(unknown), check=False)
    assert p.returncode == 2
    assert_one_line_error(p, "not a token classifier")
