"""The compute options both twins share: --remat, --dtype bf16, --attention-dropout, --pad-vocab and
the MLM-only forward that skips the pooler and NSP head. Each checked in both twins against the
plain computation on the same weights and batch."""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bertcore.model.config import BertConfig, TrainConfig
from bertcore.data.batches import BatchIterator
from bertcore.model.hf import hf_to_flax
from bertcore.train.cli import resolve_dtype, resolve_pad_vocab, train_parser
from helpers import build_shards
from jaxbert import model as jm
from jaxbert.runtime import compute_dtype
from parity import thresholds as T
from torchbert import model as tm

TCFG = TrainConfig(batch_size=4, seq_len=32, max_predictions=5)
_data = {}


def _tokenized(tmp_path_factory):
    if not _data:
        shards, tok = build_shards(tmp_path_factory.mktemp("data"), n_docs=60, vocab_size=300)
        _data["batch"] = next(BatchIterator(shards, tok, TCFG))
        _data["config"] = BertConfig.from_preset("tiny", vocab_size=tok.vocab_size,
                                                 hidden_dropout_prob=0.0,
                                                 attention_probs_dropout_prob=0.0)
    return _data


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    return _tokenized(tmp_path_factory)["batch"]


@pytest.fixture(scope="module")
def CFG(tmp_path_factory):
    return _tokenized(tmp_path_factory)["config"]


@pytest.fixture(scope="module")
def weights(CFG):
    torch.manual_seed(0)
    model = tm.BertForPreTraining(CFG)
    return model, hf_to_flax({k: v.numpy() for k, v in model.hf_state_dict().items()}, CFG)


def torch_loss_and_grads(model, batch, **forward):
    model.zero_grad(set_to_none=True)
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    mlm, nsp = model(t["input_ids"], t["token_type_ids"], t["attention_mask"],
                     t["masked_positions"], **forward)
    loss, _ = tm.pretraining_loss(mlm, nsp, t, nsp=forward.get("nsp", True))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}


def jax_loss_and_grads(module, params, batch, nsp=True):
    def f(p):
        mlm, nsp_logits = module.apply({"params": p}, batch["input_ids"], batch["token_type_ids"],
                                       batch["attention_mask"], batch["masked_positions"],
                                       nsp=nsp)
        return jm.pretraining_loss(mlm, nsp_logits, batch, nsp=nsp)[0]
    return jax.jit(jax.value_and_grad(f))(params)


def test_remat_computes_the_same_loss_and_gradients(weights, batch, CFG):
    model, params = weights
    model.train()
    loss, grads = torch_loss_and_grads(model, batch)
    model.gradient_checkpointing_enable()
    try:
        loss_r, grads_r = torch_loss_and_grads(model, batch)
    finally:
        model.bert.encoder.gradient_checkpointing = False
    assert loss_r == loss and grads_r.keys() == grads.keys()
    for n in grads:
        assert torch.equal(grads[n], grads_r[n]), n

    (jl, jg) = jax_loss_and_grads(jm.BertForPreTraining(CFG), params, batch)
    (rl, rg) = jax_loss_and_grads(jm.BertForPreTraining(CFG, remat=True), params, batch)
    assert abs(float(rl) - float(jl)) <= T.LOSS_REL * abs(float(jl))
    for a, b in zip(jax.tree_util.tree_leaves(jg), jax.tree_util.tree_leaves(rg)):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7)
    # the twins agree on it too (the usual loss bar)
    assert abs(float(rl) - loss) <= T.LOSS_REL * abs(loss)


def test_pad_vocab_keeps_the_loss_gradients_and_weights(weights, batch, CFG):
    assert CFG.vocab_size % 64, "the test needs a vocabulary that is not a multiple of 64"
    model, params = weights
    model.train()
    loss, grads = torch_loss_and_grads(model, batch)
    padded = tm.BertForPreTraining(CFG, pad_vocab_to=64)
    padded.load_state_dict(model.state_dict())
    padded.train()
    loss_p, grads_p = torch_loss_and_grads(padded, batch)
    # the weights keep the true vocabulary (nothing to strip on export, nothing to pad on load)
    assert {k: v.shape for k, v in padded.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    assert abs(loss_p - loss) <= 1e-6 * abs(loss) and grads_p.keys() == grads.keys()
    for n in grads:
        assert torch.allclose(grads[n], grads_p[n], rtol=1e-5, atol=1e-7), n

    jl, jg = jax_loss_and_grads(jm.BertForPreTraining(CFG), params, batch)
    pl, pg = jax_loss_and_grads(jm.BertForPreTraining(CFG, pad_vocab_to=64), params, batch)
    assert abs(float(pl) - float(jl)) <= 1e-6 * abs(float(jl))
    for a, b in zip(jax.tree_util.tree_leaves(jg), jax.tree_util.tree_leaves(pg)):
        assert a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-7)
    # `init` of the padded module makes the same (unpadded) parameter shapes
    shapes = jax.eval_shape(lambda: jm.BertForPreTraining(CFG, pad_vocab_to=64).init(
        jax.random.PRNGKey(0), batch["input_ids"], batch["token_type_ids"],
        batch["attention_mask"], batch["masked_positions"]))["params"]
    assert jax.tree_util.tree_map(lambda x: x.shape, shapes) == \
        jax.tree_util.tree_map(lambda x: x.shape, params)


def test_pad_vocab_default_is_64_on_accelerators_only():
    assert resolve_pad_vocab(None, accelerator=True) == 64
    assert resolve_pad_vocab(None, accelerator=False) == 1
    assert resolve_pad_vocab(8, accelerator=False) == 8
    with pytest.raises(Exception, match="--pad-vocab 0"):
        resolve_pad_vocab(0, accelerator=True)


def test_mlm_only_forward_never_runs_the_pooler(weights, batch, CFG):
    model, params = weights
    model.eval()
    ran = []
    hook = model.bert.pooler.register_forward_hook(lambda *_: ran.append(1))
    try:
        t = {k: torch.as_tensor(v) for k, v in batch.items()}
        mlm, nsp = model(t["input_ids"], t["token_type_ids"], t["attention_mask"],
                         t["masked_positions"], nsp=False)
        assert nsp is None and ran == []
        mlm_full, nsp_full = model(t["input_ids"], t["token_type_ids"], t["attention_mask"],
                                   t["masked_positions"])
        assert nsp_full.shape == (4, 2) and ran == [1] and torch.equal(mlm, mlm_full)
    finally:
        hook.remove()
    # jax: the same None, and the pooler's parameters get exactly zero gradient
    _, g = jax_loss_and_grads(jm.BertForPreTraining(CFG), params, batch, nsp=False)
    for leaf in jax.tree_util.tree_leaves(g["bert"]["pooler"]) + \
            jax.tree_util.tree_leaves(g["cls"]["seq_relationship"]):
        assert not np.any(np.asarray(leaf))
    mlm_j, nsp_j = jm.BertForPreTraining(CFG).apply(
        {"params": params}, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
        batch["masked_positions"], nsp=False)
    assert nsp_j is None
    assert np.max(np.abs(np.asarray(mlm_j) - mlm.detach().numpy())) <= T.FORWARD_MAX_ABS


def test_bf16_compute_stays_close_to_fp32_in_both_twins(weights, batch, CFG):
    """bf16 autocast (torch, on CPU) and dtype=bfloat16 (jax) change the loss only by bf16
    rounding: 8 mantissa bits, so ~1e-2 relative on a loss of ~6 (a wrong cast, e.g. a bf16
    softmax or loss, moves it far more)."""
    model, params = weights
    model.eval()
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    with torch.no_grad():
        ref, _ = tm.pretraining_loss(*model(t["input_ids"], t["token_type_ids"],
                                            t["attention_mask"], t["masked_positions"]), t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mlm, nsp = model(t["input_ids"], t["token_type_ids"], t["attention_mask"],
                             t["masked_positions"])
        assert mlm.dtype == torch.bfloat16
        low, _ = tm.pretraining_loss(mlm, nsp, t)
    assert low.dtype == torch.float32
    assert abs(float(low) - float(ref)) <= 2e-2 * float(ref), (float(low), float(ref))

    def jloss(dtype):
        @jax.jit
        def f(p):
            mlm, nsp = jm.BertForPreTraining(CFG, dtype=dtype).apply(
                {"params": p}, batch["input_ids"], batch["token_type_ids"],
                batch["attention_mask"], batch["masked_positions"])
            return mlm.dtype == jnp.bfloat16, jm.pretraining_loss(mlm, nsp, batch)[0]
        is_bf16, loss = f(params)
        return (jnp.bfloat16 if is_bf16 else jnp.float32), float(loss)
    (d32, l32), (d16, l16) = jloss(jnp.float32), jloss(jnp.bfloat16)
    assert d32 == jnp.float32 and d16 == jnp.bfloat16
    assert abs(l16 - l32) <= 2e-2 * l32 and abs(l16 - float(low)) <= 2e-2 * l32


def test_dtype_and_attention_dropout_flags():
    p = train_parser("x", "y")
    assert p.parse_args([]).dtype == "auto"
    assert p.parse_args(["--dtype", "bfloat16"]).dtype == "bf16"   # jax's old spelling works
    with pytest.raises(SystemExit):
        p.parse_args(["--dtype", "fp16"])
    assert resolve_dtype("auto", accelerator=True) == "bf16"
    assert resolve_dtype("auto", accelerator=False) == "fp32"
    assert resolve_dtype("bf16", accelerator=False) == "bf16"
    assert compute_dtype("auto") == jnp.float32 and compute_dtype("bf16") == jnp.bfloat16

    from bertcore.train.configs import model_config_from_args
    tok = argparse.Namespace(vocab_size=300, pad_id=0, cls_id=2, sep_id=3)
    args = argparse.Namespace(config=None, preset="tiny", layer_norm_position=None,
                              attention_dropout=0.0)
    assert model_config_from_args(args, tok).attention_probs_dropout_prob == 0.0
    args.attention_dropout = None
    assert model_config_from_args(args, tok).attention_probs_dropout_prob == 0.1
    args.arch, args.attention_dropout = "modernbert", 0.2     # ModernBERT's own field name
    assert model_config_from_args(args, tok).attention_dropout == 0.2
