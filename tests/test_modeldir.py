"""bertcore.modeldirs.resolve, the one resolver of model directories, and what each command that
takes a model path (fill-mask, --init-from, classify evaluate/predict) says about the layouts it
does not take. No framework: the weights are written with numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertcore.classify.cli import resolve_init as classify_init
from bertcore.classify.data import LabelMap, open_classifier, write_classifier_dir
from bertcore.model.config import BertConfig, TrainConfig
from bertcore.infra.errors import UserError
from bertcore.modeldirs.fillmask import open_model_dir as fill_mask_model
from bertcore.modeldirs.fillmask import parse_args as fill_mask_args
from bertcore.model.hf import classifier_param_table, fresh_params, hf_names, save_hf_files
from bertcore.modeldirs.resolve import LAYOUTS, layout_of, open_model_dir
from bertcore.train.init_from import resolve_init
from helpers import review_tokenizer


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """One directory of each layout, with the same tiny model and tokenizer."""
    root = tmp_path_factory.mktemp("modeldirs")
    tok = review_tokenizer()
    cfg = BertConfig.from_preset("tiny", vocab_size=tok.vocab_size, hidden_size=16,
                                 num_attention_heads=2, intermediate_size=32,
                                 max_position_embeddings=64)
    tok.save(root / "tok")
    hf = root / "hf"
    hf.mkdir()
    save_hf_files(hf, cfg, fresh_params(cfg, hf_names(cfg)), root / "tok")
    labels = LabelMap(["neg", "pos"])
    state = {p.hf_name: np.zeros(p.hf_shape, np.float32)
             for p in classifier_param_table(cfg, len(labels))}
    write_classifier_dir(root / "hf-classifier", cfg, labels, state, root / "tok")
    run = root / "pretraining-run"                  # what bertcore.train.run writes, no checkpoint
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"framework": "torch"}))
    cfg.to_json_file(run / "config.json")
    TrainConfig(dropout=False).to_json_file(run / "train_config.json")
    tok.save(run / "tokenizer")
    cls = root / "classify-run"                       # what bertcore.classify.run writes
    cls.mkdir()
    (cls / "run.json").write_text(json.dumps({"framework": "jax", "task": "classify"}))
    (cls / "classify_config.json").write_text(json.dumps({"max_len": 24}))
    (cls / "config.json").write_text((root / "hf-classifier" / "config.json").read_text())
    tok.save(cls / "tokenizer")
    write_classifier_dir(cls / "best", cfg, labels, state, cls / "tokenizer")
    return {"root": root, "hf": hf, "hf-classifier": root / "hf-classifier",
            "pretraining-run": run, "classify-run": cls}


def test_each_layout_is_recognised_and_read(dirs):
    for layout in LAYOUTS:
        assert layout_of(dirs[layout]) == layout
        md = open_model_dir(dirs[layout])
        assert md.layout == layout and md.config.hidden_size == 16
        assert md.load_tokenizer().vocab_size == md.config.vocab_size
    assert layout_of(dirs["root"]) is None and layout_of(dirs["root"] / "nowhere") is None
    run = open_model_dir(dirs["pretraining-run"])
    assert run.framework == "torch" and run.weights_dir is None            # no hf/ export yet
    assert run.config.hidden_dropout_prob > 0 and run.trained_config.hidden_dropout_prob == 0
    cls = open_model_dir(dirs["classify-run"])
    assert (cls.framework, cls.labels, cls.weights_dir) == ("jax", ["neg", "pos"],
                                                            dirs["classify-run"] / "best")
    assert open_model_dir(dirs["hf-classifier"]).labels == ["neg", "pos"]
    # transformers writes an id2label into every config: without classifier weights, no labels
    raw = json.loads((dirs["hf"] / "config.json").read_text())
    assert "id2label" not in raw
    (dirs["root"] / "hf-labelled").mkdir()
    for f in dirs["hf"].iterdir():
        (dirs["root"] / "hf-labelled" / f.name).write_bytes(f.read_bytes())
    (dirs["root"] / "hf-labelled" / "config.json").write_text(json.dumps(
        {**raw, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}}))
    assert layout_of(dirs["root"] / "hf-labelled") == "hf"


def test_what_is_not_a_model_directory_is_one_error(dirs):
    with pytest.raises(UserError, match="neither a pretraining RUNDIR.*classify RUNDIR.*Hugging"):
        open_model_dir(dirs["root"])
    with pytest.raises(UserError, match="--init-from .*nowhere does not exist"):
        open_model_dir(dirs["root"] / "nowhere", flag="--init-from")
    with pytest.raises(UserError, match="is a file"):
        open_model_dir(dirs["hf"] / "config.json")


def test_fill_mask_refuses_a_classifier_with_what_to_run(dirs):
    assert fill_mask_model(dirs["hf"], "torch").layout == "hf"
    assert fill_mask_model(dirs["pretraining-run"], "jax").layout == "pretraining-run"
    for layout in ("classify-run", "hf-classifier"):
        with pytest.raises(UserError, match=rf"classifier.*jaxbert.classify predict "
                                            rf".*{layout}") as e:
            fill_mask_model(dirs[layout], "jax")
        assert "train_config.json" not in str(e.value)


def test_fill_mask_refuses_a_top_k_below_one():
    assert fill_mask_args("fill_mask", ["m", "a [MASK]", "--top-k", "1"]).top_k == 1
    for k in ("0", "-1"):
        with pytest.raises(UserError, match=f"--top-k {k}: .*at least 1"):
            fill_mask_args("fill_mask", ["m", "a [MASK]", "--top-k", k])


def test_classify_evaluate_takes_classifiers_only(dirs):
    clf = open_classifier(dirs["classify-run"])
    assert clf.labels.labels == ["neg", "pos"] and clf.max_len == 24
    assert open_classifier(dirs["hf-classifier"]).max_len == 64
    with pytest.raises(UserError, match="pretraining run, not a classifier.*--init-from"):
        open_classifier(dirs["pretraining-run"])
    with pytest.raises(UserError, match="not a sequence classifier"):
        open_classifier(dirs["hf"])


def test_init_from_a_classifier(dirs):
    """Fine-tuning keeps the head and its labels; pretraining takes the encoder, says so and
    leaves the head out of the weights it loads."""
    src = classify_init(dirs["classify-run"], "torch")
    assert src.path == dirs["classify-run"] / "best" and src.labels == ["neg", "pos"]
    assert "fine-tuned weights" in src.note and src.unused == ()
    src = resolve_init(dirs["classify-run"], "torch")
    assert src.weights_from == "hf" and src.labels is None and src.unused == ("classifier.",)
    assert "classifier head" in src.note and "encoder" in src.note
    weights = {"bert.pooler.dense.bias": 1, "classifier.weight": 2, "classifier.bias": 3}
    assert src.used(weights) == {"bert.pooler.dense.bias": 1}
    assert resolve_init(dirs["hf"], "torch").unused == ()
