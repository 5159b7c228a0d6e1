"""ELECTRA's rows of one batch from the same weights: forward of both models, the generator's
samples, the loss and its gradients.

The pair (torchbert/jaxbert `ElectraPreTrainingModel`: generator + discriminator sharing one
embedding block) is built from the Case's one torch initialisation in both twins. Its two models
are compared on their own, torch vs jax, and each twin vs transformers' ElectraForPreTraining
(the discriminator) and ElectraForMaskedLM (the generator) loaded from that twin's own export
(`save_pretrained`: two transformers directories, the generator with its copy of the shared
embeddings), so the rows also prove the exports. The samples are held to bertcore.model.sampling's
numpy reference. Every bar comes from parity/thresholds.py; the rows after these (eval, AdamW,
curves, resume, dropout, bf16) are the other architectures' (model_rows.py, curve_rows.py).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bertcore.model.config import ElectraConfig
from bertcore.model.hf import flax_to_hf
from bertcore.model.sampling import sample as reference_sample

from . import thresholds as T
from .cases import Case, highest_precision, jax_params, torch_batch, torch_model
from .model_rows import _fwd_row, _hf_labels, grad_row
from .report import Row

ROLES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}
_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
_PAIR_INPUTS = _INPUTS + ("masked_positions", "masked_ids", "masked_weights", "sample_seeds")


@functools.lru_cache(maxsize=4)
def _jax_fns(config: ElectraConfig, disc_weight: float):
    """Jitted jaxbert ELECTRA functions for one config (cached: compiled once): the two models'
    outputs on their own, the pair's forward, its loss and gradient."""
    from jaxbert.electra import ElectraPreTrainingModel, electra_loss
    model = ElectraPreTrainingModel(config, dtype=jnp.float32)

    def generator(m, ids, types, mask, positions):   # on the shared embeddings, as in the pair
        return m.generator(ids, types, mask, positions, True, m.discriminator.electra.embeddings)

    @jax.jit
    def forward(params, b):
        v = {"params": params}
        ids = [b[k] for k in _INPUTS]
        disc = model.apply(v, *ids, method=lambda m, *a: m.discriminator(*a))
        sparse = model.apply(v, *ids, b["masked_positions"], method=generator)
        dense = model.apply(v, *ids, None, method=generator)
        return disc, sparse, dense, model.apply(v, *[b[k] for k in _PAIR_INPUTS])

    @jax.jit
    def loss_and_grad(params, b):
        def loss_fn(p):
            mlm, disc, replaced = model.apply({"params": p}, *[b[k] for k in _PAIR_INPUTS])
            return electra_loss(mlm, disc, replaced, b, disc_weight=disc_weight)[0]
        return jax.value_and_grad(loss_fn)(params)

    return model, forward, loss_and_grad


def corrupted_ids(tb: dict[str, torch.Tensor], sampled: torch.Tensor) -> torch.Tensor:
    """The discriminator's input the pair builds from the generator's samples (torchbert's
    ElectraPreTrainingModel.forward): each live slot's sample written over its position."""
    pos, live = tb["masked_positions"].long(), tb["masked_weights"] > 0
    first = tb["input_ids"][:, :1].long().expand_as(pos)
    return tb["input_ids"].long().scatter(1, pos, torch.where(live, sampled, first))


def _hf_pair(export: Path) -> tuple[dict, list[str]]:
    """transformers' two models from an export (path/discriminator, path/generator), and the
    keys it reported missing, unexpected or misshaped."""
    import transformers
    models, bad = {}, []
    for role, cls in ROLES.items():
        m, info = getattr(transformers, cls).from_pretrained(export / role,
                                                             output_loading_info=True)
        bad += [f"{role}: {k}" for key in ("missing_keys", "unexpected_keys", "mismatched_keys")
                for k in info.get(key, ())]
        models[role] = m.eval()
    return models, bad


def _export_row(ln: str, twin: str, bad: list[str]) -> Row:
    return Row(ln, f"export: {twin}'s save_pretrained in transformers, keys missing or "
                   f"unexpected", float(len(bad)), 0.0, "0 tensors", not bad,
               note=", ".join(bad[:4]) or "discriminator/ and generator/ load whole")


def _hf_outputs(hf: dict, tb: dict[str, torch.Tensor], corrupted: torch.Tensor
                ) -> dict[str, np.ndarray]:
    inputs = {k: tb[k].long() for k in _INPUTS}
    with torch.no_grad():
        dense = hf["generator"](**inputs).logits
        pos = tb["masked_positions"].long()[:, :, None].expand(-1, -1, dense.shape[-1])
        return {"discriminator logits": hf["discriminator"](**inputs).logits.numpy(),
                "generator MLM logits (sparse)": torch.gather(dense, 1, pos).numpy(),
                "generator MLM logits (dense)": dense.numpy(),
                "discriminator logits on the sampled replacements": hf["discriminator"](
                    **{**inputs, "input_ids": corrupted}).logits.numpy()}


@highest_precision
def forward_rows(case: Case) -> list[Row]:
    """Both models on the batch, and the pair's discriminator on the ids its generator's samples
    made: torch vs jax, and each vs transformers loaded from that twin's export."""
    from torchbert.electra import sample_tokens
    ln, mcfg, b = case.layer_norm_position, case.model_config, case.batches[0]
    tm = torch_model(mcfg, case.init).eval()
    tb = torch_batch(b)
    with torch.no_grad():
        ids = [tb[k] for k in _INPUTS]
        shared = tm.discriminator.electra.embeddings
        mlm, disc_pair, _ = tm(*[tb[k] for k in _PAIR_INPUTS])
        t = {"discriminator logits": tm.discriminator(*ids),
             "generator MLM logits (sparse)": tm.generator(*ids, tb["masked_positions"], shared),
             "generator MLM logits (dense)": tm.generator(*ids, None, shared),
             "discriminator logits on the sampled replacements": disc_pair}
        t = {k: v.numpy() for k, v in t.items()}
        corrupted = corrupted_ids(tb, sample_tokens(mlm, tb["sample_seeds"]))
    model, forward, _ = _jax_fns(mcfg, case.train.disc_weight)
    params = jax_params(mcfg, case.init)
    disc, sparse, dense, (_, disc_pair_j, _) = forward(params, b)
    j = dict(zip(t, (disc, sparse, dense, disc_pair_j)))
    rows = [_fwd_row(ln, f"forward {k}: torch vs jax", t[k], j[k]) for k in t]
    with tempfile.TemporaryDirectory(prefix="electra-export-", dir=case.workdir) as tmp:
        for twin, ours in (("torch", t), ("jax", j)):
            export = Path(tmp) / twin
            if twin == "torch":
                tm.save_pretrained(export)
            else:
                model.save_pretrained(export, jax.device_get(params))
            hf, bad = _hf_pair(export)
            h = _hf_outputs(hf, tb, corrupted)
            rows += [_fwd_row(ln, f"forward {k}: {twin} vs HF ({ROLES[k.split()[0]]})", h[k],
                              ours[k]) for k in t]
            rows.append(_export_row(ln, twin, bad))
    return rows


def _mismatch_row(ln: str, what: str, a, b, note: str) -> Row:
    a, b = np.asarray(a), np.asarray(b)
    n = int(np.sum(a != b))
    return Row(ln, what, float(n), n / a.size,
               f"SAMPLE_MISMATCHES: {T.SAMPLE_MISMATCHES} of {a.size}",
               n <= T.SAMPLE_MISMATCHES, note=note)


@highest_precision
def sampling_rows(case: Case) -> list[Row]:
    """The generator's samples (Gumbel-max, noise hashed from the batch's sample_seeds): both
    twins' sample_tokens against bertcore.model.sampling's numpy reference on the same logits,
    the twins on their own generators' logits, and the replaced-token labels of the pair."""
    from jaxbert.electra import sample_tokens as jax_sample
    from torchbert.electra import sample_tokens as torch_sample
    ln, mcfg, b = case.layer_norm_position, case.model_config, case.batches[0]
    tm = torch_model(mcfg, case.init).eval()
    tb = torch_batch(b)
    with torch.no_grad():
        mlm_t, _, replaced_t = tm(*[tb[k] for k in _PAIR_INPUTS])
    _, forward, _ = _jax_fns(mcfg, case.train.disc_weight)
    mlm_j, _, replaced_j = forward(jax_params(mcfg, case.init), b)[3]
    seeds = b["sample_seeds"]
    ref = reference_sample(mlm_t.numpy(), seeds)
    t = torch_sample(mlm_t, tb["sample_seeds"]).numpy()
    live = b["masked_weights"] > 0
    noise = int(np.sum((ref != mlm_t.numpy().argmax(-1))[live]))
    note = (f"{live.sum()} live slots of {live.size}; the noise moves {noise} of them off the "
            f"generator's argmax")
    rows = [_mismatch_row(ln, "sampled tokens, same logits: torch vs numpy reference", t, ref,
                          note),
            _mismatch_row(ln, "sampled tokens, same logits: jax vs numpy reference",
                          jax.jit(jax_sample)(jnp.asarray(mlm_t.numpy()), seeds), ref, note),
            _mismatch_row(ln, "sampled tokens, each twin's own generator logits: torch vs jax",
                          t, jax.jit(jax_sample)(mlm_j, seeds), note)]
    real = b["attention_mask"] > 0
    replaced = replaced_t.numpy()
    rows.append(_mismatch_row(
        ln, "replaced-token labels of the pair forward: torch vs jax", replaced,
        np.asarray(replaced_j),
        f"{int(replaced[real].sum())} of {int(real.sum())} real tokens replaced (a sample equal "
        f"to the original counts as original)"))
    return rows


@highest_precision
def loss_grad_rows(case: Case) -> list[Row]:
    """The pair's loss (generator MLM + disc_weight x discriminator BCE): torch vs jax, and each
    vs transformers' own losses from labels (ElectraForMaskedLM's MLM, ElectraForPreTraining's
    BCE on the sampled replacements); per-tensor gradients torch vs jax."""
    from torchbert.electra import electra_loss, sample_tokens
    ln, mcfg, b = case.layer_norm_position, case.model_config, case.batches[0]
    w = case.train.disc_weight
    tm = torch_model(mcfg, case.init).train()       # dropout rates are 0: training path, no noise
    tb = torch_batch(b)
    mlm, disc, replaced = tm(*[tb[k] for k in _PAIR_INPUTS])
    loss_t, _ = electra_loss(mlm, disc, replaced, tb, disc_weight=w)
    loss_t.backward()
    g_t = {n: p.grad.numpy() for n, p in tm.named_parameters()}
    _, _, loss_and_grad = _jax_fns(mcfg, w)
    loss_j, g = loss_and_grad(jax_params(mcfg, case.init), b)
    g_j = flax_to_hf(jax.tree_util.tree_map(np.asarray, g), mcfg)
    lt, lj = loss_t.item(), float(loss_j)
    rows = [Row(ln, "loss: torch vs jax", abs(lt - lj), abs(lt - lj) / abs(lt),
                f"LOSS_REL: rel <= {T.LOSS_REL:g}", abs(lt - lj) / abs(lt) <= T.LOSS_REL)]
    with tempfile.TemporaryDirectory(prefix="electra-export-", dir=case.workdir) as tmp:
        tm.eval().save_pretrained(Path(tmp))
        hf, _ = _hf_pair(Path(tmp))
    inputs = {k: tb[k].long() for k in _INPUTS}
    with torch.no_grad():
        corrupted = corrupted_ids(tb, sample_tokens(mlm, tb["sample_seeds"]))
        lh = float(hf["generator"](**inputs, labels=_hf_labels(b)).loss) + w * float(
            hf["discriminator"](**{**inputs, "input_ids": corrupted},
                                labels=replaced.detach().long()).loss)
    for name, l in (("torch", lt), ("jax", lj)):
        r = abs(l - lh) / abs(lh)
        rows.append(Row(ln, f"loss: {name} vs HF (its own losses from labels: generator MLM + "
                            f"{w:g} x discriminator)", abs(l - lh), r,
                        f"LOSS_REL: rel <= {T.LOSS_REL:g}", r <= T.LOSS_REL))
    # One row per model: the generator's gradients are ~50x smaller than the discriminator's
    # (disc_weight), so a floor from the pair's global norm would call too many of them zero.
    for role in ROLES:
        row = grad_row(ln, {n: g for n, g in g_t.items() if n.startswith(role + ".")}, g_j)
        row.quantity = row.quantity.replace("gradients:", f"gradients of the {role}:")
        rows.append(row)
    return rows
