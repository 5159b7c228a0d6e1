"""ELECTRA downstream in both twins: `classify` fine-tunes the discriminator with transformers'
ElectraForSequenceClassification head (both twins compute transformers' logits; best/ loads in
transformers with the twin's own logits), from a transformers ElectraForPreTraining directory, a
pair's state or an ElectraModel save; `fill_mask` fills masks with the generator (the pair's, on
the discriminator's embeddings, or a transformers ElectraForMaskedLM directory); the models
without the head a command needs are refused in one line, naming what to pass. Each twin test
runs once per twin."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

from bertcore.classify.cli import initial_state
from bertcore.classify.cli import resolve_init as classify_init
from bertcore.classify.data import Example, LabelMap, encode, open_classifier
from bertcore.data.tokenizer import load_tokenizer
from bertcore.infra.errors import UserError
from bertcore.model.config import ElectraConfig
from bertcore.model.hf import (classifier_hf_to_flax, classifier_param_table, electra_split,
                               hf_to_flax)
from bertcore.modeldirs import fillmask
from bertcore.modeldirs.resolve import open_model_dir
from bertcore.train.init_from import resolve_init
from helpers import (ClassifyCli, assert_one_line_error, epoch_rows, review_corpus,
                     review_tokenizer, reviews, write_jsonl)
from jaxbert import classify as jc
from jaxbert import fill_mask as jf
from jaxbert.arch import classifier_model as jax_classifier
from jaxbert.arch import pretraining_model as jax_pretraining
from torchbert import classify as tc
from torchbert import fill_mask as tf
from torchbert.arch import classifier_model as torch_classifier
from torchbert.electra import ElectraPreTrainingModel

CPU = torch.device("cpu")
MAX_LEN = 24
FAST = ("--max-len", str(MAX_LEN), "--batch-size", "8", "--no-progress")
ATOL = 1e-5


def tiny_config(tok, dropout: float = 0.0) -> ElectraConfig:
    """A discriminator 32 wide over 16-wide embeddings (so `embeddings_project` is there), its
    generator 16 wide (none: its width is the embeddings')."""
    return ElectraConfig(vocab_size=tok.vocab_size, embedding_size=16, hidden_size=32,
                         num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout, generator_hidden_size=0.5,
                         pad_token_id=tok.pad_id)


def hf_config(cfg: ElectraConfig, role: str = "discriminator", **kw) -> transformers.ElectraConfig:
    own = cfg.generator_config() if role == "generator" else cfg
    d = {k: v for k, v in own.to_dict(role).items() if k != "architectures"}
    return transformers.ElectraConfig(**d, **kw)


def hf_dir(path: Path, cls: type, seed: int = 0, **kw) -> Path:
    """A random transformers ELECTRA model of `cls` saved by transformers, with our tokenizer."""
    tok = review_tokenizer()
    tok.save(path)
    torch.manual_seed(seed)
    role = "generator" if cls is transformers.ElectraForMaskedLM else "discriminator"
    model = cls(hf_config(tiny_config(tok), role, **kw))
    with torch.no_grad():     # LayerNorms away from 1/0, so a dropped or swapped one would show
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    model.save_pretrained(path)
    return path


def padded_batch(tok, labels: LabelMap | None = None, n: int = 8) -> dict[str, np.ndarray]:
    """Reviews of different lengths at max-len 24, padding in most rows, sentence pairs in some
    (non-zero token types)."""
    rows = reviews(n, 4)
    ex = [Example(r["text"], rows[i - 1]["text"] if i % 2 else None, r["label"])
          for i, r in enumerate(rows)]
    b = encode(tok, ex, labels, MAX_LEN).rows(np.arange(n))
    assert b["attention_mask"].sum(1).min() < MAX_LEN and b["token_type_ids"].any()
    return b


def transformers_logits(path_or_model, b: dict[str, np.ndarray]) -> np.ndarray:
    model = path_or_model
    if isinstance(model, (str, Path)):
        model, info = transformers.ElectraForSequenceClassification.from_pretrained(
            model, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.eval()
    with torch.no_grad():
        return model(**{k: torch.from_numpy(b[k]).long() for k in
                        ("input_ids", "token_type_ids", "attention_mask")}).logits.numpy()


def twin_logits(twin: str, clf, b: dict[str, np.ndarray]) -> np.ndarray:
    if twin == "torch":
        return tc.predict_logits(tc.load_classifier(clf, CPU), b, CPU)
    model, params = jc.load_classifier(clf)
    return jc.logits_fn(model)(params, b)


# ---- classify -----------------------------------------------------------------------------------

def test_both_twins_compute_transformers_classifier():
    """The same weights in transformers' ElectraForSequenceClassification, the torch twin and the
    Flax twin: the same parameter names and the same logits (padding, token types); the head is
    ELECTRA's (dense, GELU, out_proj on [CLS]), not BERT's pooler."""
    tok = review_tokenizer()
    cfg = tiny_config(tok)
    hf = transformers.ElectraForSequenceClassification(hf_config(cfg, num_labels=3))
    with torch.no_grad():
        hf.classifier.out_proj.bias.normal_(0.0, 0.5)
        hf.classifier.out_proj.weight.normal_(0.0, 1.0)
        hf.classifier.dense.weight.normal_(0.0, 0.5)
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    assert set(state) == {p.hf_name for p in classifier_param_table(cfg, 3)}
    b = padded_batch(tok)
    want = transformers_logits(hf, b)

    t = torch_classifier(cfg, 3)
    assert set(t.state_dict()) == set(state)
    t.load_hf_state_dict(state)
    got_t = tc.predict_logits(t, b, CPU)
    j = jax_classifier(cfg, 3)
    params = jax.tree_util.tree_map(jnp.asarray, classifier_hf_to_flax(state, cfg, 3))
    got_j = jc.logits_fn(j)(params, b)
    np.testing.assert_allclose(got_t, want, rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(got_j, want, rtol=1e-5, atol=ATOL)
    assert np.abs(want - want.mean(0)).max() > 1e-2       # the rows differ: the test has teeth
    # dropout on: both twins' heads run in training mode
    drop = cfg.replace(hidden_dropout_prob=0.5)
    t = torch_classifier(drop, 3)
    t.load_hf_state_dict(state)
    t.train()
    ids, types, mask = (torch.from_numpy(b[k]).long()
                        for k in ("input_ids", "token_type_ids", "attention_mask"))
    assert not np.allclose(t(ids, types, mask).detach().numpy(), want, atol=1e-3)
    out = jax_classifier(drop, 3).apply({"params": params}, b["input_ids"], b["token_type_ids"],
                                        b["attention_mask"], deterministic=False,
                                        rngs={"dropout": jax.random.PRNGKey(0)})
    assert not np.allclose(np.asarray(out), want, atol=1e-3)


def test_initial_state_takes_the_discriminators_encoder(tmp_path):
    """From a transformers ElectraForPreTraining directory, from the pair a run trains
    (`discriminator.*` + `generator.*`) and from an ElectraModel save (no `electra.` prefix): the
    same `electra.*`, the replaced-token head and the generator left out, the same fresh
    ElectraClassificationHead from the same seed (N(0, initializer_range), zero biases)."""
    path = hf_dir(tmp_path / "disc", transformers.ElectraForPreTraining)
    src = resolve_init(path, "torch", keep_classifier=True)
    cfg = src.config
    assert isinstance(cfg, ElectraConfig) and cfg.embedding_size != cfg.hidden_size
    labels = LabelMap(["neg", "pos"])
    weights = dict(tc.pretrained_weights(src))
    assert any(k.startswith("discriminator_predictions.") for k in weights)
    state, notes = initial_state(weights, src, cfg, labels, seed=3)
    assert not notes and set(state) == {p.hf_name for p in classifier_param_table(cfg, 2)}
    for k in state:
        if k.startswith("electra."):
            assert np.array_equal(state[k], weights[k]), k
    head = {k: v for k, v in state.items() if k.startswith("classifier.")}
    assert sorted(head) == ["classifier.dense.bias", "classifier.dense.weight",
                            "classifier.out_proj.bias", "classifier.out_proj.weight"]
    assert not head["classifier.dense.bias"].any() and not head["classifier.out_proj.bias"].any()
    assert abs(head["classifier.dense.weight"].std() / cfg.initializer_range - 1) < 0.2
    assert np.array_equal(dict(jc.pretrained_weights(src))["electra.encoder.layer.1.output.dense"
                                                           ".weight"],
                          weights["electra.encoder.layer.1.output.dense.weight"])

    # the pair a pretraining run holds: its discriminator's encoder, under the classifier's names
    torch.manual_seed(1)
    pair = ElectraPreTrainingModel(cfg)
    pair_state = {k: v.detach().numpy() for k, v in pair.hf_state_dict().items()}
    from_pair, notes = initial_state(pair_state, src, cfg, labels, seed=3)
    assert not notes
    for k, v in from_pair.items():
        if k.startswith("electra."):
            assert np.array_equal(v, pair_state[f"discriminator.{k}"]), k
        else:
            assert np.array_equal(v, state[k]), k          # the same fresh head: same seed

    # an ElectraModel save: names without `electra.`
    bare = {k.removeprefix("electra."): v for k, v in weights.items() if k.startswith("electra.")}
    from_bare, _ = initial_state(bare, src, cfg, labels, seed=3)
    assert all(np.array_equal(from_bare[k], state[k]) for k in state)


def test_classify_from_transformers_discriminator(twin, tmp_path, capsys):
    """classify train --init-from a transformers ElectraForPreTraining directory (random
    weights, embedding_size != hidden_size): best/ is a transformers
    ElectraForSequenceClassification directory (model_type electra) that transformers loads
    with no missing or unexpected names and whose logits are the twin's; evaluate and predict
    read it."""
    model = hf_dir(tmp_path / "disc", transformers.ElectraForPreTraining)
    data = write_jsonl(tmp_path / "train.jsonl", reviews(48, 0))
    out = tmp_path / "run"
    cli = ClassifyCli(twin, capsys)
    cli("train", "--init-from", str(model), "--data", str(data), "--out", str(out),
        "--epochs", "1", "--lr", "1e-3", "--val-fraction", "0.2", *FAST)
    assert [r["epoch"] for r in epoch_rows(out)] == [1]
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["model_type"] == "electra"
    assert config["architectures"] == ["ElectraForSequenceClassification"]
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["classifier_dropout"] is None
    assert "ElectraForSequenceClassification" in (out / "best" / "README.md").read_text()

    clf = open_classifier(out)
    b = padded_batch(clf.tokenizer, clf.labels)
    want = transformers_logits(out / "best", b)
    np.testing.assert_allclose(twin_logits(twin, clf, b), want, rtol=0, atol=ATOL)
    # fine-tuning moved the encoder away from the discriminator it started from
    start = transformers.ElectraForPreTraining.from_pretrained(model).state_dict()
    tuned = transformers.ElectraForSequenceClassification.from_pretrained(out / "best")
    w = "electra.encoder.layer.0.output.dense.weight"
    assert not torch.equal(start[w], tuned.state_dict()[w])

    res = json.loads(cli("evaluate", str(out), "--data", str(data), "--json").stdout)
    assert res["examples"] == 48
    p = cli("predict", str(out / "best"), "a wonderful film", "--json")
    assert json.loads(p.stdout)[0]["label"] in ("neg", "pos")


def test_transformers_classifier_directory(twin, tmp_path, capsys):
    """A transformers-made ElectraForSequenceClassification (id2label in its config) is a
    classifier to both twins: evaluate and predict give transformers' logits."""
    path = hf_dir(tmp_path / "clf", transformers.ElectraForSequenceClassification, seed=2,
                  id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    assert open_model_dir(path).layout == "hf-classifier"
    clf = open_classifier(path)
    b = padded_batch(clf.tokenizer, clf.labels)
    np.testing.assert_allclose(twin_logits(twin, clf, b), transformers_logits(path, b),
                               rtol=0, atol=ATOL)


def test_refuses_the_model_without_the_head_it_needs(twin, tmp_path, capsys):
    """classify given a generator, fill-mask given a discriminator, a classifier or an encoder:
    one line naming what it is and what to pass instead."""
    gen = hf_dir(tmp_path / "gen", transformers.ElectraForMaskedLM)
    data = write_jsonl(tmp_path / "train.jsonl", reviews(16, 0))
    cli = ClassifyCli(twin, capsys)
    p = cli("train", "--init-from", str(gen), "--data", str(data), "--out",
            str(tmp_path / "run"), *FAST, check=False)
    assert_one_line_error(p, "ELECTRA generator (ElectraForMaskedLM)", "discriminator",
                          "ElectraForPreTraining")
    assert not (tmp_path / "run").exists()
    p = cli("predict", str(gen), "a film", check=False)
    assert_one_line_error(p, "ELECTRA generator", "ElectraForPreTraining")

    fill = (tf if twin == "torch" else jf).main
    for cls, what in ((transformers.ElectraForPreTraining, "ELECTRA discriminator"),
                      (transformers.ElectraModel, "ELECTRA encoder"),
                      (transformers.ElectraForSequenceClassification, "sequence classifier")):
        path = hf_dir(tmp_path / cls.__name__, cls)
        capsys.readouterr()
        rc = fill([str(path), "a [MASK] film"])
        out, err = capsys.readouterr()
        assert_one_line_error(SimpleNamespace(returncode=rc, stdout=out, stderr=err), what,
                              "ElectraForMaskedLM")


# ---- fill-mask ----------------------------------------------------------------------------------

def test_fill_mask_uses_the_pairs_generator():
    """fill-mask on the pair a run trains: both twins' `predict` give the logits of the
    generator alone, as transformers' ElectraForMaskedLM computes them from the pair's generator
    export (bertcore.model.hf.electra_split: the discriminator's embeddings under its names)."""
    tok = review_tokenizer()
    cfg = tiny_config(tok)
    torch.manual_seed(0)
    pair = ElectraPreTrainingModel(cfg)
    with torch.no_grad():   # a decoder bias, so a missing one would show
        pair.generator.generator_lm_head.bias.normal_(0.0, 0.5)
    state = {k: v.detach().numpy() for k, v in pair.hf_state_dict().items()}
    batch, positions = fillmask.encode(tok, "the movie was [MASK] and the [MASK] was dull", 64)
    gen = transformers.ElectraForMaskedLM(hf_config(cfg, "generator"))
    missing = gen.load_state_dict({k: torch.from_numpy(v) for k, v in
                                   electra_split(state)["generator"].items()}, strict=False)
    assert not missing.unexpected_keys and set(missing.missing_keys) <= {
        "generator_lm_head.weight"}      # tied to the word embeddings: transformers ties it
    gen.tie_weights()
    gen.eval()
    with torch.no_grad():
        want = gen(input_ids=torch.from_numpy(batch["input_ids"]).long()).logits[0, positions]
    got_t = tf.predict(pair, batch).numpy()
    np.testing.assert_allclose(got_t, want.numpy(), rtol=0, atol=ATOL)
    jpair = jax_pretraining(cfg)
    got_j = jf.predict(jpair, hf_to_flax(state, cfg), batch)
    np.testing.assert_allclose(got_j, want.numpy(), rtol=0, atol=ATOL)


def test_fill_mask_command_on_electra_directories(twin, tmp_path, capsys):
    """The fill_mask command on a transformers ElectraForMaskedLM directory and on a directory
    of the pair (our pretraining config.json + the pair's weights, which from_pretrained reads):
    transformers' own top tokens and probabilities for the generator."""
    gen_dir = hf_dir(tmp_path / "gen", transformers.ElectraForMaskedLM, seed=5)
    text = "the movie was [MASK] and the acting was [MASK] ."
    fill = (tf if twin == "torch" else jf).main

    def top3(path) -> list[list[str]]:
        capsys.readouterr()
        assert fill([str(path), text, "--json", "--top-k", "3"]) == 0
        masks = json.loads(capsys.readouterr().out)["masks"]
        return [[c["token"] for c in m] for m in masks], [[c["probability"] for c in m]
                                                          for m in masks]

    def transformers_top3(model, path) -> tuple[list[list[str]], list[list[float]]]:
        tok = load_tokenizer(path)
        batch, pos = fillmask.encode(tok, text, 64)
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(batch["input_ids"]).long()).logits[0, pos]
        best = fillmask.top_k(logits.numpy(), tok, 3)
        return [[t for t, _ in m] for m in best], [[p for _, p in m] for m in best]

    tokens, probs = top3(gen_dir)
    want_tokens, want_probs = transformers_top3(
        transformers.ElectraForMaskedLM.from_pretrained(gen_dir), gen_dir)
    assert tokens == want_tokens
    np.testing.assert_allclose(probs, want_probs, atol=1e-5)

    # a pair directory: the pair's generator fills the masks
    tok = review_tokenizer()
    cfg = tiny_config(tok)
    torch.manual_seed(6)
    pair = ElectraPreTrainingModel(cfg)
    with torch.no_grad():
        pair.generator.generator_lm_head.bias.normal_(0.0, 2.0)
    pair_dir = tmp_path / "pair"
    pair_dir.mkdir()
    tok.save(pair_dir)
    cfg.to_json_file(pair_dir / "config.json")
    save_file({k: v.contiguous() for k, v in pair.hf_state_dict().items()},
              str(pair_dir / "model.safetensors"))
    assert open_model_dir(pair_dir).electra == "pair"
    gen = transformers.ElectraForMaskedLM(hf_config(cfg, "generator"))
    gen.load_state_dict({k: torch.from_numpy(v) for k, v in electra_split(
        {k: v.detach().numpy() for k, v in pair.hf_state_dict().items()})["generator"].items()},
        strict=False)
    gen.tie_weights()
    tokens, probs = top3(pair_dir)
    want_tokens, want_probs = transformers_top3(gen, pair_dir)
    assert tokens == want_tokens
    np.testing.assert_allclose(probs, want_probs, atol=1e-5)


def test_fill_mask_model_dir_names_electra_models(tmp_path):
    """bertcore.modeldirs: an ELECTRA hf directory says which model it holds (by its weights'
    names); fill-mask's check refuses the ones without an MLM head before any model loads."""
    for cls, want in ((transformers.ElectraForPreTraining, "discriminator"),
                      (transformers.ElectraForMaskedLM, "generator"),
                      (transformers.ElectraModel, "encoder"),
                      (transformers.ElectraForSequenceClassification, "classifier")):
        path = hf_dir(tmp_path / cls.__name__, cls)
        assert open_model_dir(path).electra == want
        if want == "generator":
            assert fillmask.open_model_dir(path, "jax").electra == "generator"
        else:
            with pytest.raises(UserError, match="ElectraForMaskedLM"):
                fillmask.open_model_dir(path, "torch")


# ---- an ELECTRA pretraining RUNDIR --------------------------------------------------------------

@pytest.mark.slow
def test_electra_run_downstream(twin, tmp_path, cache_in_env, capsys):
    """A short ELECTRA run of this twin, then: classify starts from its discriminator, in this
    twin (the checkpoint's pair) and in the other (the export hf/discriminator: the same
    weights); both fine-tune it; fill-mask runs its generator, from the checkpoint in this twin
    and from the export hf/ in the other, as transformers' ElectraForMaskedLM on hf/generator."""
    other = "jax" if twin == "torch" else "torch"
    pretrain = importlib.import_module(f"{twin}bert.train").main
    rundir = tmp_path / "pretrained"
    assert pretrain(["--arch", "electra", "--preset", "tiny", "--corpus",
                     str(review_corpus(tmp_path / "corpus.txt")), "--vocab-size", "200",
                     "--seq-len", "32", "--batch-size", "8", "--max-predictions", "5",
                     "--steps", "4", "--no-progress", "--out", str(rundir)]) == 0

    labels = LabelMap(["neg", "pos"])
    twins = {"torch": (tc, tf), "jax": (jc, jf)}
    mine, theirs = classify_init(rundir, twin), classify_init(rundir, other)
    assert mine.weights_from == "rundir" and theirs.path == rundir / "hf" / "discriminator"
    start, notes = initial_state(twins[twin][0].pretrained_weights(mine), mine, mine.config,
                                 labels, seed=0)
    assert not notes and isinstance(mine.config, ElectraConfig)
    again, _ = initial_state(twins[other][0].pretrained_weights(theirs), theirs, theirs.config,
                             labels, seed=0)
    assert set(again) == set(start) and all(np.array_equal(again[k], start[k]) for k in start)

    data = write_jsonl(tmp_path / "train.jsonl", reviews(32, 0))
    for who in (twin, other):
        out = tmp_path / f"clf-{who}"
        ClassifyCli(who, capsys)("train", "--init-from", str(rundir), "--data", str(data),
                                 "--out", str(out), "--epochs", "1", *FAST)
        config = json.loads((out / "best" / "config.json").read_text())
        assert config["architectures"] == ["ElectraForSequenceClassification"]
        info = json.loads((out / "run.json").read_text())["init_from"]
        assert info["kind"] == ("rundir" if who == twin else "hf")

    text = "the movie was [MASK] and the acting was [MASK] ."
    tok = load_tokenizer(rundir / "tokenizer")
    batch, pos = fillmask.encode(tok, text, 64)
    gen = transformers.ElectraForMaskedLM.from_pretrained(rundir / "hf" / "generator").eval()
    with torch.no_grad():
        logits = gen(input_ids=torch.from_numpy(batch["input_ids"]).long()).logits[0, pos]
    want = [[t for t, _ in m] for m in fillmask.top_k(logits.numpy(), tok, 3)]
    for who, path in ((twin, rundir), (other, rundir / "hf")):
        capsys.readouterr()
        assert twins[who][1].main([str(path), text, "--json", "--top-k", "3"]) == 0
        masks = json.loads(capsys.readouterr().out)["masks"]
        assert [[c["token"] for c in m] for m in masks] == want, who
