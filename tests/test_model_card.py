"""Model cards (bertcore/modeldirs/card.py): every Hugging Face directory the project writes (a
pretraining run's hf/, a classify run's best/, parity.convert's --to hf) holds a README.md whose
metadata the hub library's card parser reads, whose body states what the run's own files say, and
which leaves transformers loading the directory as before."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import (CLASSIFY_FAST, ClassifyCli, hf_dir, metrics, reviews, run_cli, train_cli,
                     write_corpus, write_jsonl)



@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """transformers and the hub library read local directories only."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def load_card(path: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(path)


def table_value(text: str, key: str) -> str:
    """The value of the `| key | value |` row of a card's tables."""
    m = re.search(rf"^\| {re.escape(key)} \| (.*) \|$", text, re.M)
    assert m, f"no row {key!r} in the card"
    return m.group(1)


def test_front_matter_is_yaml():
    """The emitter's YAML reads back as the values it was given: quotes, colons, '#', unicode,
    numbers, booleans and nested lists of mappings."""
    from bertcore.modeldirs.card import front_matter

    meta = {"library_name": "transformers", "tags": ["bert", "a: b", "#not a comment", "é ü"],
            "base_model": "/tmp/with \"quotes\" and 'apostrophes'",
            "model-index": [{"name": "m", "results": [{"task": {"type": "fill-mask"},
                                                       "metrics": [{"type": "accuracy",
                                                                    "value": 0.25},
                                                                   {"type": "n", "value": 3}],
                                                       "verified": False}]}]}
    text = front_matter(meta, {"tags": "a comment"})
    assert text.startswith("---\n") and text.endswith("\n---\n")
    assert yaml.safe_load(text.strip("-\n")) == meta


def test_card_of_unknown_training(tmp_path):
    """Weights whose training is not recorded: no datasets, base_model or model-index claimed,
    and a pre-LN model is said to be beyond transformers' BERT classes. Corpus names map to
    `datasets` entries as the user named them."""
    from bertcore.modeldirs.card import dataset_name, pretraining_card, write_model_card
    from bertcore.model.config import BertConfig

    config = BertConfig.from_preset("tiny", vocab_size=100).replace(layer_norm_position="pre")
    (tmp_path / "m").mkdir()
    write_model_card(tmp_path / "m", pretraining_card(tmp_path / "m", config))
    card = load_card(tmp_path / "m" / "README.md")
    meta = card.data.to_dict()
    assert meta["pipeline_tag"] == "fill-mask" and meta["tags"] == ["bert", "twinbert"]
    assert not {"datasets", "base_model", "model-index"} & set(meta)
    assert "not recorded" in card.text and "**pre-LN**" in card.text
    assert table_value(card.text, "LayerNorm") == "pre-LN"
    (tmp_path / "dl" / "aclImdb").mkdir(parents=True)
    assert [dataset_name(c) for c in ("builtin", "imdb", "hf:wikitext:wikitext-2-raw-v1",
                                      "/data/corpus.jsonl", str(tmp_path / "dl"), None)] == [
        "builtin", "imdb", "wikitext", "corpus.jsonl", "imdb", None]


@pytest.mark.slow
def test_pretraining_export_card(twin, tmp_path, cache_env):
    """RUNDIR/hf/README.md: fill-mask metadata (the corpus, the held-out eval as model-index),
    the real step count, tokens and parameter count, the run's learned: line, the commands of
    both twins; transformers' pipeline and both twins' fill_mask still read the directory."""
    from bertcore.data.prepare import prepare
    from bertcore.data.tokenizer import train_tokenizer

    corpus = write_corpus(tmp_path)
    docs = corpus.read_text().split("\n\n")
    data = tmp_path / "data"
    prepare(docs, train_tokenizer(docs, 300), data, source=str(corpus), progress=False,
            eval_fraction=0.2, workers=1)
    out = tmp_path / "run"
    p = train_cli(twin, "--preset", "tiny", "--data", str(data), "--seq-len", "32",
                  "--batch-size", "8", "--max-predictions", "5", "--no-progress", "--steps", "6",
                  "--log-every", "2", "--checkpoint-every", "3", "--eval-batches", "2",
                  "--out", str(out), env=cache_env)
    summary = json.loads((out / "summary.json").read_text())
    card_path = out / "hf" / "README.md"
    card = load_card(card_path)
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "fill-mask"
    assert meta["license"] == "other" and "license" in card.text.lower()
    assert {"bert", "twinbert", f"{twin}bert"} <= set(meta["tags"])
    assert meta["datasets"] == ["corpus.txt"] and "base_model" not in meta
    held_out = summary["learned"]["eval"]
    assert held_out["step"] == 6
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"accuracy": held_out["mlm_accuracy"],
                       "perplexity": held_out["perplexity"]}

    body = card.text
    cfg, train = summary["model_config"], summary["train_config"]
    assert summary["steps"] == 6 and table_value(body, "steps") == "6"
    assert table_value(body, "tokens seen").startswith(f"{6 * 8 * 32:,} ")
    assert table_value(body, "layers") == str(cfg["num_hidden_layers"])
    assert table_value(body, "vocabulary") == str(cfg["vocab_size"])
    assert table_value(body, "batch size") == f"{train['batch_size']} sequences"
    learned = re.search(r"learned: .*", p.stdout + p.stderr).group(0)
    assert f"> {learned}" in body
    assert f"python -m jaxbert.fill_mask   {out / 'hf'} " in body
    assert f"python -m torchbert.fill_mask {out / 'hf'} " in body

    import transformers

    model = transformers.BertForPreTraining.from_pretrained(out / "hf")
    assert table_value(body, "parameters").startswith(f"{model.num_parameters():,} ")
    # transformers' fill-mask pipeline on the export answers as both twins' fill_mask do: the
    # same top tokens in the same order, the same probabilities (float32 tolerance).
    fill = transformers.pipeline("fill-mask", model=str(out / "hf"), device="cpu")
    text = "the [MASK] of the values ."
    hf_top = [(c["token_str"], c["score"]) for c in fill(text, top_k=3)]
    assert len(hf_top) == 3
    for fw in ("torch", "jax"):
        q = run_cli("-m", f"{fw}bert.fill_mask", str(out / "hf"), text, "--json", "--top-k", "3",
                    env=cache_env)
        assert q.returncode == 0, q.stderr[-2000:]
        ours = [(c["token"], c["probability"]) for c in json.loads(q.stdout)["masks"][0]]
        assert [t for t, _ in ours] == [t for t, _ in hf_top], (fw, ours, hf_top)
        assert np.allclose([p for _, p in ours], [p for _, p in hf_top], atol=1e-5), fw

    if twin == "torch":   # parity.convert of the same run at an earlier step: that step's card
        from parity.convert import convert

        dst = convert(out, tmp_path / "export", "hf", step=3)
        conv = load_card(dst / "README.md")
        assert conv.data.to_dict()["pipeline_tag"] == "fill-mask"
        assert table_value(conv.text, "steps") == "3"
        first_eval = [m for m in metrics(out) if m.get("split") == "eval"][0]
        assert first_eval["step"] == 3
        assert {r.metric_type: r.metric_value for r in conv.data.eval_results}[
            "accuracy"] == first_eval["mlm_accuracy"]
        assert f"Converted from `{out}, step 3`" in conv.text
        # and from a Hugging Face directory: where the weights came from, no training claimed
        again = convert(dst, tmp_path / "again", "hf")
        plain = load_card(again / "README.md")
        assert "model-index" not in plain.data.to_dict() and "## Training" in plain.text
        assert f"Converted from `{dst}`" in plain.text and "| steps |" not in plain.text


@pytest.mark.slow
def test_classifier_export_card(twin, tmp_path, cache_env, capsys, monkeypatch):
    """RUNDIR/best/README.md: text-classification metadata with base_model = --init-from, the
    data file, the best epoch's validation accuracy as model-index; transformers'
    BertForSequenceClassification and pipeline load the directory. parity.convert's export of
    the run carries the same facts."""
    for k, v in cache_env.items():
        monkeypatch.setenv(k, v)
    model = hf_dir(tmp_path / "pre")
    train = write_jsonl(tmp_path / "train.jsonl", reviews(120, 0))
    out = tmp_path / "cls"
    ClassifyCli(twin, capsys)("train", "--init-from", str(model), "--data", str(train),
                              "--out", str(out), "--epochs", "2", "--lr", "2e-3", *CLASSIFY_FAST)
    best = json.loads((out / "best" / "classifier.json").read_text())
    config = json.loads((out / "best" / "config.json").read_text())
    card = load_card(out / "best" / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["base_model"] == str(model.resolve())
    assert meta["datasets"] == ["train.jsonl"] and f"{twin}bert" in meta["tags"]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["accuracy"] == best["val_accuracy"] and results["f1"] == best["val_f1"]
    assert card.data.eval_results[0].dataset_split == "validation"
    body = card.text
    assert table_value(body, "labels") == str(len(config["id2label"])) == "2"
    assert table_value(body, "these weights").startswith(
        f"epoch {best['epoch']}, step {best['step']} ")
    assert f"python -m {twin}bert.classify" in body and "`neg`, `pos`" in body

    import transformers

    clf = transformers.BertForSequenceClassification.from_pretrained(out / "best")
    assert table_value(body, "parameters").startswith(f"{clf.num_parameters():,} ")
    pipe = transformers.pipeline("text-classification", model=str(out / "best"), device="cpu")
    assert pipe("a wonderful superb film")[0]["label"] in ("neg", "pos")

    from parity.convert import convert

    dst = convert(out, tmp_path / "export", "hf")
    exported = load_card(dst / "README.md")
    assert exported.data.to_dict()["base_model"] == str(model.resolve())
    assert exported.data.eval_results[0].metric_value == best["val_accuracy"]
    assert table_value(exported.text, "epochs") == "2"
    transformers.BertForSequenceClassification.from_pretrained(dst)
