"""Fine-tuning ModernBERT in both twins (`classify train|evaluate|predict`): the classifier is
transformers' ModernBertForSequenceClassification (cls and mean pooling, sequences longer than
the local window, padding), both twins give its logits from the same weights, best/ loads in
transformers with the twin's own logits, --resume continues exactly, and a classifier created by
transformers is evaluated and predicted by both twins. BERT's classify tests: test_classify.py."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from bertcore.classify.cli import initial_state
from bertcore.classify.data import Example, LabelMap, encode, open_classifier
from bertcore.model.config import ModernBertConfig
from bertcore.model.hf import classifier_hf_to_flax, classifier_param_table
from bertcore.train.init_from import resolve_init
from helpers import (ClassifyCli, epoch_rows, review_corpus, review_tokenizer, reviews,
                     write_jsonl)
from jaxbert import classify as jc
from jaxbert.arch import classifier_model as jax_classifier
from torchbert import classify as tc
from torchbert.arch import classifier_model as torch_classifier

CPU = torch.device("cpu")
WINDOW = 8          # local_attention: |i - j| <= 4, so 24-token sequences are wider than it
MAX_LEN = 24
FAST = ("--max-len", str(MAX_LEN), "--batch-size", "8", "--no-progress")
ATOL = 1e-5


def tiny_config(tok, pooling: str = "cls", dropout: float = 0.0, **kw) -> ModernBertConfig:
    """3 layers (global, local, global), a window narrower than the sequences, our token ids."""
    return ModernBertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=2, max_position_embeddings=64, global_attn_every_n_layers=2,
        local_attention=WINDOW, pad_token_id=tok.pad_id, cls_token_id=tok.cls_id,
        bos_token_id=tok.cls_id, sep_token_id=tok.sep_id, eos_token_id=tok.sep_id,
        classifier_pooling=pooling, attention_dropout=dropout, mlp_dropout=dropout,
        embedding_dropout=dropout, classifier_dropout=dropout, **kw)


def hf_config(cfg: ModernBertConfig, **kw) -> transformers.ModernBertConfig:
    d = {k: v for k, v in cfg.to_dict().items() if k != "architectures"}
    hcfg = transformers.ModernBertConfig(**d, **kw)
    hcfg._attn_implementation = "eager"    # the reference path; sdpa gives the same numbers
    return hcfg


def mlm_dir(path: Path, pooling: str = "cls", dropout: float = 0.0, seed: int = 0) -> Path:
    """A tiny random transformers.ModernBertForMaskedLM saved by transformers, with our tokenizer
    (its config says the pooling the classifier will use)."""
    tok = review_tokenizer()
    tok.save(path)
    torch.manual_seed(seed)
    model = transformers.ModernBertForMaskedLM(hf_config(tiny_config(tok, pooling, dropout)))
    model.save_pretrained(path)
    return path


def hf_classifier_dir(path: Path, pooling: str, labels=("neg", "pos")) -> Path:
    """A random transformers.ModernBertForSequenceClassification saved by transformers."""
    tok = review_tokenizer()
    tok.save(path)
    torch.manual_seed(1)
    hcfg = hf_config(tiny_config(tok, pooling), id2label=dict(enumerate(labels)),
                     label2id={k: i for i, k in enumerate(labels)})
    model = transformers.ModernBertForSequenceClassification(hcfg)
    with torch.no_grad():   # a non-zero classifier bias and head, so a dropped one would show
        model.classifier.bias.normal_(0.0, 0.5)
        model.head.norm.weight.normal_(1.0, 0.3)
    model.save_pretrained(path)
    return path


def padded_batch(tok, labels: LabelMap | None = None, n: int = 8) -> dict[str, np.ndarray]:
    """Reviews of different lengths at max-len 24: padding in most rows, several rows longer
    than the window."""
    rows = reviews(n, 4)
    ex = [Example(r["text"] if i % 3 else r["text"] + " " + r["text"], None, r["label"])
          for i, r in enumerate(rows)]
    b = encode(tok, ex, labels, MAX_LEN).rows(np.arange(n))
    lengths = b["attention_mask"].sum(1)
    assert lengths.min() < MAX_LEN and lengths.max() > WINDOW, lengths
    return b


def transformers_logits(path_or_model, b: dict[str, np.ndarray]) -> np.ndarray:
    model = path_or_model
    if isinstance(model, (str, Path)):
        model, info = transformers.ModernBertForSequenceClassification.from_pretrained(
            model, output_loading_info=True, attn_implementation="eager")
        assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(b["input_ids"]).long(),
                     attention_mask=torch.from_numpy(b["attention_mask"]).long()).logits.numpy()


def twin_logits(twin: str, clf, b: dict[str, np.ndarray]) -> np.ndarray:
    if twin == "torch":
        return tc.predict_logits(tc.load_classifier(clf, CPU), b, CPU)
    model, params = jc.load_classifier(clf)
    return jc.logits_fn(model)(params, b)


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---- the models -------------------------------------------------------------------------------

@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_both_twins_compute_transformers_classifier(pooling):
    """The same weights in transformers' ModernBertForSequenceClassification, the torch twin and
    the Flax twin: the same parameter names and the same logits, with padding and sequences wider
    than the local window; token_type_ids change nothing."""
    tok = review_tokenizer()
    cfg = tiny_config(tok, pooling)
    hf = transformers.ModernBertForSequenceClassification(hf_config(cfg, num_labels=3))
    with torch.no_grad():
        hf.classifier.bias.normal_(0.0, 0.5)
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    assert set(state) == {p.hf_name for p in classifier_param_table(cfg, 3)}
    b = padded_batch(tok)
    want = transformers_logits(hf, b)

    t = torch_classifier(cfg, 3)
    assert set(t.state_dict()) == set(state)
    t.load_hf_state_dict(state)
    got_t = tc.predict_logits(t, b, CPU)
    types = {**b, "token_type_ids": (b["attention_mask"] * (np.arange(MAX_LEN) > 5)).astype(
        np.int32)}
    assert np.array_equal(tc.predict_logits(t, types, CPU), got_t)

    j = jax_classifier(cfg, 3)
    params = jax.tree_util.tree_map(jnp.asarray, classifier_hf_to_flax(state, cfg, 3))
    got_j = jc.logits_fn(j)(params, b)
    np.testing.assert_allclose(got_t, want, rtol=0, atol=ATOL)
    np.testing.assert_allclose(got_j, want, rtol=0, atol=ATOL)
    np.testing.assert_allclose(got_j, got_t, rtol=0, atol=ATOL)
    # the pooling matters on these rows (the test would catch the other one)
    other = transformers.ModernBertForSequenceClassification(
        hf_config(cfg.replace(classifier_pooling="mean" if pooling == "cls" else "cls"),
                  num_labels=3))
    other.load_state_dict(hf.state_dict())
    assert np.abs(transformers_logits(other, b) - want).max() > 1e-3


def test_fresh_classifier_initialisation():
    """A fresh classifier is initialised as transformers': the output layer truncated normal with
    std hidden_size**-0.5 ("final_out", cut at initializer_cutoff_factor), bias 0; the head's
    dense with the output std, its norm 1."""
    cfg = tiny_config(review_tokenizer()).replace(hidden_size=256, num_attention_heads=4)
    t = torch_classifier(cfg, 64)
    w = t.classifier.weight.detach().numpy()
    std, cut = 256 ** -0.5, cfg.initializer_cutoff_factor
    # cut at 2 std, the samples' own std is 0.8796 std (the truncated normal's)
    assert np.abs(w).max() <= cut * std and np.abs(w.std() / (0.8796 * std) - 1) < 0.05
    assert not t.classifier.bias.detach().numpy().any()
    assert (t.head.norm.weight.detach().numpy() == 1).all()
    assert abs(t.head.dense.weight.detach().numpy().std() / (0.8796 * 0.02 / 6 ** 0.5) - 1) < 0.05
    p = jax_classifier(cfg, 64).init(jax.random.PRNGKey(0), np.ones((1, 4), np.int32))["params"]
    k = np.asarray(p["classifier"]["kernel"])
    assert np.abs(k).max() <= cut * std and np.abs(k.std() / (0.8796 * std) - 1) < 0.05
    assert sorted(p) == ["classifier", "head", "model"]


def test_initial_state_keeps_encoder_and_head(tmp_path):
    """From a ModernBertForMaskedLM save: `model.*` and `head.*` as they are, the decoder left
    out, a fresh classifier (the same numbers for the same seed, whichever twin asks); from a
    ModernBertModel save (no head) the head starts fresh, with a note."""
    path = mlm_dir(tmp_path / "mlm")
    src = resolve_init(path, "torch", keep_classifier=True)
    assert isinstance(src.config, ModernBertConfig)
    weights = dict(jc.pretrained_weights(src))
    labels = LabelMap(["neg", "pos"])
    state, notes = initial_state(weights, src, src.config, labels, seed=3)
    assert set(state) == {p.hf_name for p in classifier_param_table(src.config, 2)}
    for k in state:
        if k.startswith(("model.", "head.")):
            assert np.array_equal(state[k], weights[k]), k
    assert not any(k.startswith("decoder.") for k in state) and not notes
    again, _ = initial_state(dict(tc.pretrained_weights(src)), src, src.config, labels, seed=3)
    assert all(np.array_equal(again[k], state[k]) for k in state)
    other, _ = initial_state(weights, src, src.config, labels, seed=4)
    assert not np.array_equal(other["classifier.weight"], state["classifier.weight"])
    encoder_only = {k.removeprefix("model."): v for k, v in weights.items()
                    if k.startswith("model.")}
    fresh, notes = initial_state(encoder_only, src, src.config, labels, seed=3)
    assert any("no MLM head" in n for n in notes)
    assert (fresh["head.norm.weight"] == 1).all()
    assert np.array_equal(fresh["model.final_norm.weight"], weights["model.final_norm.weight"])


@pytest.mark.slow
def test_one_step_agrees(tmp_path):
    """One AdamW step of each twin from the same weights on the same batch, dropout off."""
    from types import SimpleNamespace

    from bertcore.classify.cli import ClassifyConfig
    from parity import thresholds as T

    clf = open_classifier(hf_classifier_dir(tmp_path / "hf", "mean"))
    b = padded_batch(clf.tokenizer, clf.labels)
    # eps 1e-4, not the default 1e-6: AdamW's first update is lr * g / (|g| + eps), whose slope
    # at |g| ~ eps is lr / (4 eps), so at 1e-6 it turns float32 rounding of a near-cancelling
    # gradient entry (a few 1e-9, different with torch's thread count) into 1e-6 of update: the
    # optimizer's amplification, not the twins'. (Measured: 3.6e-7 with 2 torch threads, 1.5e-6
    # with 1, at the default eps.)
    run = SimpleNamespace(classify_config=ClassifyConfig(lr=1e-3, batch_size=8, dropout=False,
                                                         eps=1e-4),
                          model_config=clf.config, labels=clf.labels, rundir=tmp_path / "r",
                          total_steps=10)
    torch_twin, jax_twin = tc.ClassifierTwin(run, clf.state, CPU), jc.ClassifierTwin(run, clf.state)
    lr = float(run.classify_config.lr_at(run.total_steps)(0))
    lt, lj = (float(twin.step(1, b, lr)["loss"]) for twin in (torch_twin, jax_twin))
    assert abs(lt - lj) / abs(lt) < T.LOSS_REL
    after_t, after_j = torch_twin.weights(), jax_twin.weights()
    assert max(np.abs(after_t[k] - clf.state[k]).max() for k in after_t) > 1e-4
    worst = max(np.abs(after_t[k] - after_j[k]).max() for k in after_t)
    assert worst < T.ADAMW_STEP_MAX_ABS, worst


# ---- the command lines ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("twin,pooling", [("torch", "cls"), ("torch", "mean"), ("jax", "cls"),
                                          ("jax", "mean")])
def test_train_writes_what_transformers_loads(twin, pooling, tmp_path, cache_in_env, capsys):
    """`classify train --init-from` a transformers-saved ModernBertForMaskedLM: best/ is a
    ModernBertForSequenceClassification directory (model_type, architectures, labels) that
    transformers loads with no missing or unexpected weights and the twin's own logits, also from
    `predict` (its probabilities). --no-dropout turns off every ModernBERT dropout."""
    model = mlm_dir(tmp_path / "mlm", pooling, dropout=0.1)
    train = write_jsonl(tmp_path / "train.jsonl", reviews(48, 0))
    out = tmp_path / "run"
    cli = ClassifyCli(twin, capsys)
    cli("train", "--init-from", str(model), "--data", str(train), "--out", str(out),
        "--epochs", "2", "--lr", "2e-3", *FAST, *(("--no-dropout",) if twin == "jax" else ()))
    assert [r["epoch"] for r in epoch_rows(out)] == [1, 2]
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert cfg["model_type"] == "modernbert" and cfg["classifier_pooling"] == pooling
    assert cfg["architectures"] == ["ModernBertForSequenceClassification"]
    assert cfg["id2label"] == {"0": "neg", "1": "pos"} and cfg["label2id"] == {"neg": 0, "pos": 1}
    dropouts = [cfg[k] for k in ("attention_dropout", "mlp_dropout", "embedding_dropout",
                                 "classifier_dropout")]
    assert dropouts == ([0.0] * 4 if twin == "jax" else [0.1] * 4)
    card = (out / "best" / "README.md").read_text()
    assert "ModernBertForSequenceClassification.from_pretrained" in card

    clf = open_classifier(out)
    b = padded_batch(clf.tokenizer, clf.labels)
    want = transformers_logits(out / "best", b)
    np.testing.assert_allclose(twin_logits(twin, clf, b), want, rtol=0, atol=ATOL)
    texts = ["a wonderful superb film with great actors and a moving story and music",
             "dull"]
    p = cli("predict", str(out), *texts, "--json")
    rows = json.loads(p.stdout)
    enc = encode(clf.tokenizer, [Example(t) for t in texts], None, clf.max_len)
    probs = softmax(transformers_logits(out / "best", enc.rows(np.arange(2))))
    np.testing.assert_allclose([[r["probabilities"][lab] for lab in ("neg", "pos")]
                                for r in rows], probs, rtol=0, atol=ATOL)


@pytest.mark.slow
def test_init_from_a_pretraining_run(tmp_path, cache_in_env, capsys):
    """torchbert: --init-from a ModernBERT pretraining RUNDIR (its latest checkpoint, its
    tokenizer): the run records where it started and best/ loads in transformers with the twin's
    logits."""
    pretrain = importlib.import_module("torchbert.train").main
    rundir = tmp_path / "pretrained"
    assert pretrain(["--arch", "modernbert", "--preset", "tiny",
                     "--corpus", str(review_corpus(tmp_path / "corpus.txt")),
                     "--vocab-size", "200", "--seq-len", "32", "--batch-size", "8",
                     "--max-predictions", "5", "--steps", "4", "--no-progress",
                     "--out", str(rundir)]) == 0
    out = tmp_path / "run"
    ClassifyCli("torch", capsys)(
        "train", "--init-from", str(rundir), "--out", str(out), "--epochs", "1", *FAST,
        "--data", str(write_jsonl(tmp_path / "train.jsonl", reviews(40, 0))))
    info = json.loads((out / "run.json").read_text())
    assert info["init_from"] == {"path": str(rundir.resolve()), "kind": "rundir"}
    assert json.loads((out / "config.json").read_text())["model_type"] == "modernbert"
    clf = open_classifier(out)
    b = padded_batch(clf.tokenizer, clf.labels)
    np.testing.assert_allclose(twin_logits("torch", clf, b), transformers_logits(out / "best", b),
                               rtol=0, atol=ATOL)


@pytest.mark.slow
def test_resume_with_dropout(tmp_path, cache_in_env, capsys):
    """--resume with every ModernBERT dropout on (the masks redrawn from the step): the resumed
    run ends with the straight run's metrics and best/, bit for bit (torchbert)."""
    model = mlm_dir(tmp_path / "mlm", "mean", dropout=0.2)
    cli = ClassifyCli("torch", capsys)
    train = write_jsonl(tmp_path / "train.jsonl", reviews(40, 0))
    common = ("--init-from", str(model), "--data", str(train), "--epochs", "2", "--lr", "2e-3",
              *FAST)
    a, b, c = tmp_path / "straight", tmp_path / "resumed", tmp_path / "no-dropout"
    cli("train", *common, "--out", str(a))
    cli("train", *common, "--out", str(b), "--stop-after", "6")
    cli("train", *common, "--out", str(b), "--resume")
    assert epoch_rows(b) == epoch_rows(a)
    assert (b / "best" / "model.safetensors").read_bytes() == \
        (a / "best" / "model.safetensors").read_bytes()
    cli("train", *common, "--out", str(c), "--no-dropout", "--stop-after", "4")
    assert epoch_rows(c)[0]["train_loss"] != epoch_rows(a)[0]["train_loss"]    # dropout was on


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_transformers_classifier_in_both_twins(pooling, tmp_path, capsys):
    """A ModernBertForSequenceClassification created and saved by transformers: both twins'
    `evaluate` and `predict` read it and compute transformers' logits; parity.convert exports it
    to a directory transformers loads again."""
    from parity import convert as C

    path = hf_classifier_dir(tmp_path / "hf", pooling)
    clf = open_classifier(path)
    assert clf.labels.labels == ["neg", "pos"] and clf.config.classifier_pooling == pooling
    b = padded_batch(clf.tokenizer, clf.labels)
    want = transformers_logits(path, b)
    test = write_jsonl(tmp_path / "test.jsonl", reviews(16, 1))
    texts = ["a wonderful superb film with great actors and a moving story", "dull and awful"]
    enc = encode(clf.tokenizer, [Example(t) for t in texts], None, clf.max_len)
    probs = softmax(transformers_logits(path, enc.rows(np.arange(2))))
    results = []
    for twin in ("torch", "jax"):
        np.testing.assert_allclose(twin_logits(twin, clf, b), want, rtol=0, atol=ATOL)
        cli = ClassifyCli(twin, capsys)
        results.append(json.loads(cli("evaluate", str(path), "--data", str(test),
                                      "--json").stdout))
        rows = json.loads(cli("predict", str(path), *texts, "--json").stdout)
        np.testing.assert_allclose([[r["probabilities"][lab] for lab in ("neg", "pos")]
                                    for r in rows], probs, rtol=0, atol=ATOL)
    assert results[0]["examples"] == results[1]["examples"] == 16
    assert abs(results[0]["loss"] - results[1]["loss"]) < 1e-5
    dst = tmp_path / "export"
    assert C.main([str(path), str(dst), "--to", "hf"]) == 0
    assert "a Hugging Face ModernBertForSequenceClassification" in "".join(capsys.readouterr())
    np.testing.assert_allclose(transformers_logits(dst, b), want, rtol=0, atol=ATOL)
