"""torchbert.modernbert against transformers' `ModernBertForMaskedLM` on the same random weights.

Tiny configs whose sequences (40 tokens) are longer than the local window (8 tokens), with
padding at the end of some rows, so the local mask, RoPE and the padding all matter. Bars from
parity/thresholds.py (fp32, CPU, eval mode); logits are compared where attention_mask == 1 (a
padded query outside every real token's window has no visible key, and the implementations fill
that row differently; no real position reads it). No downloads: the HF models are built from
configs.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import transformers

from bertcore.model.config import ModernBertConfig, TrainConfig
from bertcore.data.batches import BatchIterator, check_batch
from bertcore.infra.errors import UserError
from bertcore.model.hf import param_table
from helpers import build_shards
from parity.thresholds import FORWARD_MAX_ABS
from torchbert.model import pretraining_loss
from torchbert.modernbert import ModernBertForMaskedLM, apply_rotary

transformers.logging.set_verbosity_error()

# The ids of bertcore's tokenizer: [PAD] 0, [CLS] 2, [SEP] 3.
CFG = ModernBertConfig.from_preset("tiny", vocab_size=120, pad_token_id=0, cls_token_id=2,
                                   sep_token_id=3, bos_token_id=2, eos_token_id=3,
                                   num_hidden_layers=3, global_attn_every_n_layers=2,
                                   local_attention=8)
BIASES = CFG.replace(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True)
B, L, P = 3, 40, 6
ATOL = FORWARD_MAX_ABS
# Two code paths of the same model (sparse vs dense head): float32 rounding only.
SAME_MODEL_TOL = 1e-6


def hf_model(cfg: ModernBertConfig, impl: str = "eager", cls=None):
    hc = transformers.ModernBertConfig.from_dict(cfg.to_dict())
    return (cls or transformers.ModernBertForMaskedLM)._from_config(
        hc, attn_implementation=impl).eval()


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Padding at the end of rows 1 and 2 (row 2's padding runs far past the window)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, CFG.vocab_size, (B, L), generator=g)
    ids[:, 0] = CFG.cls_token_id
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 31:] = 0
    mask[2, 14:] = 0
    ids[mask == 0] = CFG.pad_token_id
    positions = torch.stack([torch.randperm(12, generator=g)[:P] + 1 for _ in range(B)])
    return dict(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=mask,
                masked_positions=positions)


def perturbed(cfg: ModernBertConfig, seed: int = 0) -> ModernBertForMaskedLM:
    """Our model with norms and biases moved off 1 and 0, so a swapped or dropped name shows."""
    torch.manual_seed(seed)
    m = ModernBertForMaskedLM(cfg).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m


def logits(model, b, **kw) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(model, ModernBertForMaskedLM):
            return model(b["input_ids"], b["token_type_ids"], b["attention_mask"], **kw)[0]
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


def max_real_diff(a: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> float:
    return (a - c)[mask.bool()].abs().max().item()


@pytest.mark.parametrize("cfg", [CFG, BIASES], ids=["no-biases", "biases"])
def test_state_dict_keys_and_tie(cfg):
    ours, hf = ModernBertForMaskedLM(cfg), hf_model(cfg)
    assert list(ours.state_dict()) == list(hf.state_dict())
    for k, v in hf.state_dict().items():
        assert ours.state_dict()[k].shape == v.shape, k
    assert sorted(ours.hf_state_dict()) == sorted(p.hf_name for p in param_table(cfg))
    assert ours.num_parameters() == hf.num_parameters()
    assert ours.decoder.weight is ours.model.embeddings.tok_embeddings.weight   # one Parameter
    assert "decoder.weight" not in [n for n, _ in ours.named_parameters()]
    assert "model.layers.0.attn_norm.weight" not in ours.state_dict()


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("cfg", [CFG, BIASES], ids=["no-biases", "biases"])
def test_forward_matches_hf(cfg, impl):
    b = make_batch()
    # weights 5x the default init's, so attention is far from uniform and the window shows
    cfg = cfg.replace(initializer_range=0.1)
    # our weights into transformers
    ours = perturbed(cfg)
    hf = hf_model(cfg, impl)
    hf.load_state_dict(ours.state_dict())
    assert max_real_diff(logits(hf, b), logits(ours, b), b["attention_mask"]) <= ATOL
    with torch.no_grad():
        seq = ours.model(b["input_ids"], b["attention_mask"])
        hf_seq = hf.model(input_ids=b["input_ids"],
                          attention_mask=b["attention_mask"]).last_hidden_state
    assert max_real_diff(seq, hf_seq, b["attention_mask"]) <= ATOL
    # transformers' weights into ours (fresh ones, perturbed the same way)
    torch.manual_seed(1)
    hf = hf_model(cfg, impl)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    ours = ModernBertForMaskedLM(cfg).eval()
    assert ours.load_hf_state_dict(hf.state_dict()) == []
    assert max_real_diff(logits(hf, b), logits(ours, b), b["attention_mask"]) <= ATOL


def test_the_window_matters():
    # The same weights with a window covering every sequence: the local layers' mask is then key
    # padding only, so a model that ignored the window would give these logits. Weights larger
    # than the default init's, so that attention is far from uniform.
    b = make_batch()
    cfg = CFG.replace(initializer_range=0.2)
    ours = perturbed(cfg)
    wide = ModernBertForMaskedLM(cfg.replace(local_attention=2 * L)).eval()
    wide.load_state_dict(ours.state_dict())
    diff = max_real_diff(logits(ours, b), logits(wide, b), b["attention_mask"])
    assert diff > 1e-1
    # ... and with one global layer every layer, the window is unused
    glob = ModernBertForMaskedLM(CFG.replace(global_attn_every_n_layers=1)).eval()
    glob2 = ModernBertForMaskedLM(CFG.replace(global_attn_every_n_layers=1,
                                              local_attention=2 * L)).eval()
    glob2.load_state_dict(glob.state_dict())
    assert torch.equal(logits(glob, b), logits(glob2, b))


def test_apply_rotary_rotates_feature_pairs():
    # Pair (i, i + D/2) at angle a: (x1 cos a - x2 sin a, x2 cos a + x1 sin a), a plane rotation
    # that keeps each pair's length; in float32 even for a bf16 input.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, generator=g)
    angle = torch.rand(5, 4, generator=g) * 6
    cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)
    y = apply_rotary(x, cos, sin)
    x1, x2 = x[..., :4], x[..., 4:]
    expect = torch.cat([x1 * angle.cos() - x2 * angle.sin(),
                        x2 * angle.cos() + x1 * angle.sin()], -1)
    assert (y - expect).abs().max() <= 1e-6
    assert apply_rotary(x.bfloat16(), cos, sin).dtype == torch.bfloat16


def test_sparse_logits_equal_gathered_dense_and_types_ignored():
    b = make_batch()
    ours = perturbed(BIASES)
    dense = logits(ours, b)
    sparse = logits(ours, b, masked_positions=b["masked_positions"].int())
    assert sparse.shape == (B, P, CFG.vocab_size)
    gathered = torch.stack([dense[i, b["masked_positions"][i]] for i in range(B)])
    assert (sparse - gathered).abs().max() <= SAME_MODEL_TOL
    # token_type_ids are part of the batch contract and have no effect here
    other = dict(b, token_type_ids=torch.ones_like(b["input_ids"]))
    assert torch.equal(logits(ours, other), dense)
    # the decoder on a vocabulary padded to a multiple of 64: the same logits
    padded = ModernBertForMaskedLM(BIASES, pad_vocab_to=64).eval()
    padded.load_state_dict(ours.state_dict())
    assert (logits(padded, b) - dense).abs().max() <= SAME_MODEL_TOL
    with pytest.raises(ValueError, match="no next-sentence head; train with --no-nsp"):
        ours(b["input_ids"], b["token_type_ids"], b["attention_mask"], nsp=True)


def test_from_pretrained_hf_directory(tmp_path):
    b = make_batch()
    torch.manual_seed(2)
    hf = hf_model(BIASES)
    hf.save_pretrained(tmp_path / "hf")
    ours, info = ModernBertForMaskedLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert info["missing_keys"] == [] and ours.config == BIASES
    for k, v in hf.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    assert max_real_diff(logits(ours.eval(), b), logits(hf, b), b["attention_mask"]) <= ATOL


def test_save_pretrained_loads_in_hf(tmp_path):
    b = make_batch()
    ours = perturbed(CFG)
    ours.save_pretrained(tmp_path / "m")
    back, info = transformers.ModernBertForMaskedLM.from_pretrained(
        tmp_path / "m", output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    for k, v in ours.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert max_real_diff(logits(back.eval(), b), logits(ours, b), b["attention_mask"]) <= ATOL
    ours.save_pretrained(tmp_path / "m")      # saving over an existing directory works too
    again = ModernBertForMaskedLM.from_pretrained(tmp_path / "m")
    assert torch.equal(logits(again.eval(), b), logits(ours, b))


def test_encoder_only_save_loads_with_heads_missing(tmp_path, caplog):
    torch.manual_seed(3)
    base = hf_model(CFG, cls=transformers.ModernBertModel)   # no `model.` prefix, no heads
    base.save_pretrained(tmp_path / "base")
    with caplog.at_level(logging.WARNING):
        m, info = ModernBertForMaskedLM.from_pretrained(tmp_path / "base",
                                                        output_loading_info=True)
    assert info["missing_keys"] == ["decoder.bias", "head.dense.weight", "head.norm.weight"]
    assert "head.dense.weight" in caplog.text
    assert torch.equal(m.model.layers[2].mlp.Wo.weight, base.layers[2].mlp.Wo.weight)
    assert m.decoder.weight is m.model.embeddings.tok_embeddings.weight


def test_from_pretrained_refuses_bad_weights(tmp_path):
    ours = ModernBertForMaskedLM(CFG)
    state = ours.hf_state_dict()
    with pytest.raises(UserError, match="model.layers.0.attn_norm.weight"):
        ours.load_hf_state_dict({**state, "model.layers.0.attn_norm.weight": torch.ones(128)})
    with pytest.raises(UserError, match="model.layers.1.mlp.Wi.weight"):
        ours.load_hf_state_dict({k: v for k, v in state.items()
                                 if k != "model.layers.1.mlp.Wi.weight"})
    with pytest.raises(UserError, match="not a directory; pass a Hugging Face ModernBERT"):
        ModernBertForMaskedLM.from_pretrained(tmp_path / "nowhere")


def truncated_std(std: float, cutoff: float) -> float:
    """The standard deviation of N(0, std) truncated at +-cutoff * std."""
    phi = math.exp(-cutoff * cutoff / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(cutoff / math.sqrt(2))
    return std * math.sqrt(1 - 2 * cutoff * phi / mass)


def test_init_matches_transformers_rule():
    cfg = CFG.replace(initializer_range=0.05, initializer_cutoff_factor=2.0,
                      attention_bias=True, mlp_bias=True, classifier_bias=True)
    torch.manual_seed(0)
    m = ModernBertForMaskedLM(cfg)
    std_in = cfg.initializer_range
    std_out = std_in / math.sqrt(2 * cfg.num_hidden_layers)
    expected = {"model.embeddings.tok_embeddings.weight": std_in, "head.dense.weight": std_out}
    for i in range(cfg.num_hidden_layers):
        expected |= {f"model.layers.{i}.attn.Wqkv.weight": std_in,
                     f"model.layers.{i}.attn.Wo.weight": std_out,
                     f"model.layers.{i}.mlp.Wi.weight": std_in,
                     f"model.layers.{i}.mlp.Wo.weight": std_out}
    state = m.hf_state_dict()
    for name, w in state.items():
        if name in expected:
            std = expected[name]
            assert w.abs().max() <= cfg.initializer_cutoff_factor * std, name
            assert w.abs().max() > 0.9 * cfg.initializer_cutoff_factor * std, name  # truncated
            assert abs(w.std().item() / truncated_std(std, 2.0) - 1) < 0.1, name
            assert abs(w.mean().item()) < 0.1 * std, name
        elif name.endswith("norm.weight"):
            assert torch.all(w == 1), name
        else:
            assert name.endswith("bias") and torch.all(w == 0), name
    # the tie did not re-initialise the embeddings at the decoder's smaller std; the [PAD] row is
    # drawn like the others, as transformers' initialisation leaves it
    emb = m.model.embeddings.tok_embeddings.weight
    assert abs(emb.std().item() / truncated_std(std_in, 2.0) - 1) < 0.1
    assert emb[cfg.pad_token_id].abs().sum() > 0
    # transformers' own model, initialised by its rule, has the same statistics
    torch.manual_seed(0)
    hf = hf_model(cfg)
    for name, std in expected.items():
        assert abs(hf.state_dict()[name].std().item() / truncated_std(std, 2.0) - 1) < 0.1


def bertcore_batch(shards, tok, seq_len: int, max_predictions: int) -> dict[str, np.ndarray]:
    """bertcore's first MLM-only batch, over seeds 0, 1, ..., with a padded row (searched, not
    hard-coded, as helpers.padded_batch)."""
    for seed in range(200):
        b = next(BatchIterator(shards, tok, TrainConfig(batch_size=8, seq_len=seq_len,
                                                        max_predictions=max_predictions,
                                                        nsp=False, seed=seed)))
        if (b["attention_mask"] == 0).any():
            return b
    raise AssertionError("no seed below 200 gives a padded batch")


@pytest.mark.slow
def test_adamw_steps_reduce_the_loss(tmp_path):
    shards, tok = build_shards(tmp_path, n_docs=60)
    assert tok.vocab_size <= CFG.vocab_size
    batch = bertcore_batch(shards, tok, L, P)
    check_batch(batch, 8, L, P, nsp=False)
    b = {k: torch.from_numpy(v) for k, v in batch.items()}
    torch.manual_seed(0)
    cfg = CFG.replace(attention_dropout=0.1, mlp_dropout=0.1, embedding_dropout=0.1)
    model = ModernBertForMaskedLM(cfg).train()   # CPU dropout: the explicit attention path
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        mlm, nsp = model(b["input_ids"], b["token_type_ids"], b["attention_mask"],
                         b["masked_positions"])
        assert nsp is None
        loss, metrics = pretraining_loss(mlm, nsp, b, nsp=False)
        assert set(metrics) == {"loss", "mlm_loss", "mlm_accuracy"}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(cfg.vocab_size)) < 1.0
    assert losses[-1] < losses[0] - 0.5, losses
    with pytest.raises(ValueError, match="--no-nsp"):
        model(b["input_ids"], b["token_type_ids"], b["attention_mask"], nsp=True)


def test_remat_recomputes_the_layers():
    # Same loss and gradients with dropout on, each layer run again in the backward pass.
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(CFG.replace(attention_dropout=0.1, mlp_dropout=0.1)).train()
    b = make_batch()
    labels = torch.gather(b["input_ids"], 1, b["masked_positions"])
    batch = dict(b, masked_ids=labels, masked_weights=torch.ones(B, P))
    calls = []
    model.model.layers[1].attn.register_forward_hook(lambda *_: calls.append(1))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        mlm, _ = model(b["input_ids"], None, b["attention_mask"], b["masked_positions"])
        loss, _ = pretraining_loss(mlm, None, batch, nsp=False)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = loss_and_grads()
    assert len(calls) == 1
    model.gradient_checkpointing_enable()
    loss_r, grads_r = loss_and_grads()
    assert len(calls) == 3            # forward, then again in the backward pass
    assert loss_r == loss and grads_r.keys() == grads.keys()
    for n in grads:
        assert torch.equal(grads[n], grads_r[n]), n


def test_dropout_and_bf16_compute():
    # Training mode on CPU takes the explicit attention path with Dropout's masks (fully masked
    # rows of far padded queries included), under bf16 autocast too; RoPE runs in float32.
    torch.manual_seed(0)
    m = ModernBertForMaskedLM(CFG.replace(attention_dropout=0.1, mlp_dropout=0.1,
                                          embedding_dropout=0.1)).train()
    b = make_batch()

    def run(seed):
        torch.manual_seed(seed)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(b["input_ids"], b["token_type_ids"], b["attention_mask"])[0]

    a, a2, c = run(1), run(1), run(2)
    assert a.dtype == torch.bfloat16 and torch.isfinite(a.float()).all()
    assert torch.equal(a, a2)
    assert (a.float() - c.float()).abs().max() > 1e-2
