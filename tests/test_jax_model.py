"""jaxbert.model against Hugging Face's torch BertForPreTraining, plus the name table
(bertcore.model.hf).

Bars from parity/thresholds.py (docs/design.md, "Quality bars"; fp32, CPU, dropout off): outputs
max |diff| <= FORWARD_MAX_ABS, loss <= LOSS_REL relative.
"""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bertcore.model.config import BertConfig  # noqa: E402
from bertcore.data.batches import check_batch  # noqa: E402
from bertcore.infra.errors import UserError  # noqa: E402
from bertcore.model.hf import flatten, flax_to_hf, hf_to_flax  # noqa: E402
from helpers import build_shards, padded_batch  # noqa: E402
from jaxbert.classifier import BertForSequenceClassification, classification_loss  # noqa: E402
from jaxbert.model import (BertForPreTraining, BertModel, _Dense, add_bias,  # noqa: E402
                           attention_probs, from_pretrained, init_params, pretraining_loss)
from parity import thresholds as T  # noqa: E402

ATOL, LOSS_RTOL = T.FORWARD_MAX_ABS, T.LOSS_REL
# Two code paths of the same model (sparse vs dense head, padding, split denominators): no
# parity bar, just float32 rounding.
SAME_MODEL_TOL = 1e-6
CFG = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=64)
B, L, P = 3, 24, 5


@pytest.fixture(scope="module", autouse=True)
def _highest_matmul_precision():
    """XLA on CPU already multiplies fp32 in full fp32; on GPU/TPU the default would be TF32/bf16
    passes. Pin it so the FORWARD_MAX_ABS bar means the same on every backend this file may run
    on: for this module only, so other test modules in the same worker keep jax's default."""
    with jax.default_matmul_precision("highest"):
        yield


def hf_config(cfg: BertConfig, **kw):
    d = {k: v for k, v in cfg.to_dict().items() if k != "layer_norm_position"}
    d.update(kw)
    return transformers.BertConfig(**d)


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    return transformers.BertForPreTraining(hf_config(CFG)).eval()


@pytest.fixture(scope="module")
def hf_state(hf_model):
    return {k: v.detach().numpy().copy() for k, v in hf_model.state_dict().items()}


@pytest.fixture(scope="module")
def params(hf_state):
    return jax.tree.map(jnp.asarray, hf_to_flax(hf_state, CFG))


def make_batch(seed=0, b=B, length=L, p=P, pad_from=(24, 17, 9)):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, CFG.vocab_size, size=(b, length)).astype(np.int32)
    mask = np.zeros((b, length), np.int32)
    types = np.zeros((b, length), np.int32)
    pos = np.zeros((b, p), np.int32)
    for r, n in enumerate(pad_from):
        mask[r, :n] = 1
        types[r, n // 2:n] = 1
        ids[r, n:] = CFG.pad_token_id
        pos[r] = np.sort(rng.choice(np.arange(1, n), size=p, replace=False))
    weights = np.ones((b, p), np.float32)
    weights[2, 3:] = 0.0  # unused slots: position 0, weight 0
    pos[2, 3:] = 0
    masked_ids = np.take_along_axis(ids, pos, axis=1)
    masked_ids[weights == 0] = 0
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask, masked_positions=pos,
                masked_ids=masked_ids, masked_weights=weights,
                next_sentence_label=np.array([0, 1, 1], np.int32)[:b])


@pytest.fixture(scope="module")
def bertcore_batch(tmp_path_factory):
    """A real batch from bertcore's iterator, of make_batch's shapes (no second compilation)."""
    shards, tok = build_shards(tmp_path_factory.mktemp("jax-model"), n_docs=40)
    assert tok.vocab_size <= CFG.vocab_size
    # a padded row with unused prediction slots, and both NSP labels
    batch = padded_batch(shards, tok, B, L, P)
    assert (batch["attention_mask"] == 0).any() and (batch["masked_weights"] == 0).any()
    return batch


# One jitted function gives every output the tests look at: on a CPU eager mode compiles each
# op on its own, and each distinct jitted program is one more compilation.
@functools.partial(jax.jit, static_argnames=("cfg",))
def outputs(params, batch, cfg=CFG):
    model, args = BertForPreTraining(cfg), (batch["input_ids"], batch["token_type_ids"],
                                            batch["attention_mask"])
    seq, pooled = BertModel(cfg).apply({"params": params["bert"]}, *args)
    dense, nsp = model.apply({"params": params}, *args)
    sparse, _ = model.apply({"params": params}, *args, batch["masked_positions"])
    loss, metrics = pretraining_loss(sparse, nsp, batch)
    return dict(seq=seq, pooled=pooled, dense=dense, sparse=sparse, nsp=nsp, loss=loss,
                metrics=metrics, mlm_only=pretraining_loss(sparse, nsp, batch, nsp=False)[1],
                dense_loss=pretraining_loss(dense, nsp, batch)[0])


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("source", ["synthetic", "bertcore"])
def test_forward_and_loss_match_hf(hf_model, params, source, request):
    batch = make_batch() if source == "synthetic" else request.getfixturevalue("bertcore_batch")
    check_batch(batch, B, L, P, nsp=True)   # the batch contract jaxbert.train consumes
    labels = np.full(batch["input_ids"].shape, -100, np.int64)
    for r in range(B):
        for j in range(P):
            if batch["masked_weights"][r, j] > 0:
                labels[r, batch["masked_positions"][r, j]] = batch["masked_ids"][r, j]
    t = lambda k: torch.from_numpy(batch[k].astype(np.int64))
    with torch.no_grad():
        ref = hf_model(input_ids=t("input_ids"), token_type_ids=t("token_type_ids"),
                       attention_mask=t("attention_mask"), labels=torch.from_numpy(labels),
                       next_sentence_label=t("next_sentence_label"), output_hidden_states=True)
        pooled = hf_model.bert.pooler(ref.hidden_states[-1])
    out = outputs(params, batch)
    assert maxdiff(out["seq"], ref.hidden_states[-1]) <= ATOL
    assert maxdiff(out["pooled"], pooled) <= ATOL
    assert maxdiff(out["dense"], ref.prediction_logits) <= ATOL
    assert maxdiff(out["nsp"], ref.seq_relationship_logits) <= ATOL
    assert abs(float(out["loss"]) - ref.loss.item()) <= LOSS_RTOL * abs(ref.loss.item())
    assert set(out["metrics"]) == {"loss", "mlm_loss", "nsp_loss", "mlm_accuracy",
                                   "nsp_accuracy"}
    assert set(out["mlm_only"]) == {"loss", "mlm_loss", "mlm_accuracy"}
    assert float(out["mlm_only"]["loss"]) == float(out["metrics"]["mlm_loss"])
    assert float(out["dense_loss"]) == pytest.approx(float(out["loss"]), rel=SAME_MODEL_TOL)


def test_sparse_logits_equal_gathered_dense(params):
    batch = make_batch()
    out = outputs(params, batch)
    gathered = np.take_along_axis(np.asarray(out["dense"]),
                                  batch["masked_positions"][:, :, None], 1)
    assert maxdiff(out["sparse"], gathered) <= SAME_MODEL_TOL


def test_loss_denominators(params):
    """Two halves with global denominators sum to the whole batch's loss (data parallel)."""
    batch = make_batch()
    out = outputs(params, batch)
    den = batch["masked_weights"].sum()
    loss_fn = jax.jit(pretraining_loss)
    halves = [loss_fn(out["sparse"][s], out["nsp"][s], {k: v[s] for k, v in batch.items()},
                      mlm_denominator=den, nsp_denominator=B)[0]
              for s in (slice(0, 1), slice(1, 3))]
    assert float(sum(halves)) == pytest.approx(float(out["loss"]), rel=SAME_MODEL_TOL)


def test_nsp_loss_refuses_a_batch_without_its_label():
    # The same error in both twins (tests/test_torch_model.py, the same test).
    b = {k: v for k, v in make_batch().items() if k != "next_sentence_label"}
    mlm, nsp = jnp.zeros((B, P, CFG.vocab_size)), jnp.zeros((B, 2))
    with pytest.raises(ValueError, match=r"nsp=True\) needs batch\['next_sentence_label'\]"):
        pretraining_loss(mlm, nsp, b)
    assert set(pretraining_loss(mlm, nsp, b, nsp=False)[1]) == {"loss", "mlm_loss",
                                                                "mlm_accuracy"}


def test_padding_invariance(params):
    batch, extra = make_batch(), 8
    longer = {k: np.pad(v, ((0, 0), (0, extra))) if k in ("input_ids", "token_type_ids",
                                                         "attention_mask") else v
              for k, v in batch.items()}  # pad id 0, mask 0
    out, out2 = outputs(params, batch), outputs(params, longer)
    real = batch["attention_mask"][:, :, None] > 0
    assert maxdiff(np.where(real, out["seq"], 0),
                   np.where(real, out2["seq"][:, :L], 0)) <= SAME_MODEL_TOL
    for k in ("pooled", "sparse", "nsp"):
        assert maxdiff(out[k], out2[k]) <= SAME_MODEL_TOL, k


def test_explicit_attention_equals_fused():
    q, k, v = np.random.default_rng(0).standard_normal((3, 2, 10, 4, 8), np.float32)
    mask = (np.arange(10)[None, :] < np.array([10, 6])[:, None])[:, None, None, :]
    fused = jax.jit(jax.nn.dot_product_attention)(q, k, v, mask=mask)
    explicit = jax.jit(lambda q, k, v, m: jnp.einsum("bnts,bsnd->btnd", attention_probs(q, k, m),
                                                     v))(q, k, v, mask)
    assert maxdiff(fused, explicit) <= 1e-6


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_add_bias_has_the_gradient_of_plain_addition(dtype):
    # The MLM head's bias add with its hand-written (matrix-vector) bias gradient: value and
    # both gradients as autodiff's of x + bias, for sparse (B, P, V) and 2-D inputs.
    rng = np.random.default_rng(0)
    for shape in [(3, 5, 7), (4, 7)]:
        x = jnp.asarray(rng.standard_normal(shape), dtype)
        b = jnp.asarray(rng.standard_normal(shape[-1]), dtype)
        w = jnp.asarray(rng.standard_normal(shape), dtype)   # a non-uniform upstream gradient
        ours = jax.value_and_grad(lambda x, b: (add_bias(x, b) * w).sum(), (0, 1))(x, b)
        plain = jax.value_and_grad(lambda x, b: ((x + b) * w).sum(), (0, 1))(x, b)
        tol = 1e-6 if dtype == jnp.float32 else 3e-2
        assert ours[1][1].dtype == dtype and ours[1][1].shape == b.shape
        for a, c in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(plain)):
            np.testing.assert_allclose(np.float32(a), np.float32(c), rtol=tol, atol=tol)


def _copies(fn, *args) -> list[str]:
    """The transpose/copy instructions in fn's gradient as XLA's CPU backend compiles it."""
    cpu = jax.devices("cpu")[0]
    args = jax.device_put(args, cpu)
    text = jax.jit(jax.grad(fn, argnums=tuple(range(len(args))))).lower(*args).compile().as_text()
    return re.findall(r"= (\S+) (?:transpose|copy)\(", text)


def test_dense_rows_same_numbers_no_transposed_copies():
    # _Dense is nn.Dense over [B*L, H] rows: the same parameters and outputs, and a weight
    # gradient that is one plain dot. nn.Dense on the 3-D input has XLA CPU copy both operands
    # transposed first (4 copies here: the reason _Dense exists, jaxbert/model.py `_rows`).
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 16, 32)), jnp.float32)
    ours, flax = _Dense(64), nn.Dense(64)
    params = flax.init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(0), x)) == \
        jax.tree_util.tree_structure(params)
    np.testing.assert_array_equal(ours.apply(params, x), flax.apply(params, x))

    def loss(module):
        return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
    assert _copies(loss(ours), params, x) == []
    # Today's XLA; should a later one stop copying, this control fails and the class can go.
    assert len(_copies(loss(flax), params, x)) >= 2


def test_mlm_head_gradient_has_no_transposed_copy_of_the_logits(params):
    # The tied decoder's [B*P, V] logit gradient feeds the embedding gradient without a
    # transposed copy (V = 500 here; the copy grows with V).
    # Control: the same product on the 3-D [B, P, H] input makes XLA CPU copy it.
    h = jnp.ones((B, P, CFG.hidden_size))
    table = params["bert"]["embeddings"]["word_embeddings"]["embedding"]
    plain = _copies(lambda E, h: jnp.sum(jnp.sin(h @ E.T)), table, h)
    assert [s for s in plain if str(CFG.vocab_size) in s]
    batch, model = make_batch(), BertForPreTraining(CFG)
    args = [batch[k] for k in ("input_ids", "token_type_ids", "attention_mask", "masked_positions")]

    def loss(p):
        logits, _ = model.apply({"params": p}, *args)
        return jnp.sum(jnp.sin(logits))
    big = [shape for shape in _copies(loss, params) if str(CFG.vocab_size) in shape]
    assert big == []


def test_init_statistics():
    cfg = CFG  # the same config as from_pretrained's below: init_params compiles once
    flat = flatten(init_params(cfg, jax.random.PRNGKey(0)))
    for path, a in flat.items():
        a = np.asarray(a)
        assert a.dtype == np.float32, path
        leaf = path.rsplit("/", 1)[1]
        if leaf in ("kernel", "embedding"):
            if path.endswith("word_embeddings/embedding"):
                assert not a[cfg.pad_token_id].any()
                a = np.delete(a, cfg.pad_token_id, axis=0)
            if a.size >= 1000:
                assert abs(a.std() - cfg.initializer_range) < 0.1 * cfg.initializer_range, path
                assert abs(a.mean()) < 0.1 * cfg.initializer_range, path
        elif leaf == "scale":
            assert (a == 1).all(), path
        else:
            assert leaf == "bias" and not a.any(), path


def test_pre_layer_norm_runs_and_differs(params):
    pre = CFG.replace(layer_norm_position="pre")
    # HF's init (std 0.02) makes every sublayer's output tiny next to the residual stream, where
    # both variants reduce to LayerNorm(embeddings): scale the weights up so they matter.
    post_p = jax.tree.map(lambda x: x * 10 if x.ndim == 2 else x, params)
    pre_p = jax.tree.map(lambda x: x, post_p)  # a copy of the dict structure
    pre_p["bert"]["encoder"]["LayerNorm"] = {"scale": jnp.ones(CFG.hidden_size),
                                             "bias": jnp.zeros(CFG.hidden_size)}
    batch = make_batch()
    out_pre, out_post = outputs(pre_p, batch, cfg=pre), outputs(post_p, batch)
    assert np.isfinite(out_pre["dense"]).all() and np.isfinite(out_pre["nsp"]).all()
    assert maxdiff(out_pre["dense"], out_post["dense"]) > 1e-2
    assert flatten(hf_to_flax(flax_to_hf(pre_p), pre)).keys() == flatten(pre_p).keys()
    with pytest.raises(UserError, match="bert.encoder.LayerNorm"):
        hf_to_flax(flax_to_hf(pre_p), CFG)  # the extra final LayerNorm is unknown to post-LN


def test_convert_round_trips_bit_exact(hf_state, params):
    back = flax_to_hf(hf_to_flax(hf_state, CFG), CFG, include_tied=True)
    assert set(back) == set(hf_state)
    for k, a in hf_state.items():
        assert back[k].dtype == a.dtype and back[k].tobytes() == a.tobytes(), k
    again = flatten(hf_to_flax(flax_to_hf(params), CFG))
    for k, a in flatten(params).items():
        assert again[k].tobytes() == np.asarray(a).tobytes(), k
    # BertModel-style names (no "bert." prefix) map to the same tree
    bare = {k[5:] if k.startswith("bert.") else k: v for k, v in hf_state.items()}
    assert flatten(hf_to_flax(bare, CFG)).keys() == flatten(params).keys()


def test_convert_rejects_unknown_missing_and_misshapen(hf_state):
    state = dict(hf_state, **{"bert.encoder.layer.7.attention.self.query.weight": np.zeros(1)})
    with pytest.raises(UserError, match="layer.7"):
        hf_to_flax(state, CFG)
    state = {k: v for k, v in hf_state.items() if "layer.1.output.dense" not in k}
    with pytest.raises(UserError, match=r"missing.*layer\.1\.output\.dense\.bias"):
        hf_to_flax(state, CFG)
    with pytest.raises(UserError, match="wrong shape"):
        hf_to_flax(hf_state, CFG.replace(intermediate_size=96))
    state = dict(hf_state)
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
    with pytest.raises(UserError, match="not tied"):
        hf_to_flax(state, CFG)
    with pytest.raises(UserError, match="unknown Flax"):
        flax_to_hf({"bert": {"mystery": {"kernel": np.zeros((2, 2))}}})


def test_save_pretrained_loads_in_hf(tmp_path, params):
    model = BertForPreTraining(CFG)
    model.save_pretrained(tmp_path / "m", params)
    back, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "m",
                                                                 output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    for k, a in flax_to_hf(params, CFG, include_tied=True).items():
        assert np.array_equal(back.state_dict()[k].numpy(), a), k
    model.save_pretrained(tmp_path / "m", params)      # saving over an existing directory works too
    _, again = from_pretrained(tmp_path / "m")
    for k, a in flatten(params).items():
        assert np.array_equal(flatten(again)[k], a), k


def test_from_pretrained_hf_directories(tmp_path, hf_model, params, caplog):
    hf_model.save_pretrained(tmp_path / "full")
    model, loaded, info = from_pretrained(tmp_path / "full", output_loading_info=True)
    assert info["missing_keys"] == [] and model.config == CFG
    for k, a in flatten(params).items():
        assert np.array_equal(flatten(loaded)[k], a), k

    torch.manual_seed(1)
    bare = transformers.BertModel(hf_config(CFG)).eval()
    bare.save_pretrained(tmp_path / "bare")
    model, loaded, info = from_pretrained(tmp_path / "bare", output_loading_info=True)
    missing = info["missing_keys"]
    assert missing and all(m.startswith("cls.") for m in missing)
    assert "cls.predictions.bias" in missing and "bert.pooler.dense.weight" not in missing
    assert "not in the checkpoint" in caplog.text
    batch = make_batch()
    with torch.no_grad():
        ref = bare(**{k: torch.from_numpy(batch[k].astype(np.int64))
                      for k in ("input_ids", "token_type_ids", "attention_mask")})
    out = outputs(loaded, batch, cfg=model.config)
    assert maxdiff(out["seq"], ref.last_hidden_state) <= ATOL
    assert maxdiff(out["pooled"], ref.pooler_output) <= ATOL
    assert out["sparse"].shape == (B, P, CFG.vocab_size) and np.isfinite(out["sparse"]).all()


def test_from_pretrained_refuses_bad_weights(tmp_path, hf_model):
    hf_model.save_pretrained(tmp_path / "full")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json"):
        from_pretrained(tmp_path / "empty")
    (tmp_path / "full" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="model.safetensors is not a readable safetensors"):
        from_pretrained(tmp_path / "full")
    (tmp_path / "full" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="has no model.safetensors"):
        from_pretrained(tmp_path / "full")


def test_dropout_and_bf16_compute(params):
    # One layer is enough here (it halves the compile); bf16 compute with fp32 params, as on
    # accelerators, exercises the explicit attention path in bf16 too.
    cfg = CFG.replace(num_hidden_layers=1)
    p = jax.tree.map(lambda x: x, params)
    p["bert"]["encoder"]["layer"] = {"0": p["bert"]["encoder"]["layer"]["0"]}
    batch = make_batch()

    @jax.jit
    def run(key):
        return BertForPreTraining(cfg, dtype=jnp.bfloat16).apply(
            {"params": p}, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
            batch["masked_positions"], deterministic=False, rngs={"dropout": key})

    key1, key2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    (a, nsp), (a2, _), (b, _) = run(key1), run(key1), run(key2)
    assert a.dtype == jnp.bfloat16 and np.isfinite(np.asarray(a, np.float32)).all()
    assert np.array_equal(a, a2)
    assert maxdiff(a, b) > 1e-2
    loss, _ = jax.jit(pretraining_loss)(a, nsp, batch)
    assert loss.dtype == jnp.float32 and abs(float(loss) - np.log(CFG.vocab_size) - np.log(2)) < 1


def test_classifier_remat_recomputes_the_layers():
    # As BertForPreTraining's (tests/test_compute_options.py): remat reaches the encoder, and the
    # loss and gradients are the same, dropout on. Torch twin:
    # BertForSequenceClassification.gradient_checkpointing_enable (tests/test_torch_model.py).
    cfg, b = CFG.replace(num_hidden_layers=1), make_batch()
    args = (b["input_ids"], b["token_type_ids"], b["attention_mask"])
    labels = jnp.array([0, 1, 2])

    def loss_fn(module):
        def f(p):
            logits = module.apply({"params": p}, *args, deterministic=False,
                                  rngs={"dropout": jax.random.PRNGKey(1)})
            return classification_loss(logits, labels)[0]
        return f

    plain = BertForSequenceClassification(cfg, num_labels=3)
    remat = BertForSequenceClassification(cfg, remat=True, num_labels=3)
    params = jax.jit(plain.init)(jax.random.PRNGKey(0), *args)["params"]
    assert "remat" in str(jax.make_jaxpr(jax.grad(loss_fn(remat)))(params))
    assert "remat" not in str(jax.make_jaxpr(jax.grad(loss_fn(plain)))(params))
    loss, grads = jax.jit(jax.value_and_grad(loss_fn(plain)))(params)
    loss_r, grads_r = jax.jit(jax.value_and_grad(loss_fn(remat)))(params)
    assert abs(float(loss_r) - float(loss)) <= 1e-6 * abs(float(loss))
    for a, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_r)):
        assert np.allclose(a, r, rtol=1e-5, atol=1e-7)
