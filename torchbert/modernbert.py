"""ModernBERT for masked language modelling in PyTorch: the twin of `jaxbert/modernbert.py`.

ModernBERT (Warner et al. 2024, arXiv 2412.13663) as transformers' `ModernBertForMaskedLM`:
rotary position embeddings instead of a position table, pre-LN blocks without biases by default,
a GeGLU feed-forward, and attention that is global on every `global_attn_every_n_layers`-th layer
(from layer 0) and local (a window of `local_attention` tokens) on the others. `state_dict()`
has exactly transformers' keys, so its checkpoints load with no renaming; the name table is
bertcore.model.hf's `param_table`. The RoPE angles and the window come from bertcore.model.attention
as constants, so both twins use the same numbers. Shapes as in model.py: B = batch, L = sequence
length, H = hidden size, N = heads, D = head size, I = intermediate size, P = masked positions
per sequence, V = vocabulary.

The pieces ModernBERT shares with BERT (Dropout, the explicit attention path, reading and writing a
Hugging Face directory, the loss) are model.py's.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from bertcore.model.attention import rope_cos_sin, window_mask
from bertcore.model.config import ModernBertConfig
from bertcore.model.hf import (MODERNBERT_HEAD_PREFIXES, MODERNBERT_TIED, check_hf_state,
                               normalize_hf_names)

from .model import BertForPreTraining, Dropout, _as_numpy, attention_probs, load_hf_directory


class ModernBertEmbeddings(nn.Module):
    """Token embeddings, LayerNorm and dropout: no position or token-type tables (RoPE places
    tokens inside attention)."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        # padding_idx as in HF: the [PAD] row gets no gradient from lookups (its initial value is
        # the truncated normal's, as transformers': the initialisation overwrites the whole table).
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                           padding_idx=config.pad_token_id)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.drop = Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.tok_embeddings(input_ids)))            # (B, L, H)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs (i, i + D/2) of x (B, N, L, D) by the angles whose cos and sin (L, D)
    are given: x * cos + rotate_half(x) * sin, in float32 as transformers computes it (also under
    bf16 autocast), cast back to x's dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


class ModernBertAttention(nn.Module):
    """Multi-head self-attention with a fused q|k|v projection and RoPE; the mask decides
    global (key padding) or local (key padding and the window) attention."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        H = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.Wqkv = nn.Linear(H, 3 * H, bias=config.attention_bias)
        self.Wo = nn.Linear(H, H, bias=config.attention_bias)
        self.dropout = Dropout(config.attention_dropout)    # on the probabilities
        self.out_drop = Dropout(config.attention_dropout)   # after Wo

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        B, L, H = x.shape
        # [q | k | v] along the features, each split into heads: HF's view(..., 3, N, D)
        qkv = self.Wqkv(x).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(dim=2))          # (B, N, L, D) each
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        # `mask` is boolean, (B, 1, 1, L) or (B, 1, L, L): True = this query may see this key.
        p = self.dropout.p
        if not self.training or p == 0.0 or q.device.type != "cpu":
            # As BertSelfAttention: the fused kernel, dropout on the probabilities on CUDA.
            # (A padded query outside every real token's window sees only itself: the local
            # mask keeps the diagonal, see ModernBertModel.tables.)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p if self.training else 0.0)
        else:
            # CPU training with attention dropout: BertSelfAttention's explicit path.
            y = self.dropout(attention_probs(q, k, mask)).to(v.dtype) @ v     # (B, N, L, D)
        return self.out_drop(self.Wo(y.transpose(1, 2).reshape(B, L, H)))  # (B, L, H)


class ModernBertMLP(nn.Module):
    """GeGLU feed-forward: Wi H -> 2I split into (input, gate), Wo(drop(gelu(input) * gate))."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size,
                            bias=config.mlp_bias)
        self.drop = Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, gate = self.Wi(x).chunk(2, dim=-1)                             # (B, L, I) each
        return self.Wo(self.drop(F.gelu(inp) * gate))   # exact erf GELU, HF "gelu"


class ModernBertEncoderLayer(nn.Module):
    """Pre-LN block: x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)). Layer 0 has no attention
    norm (its input is the embeddings' norm already): an identity without parameters, as HF."""

    def __init__(self, config: ModernBertConfig, layer: int):
        super().__init__()
        self.attn_norm = (nn.Identity() if layer == 0 else
                          nn.LayerNorm(config.hidden_size, eps=config.norm_eps,
                                       bias=config.norm_bias))
        self.attn = ModernBertAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps,
                                     bias=config.norm_bias)
        self.mlp = ModernBertMLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), mask, cos, sin)
        return x + self.mlp(self.mlp_norm(x))                               # (B, L, H)


def _trunc_normal(module: nn.Module, std: float, cutoff: float) -> None:
    """transformers' ModernBERT `init_weight`: weight ~ N(0, std) truncated at +-cutoff * std
    (the std of the untruncated normal, as nn.init.trunc_normal_), bias 0."""
    nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


def _init_weights(module: nn.Module, config: ModernBertConfig) -> None:
    """transformers' ModernBERT `_init_weights`: std = initializer_range for the embeddings and
    the input projections (Wqkv, Wi), initializer_range / sqrt(2 * layers) for the output
    projections (both Wo) and the MLM head's dense; LayerNorms 1 (and 0)."""
    std_in = config.initializer_range
    std_out = config.out_std
    cutoff = config.initializer_cutoff_factor
    if isinstance(module, ModernBertEmbeddings):
        _trunc_normal(module.tok_embeddings, std_in, cutoff)
    elif isinstance(module, ModernBertAttention):
        _trunc_normal(module.Wqkv, std_in, cutoff)
        _trunc_normal(module.Wo, std_out, cutoff)
    elif isinstance(module, ModernBertMLP):
        _trunc_normal(module.Wi, std_in, cutoff)
        _trunc_normal(module.Wo, std_out, cutoff)
    elif isinstance(module, ModernBertPredictionHead):
        _trunc_normal(module.dense, std_out, cutoff)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ModernBertModel(nn.Module):
    """Embeddings, encoder layers and the final norm: forward -> (B, L, H)."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = ModernBertEmbeddings(config)
        self.layers = nn.ModuleList(ModernBertEncoderLayer(config, i)
                                    for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps,
                                       bias=config.norm_bias)
        self.gradient_checkpointing = False   # ModernBertForMaskedLM.gradient_checkpointing_enable
        self._tables: dict[tuple[int, torch.device], tuple] = {}     # see `tables`
        self.apply(lambda m: _init_weights(m, config))

    def tables(self, L: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The window (L, L), the diagonal (L, L) and each RoPE theta's (cos, sin) (L, D) as
        tensors on `dev`, made once per sequence length and device: copied from host memory every
        step, they would make a GPU step wait for the copy. The local mask keeps the diagonal
        (forward ORs it in after the key mask): with key padding, a padded
        query outside every real token's window would otherwise see no key at all (a row of
        only masked scores, which some attention kernels turn into NaN); a real query's own key
        is in its window anyway, so real positions are unchanged. (JAX twin: constants in the
        traced program; its window is dot_product_attention's local_window_size.)"""
        key = (L, dev)
        if key not in self._tables:
            c = self.config
            window = torch.from_numpy(window_mask(L, c.local_attention).copy()).to(dev)
            rope = {theta: tuple(torch.from_numpy(a.copy()).to(dev)
                                 for a in rope_cos_sin(theta, c.head_dim, L))
                    for theta in {c.rope_theta(i) for i in range(c.num_hidden_layers)}}
            diagonal = torch.eye(L, dtype=torch.bool, device=dev)
            self._tables[key] = (window, diagonal, rope)
        return self._tables[key]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        c = self.config
        B, L = input_ids.shape
        dev = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Built once per forward, shared by the layers (boolean, True = attend): global layers
        # see every real key (B, 1, 1, L); local ones only those within the window (B, 1, L, L).
        # cos/sin (L, D) per RoPE theta (global and local layers have their own).
        window, diagonal, rope = self.tables(L, dev)
        keys = attention_mask.bool()[:, None, None, :]
        local = keys & window | diagonal
        x = self.embeddings(input_ids)                                      # (B, L, H)
        for i, layer in enumerate(self.layers):
            args = (keys if c.is_global(i) else local, *rope[c.rope_theta(i)])
            if self.gradient_checkpointing and self.training:
                # As BertEncoder: keep the layer's input, recompute its insides in the backward
                # pass with the same dropout masks. JAX twin: nn.remat.
                x = torch.utils.checkpoint.checkpoint(layer, x, *args, use_reentrant=False)
            else:
                x = layer(x, *args)
        return self.final_norm(x)                                           # (B, L, H)


class ModernBertPredictionHead(nn.Module):
    """MLM transform before the vocabulary projection: dense, GELU, LayerNorm."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size,
                               bias=config.classifier_bias)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(x)))


class ModernBertForMaskedLM(nn.Module):
    """ModernBERT with its MLM head: forward returns (mlm_logits, None), [B, P, V] with
    masked_positions [B, P], else [B, L, V]. The None stands where BertForPreTraining returns its
    NSP logits, so the training loop and `model.pretraining_loss(..., nsp=False)` serve both.

    pad_vocab_to=M > 1 runs the decoder matmul on the table padded with zero rows to a multiple
    of M, as BertLMPredictionHead's (weights, checkpoints and the loss keep the true vocabulary).
    """

    def __init__(self, config: ModernBertConfig, pad_vocab_to: int = 1):
        super().__init__()
        self.config = config
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.pad_vocab_to = pad_vocab_to
        self.head.apply(lambda m: _init_weights(m, config))
        _trunc_normal(self.decoder, config.out_std, config.initializer_cutoff_factor)
        # Tie after initialising, as HF does, so the decoder's init does not overwrite the
        # embedding. Module.to()/.cuda() keep the tie (in-place moves).
        self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                masked_positions: torch.Tensor | None = None, nsp: bool = False
                ) -> tuple[torch.Tensor, None]:
        """token_type_ids are accepted for the batch contract and ignored (ModernBERT has no
        segment embeddings)."""
        if nsp:
            raise ValueError("ModernBERT has no next-sentence head; train with --no-nsp")
        seq = self.model(input_ids, attention_mask)                         # (B, L, H)
        if masked_positions is not None:
            # Sparse MLM head, as BertForPreTraining's (HF's sparse_prediction does the same).
            idx = masked_positions.long()[:, :, None].expand(-1, -1, seq.shape[-1])  # (B, P, H)
            seq = torch.gather(seq, 1, idx)                                           # (B, P, H)
        h = self.head(seq)
        V = self.config.vocab_size
        pad = -V % self.pad_vocab_to
        if not pad:
            return self.decoder(h), None                                    # (B, P or L, V)
        table = F.pad(self.decoder.weight, (0, 0, 0, pad))                  # (V + pad, H)
        logits = F.linear(h, table)[..., :V]                                # (B, P or L, V)
        if self.decoder.bias is not None:
            logits = logits + self.decoder.bias.to(logits.dtype)
        return logits, None

    # ---- helpers -----------------------------------------------------------------------------

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing of every encoder layer (`--remat`), HF's method name."""
        self.model.gradient_checkpointing = True

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (the tied decoder counted once); optionally without embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.model.embeddings.tok_embeddings.weight.numel()
        return n

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """`state_dict()` without the tied alias `decoder.weight`: each tensor once."""
        return {k: v for k, v in self.state_dict().items() if k not in MODERNBERT_TIED}

    def load_hf_state_dict(self, state: dict[str, Any], source: str = "checkpoint"
                           ) -> list[str]:
        """Copy HF-named tensors into this model; return the names the file did not have.

        Accepts a ModernBertModel save (no `model.` prefix, no head or decoder: those stay
        initialised) and the tied alias or not. Unknown names, wrong shapes or missing encoder
        weights raise UserError (bertcore.model.hf's checks). Tensors may be torch or numpy."""
        fixed = normalize_hf_names({k: _as_numpy(t) for k, t in state.items()}, self.config)
        missing = check_hf_state(fixed, self.config, missing_ok=MODERNBERT_HEAD_PREFIXES,
                                 source=source)
        own = self.state_dict()
        with torch.no_grad():
            for k, a in fixed.items():
                own[k].copy_(torch.from_numpy(a))     # state_dict tensors share the storage
        return missing

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, output_loading_info: bool = False,
                        **config_overrides: Any):
        """Load a Hugging Face ModernBERT directory (config.json + model.safetensors or
        pytorch_model.bin), saved from ModernBertForMaskedLM or ModernBertModel; missing heads
        stay initialised and are logged. `output_loading_info=True` returns
        `(model, {"missing_keys": [...]})` as HF does."""
        model, missing = load_hf_directory(path, ModernBertConfig, config_overrides, cls)
        return (model, {"missing_keys": missing}) if output_loading_info else model

    # config.json + model.safetensors of whatever hf_state_dict() gives: BERT's method.
    save_pretrained = BertForPreTraining.save_pretrained
