"""ModernBERT for masked LM in JAX/Flax linen (Warner et al. 2024, arXiv 2412.13663).

The twin of `torchbert/modernbert.py`, with transformers' `ModernBertForMaskedLM` parameter
names split at the dots (`model/layers/1/attn/Wqkv/kernel` is `model.layers.1.attn.Wqkv.weight`),
so bertcore.model.hf converts it as it converts BERT. Built from jaxbert/model.py's pieces (Dropout,
_Dense, gelu, the explicit attention path, the tied decoder, the loss); what ModernBERT changes:

- no position or token-type tables: rotary position embeddings (RoPE) on queries and keys, with
  a different theta in global and local layers;
- pre-norm layers (layer 0's attention norm is the identity: its input is the embeddings' norm),
  a final norm; no biases by default (`norm_bias`, `attention_bias`, `mlp_bias`);
- one fused `Wqkv` projection; local layers attend within a sliding window of
  `local_attention` tokens, every `global_attn_every_n_layers`-th layer (from 0) globally;
- a GeGLU feed-forward: `Wi` to 2 x intermediate, gelu(input) * gate, `Wo`;
- truncated-normal initialisation; no next-sentence head.

Shapes: B = batch, L = sequence length, H = hidden size, N = heads, D = head size,
I = intermediate size, P = masked positions per sequence, V = vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertcore.model.attention import rope_cos_sin, window_mask
from bertcore.model.config import ModernBertConfig

from .model import _Module as _BertModule
from .model import (BertForPreTraining, Dropout, _Dense, _jitted_init, add_bias,
                    attention_probs, gelu, load_hf_directory, merge_hf_params, tied_logits)

Dtype = Any

__all__ = ["ModernBertEmbeddings", "apply_rotary", "ModernBertAttention", "ModernBertMLP",
           "ModernBertEncoderLayer", "ModernBertModel", "ModernBertPredictionHead",
           "ModernBertForMaskedLM", "init_params", "merge_hf_params", "from_pretrained"]


def _trunc_normal(config: ModernBertConfig, std: float):
    """transformers' ModernBERT init: N(0, std) truncated at +-initializer_cutoff_factor * std.
    jax's truncated_normal draws a standard normal truncated to [lower, upper] and multiplies by
    `stddev`, as torch's trunc_normal_(std=std, a=-c*std, b=c*std) (the truncated samples' own
    std is smaller than `std` in both)."""
    c = config.initializer_cutoff_factor
    return nn.initializers.truncated_normal(stddev=std, lower=-c, upper=c)


class _Module(_BertModule):
    """jaxbert.model's _Module (config, dtype, param_dtype, remat, pad_vocab_to, `_shared`) with
    ModernBERT's factories: truncated-normal Dense of a given std with or without bias, and
    LayerNorm with `norm_eps` and a bias iff `norm_bias`."""
    config: ModernBertConfig

    def _dense(self, features: int, std: float, use_bias: bool) -> nn.Dense:
        return _Dense(features, use_bias=use_bias, kernel_init=_trunc_normal(self.config, std),
                      dtype=self.dtype, param_dtype=self.param_dtype)  # bias: zeros

    def _layer_norm(self) -> nn.LayerNorm:
        return nn.LayerNorm(epsilon=self.config.norm_eps, use_bias=self.config.norm_bias,
                            dtype=self.dtype, param_dtype=self.param_dtype)  # fp32 statistics


class ModernBertEmbeddings(_Module):
    """Token embeddings, then LayerNorm and dropout: positions enter through RoPE instead."""

    def setup(self):
        c = self.config
        # transformers' init draws the whole table, [PAD] row included (its trunc_normal_
        # overwrites nn.Embedding's zeroed padding row).
        self.tok_embeddings = nn.Embed(c.vocab_size, c.hidden_size,
                                       embedding_init=_trunc_normal(c, c.initializer_range),
                                       dtype=self.dtype, param_dtype=self.param_dtype)
        self.norm = self._layer_norm()
        self.drop = Dropout(rate=c.embedding_dropout)

    def __call__(self, input_ids, deterministic: bool = True):
        x = self.norm(self.tok_embeddings(input_ids))                            # (B, L, H)
        return self.drop(x, deterministic=deterministic)


def apply_rotary(x, cos, sin):
    """RoPE: x * cos + rotate_half(x) * sin in float32, back in x's dtype. x (B, L, N, D);
    cos, sin (L, D) (bertcore.model.attention.rope_cos_sin). rotate_half(x) = cat(-x2, x1) of the
    two halves of the features: pair (i, i + D/2) turns by its position's angle."""
    xf = x.astype(jnp.float32)
    x1, x2 = jnp.split(xf, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos, sin = jnp.asarray(cos)[None, :, None, :], jnp.asarray(sin)[None, :, None, :]
    return (xf * cos + rotated * sin).astype(x.dtype)


class ModernBertAttention(_Module):
    """Self-attention with one fused Wqkv projection, RoPE on queries and keys (this layer's
    theta), the key-padding mask the encoder passes, and in local layers the sliding window:
    jax.nn.dot_product_attention's `local_window_size` (the window as the attention op's own
    argument, which a fused kernel can use; XLA builds the same mask on a CPU), or on the explicit
    dropout path bertcore.model.attention's window_mask. (Torch twin: SDPA takes the window as part
    of a boolean mask; it has no window argument.)"""
    layer: int = 0

    def setup(self):
        c = self.config
        H = c.hidden_size
        self.Wqkv = self._dense(3 * H, c.initializer_range, c.attention_bias)
        self.Wo = self._dense(H, c.out_std, c.attention_bias)
        self.dropout = Dropout(rate=c.attention_dropout)    # on the probabilities
        self.out_drop = Dropout(rate=c.attention_dropout)   # after Wo

    def __call__(self, x, mask, deterministic: bool = True):
        """x (B, L, H); mask (B, 1, 1, L) bool, True where the key is a real token."""
        c = self.config
        local = not c.is_global(self.layer)
        B, L, H = x.shape
        # [q | k | v] along the features, each split into heads: transformers' view(B, L, 3, N, D)
        qkv = self.Wqkv(x).reshape(B, L, 3, c.num_attention_heads, c.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]                      # (B, L, N, D)
        cos, sin = rope_cos_sin(c.rope_theta(self.layer), c.head_dim, L)        # constants
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        half = c.local_attention // 2          # query i sees keys i - half .. i + half
        if deterministic or self.dropout.rate == 0.0:
            # The fused op with the boolean mask, as BertSelfAttention (jaxbert/model.py).
            ctx = jax.nn.dot_product_attention(
                q, k, v, mask=mask, local_window_size=(half, half) if local else None)
        else:
            if local:
                mask = mask & jnp.asarray(window_mask(L, c.local_attention))     # (B, 1, L, L)
            probs = self.dropout(attention_probs(q, k, mask).astype(v.dtype),
                                 deterministic=False)                            # (B, N, L, L)
            ctx = jnp.einsum("bnts,bsnd->btnd", probs, v)
        return self.out_drop(self.Wo(ctx.reshape(B, L, H)), deterministic=deterministic)


class ModernBertMLP(_Module):
    """GeGLU feed-forward: Wi to 2 x intermediate, split into (input, gate),
    Wo(drop(gelu(input) * gate))."""

    def setup(self):
        c = self.config
        self.Wi = self._dense(2 * c.intermediate_size, c.initializer_range, c.mlp_bias)
        self.drop = Dropout(rate=c.mlp_dropout)
        self.Wo = self._dense(c.hidden_size, c.out_std, c.mlp_bias)

    def __call__(self, x, deterministic: bool = True):
        inp, gate = jnp.split(self.Wi(x), 2, axis=-1)                            # (B, L, I) x2
        return self.Wo(self.drop(gelu(inp) * gate, deterministic=deterministic))


class ModernBertEncoderLayer(_Module):
    """Pre-norm block: x + attn(attn_norm(x)), then + mlp(mlp_norm(x)). Layer 0 has no
    attn_norm (no parameter): its input is already the embeddings' norm."""
    layer: int = 0

    def setup(self):
        if self.layer != 0:
            self.attn_norm = self._layer_norm()
        self.attn = ModernBertAttention(**self._shared(), layer=self.layer)
        self.mlp_norm = self._layer_norm()
        self.mlp = ModernBertMLP(**self._shared())

    def __call__(self, x, mask, deterministic: bool = True):
        h = self.attn_norm(x) if self.layer != 0 else x
        x = x + self.attn(h, mask, deterministic)                                # (B, L, H)
        return x + self.mlp(self.mlp_norm(x), deterministic)


class _LayerList(_Module):
    """The layers as children "0", "1", ... (params at model/layers/{i}/...), as jaxbert.model's
    _LayerList."""

    @nn.compact
    def __call__(self, x, mask, deterministic: bool = True):
        # remat: keep each layer's input, recompute its insides in the backward pass (torch twin:
        # torch.utils.checkpoint per layer). `deterministic` (argument 3, counting self) static.
        block = (nn.remat(ModernBertEncoderLayer, static_argnums=(3,)) if self.remat
                 else ModernBertEncoderLayer)
        for i in range(self.config.num_hidden_layers):
            x = block(**self._shared(), layer=i, name=str(i))(x, mask, deterministic)
        return x


class ModernBertModel(_Module):
    """The encoder: `apply({'params': p}, input_ids, attention_mask=None, deterministic=True)`
    -> the final-normed hidden states (B, L, H)."""

    def setup(self):
        self.embeddings = ModernBertEmbeddings(**self._shared())
        self.layers = _LayerList(**self._shared())
        self.final_norm = self._layer_norm()

    def __call__(self, input_ids, attention_mask=None, deterministic: bool = True):
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        # Once per forward, boolean: (B, 1, 1, L) True where the key is a real token (local
        # layers add their window in ModernBertAttention).
        mask = (attention_mask > 0)[:, None, None, :]
        x = self.embeddings(input_ids, deterministic)
        x = self.layers(x, mask, deterministic)
        return self.final_norm(x)


class ModernBertPredictionHead(_Module):
    """dense, gelu, norm: the MLM head's transform before the decoder."""

    def setup(self):
        c = self.config
        self.dense = self._dense(c.hidden_size, c.out_std, c.classifier_bias)
        self.norm = self._layer_norm()

    def __call__(self, x):
        return self.norm(gelu(self.dense(x)))


class _TiedDecoder(_Module):
    """torch's `decoder` nn.Linear H -> V, whose weight is the token embedding matrix: here only
    its bias (`decoder/bias`, iff decoder_bias) is a parameter; the matmul is tied_logits."""

    def setup(self):
        if self.config.decoder_bias:
            self.bias = self.param("bias", nn.initializers.zeros, (self.config.vocab_size,),
                                   self.param_dtype)

    def __call__(self, h, tok_embeddings: nn.Embed):
        logits = tied_logits(h, tok_embeddings, self.pad_vocab_to)               # (B, *, V)
        if not self.config.decoder_bias:
            return logits
        return add_bias(logits, self.bias.astype(logits.dtype))


class ModernBertForMaskedLM(_Module):
    """`apply({'params': p}, input_ids, token_type_ids, attention_mask, masked_positions=None,
    deterministic=True, nsp=False, rngs={'dropout': key})` -> (mlm_logits, None): [B, P, V] with
    masked_positions [B, P] (sparse: only those rows go through the head and decoder, as
    transformers' sparse_prediction), else [B, L, V]. token_type_ids are accepted for the batch
    contract and ignored (ModernBERT has no segment embeddings); there is no NSP head. The loss
    is jaxbert.model.pretraining_loss(..., nsp=False)."""

    def setup(self):
        self.model = ModernBertModel(**self._shared())
        self.head = ModernBertPredictionHead(**self._shared())
        self.decoder = _TiedDecoder(**self._shared(), pad_vocab_to=self.pad_vocab_to)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, masked_positions=None,
                 deterministic: bool = True, nsp: bool = False):
        if nsp:
            raise ValueError("ModernBERT has no next-sentence head; train with --no-nsp")
        seq = self.model(input_ids, attention_mask, deterministic)                # (B, L, H)
        if masked_positions is not None:
            seq = jnp.take_along_axis(seq, masked_positions[:, :, None], axis=1)  # (B, P, H)
        return self.decoder(self.head(seq), self.model.embeddings.tok_embeddings), None

    # config.json + model.safetensors of `params` under this config's HF names: BERT's method.
    save_pretrained = BertForPreTraining.save_pretrained


def init_params(config: ModernBertConfig, rng, param_dtype: Dtype = jnp.float32) -> dict:
    """Fresh parameters of ModernBertForMaskedLM(config): the nested 'params' dict."""
    return _jitted_init(ModernBertForMaskedLM, config, param_dtype)(rng)


# merge_hf_params (imported above) is jaxbert.model's: bertcore.model.hf's table and head prefixes
# follow the config, so it loads ModernBertForMaskedLM's weights from a ModernBertConfig as is.


def from_pretrained(path: str | Path, output_loading_info: bool = False,
                    dtype: Dtype = jnp.float32, rng=None, **config_overrides: Any):
    """Load a Hugging Face ModernBERT directory (config.json + model.safetensors, or sharded),
    saved from ModernBertForMaskedLM or ModernBertModel (transformers or the torch twin).

    Returns `(model, params)`, or `(model, params, {"missing_keys": [...]})` with
    `output_loading_info=True`. Missing heads (`head.*`, `decoder.*`, HF names) are initialised
    from `rng` and logged. Params are fp32; `dtype` is the compute dtype.
    """
    config, params, missing = load_hf_directory(path, ModernBertConfig, config_overrides,
                                                init_params, rng)
    model = ModernBertForMaskedLM(config, dtype=dtype)
    return (model, params, {"missing_keys": missing}) if output_loading_info else (model, params)
