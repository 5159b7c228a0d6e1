"""torchbert.model against Hugging Face `BertForPreTraining` on the same random weights.

Bars from parity/thresholds.py (docs/design.md, "Quality bars"; fp32, CPU, eval mode):
activations and logits max |diff| <= FORWARD_MAX_ABS, loss <= LOSS_REL relative. The HF model is
built from a config here: no download.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file

from bertcore.model.config import BertConfig
from bertcore.data.batches import check_batch
from bertcore.infra.errors import UserError
from helpers import build_shards, padded_batch
from parity.thresholds import FORWARD_MAX_ABS, LOSS_REL
from torchbert.classifier import BertForSequenceClassification, classification_loss
from torchbert.model import BertForPreTraining, attention_probs, pretraining_loss

transformers.logging.set_verbosity_error()

CFG = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=64)
B, L, P = 3, 24, 5
ATOL = FORWARD_MAX_ABS
# Two code paths of the same model (sparse vs dense head): no parity bar, just float32 rounding.
SAME_MODEL_TOL = 1e-6


def hf_config(cfg: BertConfig = CFG) -> transformers.BertConfig:
    d = {k: v for k, v in cfg.to_dict().items() if k != "layer_norm_position"}
    return transformers.BertConfig(**d)


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of the bertcore contract: padding in rows 1 and 2, unused slots in row 2."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, CFG.vocab_size, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 18:] = 0
    mask[2, 12:] = 0
    ids[mask == 0] = CFG.pad_token_id
    types = torch.zeros(B, L, dtype=torch.long)
    types[:, 8:] = 1
    types[mask == 0] = 0
    positions = torch.stack([torch.randperm(11, generator=g)[:P] + 1 for _ in range(B)])
    weights = torch.ones(B, P)
    weights[2, 3:] = 0.0
    positions[2, 3:] = 0                     # unused slots point at position 0, weight 0
    masked_ids = torch.gather(ids, 1, positions)
    masked_ids[weights == 0] = 0
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask,
                masked_positions=positions, masked_ids=masked_ids, masked_weights=weights,
                next_sentence_label=torch.tensor([0, 1, 1]))


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(hf_config()).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so a swapped name shows
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    ours = BertForPreTraining(CFG).eval()
    assert ours.load_hf_state_dict(hf.state_dict()) == []
    return hf, ours


def test_state_dict_keys_equal_hf():
    ours = BertForPreTraining(CFG)
    hf = transformers.BertForPreTraining(hf_config())
    assert list(ours.state_dict()) == list(hf.state_dict())
    for k, v in hf.state_dict().items():
        assert ours.state_dict()[k].shape == v.shape, k
    assert ours.num_parameters() == hf.num_parameters()
    # tied: one Parameter under two names
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    assert ours.cls.predictions.decoder.bias is ours.cls.predictions.bias


def test_forward_matches_hf(pair):
    hf, ours = pair
    b = make_batch()
    args = (b["input_ids"], b["token_type_ids"], b["attention_mask"])
    kw = dict(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
              attention_mask=b["attention_mask"])   # HF's positional order differs from ours
    with torch.no_grad():
        out = hf(**kw)
        hf_base = hf.bert(**kw)
        seq, pooled = ours.bert(*args)
        mlm, nsp = ours(*args)
    # every position, padded ones included (padded queries still attend to the real keys)
    assert (seq - hf_base.last_hidden_state).abs().max() <= ATOL
    assert (pooled - hf_base.pooler_output).abs().max() <= ATOL
    assert (mlm - out.prediction_logits).abs().max() <= ATOL
    assert (nsp - out.seq_relationship_logits).abs().max() <= ATOL


def hf_labels(b: dict[str, torch.Tensor]) -> torch.Tensor:
    """HF's MLM labels: the original id at each predicted position, -100 elsewhere."""
    labels = torch.full(b["input_ids"].shape, -100)
    for i in range(len(labels)):
        for j in range(b["masked_positions"].shape[1]):
            if b["masked_weights"][i, j] > 0:
                labels[i, b["masked_positions"][i, j]] = int(b["masked_ids"][i, j])
    return labels


def test_loss_matches_hf(pair):
    hf, ours = pair
    b = make_batch()
    with torch.no_grad():
        out = hf(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                 attention_mask=b["attention_mask"], labels=hf_labels(b),
                 next_sentence_label=b["next_sentence_label"])
        mlm, nsp = ours(b["input_ids"], b["token_type_ids"], b["attention_mask"])
    loss, metrics = pretraining_loss(mlm, nsp, b)
    assert abs(loss.item() - out.loss.item()) <= LOSS_REL * abs(out.loss.item())
    assert set(metrics) == {"loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy"}
    assert metrics["loss"] == loss
    _, off = pretraining_loss(mlm, nsp, {k: v for k, v in b.items()
                                         if k != "next_sentence_label"}, nsp=False)
    assert set(off) == {"loss", "mlm_loss", "mlm_accuracy"}
    assert off["loss"] == metrics["mlm_loss"]


def test_nsp_loss_refuses_a_batch_without_its_label():
    # The same error in both twins (tests/test_jax_model.py, the same test).
    b = {k: v for k, v in make_batch().items() if k != "next_sentence_label"}
    mlm, nsp = torch.zeros(B, P, CFG.vocab_size), torch.zeros(B, 2)
    with pytest.raises(ValueError, match=r"nsp=True\) needs batch\['next_sentence_label'\]"):
        pretraining_loss(mlm, nsp, b)
    assert set(pretraining_loss(mlm, nsp, b, nsp=False)[1]) == {"loss", "mlm_loss",
                                                                "mlm_accuracy"}


def test_sparse_logits_equal_gathered_dense(pair):
    _, ours = pair
    b = make_batch()
    args = (b["input_ids"], b["token_type_ids"], b["attention_mask"])
    with torch.no_grad():
        dense, nsp_d = ours(*args)
        sparse, nsp_s = ours(*args, masked_positions=b["masked_positions"].int())
    assert sparse.shape == (B, P, CFG.vocab_size)
    gathered = torch.stack([dense[i, b["masked_positions"][i]] for i in range(B)])
    assert (sparse - gathered).abs().max() <= SAME_MODEL_TOL
    assert torch.equal(nsp_d, nsp_s)
    ls, _ = pretraining_loss(sparse, nsp_s, b)
    ld, _ = pretraining_loss(dense, nsp_d, b)
    assert abs(ls.item() - ld.item()) <= SAME_MODEL_TOL * ld.item()


def test_bertcore_batch_matches_hf(pair, tmp_path):
    """A real batch of bertcore's iterator, as torchbert.train hands it over (torch.from_numpy:
    int32 ids and positions), through the sparse head: the same loss as HF's."""
    hf, ours = pair
    shards, tok = build_shards(tmp_path, n_docs=40)
    assert tok.vocab_size <= CFG.vocab_size
    # a padded row with unused prediction slots, and both NSP labels
    batch = padded_batch(shards, tok, B, L, P)
    check_batch(batch, B, L, P, nsp=True)
    assert (batch["attention_mask"] == 0).any() and (batch["masked_weights"] == 0).any()
    b = {k: torch.from_numpy(v) for k, v in batch.items()}
    with torch.no_grad():
        out = hf(**{k: b[k].long() for k in ("input_ids", "token_type_ids", "attention_mask",
                                             "next_sentence_label")}, labels=hf_labels(b))
        mlm, nsp = ours(b["input_ids"], b["token_type_ids"], b["attention_mask"],
                        b["masked_positions"])
    loss, _ = pretraining_loss(mlm, nsp, b)
    assert (nsp - out.seq_relationship_logits).abs().max() <= ATOL
    assert abs(loss.item() - out.loss.item()) <= LOSS_REL * abs(out.loss.item())


def test_padding_invariance(pair):
    _, ours = pair
    b = make_batch()
    extra = 8   # append padding: real tokens must not see it
    pad = lambda t, v: torch.cat([t, torch.full((B, extra), v, dtype=t.dtype)], dim=1)  # noqa
    with torch.no_grad():
        seq, pooled = ours.bert(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        seq2, pooled2 = ours.bert(pad(b["input_ids"], CFG.pad_token_id),
                                  pad(b["token_type_ids"], 0), pad(b["attention_mask"], 0))
    real = b["attention_mask"].bool()
    assert (seq2[:, :L] - seq)[real].abs().max() <= ATOL
    assert (pooled2 - pooled).abs().max() <= ATOL


def test_explicit_attention_equals_fused():
    # The CPU dropout path's math (attention_probs @ v) is SDPA's (the JAX twin's test, mirrored).
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 10, 8, generator=g)                 # (B, N, L, D) each
    mask = (torch.arange(10)[None, :] < torch.tensor([10, 6])[:, None])[:, None, None, :]
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (fused - attention_probs(q, k, mask) @ v).abs().max() <= 1e-6


def test_dropout_and_bf16_compute():
    # Training mode on CPU takes the explicit attention path with Dropout's masks; under bf16
    # autocast too (the JAX twin's test_dropout_and_bf16_compute, mirrored).
    torch.manual_seed(0)
    m = BertForPreTraining(CFG.replace(num_hidden_layers=1)).train()
    b = make_batch()

    def run(seed):
        torch.manual_seed(seed)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(b["input_ids"], b["token_type_ids"], b["attention_mask"],
                     b["masked_positions"])

    (a, nsp), (a2, _), (c, _) = run(1), run(1), run(2)
    assert a.dtype == torch.bfloat16 and torch.isfinite(a.float()).all()
    assert torch.equal(a, a2)
    assert (a.float() - c.float()).abs().max() > 1e-2
    loss, _ = pretraining_loss(a, nsp, b)
    assert loss.dtype == torch.float32 and abs(loss.item() - math.log(CFG.vocab_size * 2)) < 1


def test_init_statistics():
    torch.manual_seed(0)
    cfg = CFG.replace(hidden_size=128, intermediate_size=512, initializer_range=0.05)
    m = BertForPreTraining(cfg)
    w = m.bert.encoder.layer[0].intermediate.dense.weight
    assert abs(w.std().item() - 0.05) < 0.002 and abs(w.mean().item()) < 0.002
    assert torch.all(m.bert.encoder.layer[0].intermediate.dense.bias == 0)
    for ln in (m.bert.embeddings.LayerNorm, m.cls.predictions.transform.LayerNorm,
               m.bert.encoder.layer[1].output.LayerNorm):
        assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)
    emb = m.bert.embeddings.word_embeddings.weight
    assert torch.all(emb[cfg.pad_token_id] == 0)       # the tie did not re-initialise it
    assert abs(emb[1:].std().item() - 0.05) < 0.002
    assert torch.all(m.cls.predictions.bias == 0)


def test_pre_layer_norm_runs_and_differs():
    torch.manual_seed(0)
    cfg = CFG.replace(initializer_range=0.2)   # big enough sublayers that the wiring matters
    post = BertForPreTraining(cfg).eval()
    pre = BertForPreTraining(cfg.replace(layer_norm_position="pre")).eval()
    extra = set(pre.state_dict()) - set(post.state_dict())
    assert extra == {"bert.encoder.LayerNorm.weight", "bert.encoder.LayerNorm.bias"}
    pre.load_state_dict(post.state_dict(), strict=False)   # same weights, other wiring
    b = make_batch()
    with torch.no_grad():
        a, _ = post(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        c, _ = pre(b["input_ids"], b["token_type_ids"], b["attention_mask"])
    assert torch.isfinite(c).all() and (a - c).abs().max() > 0.1


def test_gradient_reaches_tied_embeddings_and_bias():
    torch.manual_seed(0)
    m = BertForPreTraining(CFG).train()
    b = make_batch()
    mlm, nsp = m(b["input_ids"], b["token_type_ids"], b["attention_mask"], b["masked_positions"])
    loss, _ = pretraining_loss(mlm, nsp, b)
    loss.backward()
    emb = m.bert.embeddings.word_embeddings.weight
    # decoder rows of never-seen tokens get gradient only through the tied decoder
    unseen = torch.ones(CFG.vocab_size, dtype=torch.bool)
    unseen[b["input_ids"].flatten()] = False
    assert emb.grad is not None and emb.grad[unseen].abs().sum() > 0
    assert m.cls.predictions.bias.grad.abs().sum() > 0
    names = [n for n, _ in m.named_parameters()]
    assert "cls.predictions.decoder.weight" not in names   # the optimizer sees it once


def test_save_pretrained_loads_in_hf(pair, tmp_path):
    hf, ours = pair
    ours.save_pretrained(tmp_path / "m")
    back, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "m",
                                                                 output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    for k, v in hf.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    again, info = BertForPreTraining.from_pretrained(tmp_path / "m", output_loading_info=True)
    assert info["missing_keys"] == [] and again.config == CFG
    ours.save_pretrained(tmp_path / "m")      # saving over an existing directory works too


def test_from_pretrained_hf_directories(pair, tmp_path, caplog):
    hf, ours = pair
    hf.save_pretrained(tmp_path / "pre")
    m = BertForPreTraining.from_pretrained(tmp_path / "pre")
    for k, v in ours.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    mlm = transformers.BertForMaskedLM(hf_config())
    mlm.save_pretrained(tmp_path / "mlm")
    _, info = BertForPreTraining.from_pretrained(tmp_path / "mlm", output_loading_info=True)
    assert info["missing_keys"] == ["bert.pooler.dense.bias", "bert.pooler.dense.weight",
                                    "cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    hf.bert.save_pretrained(tmp_path / "base")       # bare BertModel: no prefix, no heads
    with caplog.at_level(logging.WARNING, logger="torchbert.model"):
        m, info = BertForPreTraining.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert info["missing_keys"] and all(k.startswith("cls.") for k in info["missing_keys"])
    assert "cls.predictions.transform.dense.weight" in caplog.text
    assert torch.equal(m.bert.encoder.layer[1].output.dense.weight,
                       hf.bert.encoder.layer[1].output.dense.weight)


def test_from_pretrained_pytorch_bin_with_aliases(pair, tmp_path):
    hf, ours = pair
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text(json.dumps(hf_config().to_dict()))
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")  # includes aliases
    m = BertForPreTraining.from_pretrained(tmp_path / "bin")
    for k, v in ours.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    # a pickle that needs arbitrary code is refused (weights_only=True), not executed
    torch.save({"payload": _Evil()}, tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(UserError, match="weights_only=True") as e:
        BertForPreTraining.from_pretrained(tmp_path / "bin")
    # one line, which says why and never advises turning the restricted unpickler off
    assert "\n" not in str(e.value) and "False" not in str(e.value), str(e.value)
    assert "print" in str(e.value)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_from_pretrained_refuses_bad_weights(pair, tmp_path):
    hf, ours = pair
    ours.save_pretrained(tmp_path / "m")
    state = {k: v.clone() for k, v in ours.hf_state_dict().items()}
    state["cls.mystery.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / "m" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match="cls.mystery.weight"):
        BertForPreTraining.from_pretrained(tmp_path / "m")
    del state["cls.mystery.weight"]
    state["cls.predictions.bias"] = torch.zeros(7)
    save_file(state, str(tmp_path / "m" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match="cls.predictions.bias"):
        BertForPreTraining.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="model.safetensors"):
        BertForPreTraining.from_pretrained(tmp_path / "m")
    with pytest.raises(UserError, match="not a directory"):
        BertForPreTraining.from_pretrained(tmp_path / "nowhere")


def test_classifier_remat_recomputes_the_layers():
    # As BertForPreTraining's (tests/test_compute_options.py): same loss and gradients, dropout
    # on, each layer run again in the backward pass. JAX twin: BertForSequenceClassification's
    # remat=True (tests/test_jax_model.py).
    torch.manual_seed(0)
    model = BertForSequenceClassification(CFG.replace(num_hidden_layers=1), num_labels=3).train()
    b, labels = make_batch(), torch.tensor([0, 1, 2])
    calls = []
    # a module inside the layer: the recomputation stops once it has what the backward needs,
    # before the layer's own forward hook would fire
    model.bert.encoder.layer[0].intermediate.register_forward_hook(lambda *_: calls.append(1))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        loss, _ = classification_loss(
            model(b["input_ids"], b["token_type_ids"], b["attention_mask"]), labels)
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
