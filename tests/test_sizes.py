"""Absurd sizes are refused at once, by one rule (bertcore.model.sizes), in every command: a
config's size fields within 2^31, its weights (and, where a command trains, gradients, AdamW moments
and a micro-batch's activations) within the memory there is, a tokenizer's --vocab-size within 2^24.
Each refusal is one line (exit 2, no traceback) naming the field, the GB it would need and the
memory there is, before anything is allocated or written (no RUNDIR, no lock). Before: hangs
until killed (10^9 layers), terabyte allocation tracebacks, a Rust abort (exit 134) in the
tokenizer trainer, half-made run directories."""

from __future__ import annotations

import importlib
import itertools
import json
import time
from pathlib import Path

import pytest

from bertcore.model import sizes
from bertcore.modeldirs.card import parameter_count as listed_parameter_count
from bertcore.model.config import (MODERNBERT_PRESETS, PRESETS, BertConfig, ModernBertConfig,
                                   TrainConfig, load_model_config)
from bertcore.infra.errors import UserError
from helpers import (assert_one_line_error, base_args, hf_dir, reviews, train_in_process,
                     write_corpus, write_jsonl)

GIB16 = {sizes.MEMORY_ENV: "16"}   # the memory there is, the same on every machine
# The absurd configs (each on top of a tiny BERT) and what the refusal names.
ABSURD = {
    "layers": ({"num_hidden_layers": 10 ** 9}, "num_hidden_layers=1000000000"),
    "hidden": ({"hidden_size": 10 ** 9}, "hidden_size=1000000000"),
    "positions": ({"max_position_embeddings": 10 ** 12}, "max_position_embeddings=1000000000000"),
}
TINY = {"model_type": "bert", "vocab_size": 200, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}


@pytest.fixture
def memory16(monkeypatch):
    monkeypatch.setenv(sizes.MEMORY_ENV, "16")


def refused(capsys_or_proc, *needles: str) -> str:
    """The one error line of a refused command (a CompletedProcess-like object)."""
    assert capsys_or_proc.returncode == 2, capsys_or_proc.stdout + capsys_or_proc.stderr
    assert_one_line_error(capsys_or_proc, *needles)
    return next(ln for ln in capsys_or_proc.stderr.splitlines() if ln.startswith("error:"))


def needs_gb(line: str) -> None:
    """A memory refusal says what it would need and what there is."""
    assert " GB for its weights alone" in line or "training needs " in line, line
    assert "this machine has 16 GB of memory" in line, line


# ---- the rule itself --------------------------------------------------------------------------

def test_parameter_count_in_closed_form_equals_the_listed_parameters():
    for name in PRESETS:
        for pos in ("post", "pre"):
            c = BertConfig.from_preset(name, layer_norm_position=pos, vocab_size=1000)
            assert sizes.parameter_count(c) == listed_parameter_count(c)
    for name in ("tiny", "base"):
        for flags in itertools.product([False, True], repeat=5):
            c = ModernBertConfig.from_preset(name, **dict(zip(
                ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias", "decoder_bias"),
                flags)))
            assert sizes.parameter_count(c) == listed_parameter_count(c)
    assert set(MODERNBERT_PRESETS) == set(PRESETS)


@pytest.mark.parametrize("cls", [BertConfig, ModernBertConfig])
@pytest.mark.parametrize("field", ["vocab_size", "hidden_size", "num_hidden_layers",
                                   "intermediate_size", "max_position_embeddings"])
def test_size_fields_are_refused_by_name_beyond_2_31_and_below_1(cls, field):
    for bad in (0, -5, 2 ** 31 + 1, 10 ** 12, 2.5, True):
        with pytest.raises(UserError, match=rf"config {field}={bad!r}"):
            cls(**{field: bad})


@pytest.mark.parametrize("cls", [BertConfig, ModernBertConfig])
@pytest.mark.parametrize("case", ["layers", "hidden"])
def test_a_config_whose_weights_exceed_memory_is_refused_at_once(cls, case, memory16):
    change, named = ABSURD[case]
    start = time.perf_counter()
    with pytest.raises(UserError) as e:
        cls(**change, **({"num_attention_heads": 8} if case == "hidden" else {}))
    assert time.perf_counter() - start < 1.0      # counted in closed form, nothing allocated
    line = str(e.value)
    assert line.startswith(f"config {named} makes a model of "), line
    assert "use a smaller " + named.split("=")[0] in line
    needs_gb(line)


def test_memory_there_is(monkeypatch):
    monkeypatch.delenv(sizes.MEMORY_ENV, raising=False)
    assert sizes.memory_bytes() > 10 ** 8           # this machine's RAM (or cgroup limit)
    monkeypatch.setenv(sizes.MEMORY_ENV, "0.5")
    assert sizes.memory_bytes() == 5 * 10 ** 8
    for bad in ("lots", "nan", "-1", "0"):
        monkeypatch.setenv(sizes.MEMORY_ENV, bad)
        with pytest.raises(UserError, match=sizes.MEMORY_ENV):
            sizes.memory_bytes()


def test_training_counts_optimizer_state_and_activations(memory16):
    large = BertConfig.from_preset("large")        # 1.3 GB of weights: loads, and trains small
    TrainConfig(batch_size=32, seq_len=128).validate(large)
    with pytest.raises(UserError) as e:             # activations of 4096 x 512 tokens
        TrainConfig(batch_size=4096, seq_len=512).validate(large)
    line = str(e.value)
    assert line.startswith("a micro-batch of 4096 sequences x 512 tokens: training needs ")
    assert "lower --batch-size (or raise --grad-accum) or --seq-len" in line
    needs_gb(line)
    # the same global batch in micro-batches of 8 fits
    TrainConfig(batch_size=4096, seq_len=512, grad_accum=512).validate(large)
    # weights + gradients + AdamW (16 bytes a parameter) beyond memory: the model is named
    deep = BertConfig.from_preset("large", num_hidden_layers=300)   # 15 GB of weights: they load
    with pytest.raises(UserError, match="config num_hidden_layers=300: training needs"):
        TrainConfig(batch_size=1, seq_len=8).validate(deep)


def test_vocab_size_cap():
    sizes.check_vocab_size(30522)
    sizes.check_vocab_size(2 ** 24)
    with pytest.raises(UserError, match=r"--vocab-size 1000000000000 is beyond .* 2\^24"):
        sizes.check_vocab_size(10 ** 12)


# ---- every command ----------------------------------------------------------------------------

def _config_file(tmp_path: Path, case: str) -> Path:
    p = tmp_path / f"{case}.json"
    p.write_text(json.dumps({**TINY, **ABSURD[case][0]}))
    return p


def _hf_dir(tmp_path: Path, case: str) -> Path:
    """A Hugging Face directory whose config.json was edited to the absurd size (its weights
    are never read: the config is refused first)."""
    d = tmp_path / f"hf-{case}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**TINY, **ABSURD[case][0]}))
    (d / "model.safetensors").write_bytes(b"\0" * 16)
    return d


@pytest.mark.parametrize("case", list(ABSURD))
def test_train_with_an_absurd_config_is_refused_before_the_run_dir(twin, case, tmp_path,
                                                                   cache_env):
    corpus, out = write_corpus(tmp_path, n_docs=40), tmp_path / "run"
    env = {**cache_env, **GIB16}
    p = train_in_process(twin, *base_args(corpus, out, "--steps", "1", "--config",
                                          str(_config_file(tmp_path, case))), env=env)
    line = refused(p, ABSURD[case][1], f"{case}.json")
    if case != "positions":
        needs_gb(line)
    else:
        assert "at most 2^31" in line
    assert not out.exists()


def test_train_init_from_an_edited_config_json_is_refused(twin, tmp_path, cache_env):
    corpus, out = write_corpus(tmp_path, n_docs=40), tmp_path / "run"
    p = train_in_process(twin, *base_args(corpus, out, "--steps", "1", "--init-from",
                                          str(_hf_dir(tmp_path, "layers"))),
                         env={**cache_env, **GIB16})
    needs_gb(refused(p, "num_hidden_layers=1000000000", "hf-layers"))
    assert not out.exists()


def test_train_vocab_size_is_refused_before_the_tokenizer_trainer(twin, tmp_path, cache_env):
    corpus, out = write_corpus(tmp_path, n_docs=40), tmp_path / "run"
    args = base_args(corpus, out, "--steps", "1")
    args[args.index("--vocab-size") + 1] = str(10 ** 12)
    p = train_in_process(twin, *args, env=cache_env)
    refused(p, "--vocab-size 1000000000000", "2^24")
    assert not out.exists()
    assert not (Path(cache_env["TWINBERT_CACHE"]) / "locks").exists()   # no lock taken


def test_tokenizer_train_vocab_size(tmp_path, capsys):
    from bertcore.data.tokenizer import main

    corpus, out = write_corpus(tmp_path, n_docs=20), tmp_path / "tok"
    rc = main(["train", "--corpus", str(corpus), "--vocab-size", str(10 ** 12),
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "--vocab-size 1000000000000 is beyond" in err
    assert not out.exists()


def _run(module: str, argv: list[str], capsys):
    capsys.readouterr()
    rc = importlib.import_module(module).main(argv)
    out, err = capsys.readouterr()
    return type("P", (), {"returncode": rc, "stdout": out, "stderr": err})


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_fill_mask(framework, tmp_path, capsys, memory16):
    p = _run(f"{framework}bert.fill_mask", [str(_hf_dir(tmp_path, "hidden")),
                                            "the [MASK] was"], capsys)
    needs_gb(refused(p, "hidden_size=1000000000"))


def test_parity_convert(tmp_path, capsys, memory16):
    dst = tmp_path / "dst"
    p = _run("parity.convert", [str(_hf_dir(tmp_path, "layers")), str(dst), "--to", "jax"],
             capsys)
    needs_gb(refused(p, "num_hidden_layers=1000000000"))
    assert not dst.exists()


def test_classify_train(tmp_path, capsys, memory16):
    data, out = write_jsonl(tmp_path / "train.jsonl", reviews(20)), tmp_path / "cls"
    p = _run("torchbert.classify", ["train", "--init-from", str(_hf_dir(tmp_path, "positions")),
                                    "--data", str(data), "--out", str(out), "--no-progress"],
             capsys)
    refused(p, "max_position_embeddings=1000000000000", "at most 2^31")
    assert not out.exists()


def test_classify_train_counts_its_batch(tmp_path, capsys, monkeypatch):
    """A model that loads but whose --batch-size x --max-len activations do not fit."""
    monkeypatch.setenv(sizes.MEMORY_ENV, "1")
    src = hf_dir(tmp_path / "hf")
    data, out = write_jsonl(tmp_path / "train.jsonl", reviews(20)), tmp_path / "cls"
    p = _run("jaxbert.classify", ["train", "--init-from", str(src), "--data", str(data),
                                  "--out", str(out), "--batch-size", "100000", "--max-len", "64",
                                  "--no-progress"], capsys)
    line = refused(p, "a micro-batch of 100000 sequences x 64 tokens", "--batch-size or --max-len")
    assert "this machine has 1 GB of memory" in line
    assert not out.exists()


def test_load_model_config_refuses_an_edited_file(tmp_path, memory16):
    with pytest.raises(UserError, match=r"config file .*layers\.json: config "
                                        r"num_hidden_layers=1000000000 makes a model"):
        load_model_config(_config_file(tmp_path, "layers"))
