"""Hugging Face BERT names and layouts, framework-free (numpy + safetensors).

Both twins use Hugging Face's parameter names (`bert.encoder.layer.3.attention.self.query.weight`
in torch, `bert/encoder/layer/3/attention/self/query/kernel` in Flax), so converting between them
is only the frameworks' conventions, all written once in `TABLE` and `LEAVES` below:

- Dense:     torch `weight` [out, in]  <->  Flax `kernel` [in, out]   (transpose)
- LayerNorm: torch `weight`            <->  Flax `scale`
- Embedding: torch `weight`            <->  Flax `embedding`
- the MLM decoder is tied to the word embeddings: `cls.predictions.decoder.weight` is the same
  matrix as `bert.embeddings.word_embeddings.weight` (and `cls.predictions.decoder.bias` the same
  vector as `cls.predictions.bias`), so neither is a parameter of its own (`TIED`).

`hf_to_flax` and `flax_to_hf` both call the single `_convert`, walking the same rules with the
source and destination swapped; a transpose is its own inverse, so a round trip is bit-exact.
Any pytree shaped like the params converts the same way: AdamW's first and second moments
(optax `mu`/`nu`, torch `exp_avg`/`exp_avg_sq`) map with exactly these rules.

This module also reads Hugging Face directories' weights: `model.safetensors`, or the shards
listed in `model.safetensors.index.json`. (A `pytorch_model.bin` is a pickle: only torchbert
reads it, with `torch.load(weights_only=True)`.) Users: torchbert.model, jaxbert.model and
parity (which converts whole training states with these same functions).

One module because the table, its checks and the files it describes change together: a new head
(classifier.*) or layout touches all three.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from bertcore.model.config import BertConfig, ElectraConfig, ModelConfig, ModernBertConfig
from bertcore.infra.errors import UserError
from bertcore.infra.files import Output, atomic_path, write_text_atomic

# ---- the table -------------------------------------------------------------------------------
# (module name in Hugging Face's BertForPreTraining, layer type). "{i}" is a layer index. The Flax
# path is the same name split at the dots; the layer type says how its leaves are named and laid
# out.
TABLE: tuple[tuple[str, str], ...] = (
    ("bert.embeddings.word_embeddings", "embed"),
    ("bert.embeddings.position_embeddings", "embed"),
    ("bert.embeddings.token_type_embeddings", "embed"),
    ("bert.embeddings.LayerNorm", "layernorm"),
    ("bert.encoder.layer.{i}.attention.self.query", "dense"),
    ("bert.encoder.layer.{i}.attention.self.key", "dense"),
    ("bert.encoder.layer.{i}.attention.self.value", "dense"),
    ("bert.encoder.layer.{i}.attention.output.dense", "dense"),
    ("bert.encoder.layer.{i}.attention.output.LayerNorm", "layernorm"),
    ("bert.encoder.layer.{i}.intermediate.dense", "dense"),
    ("bert.encoder.layer.{i}.output.dense", "dense"),
    ("bert.encoder.layer.{i}.output.LayerNorm", "layernorm"),
    ("bert.encoder.LayerNorm", "layernorm"),  # layer_norm_position="pre" only
    ("bert.pooler.dense", "dense"),
    ("cls.predictions.transform.dense", "dense"),
    ("cls.predictions.transform.LayerNorm", "layernorm"),
    ("cls.predictions", "bias"),  # the decoder's bias, a bare vector
    ("cls.seq_relationship", "dense"),
)

# ModernBertForMaskedLM's modules (transformers' names; the twins' torchbert/modernbert.py and
# jaxbert/modernbert.py use them). Which biases exist depends on the config (`norm_bias`,
# `attention_bias`, `mlp_bias`, `classifier_bias`, `decoder_bias`), and layer 0 has no attention
# norm (an identity in the reference): `param_table` lists exactly the present ones.
MODERNBERT_TABLE: tuple[tuple[str, str], ...] = (
    ("model.embeddings.tok_embeddings", "embed"),
    ("model.embeddings.norm", "layernorm"),
    ("model.layers.{i}.attn_norm", "layernorm"),
    ("model.layers.{i}.attn.Wqkv", "dense"),
    ("model.layers.{i}.attn.Wo", "dense"),
    ("model.layers.{i}.mlp_norm", "layernorm"),
    ("model.layers.{i}.mlp.Wi", "dense"),
    ("model.layers.{i}.mlp.Wo", "dense"),
    ("model.final_norm", "layernorm"),
    ("head.dense", "dense"),
    ("head.norm", "layernorm"),
    ("decoder", "bias"),  # the decoder's bias; its weight is the token embedding matrix
)
MODERNBERT_TIED = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}
MODERNBERT_HEAD_PREFIXES = ("head.", "decoder.")   # a ModernBertModel save has neither

# ELECTRA's modules (transformers' ElectraForPreTraining, ElectraForMaskedLM and
# ElectraForSequenceClassification; the twins' torchbert/electra.py and jaxbert/electra.py use
# them). The encoder is BERT's under `electra.` (no pooler); `embeddings_project` exists where
# embedding_size differs from hidden_size. Our pretraining model holds both, as
# `discriminator.<its HF names>` and `generator.<its HF names>`, the generator without embeddings
# of its own (it uses the discriminator's, as in the paper): ELECTRA_PREFIXES.
ELECTRA_TABLE: tuple[tuple[str, str], ...] = (
    ("electra.embeddings.word_embeddings", "embed"),
    ("electra.embeddings.position_embeddings", "embed"),
    ("electra.embeddings.token_type_embeddings", "embed"),
    ("electra.embeddings.LayerNorm", "layernorm"),
    ("electra.embeddings_project", "dense"),
    ("electra.encoder.layer.{i}.attention.self.query", "dense"),
    ("electra.encoder.layer.{i}.attention.self.key", "dense"),
    ("electra.encoder.layer.{i}.attention.self.value", "dense"),
    ("electra.encoder.layer.{i}.attention.output.dense", "dense"),
    ("electra.encoder.layer.{i}.attention.output.LayerNorm", "layernorm"),
    ("electra.encoder.layer.{i}.intermediate.dense", "dense"),
    ("electra.encoder.layer.{i}.output.dense", "dense"),
    ("electra.encoder.layer.{i}.output.LayerNorm", "layernorm"),
    ("discriminator_predictions.dense", "dense"),
    ("discriminator_predictions.dense_prediction", "dense"),
    ("generator_predictions.dense", "dense"),
    ("generator_predictions.LayerNorm", "layernorm"),
    ("generator_lm_head", "bias"),     # its weight is the word embedding matrix
    ("classifier.dense", "dense"),     # ElectraForSequenceClassification's head
    ("classifier.out_proj", "dense"),
)
ELECTRA_PREFIXES = ("discriminator.", "generator.")
ELECTRA_BUFFERS = ("electra.embeddings.position_ids", "electra.embeddings.token_type_ids")
# The names a transformers ElectraModel saves (no `electra.` prefix: it is the base model).
ELECTRA_BARE = ("embeddings.", "embeddings_project.", "encoder.")

# layer type -> ((torch leaf, Flax leaf, transpose), ...)
LEAVES: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "dense": (("weight", "kernel", True), ("bias", "bias", False)),
    "layernorm": (("weight", "scale", False), ("bias", "bias", False)),
    "embed": (("weight", "embedding", False),),
    "bias": (("bias", "bias", False),),
}

# Names a Hugging Face file may hold that are not parameters of their own.
TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
BUFFERS = ("bert.embeddings.position_ids",)  # saved by older transformers versions
# Heads a save may lack (BertModel.save_pretrained has no `cls.`; BertForMaskedLM no pooler).
HEAD_PREFIXES = ("cls.", "bert.pooler.")


@dataclass(frozen=True)
class Param:
    hf_name: str                 # "bert.encoder.layer.0.attention.self.query.weight"
    flax_path: tuple[str, ...]   # ("bert", "encoder", "layer", "0", "attention", "self", ...)
    transpose: bool              # Dense kernel: torch [out, in] is Flax [in, out]
    hf_shape: tuple[int, ...] | None = None


def _rule_regexes() -> list[tuple[re.Pattern, re.Pattern, str, str, bool]]:
    """Each (module, leaf) rule as a regex over HF names and one over Flax paths ("/"-joined)."""
    rules = []
    for module, layer_type in _ALL_MODULES:
        for hf_leaf, flax_leaf, transpose in LEAVES[layer_type]:
            hf = re.escape(f"{module}.{hf_leaf}").replace(re.escape("{i}"), r"(\d+)")
            fx = re.escape("/".join(module.split(".") + [flax_leaf])).replace(
                re.escape("{i}"), r"(\d+)")
            rules.append((re.compile(hf + "$"), re.compile(fx + "$"), module, flax_leaf,
                          transpose))
    return rules


_ALL_MODULES = TABLE + MODERNBERT_TABLE + tuple(
    (prefix + module, kind) for prefix in ("", *ELECTRA_PREFIXES) for module, kind in ELECTRA_TABLE)
_RULES = _rule_regexes()


def _shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """HF (torch) shape of every module's weight, by module template; biases are [out]."""
    H, I, V = config.hidden_size, config.intermediate_size, config.vocab_size
    return {
        "bert.embeddings.word_embeddings": (V, H),
        "bert.embeddings.position_embeddings": (config.max_position_embeddings, H),
        "bert.embeddings.token_type_embeddings": (config.type_vocab_size, H),
        "bert.encoder.layer.{i}.intermediate.dense": (I, H),
        "bert.encoder.layer.{i}.output.dense": (H, I),
        "cls.predictions": (V,),
        "cls.seq_relationship": (2, H),
    }


def _modernbert_param_table(config: ModernBertConfig) -> list[Param]:
    H, I, V = config.hidden_size, config.intermediate_size, config.vocab_size
    shapes = {"model.embeddings.tok_embeddings": (V, H), "model.layers.{i}.attn.Wqkv": (3 * H, H),
              "model.layers.{i}.mlp.Wi": (2 * I, H), "model.layers.{i}.mlp.Wo": (H, I),
              "decoder": (V,)}
    has_bias = {"model.layers.{i}.attn.Wqkv": config.attention_bias,
                "model.layers.{i}.attn.Wo": config.attention_bias,
                "model.layers.{i}.mlp.Wi": config.mlp_bias,
                "model.layers.{i}.mlp.Wo": config.mlp_bias,
                "head.dense": config.classifier_bias, "decoder": config.decoder_bias}
    out = []
    for module, layer_type in MODERNBERT_TABLE:
        layers = range(config.num_hidden_layers) if "{i}" in module else [None]
        bias = has_bias.get(module, config.norm_bias if layer_type == "layernorm" else True)
        for i in layers:
            if module.endswith("attn_norm") and i == 0:
                continue          # layer 0's attention input is the embeddings' norm already
            name = module.replace("{i}", str(i))
            w = shapes.get(module, (H, H) if layer_type == "dense" else (H,))
            for hf_leaf, flax_leaf, transpose in LEAVES[layer_type]:
                if hf_leaf == "bias" and not bias:
                    continue
                shape = w if hf_leaf == "weight" or layer_type == "bias" else (w[0],)
                out.append(Param(f"{name}.{hf_leaf}", tuple(name.split(".")) + (flax_leaf,),
                                 transpose, shape))
    return out


def electra_param_table(config: ElectraConfig, role: str = "pretraining") -> list[Param]:
    """Every parameter of one ELECTRA model, in model order, with its HF shape: role
    "discriminator" (ElectraForPreTraining(config)), "generator" (ElectraForMaskedLM of
    `config.generator_config()`), or "pretraining" (the twins' ElectraPreTrainingModel: both,
    as `discriminator.*` and `generator.*`, the generator's embeddings being the
    discriminator's)."""
    if role == "pretraining":
        return ([_prefixed(p, "discriminator.") for p in electra_param_table(config,
                                                                             "discriminator")]
                + [_prefixed(p, "generator.") for p in electra_param_table(config, "generator")
                   if not p.hf_name.startswith("electra.embeddings.")])
    return electra_model_table(config.generator_config() if role == "generator" else config,
                               role)


def electra_model_table(own: ElectraConfig, role: str) -> list[Param]:
    """The parameters of one transformers ELECTRA model whose config.json is `own` (for a
    generator, the generator's own config: what its directory holds)."""
    E, H, I, V = own.embedding_size, own.hidden_size, own.intermediate_size, own.vocab_size
    shapes = {"electra.embeddings.word_embeddings": (V, E),
              "electra.embeddings.position_embeddings": (own.max_position_embeddings, E),
              "electra.embeddings.token_type_embeddings": (own.type_vocab_size, E),
              "electra.embeddings.LayerNorm": (E,), "electra.embeddings_project": (H, E),
              "electra.encoder.layer.{i}.intermediate.dense": (I, H),
              "electra.encoder.layer.{i}.output.dense": (H, I),
              "discriminator_predictions.dense_prediction": (1, H),
              "generator_predictions.dense": (E, H), "generator_predictions.LayerNorm": (E,),
              "generator_lm_head": (V,)}
    heads = {"discriminator": "discriminator_predictions.",
             "generator": ("generator_predictions.", "generator_lm_head")}[role]
    out = []
    for module, layer_type in ELECTRA_TABLE:
        if not module.startswith(("electra.", *((heads,) if isinstance(heads, str) else heads))):
            continue
        if module == "electra.embeddings_project" and E == H:
            continue
        layers = range(own.num_hidden_layers) if "{i}" in module else [None]
        for i in layers:
            name = module.replace("{i}", str(i))
            w = shapes.get(module, (H, H) if layer_type == "dense" else (H,))
            for hf_leaf, flax_leaf, transpose in LEAVES[layer_type]:
                shape = w if hf_leaf == "weight" or layer_type == "bias" else (w[0],)
                out.append(Param(f"{name}.{hf_leaf}", tuple(name.split(".")) + (flax_leaf,),
                                 transpose, shape))
    return out


def _prefixed(p: Param, prefix: str) -> Param:
    return Param(prefix + p.hf_name, tuple(prefix.rstrip(".").split(".")) + p.flax_path,
                 p.transpose, p.hf_shape)


def param_table(config: ModelConfig) -> list[Param]:
    """Every parameter of `BertForPreTraining(config)` (or `ModernBertForMaskedLM(config)`, or
    ELECTRA's generator + discriminator), in model order, with its HF shape."""
    if isinstance(config, ModernBertConfig):
        return _modernbert_param_table(config)
    if isinstance(config, ElectraConfig):
        return electra_param_table(config)
    H = config.hidden_size
    shapes = _shapes(config)
    out = []
    for module, layer_type in TABLE:
        if module == "bert.encoder.LayerNorm" and config.layer_norm_position != "pre":
            continue
        layers = range(config.num_hidden_layers) if "{i}" in module else [None]
        for i in layers:
            name = module.replace("{i}", str(i))
            for hf_leaf, flax_leaf, transpose in LEAVES[layer_type]:
                w = shapes.get(module, (H, H) if layer_type == "dense" else (H,))
                shape = w if hf_leaf == "weight" or layer_type == "bias" else (w[0],)
                out.append(Param(f"{name}.{hf_leaf}", tuple(name.split(".")) + (flax_leaf,),
                                 transpose, shape))
    return out


def hf_names(config: BertConfig) -> list[str]:
    return [p.hf_name for p in param_table(config)]


def _lookup(key: str, to_flax: bool) -> tuple[str, bool] | None:
    """Map one name across, using the rule that matches it: (destination name, transpose)."""
    for hf_re, flax_re, module, flax_leaf, transpose in _RULES:
        m = (hf_re if to_flax else flax_re).match(key)
        if m is None:
            continue
        name = module
        for idx in m.groups():
            name = name.replace("{i}", idx, 1)
        if to_flax:
            return "/".join(name.split(".") + [flax_leaf]), transpose
        hf_leaf = next(h for h, f, _ in LEAVES[dict(_ALL_MODULES)[module]]
                       if f == flax_leaf)
        return f"{name}.{hf_leaf}", transpose
    return None


def _convert(flat: Mapping[str, Any], to_flax: bool) -> tuple[dict[str, np.ndarray], list[str]]:
    """The one conversion: rename each leaf by the table and transpose Dense kernels.

    Keys are HF dotted names (to_flax) or "/"-joined Flax paths (not to_flax). Returns the
    converted leaves and the keys no rule matched.
    """
    out, unknown = {}, []
    for key, value in flat.items():
        hit = _lookup(key, to_flax)
        if hit is None:
            unknown.append(key)
            continue
        name, transpose = hit
        a = np.asarray(value)
        out[name] = np.ascontiguousarray(a.T) if transpose else a
    return out, unknown


# ELECTRA's tied copies: a generator's decoder is its word embedding matrix; in the pretraining
# model the generator's embeddings (and so its decoder) are the discriminator's.
ELECTRA_TIED = {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}
ELECTRA_PAIR_TIED = {
    "generator.generator_lm_head.weight": "discriminator.electra.embeddings.word_embeddings.weight",
    **{f"generator.electra.embeddings.{m}.{leaf}": f"discriminator.electra.embeddings.{m}.{leaf}"
       for m, leaf in (("word_embeddings", "weight"), ("position_embeddings", "weight"),
                       ("token_type_embeddings", "weight"), ("LayerNorm", "weight"),
                       ("LayerNorm", "bias"))}}
# What an ELECTRA pretraining state may lack: a model made from one of the two published models
# (the other starts fresh), or an ElectraModel save (no heads).
ELECTRA_HEAD_PREFIXES = ("generator.", "discriminator.discriminator_predictions.")


def tied_names(config: ModelConfig | None) -> dict[str, str]:
    """Tied copy -> the parameter it is, for this architecture."""
    if isinstance(config, ElectraConfig):
        return ELECTRA_PAIR_TIED
    return MODERNBERT_TIED if isinstance(config, ModernBertConfig) else TIED


def head_prefixes(config: ModelConfig) -> tuple[str, ...]:
    """Names an encoder-only save may lack, for this architecture."""
    if isinstance(config, ElectraConfig):
        return ELECTRA_HEAD_PREFIXES
    return MODERNBERT_HEAD_PREFIXES if isinstance(config, ModernBertConfig) else HEAD_PREFIXES


def normalize_hf_names(state: Mapping[str, Any], config: ModelConfig | None = None
                       ) -> dict[str, np.ndarray]:
    """Bring a HF state dict to canonical names: add the `bert.` prefix that BertModel saves lack
    (`model.` for ModernBertModel's, `electra.` for ElectraModel's), rename TF-era `gamma`/`beta`,
    drop buffers, and check tied copies equal what they tie to. The architecture is `config`'s,
    else read from the names."""
    if config is None and any("tok_embeddings" in k for k in state):
        config = ModernBertConfig
    if isinstance(config, ElectraConfig) or (config is None and any(
            k.startswith(("electra.", "discriminator.electra.")) for k in state)):
        tied = {**ELECTRA_TIED, **ELECTRA_PAIR_TIED}
        named = {(f"electra.{k}" if k.startswith(ELECTRA_BARE) else k): np.asarray(v)
                 for k, v in state.items()}
        return _check_tied({k: v for k, v in named.items() if not k.endswith(ELECTRA_BUFFERS)},
                           tied)
    if isinstance(config, ModernBertConfig) or config is ModernBertConfig:
        return _check_tied({k if k.startswith(("model.", "head.", "decoder.", "classifier."))
                            else f"model.{k}": np.asarray(v) for k, v in state.items()},
                           MODERNBERT_TIED)
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        name = key if key.startswith(("bert.", "cls.")) else f"bert.{key}"
        name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
        if name in BUFFERS:
            continue
        out[name] = np.asarray(value)
    return _check_tied(out, TIED)


def _check_tied(out: dict[str, np.ndarray], tied: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Drop each tied copy, after checking it equals the parameter it ties to."""
    for copy, source in tied.items():
        if copy in out:
            tied = out.pop(copy)
            if source in out and not np.array_equal(tied, out[source]):
                raise UserError(f"{copy} differs from {source}: this checkpoint's MLM decoder is "
                                f"not tied to its {source.split('.')[-2]}, which this model "
                                f"requires; re-save it with tied weights")
            out.setdefault(source, tied)
    return out


def fail_names(what: str, names: Iterable[str], fix: str) -> None:
    """Raise one UserError listing `names` (the first 12) when there are any."""
    names = sorted(names)
    if names:
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise UserError(f"{what}: {shown}; {fix}")


def check_hf_state(state: Mapping[str, Any], config: BertConfig,
                   missing_ok: tuple[str, ...] = (), source: str = "the checkpoint") -> list[str]:
    """Check canonical HF names (`normalize_hf_names`) against the parameters of `config`.

    Unknown, missing (except names starting with a prefix in `missing_ok`) or wrongly shaped
    parameters raise one `UserError` listing them. Returns the missing names that were allowed
    (sorted), which the caller initialises fresh."""
    expected = {p.hf_name: p for p in param_table(config)}
    kind = (f"layer_norm_position={config.layer_norm_position!r}" if isinstance(config, BertConfig)
            else "ELECTRA" if isinstance(config, ElectraConfig) else "ModernBERT")
    fail_names(f"{source} has unexpected parameter names for this config ({kind})",
               set(state) - set(expected),
               "check that the checkpoint and config.json belong together")
    missing = set(expected) - set(state)
    fail_names(f"{source} has missing parameters", [n for n in missing
                                                    if not n.startswith(missing_ok)],
               "the checkpoint is incomplete or from another model")
    fail_names(f"{source} has parameters with the wrong shape", [
        f"{n} {tuple(np.shape(a))} (config wants {expected[n].hf_shape})"
        for n, a in state.items() if tuple(np.shape(a)) != expected[n].hf_shape],
        "config.json does not match the weights")
    return sorted(missing)


def hf_to_flax(state: Mapping[str, Any], config: BertConfig,
               missing_ok: tuple[str, ...] = ()) -> dict:
    """HF/torch state dict (name -> array) -> nested Flax params dict for `config`.

    Names may lack the `bert.` prefix; tied decoder copies are checked and dropped; the names
    are checked by `check_hf_state`. Missing names (allowed by `missing_ok`) are simply absent
    from the result.
    """
    state = normalize_hf_names(state, config)
    check_hf_state(state, config, missing_ok)
    flat, _ = _convert(state, to_flax=True)
    return unflatten(flat)


def flax_to_hf(params: Mapping[str, Any], config: BertConfig | None = None,
               include_tied: bool = False) -> dict[str, np.ndarray]:
    """Nested Flax params (or AdamW moments shaped like them) -> HF name -> numpy array.

    With `config`, missing parameters are an error too. `include_tied` adds the tied
    `cls.predictions.decoder.{weight,bias}` copies that a strict torch `load_state_dict` wants
    (Hugging Face's own files leave them out).
    """
    flat = flatten(params)
    out, unknown = _convert(flat, to_flax=False)
    fail_names("unknown Flax parameter paths", unknown,
               "is this a jaxbert BertForPreTraining or ModernBertForMaskedLM tree?")
    if config is not None:
        fail_names("missing parameters", set(hf_names(config)) - set(out),
                   "the parameter tree does not match the config")
    if include_tied:
        for copy, source in tied_names(config).items():
            if source in out:
                out[copy] = out[source]
    return out


# ---- nested <-> flat ("/"-joined paths); works on dicts and flax FrozenDicts --------------------

def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, path))
        else:
            out[path] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def fresh_params(config: BertConfig, names: Iterable[str], seed: int = 0) -> dict[str, np.ndarray]:
    """HF's initialisation (N(0, initializer_range) weights, zero biases, LayerNorm 1/0) for the
    given parameters: heads a BertModel or BertForMaskedLM save does not have."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in param_table(config):
        if p.hf_name in names and isinstance(config, ModernBertConfig):
            out[p.hf_name] = _modernbert_fresh(p, config, rng)
        elif p.hf_name in names:
            leaf = p.flax_path[-1]
            out[p.hf_name] = (np.ones(p.hf_shape, np.float32) if leaf == "scale" else
                              np.zeros(p.hf_shape, np.float32) if leaf == "bias" else
                              rng.normal(0.0, config.initializer_range, p.hf_shape)
                              .astype(np.float32))
    return out


def _modernbert_fresh(p: Param, config: ModernBertConfig, rng: np.random.Generator) -> np.ndarray:
    """transformers' ModernBERT initialisation of one parameter: weights ~ N(0, std) truncated at
    +-initializer_cutoff_factor * std, std = initializer_range, or `config.out_std` for the
    output projections and the MLM head's dense, or `config.classifier_std` for a sequence
    classifier's output layer; biases 0, norms 1."""
    leaf = p.flax_path[-1]
    if leaf in ("scale", "bias"):
        return (np.ones if leaf == "scale" else np.zeros)(p.hf_shape, np.float32)
    std = config.initializer_range
    if p.hf_name.endswith("Wo.weight") or p.hf_name == "head.dense.weight":
        std = config.out_std
    elif p.hf_name == f"{CLASSIFIER}.weight":
        std = config.classifier_std
    bound = config.initializer_cutoff_factor * std
    w = rng.normal(0.0, std, p.hf_shape)
    while (out := np.abs(w) > bound).any():       # redraw the tails: a truncated normal
        w[out] = rng.normal(0.0, std, int(out.sum()))
    return w.astype(np.float32)


# ---- reading a Hugging Face directory's weights ------------------------------------------------

def safetensors_files(path: Path) -> list[Path] | None:
    """The safetensors file(s) of an HF directory, or None when it has none."""
    files = [path / "model.safetensors"]
    index = path / "model.safetensors.index.json"
    if not files[0].is_file() and index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{index} is unreadable ({e}); re-download or re-save the model")
        files = [path / name for name in sorted(set(weight_map.values()))]
    return files if all(f.is_file() for f in files) else None


def read_safetensors(files: list[Path]) -> dict[str, np.ndarray]:
    """All tensors of `files` as numpy arrays (HF names, as stored)."""
    from safetensors.numpy import load_file

    state: dict[str, np.ndarray] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # safetensors raises its own error type for corrupt files
            raise UserError(f"{f} is not a readable safetensors file ({e}); re-save it")
    return state


def read_hf_safetensors(path: Path) -> tuple[dict[str, np.ndarray], Path] | None:
    """(tensors, the file they came from) of a HF directory's safetensors weights, or None when
    it has none (a torch `pytorch_model.bin` is torchbert's to read)."""
    files = safetensors_files(path)
    if not files:
        return None
    return read_safetensors(files), (files[0] if len(files) == 1
                                     else path / "model.safetensors.index.json")


# ---- the sequence-classification head (BertForSequenceClassification) --------------------------
# Added for `classify.py` in both twins; the functions above keep BertForPreTraining's table.
# BertForSequenceClassification holds `bert.*` (embeddings, encoder, pooler: no `cls.*` heads)
# and `classifier`, a Dense H -> num_labels on the pooled [CLS] vector (after dropout).
# ModernBertForSequenceClassification holds `model.*`, the MLM head's transform `head.*` (dense,
# norm: applied to the [CLS] or mean-pooled vector) and `classifier` (no `decoder.*`).
CLASSIFIER = "classifier"


def classifier_param_table(config: ModelConfig, num_labels: int) -> list[Param]:
    """Every parameter of `BertForSequenceClassification(config, num_labels)` (or
    `ModernBertForSequenceClassification`: the encoder `model.*`, the pooled vector's `head.*`
    and the classifier), in model order."""
    H = config.hidden_size
    if isinstance(config, ElectraConfig):
        # ElectraForSequenceClassification: the discriminator's encoder, then its own head
        # (dense + GELU on [CLS], out_proj; no pooler).
        body = [p for p in electra_param_table(config, "discriminator")
                if p.hf_name.startswith("electra.")]
        return body + [Param(f"{CLASSIFIER}.{m}.{leaf}", (CLASSIFIER, m, fx), t, shape)
                       for m, rows in (("dense", H), ("out_proj", num_labels))
                       for leaf, fx, t, shape in (("weight", "kernel", True, (rows, H)),
                                                  ("bias", "bias", False, (rows,)))]
    body = [p for p in param_table(config) if p.hf_name.startswith(("bert.", "model.", "head."))]
    return body + [Param(f"{CLASSIFIER}.weight", (CLASSIFIER, "kernel"), True, (num_labels, H)),
                   Param(f"{CLASSIFIER}.bias", (CLASSIFIER, "bias"), False, (num_labels,))]


def fresh_classifier_params(config: ModelConfig, num_labels: int, names: Iterable[str],
                            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """transformers' initialisation of the named parameters of the config's sequence classifier
    (the parts a pretrained model's weights lack), drawn from `rng` in model order: BERT's
    N(0, initializer_range) weights and zero biases (the pooler, the classifier); ModernBERT's
    truncated normals (the head's dense and norm, the classifier)."""
    names = set(names)
    out = {}
    for p in classifier_param_table(config, num_labels):
        if p.hf_name not in names:
            continue
        if isinstance(config, ModernBertConfig):
            out[p.hf_name] = _modernbert_fresh(p, config, rng)
        else:
            out[p.hf_name] = (np.zeros(p.hf_shape, np.float32) if p.hf_name.endswith("bias") else
                              rng.normal(0.0, config.initializer_range, p.hf_shape)
                              .astype(np.float32))
    return out


def check_classifier_state(state: Mapping[str, Any], config: BertConfig, num_labels: int,
                           source: str = "the checkpoint") -> None:
    """Exactly the classifier's parameters with its shapes (canonical HF names), or one
    UserError naming the unknown, missing and misshaped ones."""
    expected = {p.hf_name: p for p in classifier_param_table(config, num_labels)}
    fail_names(f"{source} has unexpected parameter names for a sequence classifier",
               set(state) - set(expected), "check that the weights and config.json belong "
                                           "together")
    fail_names(f"{source} has missing parameters", set(expected) - set(state),
               "the checkpoint is incomplete or from another model")
    fail_names(f"{source} has parameters with the wrong shape", [
        f"{n} {tuple(np.shape(a))} (config wants {expected[n].hf_shape})"
        for n, a in state.items() if tuple(np.shape(a)) != expected[n].hf_shape],
        "config.json (vocab_size, sizes, id2label) does not match the weights")


def classifier_hf_to_flax(state: Mapping[str, Any], config: BertConfig, num_labels: int) -> dict:
    """A complete classifier state (HF names, torch layout) -> nested Flax params."""
    check_classifier_state(state, config, num_labels)
    return unflatten({"/".join(p.flax_path): (np.ascontiguousarray(np.asarray(state[p.hf_name]).T)
                                              if p.transpose else np.asarray(state[p.hf_name]))
                      for p in classifier_param_table(config, num_labels)})


def classifier_flax_to_hf(params: Mapping[str, Any], config: BertConfig, num_labels: int
                          ) -> dict[str, np.ndarray]:
    """Nested Flax classifier params (or AdamW moments shaped like them) -> HF name -> array."""
    flat = flatten(params)
    table = classifier_param_table(config, num_labels)
    fail_names("unknown Flax parameter paths", set(flat) - {"/".join(p.flax_path) for p in table},
               "is this a jaxbert BertForSequenceClassification tree?")
    out = {}
    for p in table:
        path = "/".join(p.flax_path)
        if path not in flat:
            fail_names("missing parameters", [p.hf_name], "the tree does not match the config")
        a = np.asarray(flat[path])
        out[p.hf_name] = np.ascontiguousarray(a.T) if p.transpose else a
    return out


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")
# A Hugging Face directory as the output of parity.convert (--to hf, or a weights-only export):
# what its --overwrite may replace. README.md is the model card (bertcore.modeldirs.card),
# classifier.json a classifier's best epoch (bertcore.classify.data).
HF_OUTPUT = Output("a Hugging Face model directory",
                   frozenset({"config.json", "model.safetensors", "README.md", "classifier.json",
                              *TOKENIZER_FILES}))


def save_hf_files(out: Path, config: BertConfig, params: Mapping[str, Any],
                  tokenizer: Path | None = None, role: str = "pretraining") -> None:
    """Write a Hugging Face BERT directory's files into the existing directory `out`:
    config.json, model.safetensors (HF names in model order, the tied decoder stored once, as HF
    saves it) and the tokenizer's files, so `transformers.BertForPreTraining.from_pretrained(out)`
    and both twins load it. Each file is replaced in one rename (files.atomic_path), the weights
    before config.json; a whole new directory is `save_hf_directory`'s (or a caller's
    files.replace_output). For ELECTRA, `role` "discriminator" or "generator" writes that one
    model from its own HF-named state (`electra_split`), as transformers' ElectraForPreTraining
    or ElectraForMaskedLM."""
    from safetensors.numpy import save_file

    names = (hf_names(config) if role == "pretraining"
             else [p.hf_name for p in electra_param_table(config, role)])
    fail_names("missing parameters", set(names) - set(params), "the state is incomplete")
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({n: np.ascontiguousarray(params[n], dtype=np.float32) for n in names},
                  str(tmp), metadata={"format": "pt"})
    if role == "pretraining":
        config.to_json_file(out / "config.json")
    else:
        own = config.generator_config() if role == "generator" else config
        write_text_atomic(out / "config.json",
                          json.dumps(own.to_dict(role), indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        for f in TOKENIZER_FILES:
            if (tokenizer / f).is_file():
                with atomic_path(out / f) as tmp:
                    shutil.copy2(tokenizer / f, tmp)


def save_hf_directory(path: str | os.PathLike, config: BertConfig, params: Mapping[str, Any],
                      tokenizer: Path | None = None, role: str = "pretraining") -> None:
    """Both twins' `save_pretrained`: `save_hf_files` into `path`. A new directory is built
    beside and renamed into place whole (files.atomic_path); in an existing one each file is
    replaced on its own and whatever else it holds (a tokenizer, a model card) is kept, as
    transformers' `save_pretrained` does."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file; a Hugging Face model is a directory: choose another "
                        f"path")
    if path.is_dir():
        save_hf_files(path, config, params, tokenizer, role)
        return
    with atomic_path(path, is_dir=True) as tmp:
        save_hf_files(tmp, config, params, tokenizer, role)


# ---- ELECTRA: one pretraining state <-> the two Hugging Face models -----------------------------

ELECTRA_ROLES = ("discriminator", "generator")


def electra_split(state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A pretraining state (`discriminator.*`, `generator.*` HF names) -> the HF states of
    ElectraForPreTraining and ElectraForMaskedLM: the prefixes dropped, and the generator given
    the shared embeddings under its own names (each exported model is whole)."""
    out: dict[str, dict[str, Any]] = {role: {} for role in ELECTRA_ROLES}
    for k, v in state.items():
        for role in ELECTRA_ROLES:
            if k.startswith(role + "."):
                out[role][k[len(role) + 1:]] = v
    for k, v in out["discriminator"].items():
        if k.startswith("electra.embeddings."):
            out["generator"].setdefault(k, v)
    return out


def electra_join(parts: Mapping[str, Mapping[str, Any] | None], config: ElectraConfig,
                 sources: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The HF states of the two ELECTRA models (either may be None: it is left out, for the
    caller to initialise) -> one pretraining state (`discriminator.*`, `generator.*`). The
    generator's embeddings are the discriminator's (shared, as in the paper): where both are
    given they must be equal, else one UserError; a generator alone gives them to both."""
    disc = normalize_hf_names(parts.get("discriminator") or {}, config)
    gen = normalize_hf_names(parts.get("generator") or {}, config)
    emb = "electra.embeddings."
    shared = {k: v for k, v in gen.items() if k.startswith(emb)}
    for k, v in shared.items():
        if k in disc and (np.shape(disc[k]) != np.shape(v) or not np.array_equal(disc[k], v)):
            raise UserError(f"{sources.get('generator', 'the generator')} and "
                            f"{sources.get('discriminator', 'the discriminator')} have different "
                            f"embeddings ({k}); ELECTRA's generator and discriminator share "
                            f"them. Start from the discriminator alone (the generator then "
                            f"starts fresh), or from a pair trained together")
        disc.setdefault(k, v)
    out = {f"discriminator.{k}": v for k, v in disc.items()}
    out.update({f"generator.{k}": v for k, v in gen.items() if not k.startswith(emb)})
    return out


def check_electra_state(state: Mapping[str, Any], own: ElectraConfig, role: str,
                        source: str = "the checkpoint") -> list[str]:
    """Check one transformers ELECTRA model's canonical HF names (`normalize_hf_names`) against
    `electra_model_table(own, role)`: unknown, misshaped or missing encoder parameters raise one
    UserError; missing heads (an ElectraModel save) are allowed. Returns the missing names."""
    table = {p.hf_name: p for p in electra_model_table(own, role)}
    fail_names(f"{source} has unexpected parameter names for an ELECTRA {role}",
               set(state) - set(table), "is it the other ELECTRA model, or another model?")
    missing = sorted(set(table) - set(state))
    fail_names(f"{source} has missing parameters", [n for n in missing if n.startswith("electra.")],
               "the checkpoint is incomplete or from another model")
    fail_names(f"{source} has parameters with the wrong shape", [
        f"{n} {tuple(np.shape(a))} (config wants {table[n].hf_shape})"
        for n, a in state.items() if tuple(np.shape(a)) != table[n].hf_shape],
        "config.json does not match the weights")
    return missing


def table_to_flax(state: Mapping[str, Any], table: list[Param]) -> dict:
    """HF-named arrays (torch layout) of the table's parameters that `state` has -> nested Flax
    params (Dense kernels transposed)."""
    return unflatten({"/".join(p.flax_path): (np.ascontiguousarray(np.asarray(state[p.hf_name]).T)
                                              if p.transpose else np.asarray(state[p.hf_name]))
                      for p in table if p.hf_name in state})


def table_to_hf(params: Mapping[str, Any], table: list[Param]) -> dict[str, np.ndarray]:
    """Nested Flax params (or AdamW moments shaped like them) -> HF name -> array, by `table`;
    a path the table lacks, or a parameter the tree lacks, is one UserError."""
    flat = flatten(params)
    fail_names("unknown Flax parameter paths", set(flat) - {"/".join(p.flax_path) for p in table},
               "the parameter tree does not match the config")
    fail_names("missing parameters", [p.hf_name for p in table
                                      if "/".join(p.flax_path) not in flat],
               "the parameter tree does not match the config")
    out = {}
    for p in table:
        a = np.asarray(flat["/".join(p.flax_path)])
        out[p.hf_name] = np.ascontiguousarray(a.T) if p.transpose else a
    return out
