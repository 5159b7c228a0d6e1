"""bertcore.classify.data / bertcore.classify.cli: labelled readers, label map, truncation,
hold-out, batches, metrics, --init-from resolution and the classifier's starting weights. No
framework."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertcore.classify.cli import InitSource, initial_state, resolve_init
from bertcore.classify.data import (Columns, Example, LabelMap, encode, epoch_order, eval_batches,
                                    hold_out, read_examples, scores, train_batches)
from bertcore.model.config import BertConfig
from bertcore.infra.errors import UserError
from bertcore.model.hf import classifier_flax_to_hf, classifier_hf_to_flax, classifier_param_table
from helpers import hf_dir, review_tokenizer, reviews, write_aclimdb, write_jsonl


@pytest.fixture(scope="module")
def tok():
    return review_tokenizer()


def test_formats_agree(tmp_path):
    rows = reviews(10)
    write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.csv").write_text("label,text\n" + "".join(
        f'{r["label"]},"{r["text"]}, ""quoted"""\n' for r in rows), encoding="utf-8")
    (tmp_path / "a.tsv").write_text("text\ttext_pair\tlabel\n" + "".join(
        f'{r["text"]}\tsecond "half"\t{r["label"]}\n' for r in rows), encoding="utf-8")
    j = read_examples(tmp_path / "a.jsonl")
    c = read_examples(tmp_path / "a.csv")
    t = read_examples(tmp_path / "a.tsv", columns=Columns(text_pair="text_pair"))
    assert [e.label for e in j] == [e.label for e in c] == [e.label for e in t] == \
        [r["label"] for r in rows]
    assert c[0].text == rows[0]["text"] + ', "quoted"'
    assert t[0].text == rows[0]["text"] and t[0].text_pair == 'second "half"'


def test_aclimdb_keeps_labels(tmp_path):
    root = write_aclimdb(tmp_path / "aclImdb", n_train=6, n_test=4)
    train = read_examples(tmp_path)               # the folder download-imdb --out filled
    test = read_examples(root, "test")
    assert [e.label for e in train] == ["neg"] * 3 + ["pos"] * 3
    assert len(test) == 4 and "<br" not in train[0].text and train[0].text.endswith("the end")


@pytest.mark.parametrize("setup, needles", [
    (lambda d: (d / "train").mkdir(), ["not in the aclImdb layout", "train/pos"]),
    (lambda d: (d / "x.csv").write_text("text,stars\na,1\n"), ["'label' column", "text, stars"]),
    (lambda d: (d / "x.tsv").write_text("sentence\tlabel\na\t1\n"), ["'text' column"]),
    (lambda d: (d / "x.jsonl").write_text("\n\n"), ["holds no examples"]),
    (lambda d: (d / "x.jsonl").write_text('{"text": "a"}\n'), ['no "label"']),
    (lambda d: (d / "x.txt").write_text("a\n"), ["unsupported file type"]),
])
def test_bad_data(tmp_path, setup, needles):
    setup(tmp_path)
    target = next(p for p in tmp_path.iterdir())
    with pytest.raises(UserError) as e:
        read_examples(tmp_path if target.is_dir() else target)
    for n in needles:
        assert n in str(e.value)


def test_aclimdb_without_test_split(tmp_path):
    write_aclimdb(tmp_path, n_train=4, n_test=2)
    for lab in ("pos", "neg"):
        for f in (tmp_path / "test" / lab).iterdir():
            f.unlink()
    with pytest.raises(UserError, match="the test split is empty"):
        read_examples(tmp_path, "test")


def test_label_map():
    ex = [Example("x", None, lab) for lab in ("10", "2", "1", "2")]
    assert LabelMap.from_examples(ex).labels == ["1", "2", "10"]      # numerically
    m = LabelMap.from_examples([Example("x", None, "pos"), Example("y", None, "neg")])
    assert m.labels == ["neg", "pos"] and m.id2label() == {"0": "neg", "1": "pos"}
    with pytest.raises(UserError, match="label sets differ.*'meh'"):
        m.check([Example("z", None, "meh")], "test.jsonl")


def test_encode_truncates_and_counts(tok):
    ex = [Example("great film", None, "pos"), Example("dull " * 40, None, "neg"),
          Example("great " * 30, "awful " * 3, "pos")]
    enc = encode(tok, ex, LabelMap(["neg", "pos"]), max_len=16)
    assert enc.truncated == 2
    for a in (enc.input_ids, enc.token_type_ids, enc.attention_mask):
        assert a.shape == (3, 16) and a.dtype == np.int32
    assert enc.labels.tolist() == [1, 0, 1]
    row = enc.input_ids[0][: enc.attention_mask[0].sum()]
    assert row[0] == tok.cls_id and row[-1] == tok.sep_id and (enc.input_ids[0][len(row):] ==
                                                                tok.pad_id).all()
    # the pair: longest-first truncation keeps all 3 "awful" and its own [SEP], segment 1
    assert enc.attention_mask[2].sum() == 16 and enc.token_type_ids[2].sum() == 4
    assert enc.input_ids[2, -1] == tok.sep_id


def test_hold_out_is_seeded_and_disjoint():
    ex = [Example(str(i), None, "a") for i in range(50)]
    tr, va = hold_out(ex, 0.1, seed=3)
    assert len(va) == 5 and len(tr) == 45 and not {e.text for e in tr} & {e.text for e in va}
    assert hold_out(ex, 0.1, seed=3) == (tr, va) and hold_out(ex, 0.1, seed=4)[1] != va
    with pytest.raises(UserError, match="too few"):
        hold_out(ex[:1], 0.1, 0)


def test_batches_deterministic_and_resumable(tok):
    ex = [Example(f"film {i}", None, "pos" if i % 2 else "neg") for i in range(20)]
    enc = encode(tok, ex, LabelMap(["neg", "pos"]), 12)
    epoch1 = list(train_batches(enc, 6, seed=0, epoch=1))
    assert len(epoch1) == 3                                          # 20 // 6: full batches
    assert all(b["input_ids"].shape == (6, 12) and b["labels"].shape == (6,) for b in epoch1)
    again = list(train_batches(enc, 6, seed=0, epoch=1, start=1))
    assert all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(epoch1[1:], again))
    assert not (epoch_order(20, 0, 0) == epoch_order(20, 0, 1)).all()
    evals = list(eval_batches(enc, 6))
    assert [real for _, real in evals] == [6, 6, 6, 2]
    assert all(b["input_ids"].shape == (6, 12) for b, _ in evals)


def test_scores():
    y = np.array([1, 1, 0, 0, -1])
    p = np.array([1, 0, 0, 1, 1])
    s = scores(y, p, 2)
    assert s["accuracy"] == 0.5 and s["f1"] == pytest.approx(0.5)
    assert "f1" not in scores(y, p, 3)


def test_resolve_init(tmp_path):
    hf = hf_dir(tmp_path / "hf")
    src = resolve_init(hf, "torch")
    assert src.weights_from == "hf" and src.config.vocab_size == src.tokenizer.vocab_size
    # a pretraining run of the other twin: only through its hf/ export
    run = tmp_path / "jaxrun"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"framework": "jax"}))
    BertConfig(vocab_size=src.config.vocab_size).to_json_file(run / "config.json")
    (run / "train_config.json").write_text("{}")
    with pytest.raises(UserError, match=r"parity.convert .*jaxrun DIR --to hf"):
        resolve_init(run, "torch")
    import shutil
    shutil.copytree(hf, run / "hf")
    assert resolve_init(run, "torch").path == run / "hf"
    other = tmp_path / "tok150"
    review_tokenizer(150).save(other)
    with pytest.raises(UserError, match="vocabularies differ"):
        resolve_init(hf, "torch", str(other))
    with pytest.raises(UserError, match="neither a pretraining RUNDIR"):
        resolve_init(tmp_path, "torch")


def test_initial_state_and_flax_round_trip():
    cfg = BertConfig.from_preset("tiny", vocab_size=50, hidden_size=16, num_attention_heads=2,
                                 intermediate_size=32)
    labels = LabelMap(["a", "b", "c"])
    table = classifier_param_table(cfg, 3)
    rng = np.random.default_rng(0)
    weights = {p.hf_name: rng.normal(size=p.hf_shape).astype(np.float32) for p in table
               if not p.hf_name.startswith(("classifier", "bert.pooler"))}
    weights["cls.predictions.bias"] = np.zeros(50, np.float32)      # a pretraining head: dropped
    src = InitSource("hf", Path("x"), cfg, None)
    state, notes = initial_state(weights, src, cfg, labels, seed=1)
    assert list(state) == [p.hf_name for p in table]
    assert state["classifier.weight"].shape == (3, 16) and not state["classifier.bias"].any()
    assert any("no pooler" in n for n in notes)
    again, _ = initial_state(weights, src, cfg, labels, seed=1)
    assert all((again[k] == state[k]).all() for k in state)           # seeded: same numbers
    flax = classifier_hf_to_flax(state, cfg, 3)
    assert flax["classifier"]["kernel"].shape == (16, 3)
    back = classifier_flax_to_hf(flax, cfg, 3)
    assert all((back[k] == state[k]).all() for k in state)
