"""`--arch modernbert` end to end in both twins: a run trains, resumes to the same curve, exports
a Hugging Face directory that transformers' ModernBertForMaskedLM loads with the twin's own
logits, and both twins started from the same weights (--init-from) train to the same curve.
The models themselves are tested in test_torch_modernbert.py and test_jax_modernbert.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import metrics, prepared_data, run_cli, train_cli

# Sequences of 32 tokens and a window of 16 (|i - j| <= 8): the local layer's window binds.
STEPS = ("--seq-len", "32", "--batch-size", "8", "--max-predictions", "6", "--mask-prob", "0.2",
         "--lr", "2e-3", "--warmup-steps", "2", "--steps", "8", "--checkpoint-every", "4",
         "--log-every", "1", "--no-progress")


def _config(tmp_path, data) -> str:
    from bertcore.model.config import ModernBertConfig
    from bertcore.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tmp_path / "tok")
    cfg = ModernBertConfig.from_preset(
        "tiny", vocab_size=tok.vocab_size, num_hidden_layers=3, global_attn_every_n_layers=2,
        local_attention=16, pad_token_id=tok.pad_id, cls_token_id=tok.cls_id,
        bos_token_id=tok.cls_id, sep_token_id=tok.sep_id, eos_token_id=tok.sep_id)
    path = tmp_path / "modernbert.json"
    cfg.to_json_file(path)
    return str(path)


def _curve(rundir, key="loss") -> list[float]:
    return [m[key] for m in metrics(rundir) if "loss" in m and m.get("split", "train") == "train"]


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_trains_resumes_and_exports(tmp_path, cache_env, twin):
    data = prepared_data(tmp_path, cache_env)
    config = _config(tmp_path, data)
    common = ("--data", str(data), "--config", config, *STEPS)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train_cli(twin, *common, "--out", str(whole), env=cache_env)
    saved = json.loads((whole / "config.json").read_text())
    assert saved["model_type"] == "modernbert" and saved["local_attention"] == 16
    assert json.loads((whole / "train_config.json").read_text())["nsp"] is False   # MLM only
    first = _curve(whole)
    assert len(first) == 8 and all("nsp_loss" not in m for m in metrics(whole))
    assert np.mean(first[-3:]) < np.mean(first[:3])           # it learns
    train_cli(twin, *common, "--out", str(parts), "--stop-after", "4", env=cache_env)
    train_cli(twin, *common, "--out", str(parts), "--resume", env=cache_env)
    np.testing.assert_allclose(_curve(parts), first, rtol=1e-6, atol=1e-6)

    # The export is a ModernBertForMaskedLM directory: transformers computes the twin's logits.
    import transformers

    from bertcore.data.tokenizer import load_tokenizer
    hf = transformers.ModernBertForMaskedLM.from_pretrained(whole / "hf").eval()
    tok = load_tokenizer(whole / "tokenizer")
    ids = torch.tensor([tok.encode("the movie was [MASK] and the plot felt slow but the actors "
                                   "were wonderful and the music was remarkable")])
    with torch.no_grad():
        want = hf(input_ids=ids).logits.numpy()
    if twin == "torch":
        from torchbert.arch import from_pretrained
        model = from_pretrained(whole / "hf").eval()
        with torch.no_grad():
            got = model(ids)[0].numpy()
    else:
        from jaxbert.arch import from_pretrained
        model, params = from_pretrained(whole / "hf")
        got = np.asarray(model.apply({"params": params}, ids.numpy())[0])
    assert ids.shape[1] > 16                                   # the window binds here too
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    # transformers' fill-mask pipeline on the export answers as the twin's fill_mask does, on
    # the export and on the run's checkpoint: the same top tokens, the same probabilities.
    fill = transformers.pipeline("fill-mask", model=str(whole / "hf"), device="cpu")
    text = "the movie was [MASK] and the actors were wonderful ."
    want = [(c["token_str"], c["score"]) for c in fill(text, top_k=3)]
    for source in (whole / "hf", whole):
        p = run_cli("-m", f"{twin}bert.fill_mask", str(source), text, "--json", "--top-k", "3",
                    env=cache_env)
        assert p.returncode == 0, p.stderr[-2000:]
        ours = [(c["token"], c["probability"]) for c in json.loads(p.stdout)["masks"][0]]
        assert [t for t, _ in ours] == [t for t, _ in want], (source, ours, want)
        np.testing.assert_allclose([q for _, q in ours], [q for _, q in want], atol=1e-5)
    card = (whole / "hf" / "README.md").read_text()
    assert "modernbert" in card and "ModernBertForMaskedLM" in card and "NSP" not in card


@pytest.mark.slow
def test_twins_agree_from_the_same_weights(tmp_path, cache_env):
    """Both twins --init-from one torchbert export, same data and seed: the same 8-step curve
    (the bars of the parity suite's curve rows are tighter; this is the CLI path)."""
    data = prepared_data(tmp_path, cache_env)
    config = _config(tmp_path, data)
    common = ("--data", str(data), *STEPS)
    start = tmp_path / "start"
    train_cli("torch", *common, "--config", config, "--steps", "1", "--out", str(start),
              env=cache_env)
    runs = {}
    for twin in ("torch", "jax"):
        runs[twin] = tmp_path / twin
        train_cli(twin, *common, "--init-from", str(start / "hf"), "--out", str(runs[twin]),
                  env=cache_env)
    t, j = _curve(runs["torch"]), _curve(runs["jax"])
    assert len(t) == len(j) == 8
    np.testing.assert_allclose(j, t, rtol=0, atol=2e-5)


def test_arch_flag_errors(tmp_path, cache_env):
    """ModernBERT refuses BERT's LayerNorm placement, and --arch must match a --config."""
    from helpers import assert_one_line_error, base_args, train_in_process, write_corpus
    from bertcore.model.config import BertConfig

    corpus = write_corpus(tmp_path, n_docs=50)
    p = train_in_process("torch", *base_args(corpus, tmp_path / "a", "--arch", "modernbert",
                                             "--layer-norm-position", "pre"), env=cache_env)
    assert_one_line_error(p, "--layer-norm-position", "ModernBERT")
    bert = tmp_path / "bert.json"
    BertConfig.from_preset("tiny", vocab_size=300).to_json_file(bert)
    p = train_in_process("torch", *base_args(corpus, tmp_path / "b", "--arch", "modernbert",
                                             "--config", str(bert)), env=cache_env)
    assert_one_line_error(p, "--arch modernbert", "bert config")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_capped_masking_rate_is_named(tmp_path, cache_env, caplog):
    """--mask-prob 0.3 (ModernBERT's rate) under the default P: the run says what caps it."""
    from helpers import base_args, train_in_process, write_corpus

    corpus = write_corpus(tmp_path, n_docs=50)
    p = train_in_process("torch", *base_args(corpus, tmp_path / "r", "--arch", "modernbert",
                                             "--mask-prob", "0.3", "--steps", "1"),
                         env=cache_env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "--max-predictions 5 caps it; pass --max-predictions 9" in caplog.text
