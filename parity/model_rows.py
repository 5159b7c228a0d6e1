"""Rows of one batch from the same weights: forward, loss, gradients and one AdamW step.

Torch vs jax, and (post-LN only: transformers' BERT has no pre-LN) each vs
transformers.BertForPreTraining, or for ModernBERT each vs transformers.ModernBertForMaskedLM
(eager attention; the Case's sequences are longer than the local window). Every bar comes from
parity/thresholds.py.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bertcore.model.config import ModelConfig, ModernBertConfig
from bertcore.model.hf import flax_to_hf
from bertcore.train.schedule import make_schedule

from . import thresholds as T
from .cases import (CPU, Case, highest_precision, jax_params, jax_setup, torch_batch, torch_model,
                    torch_setup)
from .report import Row


def _max_abs(a, b) -> tuple[float, float]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = float(np.max(np.abs(a - b)))
    return d, d / max(float(np.max(np.abs(a))), 1e-30)


def _fwd_row(ln, what, a, b) -> Row:
    d, r = _max_abs(a, b)
    return Row(ln, what, d, r, f"FORWARD_MAX_ABS: max abs <= {T.FORWARD_MAX_ABS:g}",
               d <= T.FORWARD_MAX_ABS)


@functools.lru_cache(maxsize=8)
def _jax_fns(config: ModelConfig):
    """Jitted forward and loss-gradient of jaxbert for one config (cached: compiled once).
    ModernBERT has no pooler and no NSP head: those outputs are None."""
    from jaxbert.arch import pretraining_model
    from jaxbert.model import pretraining_loss
    model = pretraining_model(config, dtype=jnp.float32)
    modern = isinstance(config, ModernBertConfig)

    @jax.jit
    def forward(params, b):
        v = {"params": params}
        if modern:
            seq, pooled = model.apply(v, b["input_ids"], b["attention_mask"],
                                      method=lambda m, ids, mask: m.model(ids, mask)), None
        else:
            seq, pooled = model.apply(v, b["input_ids"], b["token_type_ids"],
                                      b["attention_mask"], method=lambda m, *a: m.bert(*a))
        sparse, nsp = model.apply(v, b["input_ids"], b["token_type_ids"], b["attention_mask"],
                                  b["masked_positions"], nsp=not modern)
        dense, _ = model.apply(v, b["input_ids"], b["token_type_ids"], b["attention_mask"],
                               nsp=not modern)
        return seq, pooled, sparse, dense, nsp

    @jax.jit
    def loss_and_grad(params, b):
        def loss_fn(p):
            mlm, nsp = model.apply({"params": p}, b["input_ids"], b["token_type_ids"],
                                   b["attention_mask"], b["masked_positions"], nsp=not modern)
            return pretraining_loss(mlm, nsp, b, nsp=not modern)[0]
        return jax.value_and_grad(loss_fn)(params)

    return forward, loss_and_grad


def _hf_model(config: ModelConfig, torch_twin):
    import transformers
    if isinstance(config, ModernBertConfig):
        # eager: the reference math, masks spelled out
        hf = transformers.ModernBertForMaskedLM._from_config(
            transformers.ModernBertConfig.from_dict(config.to_dict()), attn_implementation="eager")
    else:
        hf = transformers.BertForPreTraining(transformers.BertConfig.from_dict(config.to_dict()))
    hf.load_state_dict(torch_twin.state_dict())   # HF names, tied aliases included: strict
    return hf.eval()


def _hf_inputs(tb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model inputs as transformers' keyword arguments (int64)."""
    return {k: tb[k].long() for k in ("input_ids", "token_type_ids", "attention_mask")}


# ---- forward, loss, gradients --------------------------------------------------------------------

def _real(tb: dict[str, torch.Tensor], a):
    """The rows of a [B, L, ...] output at real (not padded) positions: a padded query of a local
    layer may see no key at all, and what a twin writes there is read by nothing."""
    return np.asarray(a)[tb["attention_mask"].numpy() > 0]


@highest_precision
def forward_rows(case: Case) -> list[Row]:
    ln, mcfg, b = case.layer_norm_position, case.model_config, case.batches[0]
    tm = torch_model(mcfg, case.init).eval()
    tb = torch_batch(b)
    nsp = not case.modern
    with torch.no_grad():
        if case.modern:
            t = {"hidden states": tm.model(tb["input_ids"], tb["attention_mask"])}
        else:
            t = dict(zip(("hidden states", "pooled output"),
                         tm.bert(tb["input_ids"], tb["token_type_ids"], tb["attention_mask"])))
        t["MLM logits (sparse)"], t["NSP logits"] = tm(
            tb["input_ids"], tb["token_type_ids"], tb["attention_mask"], tb["masked_positions"],
            nsp=nsp)
        t["MLM logits (dense)"], _ = tm(tb["input_ids"], tb["token_type_ids"],
                                        tb["attention_mask"], nsp=nsp)
    forward, _ = _jax_fns(mcfg)
    seq, pooled, sparse, dense, nsp_j = forward(jax_params(mcfg, case.init), b)
    j = {"hidden states": seq, "pooled output": pooled, "MLM logits (sparse)": sparse,
         "MLM logits (dense)": dense, "NSP logits": nsp_j}
    if case.modern:   # no pooler, no NSP head; [B, L, ...] outputs at real positions
        j = {k: v for k, v in j.items() if v is not None}
        for k in ("hidden states", "MLM logits (dense)"):
            t[k], j[k] = torch.from_numpy(_real(tb, t[k])), _real(tb, j[k])
    rows = [_fwd_row(ln, f"forward {k}: torch vs jax", t[k].numpy(), j[k]) for k in j]
    if case.modern:
        hf = _hf_model(mcfg, tm)
        with torch.no_grad():
            inputs = {k: tb[k].long() for k in ("input_ids", "attention_mask")}
            seq_hf = hf.model(**inputs).last_hidden_state
            dense_hf = hf(**inputs).logits
        pos = tb["masked_positions"].long()[:, :, None].expand(-1, -1, mcfg.vocab_size)
        h = {"hidden states": _real(tb, seq_hf), "MLM logits (dense)": _real(tb, dense_hf),
             "MLM logits (sparse)": torch.gather(dense_hf, 1, pos).numpy()}
        for k in j:
            rows.append(_fwd_row(ln, f"forward {k}: torch vs HF", h[k], t[k].numpy()))
            rows.append(_fwd_row(ln, f"forward {k}: jax vs HF", h[k], j[k]))
    if ln == "post":   # transformers' BERT is post-LN only
        hf = _hf_model(mcfg, tm)
        with torch.no_grad():
            o = hf(**_hf_inputs(tb), output_hidden_states=True)
            pooled_hf = hf.bert(**_hf_inputs(tb)).pooler_output
        pos = tb["masked_positions"].long()[:, :, None].expand(-1, -1, mcfg.vocab_size)
        h = {"hidden states": o.hidden_states[-1], "pooled output": pooled_hf,
             "MLM logits (sparse)": torch.gather(o.prediction_logits, 1, pos),
             "MLM logits (dense)": o.prediction_logits, "NSP logits": o.seq_relationship_logits}
        for k in j:
            rows.append(_fwd_row(ln, f"forward {k}: torch vs HF", h[k].numpy(), t[k].numpy()))
            rows.append(_fwd_row(ln, f"forward {k}: jax vs HF", h[k].numpy(), j[k]))
    return rows


def _hf_labels(b) -> torch.Tensor:
    labels = np.full(b["input_ids"].shape, -100, np.int64)
    rows, cols = np.nonzero(b["masked_weights"] > 0)
    labels[rows, b["masked_positions"][rows, cols]] = b["masked_ids"][rows, cols]
    return torch.from_numpy(labels)


@highest_precision
def loss_grad_rows(case: Case) -> list[Row]:
    from torchbert.model import pretraining_loss
    ln, mcfg, b = case.layer_norm_position, case.model_config, case.batches[0]
    tm = torch_model(mcfg, case.init).train()       # dropout rates are 0: training path, no noise
    tb = torch_batch(b)
    mlm, nsp = tm(tb["input_ids"], tb["token_type_ids"], tb["attention_mask"],
                  tb["masked_positions"], nsp=not case.modern)
    loss_t, _ = pretraining_loss(mlm, nsp, tb, nsp=not case.modern)
    loss_t.backward()
    g_t = {n: p.grad.numpy() for n, p in tm.named_parameters()}
    _, loss_and_grad = _jax_fns(mcfg)
    loss_j, g = loss_and_grad(jax_params(mcfg, case.init), b)
    g_j = flax_to_hf(jax.tree_util.tree_map(np.asarray, g), mcfg)
    lt, lj = loss_t.item(), float(loss_j)
    rows = [Row(ln, "loss: torch vs jax", abs(lt - lj), abs(lt - lj) / abs(lt),
                f"LOSS_REL: rel <= {T.LOSS_REL:g}", abs(lt - lj) / abs(lt) <= T.LOSS_REL)]
    if ln == "post" or case.modern:
        hf = _hf_model(mcfg, tm)
        with torch.no_grad():
            if case.modern:
                lh = float(hf(input_ids=tb["input_ids"].long(),
                              attention_mask=tb["attention_mask"].long(),
                              labels=_hf_labels(b)).loss)
            else:
                lh = float(hf(**_hf_inputs(tb), labels=_hf_labels(b),
                              next_sentence_label=tb["next_sentence_label"].long()).loss)
        for name, l in (("torch", lt), ("jax", lj)):
            r = abs(l - lh) / abs(lh)
            rows.append(Row(ln, f"loss: {name} vs HF (its own loss from labels)", abs(l - lh), r,
                            f"LOSS_REL: rel <= {T.LOSS_REL:g}", r <= T.LOSS_REL))
    rows.append(grad_row(ln, g_t, g_j))
    return rows


@highest_precision
def eval_rows(case: Case) -> list[Row]:
    """Held-out evaluation (each twin's train.evaluate over fixed batches, dropout off) on the
    same weights: every metric of the eval line within the loss bar."""
    from jaxbert.arch import pretraining_model
    from jaxbert.step import eval_step, evaluate as jax_evaluate
    from torchbert.step import evaluate as torch_evaluate
    ln, mcfg, batches = case.layer_norm_position, case.model_config, case.batches[:3]
    t = torch_evaluate(torch_model(mcfg, case.init), batches, case.train, CPU, "fp32")
    fn = jax.jit(functools.partial(eval_step, model=pretraining_model(mcfg), cfg=case.train))
    j = jax_evaluate(fn, jax_params(mcfg, case.init), batches)
    keys = sorted(k for k in t if k != "split")
    assert keys == sorted(k for k in j if k != "split"), (t, j)
    rel = {k: abs(t[k] - j[k]) / max(abs(t[k]), 1e-30) for k in keys}
    worst = max(rel, key=rel.get)
    return [Row(ln, "eval metrics over 3 fixed batches: torch vs jax (train.evaluate)",
                abs(t[worst] - j[worst]), rel[worst], f"LOSS_REL: rel <= {T.LOSS_REL:g} each",
                rel[worst] <= T.LOSS_REL, note=f"worst: {worst}")]


def grad_row(ln: str, g_t: dict[str, np.ndarray], g_j: dict[str, np.ndarray]) -> Row:
    """Worst per-tensor ||g_t - g_j|| / ||g_t||; tensors whose true gradient is zero (rounding
    noise in both twins, see thresholds.GRAD_ZERO_FLOOR) must be noise-sized in both."""
    norm = lambda a: float(np.linalg.norm(np.asarray(a, np.float64)))
    floor = T.GRAD_ZERO_FLOOR * math.sqrt(sum(norm(g) ** 2 for g in g_t.values()))
    worst, worst_name, worst_abs, zero, bad_zero = 0.0, "", 0.0, [], []
    for n, gt in g_t.items():
        gt64, gj64 = gt.astype(np.float64), np.asarray(g_j[n], np.float64)
        if norm(gt64) < floor:
            (zero if norm(gj64) < floor else bad_zero).append(n)
            continue
        r = norm(gt64 - gj64) / norm(gt64)
        if r >= worst:
            worst, worst_name, worst_abs = r, n, float(np.max(np.abs(gt64 - gj64)))
    note = f"worst: {worst_name}"
    if zero:
        note += f"; zero in exact arithmetic, noise < {floor:.1e} in both: {len(zero)} tensors " \
                f"({', '.join(sorted({z.split('.')[-2] + '.' + z.split('.')[-1] for z in zero}))})"
    if bad_zero:
        note += f"; ZERO in torch but not in jax: {', '.join(bad_zero)}"
    return Row(ln, f"gradients: torch vs jax, worst of {len(g_t)} tensors", worst_abs, worst,
               f"GRAD_REL: rel (norm) <= {T.GRAD_REL:g}", worst <= T.GRAD_REL and not bad_zero,
               note=note)


# ---- one AdamW step, through each twin's own train_step ------------------------------------------

@highest_precision
def adamw_rows(case: Case) -> list[Row]:
    ln, mcfg, train = case.layer_norm_position, case.model_config, case.train
    model, opt = torch_setup(case, train, mcfg)
    decayed_t = {n for g in opt.param_groups if g["weight_decay"] > 0
                 for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    state, layout, key = jax_setup(case, train, mcfg)
    from jaxbert.optim import decay_mask
    mask = flax_to_hf(decay_mask(jax.device_get(state.params)), mcfg)
    decayed_j = {n for n, v in mask.items() if bool(v)}
    bad = sorted(decayed_t ^ decayed_j)
    rows = [Row(ln, "AdamW decay mask: tensors decayed differently", float(len(bad)), 0.0,
                "0 tensors", not bad, note=", ".join(bad[:4]) or
                f"{len(decayed_t)} decayed, {len(mask) - len(decayed_t)} not (biases, LayerNorm)")]
    from torchbert.step import train_step
    lr = float(make_schedule(train, mcfg.hidden_size)(0))
    m_t = train_step(model, opt, case.batches[0], lr, train, CPU, 1)
    state, m_j = layout.fn(state, layout.put_batch(case.batches[0]), key)
    gn_t, gn_j = float(m_t["grad_norm"]), float(m_j["grad_norm"])
    r = abs(gn_t - gn_j) / gn_t
    rows.append(Row(ln, "AdamW step: global grad norm (before clipping)", abs(gn_t - gn_j), r,
                    f"GRAD_REL: rel <= {T.GRAD_REL:g}", r <= T.GRAD_REL,
                    note=f"{gn_t:.3f} vs clip {train.grad_clip}: "
                         f"{'clipped' if gn_t > train.grad_clip else 'not clipped'}"))
    p_j = flax_to_hf(jax.device_get(state.params), mcfg)
    worst, worst_name, worst_rel = 0.0, "", 0.0
    for n, p in model.hf_state_dict().items():
        d, rr = _max_abs(p.detach().numpy(), p_j[n])
        if d >= worst:
            worst, worst_name, worst_rel = d, n, rr
    rows.append(Row(ln, f"AdamW step: updated params (lr {lr:.2g})", worst, worst_rel,
                    f"ADAMW_STEP_MAX_ABS: max abs <= {T.ADAMW_STEP_MAX_ABS:g}",
                    worst <= T.ADAMW_STEP_MAX_ABS,
                    note=f"worst: {worst_name}"))
    return rows
