"""jaxbert.modernbert against transformers' torch ModernBertForMaskedLM (eager attention) on the
same weights: logits, encoder output and the MLM loss's gradients, with sequences longer than
the local attention window and padded rows; plus its initialisation, Hugging Face loading,
remat and bf16.

Bars from parity/thresholds.py (docs/design.md, "Quality bars"; fp32, CPU, dropout off). Few
jitted programs (one per config), as each is a compilation on a 2-core CPU.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bertcore.model.config import ModernBertConfig  # noqa: E402
from bertcore.infra.errors import UserError  # noqa: E402
from bertcore.model.hf import flatten, flax_to_hf, hf_to_flax, param_table  # noqa: E402
from jaxbert.model import pretraining_loss  # noqa: E402
from jaxbert.modernbert import (ModernBertForMaskedLM, ModernBertModel,  # noqa: E402
                                apply_rotary, from_pretrained, init_params)
from parity import thresholds as T  # noqa: E402

ATOL = T.FORWARD_MAX_ABS
# Two code paths of one model (sparse vs dense head, remat): float32 rounding only, of logits
# up to ~5 in size here (the perturbed weights below).
SAME_MODEL_TOL = 5e-6
B, L, P = 3, 40, 6
LENGTHS = (40, 29, 13)     # real tokens per row; the rest is padding at the end
# Layers 0 and 2 global, layer 1 local with a window of +-4 tokens: far shorter than L.
CFG = ModernBertConfig.from_preset(
    "tiny", vocab_size=120, pad_token_id=0, cls_token_id=1, sep_token_id=2, bos_token_id=1,
    eos_token_id=2, num_hidden_layers=3, global_attn_every_n_layers=2, local_attention=8)
CFG_BIAS = CFG.replace(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True)
CFG_WIDE = CFG.replace(local_attention=2 * L)   # the window covers every sequence: no effect


@pytest.fixture(scope="module", autouse=True)
def _highest_matmul_precision():
    # As tests/test_jax_model.py: fp32 matmuls in full fp32 on any backend.
    with jax.default_matmul_precision("highest"):
        yield


def hf_config(cfg: ModernBertConfig):
    return transformers.ModernBertConfig(**cfg.to_dict(), attn_implementation="eager")


def perturbed(model, seed=0):
    """transformers' init makes attention near uniform (std 0.02) and biases 0, norms 1, where
    mistakes in RoPE, the window or a bias would hardly show: draw every parameter at a scale
    where they all matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.ndim == 1:            # norm gains
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return model.eval()


def hf_state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, CFG.vocab_size, size=(B, L)).astype(np.int32)
    mask = np.zeros((B, L), np.int32)
    pos = np.zeros((B, P), np.int32)
    for r, n in enumerate(LENGTHS):
        mask[r, :n] = 1
        ids[r, n:] = CFG.pad_token_id
        pos[r] = np.sort(rng.choice(np.arange(1, n), size=P, replace=False))
    weights = np.ones((B, P), np.float32)
    weights[2, 4:] = 0.0     # unused slots: position 0, weight 0
    pos[2, 4:] = 0
    masked_ids = np.take_along_axis(ids, pos, axis=1)
    masked_ids[weights == 0] = 0
    return dict(input_ids=ids, attention_mask=mask, masked_positions=pos, masked_ids=masked_ids,
                masked_weights=weights,
                # accepted and ignored: transformers' model has no token types to compare with
                token_type_ids=rng.integers(0, 2, size=(B, L)).astype(np.int32))


# One jitted program per (config, remat): every output the tests read, gradients included.
@functools.partial(jax.jit, static_argnames=("cfg", "remat"))
def outputs(params, batch, cfg=CFG, remat=False):
    args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    model = ModernBertForMaskedLM(cfg, remat=remat)
    seq = ModernBertModel(cfg).apply({"params": params["model"]}, batch["input_ids"],
                                     batch["attention_mask"])
    dense, nsp = model.apply({"params": params}, *args)
    padded, _ = ModernBertForMaskedLM(cfg, pad_vocab_to=64).apply({"params": params}, *args)

    def loss_fn(p):
        sparse, nsp = model.apply({"params": p}, *args, batch["masked_positions"])
        return pretraining_loss(sparse, nsp, batch, nsp=False)[0], sparse

    (loss, sparse), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    assert nsp is None
    return dict(seq=seq, dense=dense, padded=padded, sparse=sparse, loss=loss, grads=grads)


def torch_reference(hf, batch):
    """transformers' encoder output, dense logits, and the loss and gradients computed by hand
    from its logits at the masked positions: sum(w * ce) / sum(w), as pretraining_loss."""
    t = lambda k: torch.from_numpy(batch[k].astype(np.int64))
    hf.zero_grad()
    with torch.no_grad():
        seq = hf.model(input_ids=t("input_ids"), attention_mask=t("attention_mask"))
    logits = hf(input_ids=t("input_ids"), attention_mask=t("attention_mask")).logits
    picked = torch.take_along_dim(logits, t("masked_positions")[:, :, None], dim=1)
    ce = torch.nn.functional.cross_entropy(picked.flatten(0, 1), t("masked_ids").flatten(),
                                           reduction="none")
    w = torch.from_numpy(batch["masked_weights"]).flatten()
    loss = (w * ce).sum() / w.sum()
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in hf.named_parameters()}
    return dict(seq=seq.last_hidden_state.numpy(), dense=logits.detach().numpy(),
                loss=loss.item(), grads=grads)


def maxdiff(a, b, where=None):
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(np.max(d[where] if where is not None else d))


REAL = make_batch()["attention_mask"] > 0    # compare per-token outputs at real tokens only


@functools.cache
def build_case(cfg):
    """(config, transformers model, our params, batch, our outputs, transformers' outputs)."""
    torch.manual_seed(0)
    hf = perturbed(transformers.ModernBertForMaskedLM(hf_config(cfg)))
    params = jax.tree.map(jnp.asarray, hf_to_flax(hf_state(hf), cfg))
    batch = make_batch()
    return cfg, hf, params, batch, outputs(params, batch, cfg), torch_reference(hf, batch)


@pytest.fixture(params=["plain", "biases"])
def case(request):
    """build_case of CFG, and of CFG_BIAS (every bias present, drawn nonzero)."""
    return build_case(CFG if request.param == "plain" else CFG_BIAS)


@pytest.fixture
def plain():
    return build_case(CFG)


def test_forward_matches_hf(case):
    cfg, hf, params, batch, out, ref = case
    assert hf.config.layer_types[1] == "sliding_attention" and L > cfg.local_attention
    assert maxdiff(out["seq"], ref["seq"], REAL) <= ATOL
    assert maxdiff(out["dense"], ref["dense"], REAL) <= ATOL
    assert abs(float(out["loss"]) - ref["loss"]) <= T.LOSS_REL * abs(ref["loss"])
    # the same model by other code paths: sparse head, vocabulary padded for the matmul
    gathered = np.take_along_axis(np.asarray(out["dense"]), batch["masked_positions"][:, :, None],
                                  axis=1)
    assert out["sparse"].shape == (B, P, cfg.vocab_size)
    assert maxdiff(out["sparse"], gathered) <= SAME_MODEL_TOL
    assert maxdiff(out["padded"], out["dense"]) <= SAME_MODEL_TOL


def test_gradients_match_hf(case):
    cfg, hf, params, batch, out, ref = case
    ours = flax_to_hf(out["grads"], cfg)
    assert set(ours) == set(ref["grads"]) == {p.hf_name for p in param_table(cfg)}
    scale = max(float(np.abs(g).max()) for g in ref["grads"].values())
    total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64)))
                          for g in ref["grads"].values()))
    for name, g in ref["grads"].items():
        assert maxdiff(ours[name], g) <= 1e-5 * scale, name
        norm = float(np.linalg.norm(g))
        if norm > T.GRAD_ZERO_FLOOR * total:
            assert float(np.linalg.norm(ours[name] - g)) <= T.GRAD_REL * norm, name
        else:   # zero in exact arithmetic: both only rounding noise
            assert float(np.linalg.norm(ours[name])) <= T.GRAD_ZERO_FLOOR * total, name


@pytest.mark.slow
def test_the_window_matters(plain):
    cfg, hf, params, batch, out, ref = plain
    wide = outputs(params, batch, CFG_WIDE)
    assert maxdiff(wide["dense"], out["dense"], REAL) > 1e-2
    # ... and the window is the only difference: transformers agrees on the wide one too (the
    # same weights: `perturbed` draws every parameter from its seed)
    hf_wide = perturbed(transformers.ModernBertForMaskedLM(hf_config(CFG_WIDE)))
    assert maxdiff(wide["dense"], torch_reference(hf_wide, batch)["dense"], REAL) <= ATOL


@pytest.mark.slow
def test_remat_same_logits_and_gradients(plain):
    cfg, hf, params, batch, out, ref = plain
    rem = outputs(params, batch, CFG, remat=True)
    assert maxdiff(rem["dense"], out["dense"]) <= SAME_MODEL_TOL
    assert float(rem["loss"]) == pytest.approx(float(out["loss"]), rel=SAME_MODEL_TOL)
    for path, g in flatten(out["grads"]).items():
        assert maxdiff(flatten(rem["grads"])[path], g) <= 1e-5 * float(np.abs(g).max()), path
    def jaxpr(remat):
        model = ModernBertForMaskedLM(CFG, remat=remat)
        return str(jax.make_jaxpr(jax.grad(lambda p: model.apply(
            {"params": p}, batch["input_ids"], None, batch["attention_mask"])[0].sum()))(params))
    assert "remat" in jaxpr(True) and "remat" not in jaxpr(False)


def test_apply_rotary_matches_transformers():
    from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

    from bertcore.model.attention import rope_cos_sin

    q, k = np.random.default_rng(0).standard_normal((2, 2, 12, 3, 8), np.float32)  # (B, L, N, D)
    cos, sin = map(np.array, rope_cos_sin(10000.0, 8, 12))   # copies: torch wants writable
    tq, tk = apply_rotary_pos_emb(*(torch.from_numpy(x).transpose(1, 2) for x in (q, k)),
                                  torch.from_numpy(cos)[None], torch.from_numpy(sin)[None])
    assert maxdiff(apply_rotary(q, cos, sin), tq.transpose(1, 2)) <= 1e-6
    assert maxdiff(apply_rotary(k, cos, sin), tk.transpose(1, 2)) <= 1e-6
    half = apply_rotary(jnp.asarray(q, jnp.bfloat16), cos, sin)
    assert half.dtype == jnp.bfloat16 and maxdiff(half, tq.transpose(1, 2)) <= 5e-2


def test_init_tree_and_statistics():
    def tree(cfg):
        # shapes only (no compilation), as zero arrays: flax_to_hf transposes what it converts
        shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
        zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
        return {k: v.shape for k, v in flax_to_hf(zeros, cfg).items()}

    for cfg in (CFG, CFG_BIAS, CFG.replace(decoder_bias=False)):
        assert tree(cfg) == {p.hf_name: p.hf_shape for p in param_table(cfg)}
    assert "decoder.bias" not in tree(CFG.replace(decoder_bias=False))

    # Against transformers' own fresh model (its _init_weights), and against the truncated
    # normal's closed-form std: N(0, std) cut at +-c std has std * sqrt(1 - 2c phi(c) / Z).
    cfg = CFG_BIAS
    c = cfg.initializer_cutoff_factor
    phi, Z = math.exp(-c * c / 2) / math.sqrt(2 * math.pi), math.erf(c / math.sqrt(2))
    shrink = math.sqrt(1 - 2 * c * phi / Z)
    torch.manual_seed(0)
    fresh = hf_state(transformers.ModernBertForMaskedLM(hf_config(cfg)))
    ours = flax_to_hf(init_params(cfg, jax.random.PRNGKey(0)), cfg)
    out_std = cfg.initializer_range / math.sqrt(2 * cfg.num_hidden_layers)
    for name, a in ours.items():
        assert a.dtype == np.float32, name
        if name.endswith("bias"):
            assert not a.any() and not fresh[name].any(), name
        elif "norm" in name:
            assert (a == 1).all() and (fresh[name] == 1).all(), name
        else:
            std = out_std if name.endswith("Wo.weight") or name == "head.dense.weight" \
                else cfg.initializer_range
            assert np.abs(a).max() <= c * std, name
            assert abs(a.std() - std * shrink) < 0.05 * std * shrink, name
            assert abs(a.std() - fresh[name].std()) < 0.05 * std * shrink, name
            assert abs(a.mean()) < 0.05 * std, name
    # transformers' trunc_normal_ redraws the whole table, [PAD] row included: so do we
    assert fresh["model.embeddings.tok_embeddings.weight"][cfg.pad_token_id].any()
    assert ours["model.embeddings.tok_embeddings.weight"][cfg.pad_token_id].any()


def test_from_pretrained_hf_directory(tmp_path, plain):
    cfg, hf, params, batch, out, ref = plain
    hf.save_pretrained(tmp_path / "mlm")
    model, loaded, info = from_pretrained(tmp_path / "mlm", output_loading_info=True)
    assert info["missing_keys"] == [] and model.config == CFG
    assert isinstance(model, ModernBertForMaskedLM)
    for k, a in flatten(params).items():
        assert np.array_equal(flatten(loaded)[k], a), k
    assert maxdiff(outputs(loaded, batch, model.config)["dense"], ref["dense"], REAL) <= ATOL


def test_save_pretrained_loads_in_hf(tmp_path, plain):
    cfg, hf, params, batch, out, ref = plain
    model = ModernBertForMaskedLM(CFG)
    model.save_pretrained(tmp_path / "m", params)
    back, info = transformers.ModernBertForMaskedLM.from_pretrained(
        tmp_path / "m", output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    for k, v in hf.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    model.save_pretrained(tmp_path / "m", params)      # saving over an existing directory works too
    _, again = from_pretrained(tmp_path / "m")
    for k, a in flatten(params).items():
        assert np.array_equal(flatten(again)[k], a), k


def test_encoder_only_save_loads_with_heads_missing(tmp_path, plain, caplog):
    cfg, hf, params, batch, out, ref = plain
    torch.manual_seed(1)
    bare = perturbed(transformers.ModernBertModel(hf_config(CFG)), seed=1)
    bare.save_pretrained(tmp_path / "bare")
    model, loaded, info = from_pretrained(tmp_path / "bare", output_loading_info=True)
    assert info["missing_keys"] == ["decoder.bias", "head.dense.weight", "head.norm.weight"]
    assert "not in the checkpoint" in caplog.text
    with torch.no_grad():
        seq = bare(input_ids=torch.from_numpy(batch["input_ids"].astype(np.int64)),
                   attention_mask=torch.from_numpy(batch["attention_mask"].astype(np.int64)))
    got = outputs(loaded, batch, model.config)
    assert maxdiff(got["seq"], seq.last_hidden_state, REAL) <= ATOL
    assert np.isfinite(got["sparse"]).all()
    fresh = flatten(init_params(CFG, jax.random.PRNGKey(0)))
    assert np.array_equal(flatten(loaded)["head/dense/kernel"], fresh["head/dense/kernel"])


def test_from_pretrained_refuses_bad_weights(tmp_path, plain):
    cfg, hf, params, batch, out, ref = plain
    hf.save_pretrained(tmp_path / "bare")
    with pytest.raises(UserError, match="not a directory.*ModernBERT"):
        from_pretrained(tmp_path / "nowhere")
    (tmp_path / "bare" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="has no model.safetensors"):
        from_pretrained(tmp_path / "bare")


def test_no_next_sentence_head():
    batch = make_batch()
    with pytest.raises(ValueError, match="no next-sentence head; train with --no-nsp"):
        ModernBertForMaskedLM(CFG).apply({"params": {}}, batch["input_ids"], nsp=True)


@pytest.mark.slow
def test_dropout_and_bf16_compute(plain):
    # bf16 compute with fp32 params, dropout on: the explicit attention path in bf16 too.
    cfg, hf, params, batch, out, ref = plain
    drop = CFG.replace(attention_dropout=0.1, embedding_dropout=0.1, mlp_dropout=0.1)

    @functools.partial(jax.jit, static_argnames="deterministic")
    def run(key, deterministic=False):
        return ModernBertForMaskedLM(drop, dtype=jnp.bfloat16).apply(
            {"params": params}, batch["input_ids"], batch["token_type_ids"],
            batch["attention_mask"], batch["masked_positions"], deterministic=deterministic,
            rngs={"dropout": key})[0]

    a, a2, b = run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(2))
    assert a.dtype == jnp.bfloat16 and np.isfinite(np.asarray(a, np.float32)).all()
    assert np.array_equal(a, a2) and maxdiff(a, b) > 1e-2
    # dropout off, bf16 compute: the fp32 logits to bf16's precision
    off = run(jax.random.PRNGKey(1), deterministic=True)
    assert maxdiff(off, out["sparse"]) <= 0.05 * float(np.abs(out["sparse"]).max())
