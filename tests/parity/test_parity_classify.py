"""Sequence classification across torchbert, jaxbert and transformers: the same weights give the
same logits (forward bar), one fine-tuning step agrees (AdamW step bar), a classify RUNDIR
exports to a directory transformers.BertForSequenceClassification loads with no missing or
unexpected keys, and a Hugging Face classifier directory loads into both twins."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
import torch
import transformers

from bertcore.classify.cli import ClassifyConfig
from bertcore.classify.data import (Example, encode, open_classifier, train_batches)
from bertcore.model.hf import classifier_flax_to_hf
from helpers import (CLASSIFY_FAST, ClassifyCli, assert_one_line_error, hf_dir, review_tokenizer,
                     reviews, write_jsonl)
from jaxbert import classify as jc
from parity import convert as C
from parity import thresholds as T
from torchbert import classify as tc

LABELS = ("contradiction", "entailment", "neutral")   # three labels, sentence pairs (GLUE-style)


@pytest.fixture(scope="module")
def hf_classifier(tmp_path_factory) -> Path:
    """A random tiny transformers.BertForSequenceClassification, dropout off, with our tokenizer."""
    d = tmp_path_factory.mktemp("hf-classifier")
    tok = review_tokenizer()
    tok.save(d)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, id2label=dict(enumerate(LABELS)),
        label2id={k: i for i, k in enumerate(LABELS)})
    model = transformers.BertForSequenceClassification(cfg)
    with torch.no_grad():   # a non-zero classifier bias, so a dropped bias would show
        model.classifier.bias.normal_(0.0, 0.5)
    model.save_pretrained(d)
    return d


def batch(clf, n: int = 6) -> dict[str, np.ndarray]:
    ex = [Example(r["text"], reviews(n, 3)[i]["text"], LABELS[i % 3])
          for i, r in enumerate(reviews(n, 2))]
    enc = encode(clf.tokenizer, ex, clf.labels, 40)
    return enc.rows(np.arange(n))


def hf_logits(path: Path, b: dict) -> tuple[np.ndarray, dict]:
    model, info = transformers.BertForSequenceClassification.from_pretrained(
        path, output_loading_info=True)
    model.eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(b[k]).long() for k in
                       ("input_ids", "token_type_ids", "attention_mask")}).logits
    return out.numpy(), info


def test_logits_agree(hf_classifier):
    clf = open_classifier(hf_classifier)
    assert clf.labels.labels == list(LABELS)
    b = batch(clf)
    t = tc.predict_logits(tc.load_classifier(clf, torch.device("cpu")), b, torch.device("cpu"))
    model, params = jc.load_classifier(clf)
    j = jc.logits_fn(model)(params, b)
    h, _ = hf_logits(hf_classifier, b)
    assert t.shape == (6, 3)
    assert np.abs(t - j).max() < T.FORWARD_MAX_ABS
    assert np.abs(t - h).max() < T.FORWARD_MAX_ABS
    assert np.abs(j - h).max() < T.FORWARD_MAX_ABS


def _run(clf, rundir: Path) -> SimpleNamespace:
    """What the twins' Twin classes read of a ClassifyRun."""
    ccfg = ClassifyConfig(lr=1e-3, batch_size=6, dropout=False)
    return SimpleNamespace(classify_config=ccfg, model_config=clf.config, labels=clf.labels,
                           rundir=rundir, total_steps=10)


@pytest.mark.slow
def test_one_step_agrees(hf_classifier, tmp_path):
    """One AdamW step (schedule, decay mask, clipping) from the same weights on the same batch."""
    clf = open_classifier(hf_classifier)
    run = _run(clf, tmp_path)
    b = batch(clf)
    torch_twin = tc.ClassifierTwin(run, clf.state, torch.device("cpu"))
    jax_twin = jc.ClassifierTwin(run, clf.state)
    lr = float(run.classify_config.lr_at(run.total_steps)(0))
    lt = float(torch_twin.step(1, b, lr)["loss"])
    lj = float(jax_twin.step(1, b, lr)["loss"])
    assert abs(lt - lj) / abs(lt) < T.LOSS_REL
    after_t, after_j = torch_twin.weights(), jax_twin.weights()
    moved = max(np.abs(after_t[k] - clf.state[k]).max() for k in clf.state)
    assert moved > 100 * T.ADAMW_STEP_MAX_ABS       # the step really changed the weights
    worst = max(np.abs(after_t[k] - after_j[k]).max() for k in after_t)
    assert worst < T.ADAMW_STEP_MAX_ABS, worst
    params = jax.tree_util.tree_map(np.asarray, jax_twin.train_state.params)
    assert set(classifier_flax_to_hf(params, clf.config, 3)) == set(after_t)


@pytest.mark.slow
def test_export_loads_in_transformers(tmp_path, capsys):
    """A torchbert classify RUNDIR -> parity.convert --to hf -> transformers, no missing or
    unexpected keys, the labels and the twin's logits kept; and a HF classifier dir evaluates in
    both twins."""
    model = hf_dir(tmp_path / "hf")
    train = write_jsonl(tmp_path / "train.jsonl", reviews(48, 0))
    out = tmp_path / "run"
    ClassifyCli("torch", capsys)("train", "--init-from", str(model), "--data", str(train),
                                 "--out", str(out), "--epochs", "1", *CLASSIFY_FAST)
    dst = tmp_path / "export"
    C.convert(out, dst, "hf")
    clf = open_classifier(out)
    examples = [Example(r["text"], None, r["label"]) for r in reviews(8, 1)]
    b = next(train_batches(encode(clf.tokenizer, examples, clf.labels, 24), 8, 0, 0))
    h, info = hf_logits(dst, b)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # list (4.x) or set (5.x)
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["id2label"] == {"0": "neg", "1": "pos"} and cfg["label2id"] == {"neg": 0, "pos": 1}
    t = tc.predict_logits(tc.load_classifier(clf, torch.device("cpu")), b, torch.device("cpu"))
    assert np.abs(t - h).max() < T.FORWARD_MAX_ABS
    assert transformers.BertTokenizerFast.from_pretrained(dst)("a great film")["input_ids"] == \
        clf.tokenizer.encode("a great film")
    # the export is a Hugging Face classifier directory: both twins evaluate it
    test = write_jsonl(tmp_path / "test.jsonl", reviews(16, 1))
    res = [json.loads(ClassifyCli(twin, capsys)("evaluate", str(dst), "--data", str(test),
                                                "--json").stdout) for twin in ("torch", "jax")]
    assert res[0]["examples"] == res[1]["examples"] == 16
    assert abs(res[0]["loss"] - res[1]["loss"]) < 1e-5
    # a classifier exports to hf only; DST is not overwritten
    rc = C.main([str(out), str(tmp_path / "x"), "--to", "jax"])
    err = capsys.readouterr().err
    assert rc == 2 and "--to hf" in err and not (tmp_path / "x").exists()
    assert C.main([str(out), str(dst), "--to", "hf"]) == 2
    assert_one_line_error(SimpleNamespace(returncode=2, stdout="",
                                          stderr=capsys.readouterr().err), "already exists")
