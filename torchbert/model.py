"""BERT for pretraining (MLM + NSP) in PyTorch: the twin of `jaxbert/model.py`.

Same classes in the same order as the JAX twin (docs/CONTRACTS.md), and Hugging Face's parameter
names, so `state_dict()` has exactly the keys of `transformers.BertForPreTraining` and a HF
checkpoint loads with no renaming. Shapes: B = batch, L = sequence length, H = hidden size,
N = heads, D = head size, P = masked positions per sequence, V = vocabulary.

One file for the whole model, as nanoGPT's model.py: the twins read side by side class by
class, and splitting one would split its mirror too.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from bertcore.model.config import BertConfig
from bertcore.model.dropout import dropout_threshold
from bertcore.infra.errors import UserError
from bertcore.model.hf import (HEAD_PREFIXES, TIED, check_hf_state, normalize_hf_names,
                               read_hf_safetensors, save_hf_directory)

logger = logging.getLogger(__name__)


class Dropout(nn.Module):
    """nn.Dropout's job, with bertcore/model/dropout.py's rule on a CPU: 16 random bits per element
    from torch's CPU generator (one 64-bit draw makes four), kept iff >= t. `bernoulli_`, which
    nn.Dropout uses, draws a float per element, a large share of a CPU training step. On CUDA it
    is F.dropout, one fused Philox kernel. (JAX twin: the same class, bits from the `dropout`
    key.)"""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold, self.scale = dropout_threshold(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        n = x.numel()
        # random_(-2**63, None): all 64 bits uniform (plain random_() leaves the sign bit 0).
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None)
        # torch has no uint16 compare on CPU: as int16 the bits are uniform on [-32768, 32767],
        # so P(bits >= t - 32768) = (65536 - t) / 65536, the rule's keep probability.
        keep = words.view(torch.int16)[:n].view(x.shape) >= self.threshold - 32768
        if x.dtype == torch.float32:
            # x * float mask: one kernel forward and one backward, the fastest form on a CPU (it
            # keeps 4 bytes an element for the backward where nn.Dropout keeps 1).
            return x * (keep * self.scale)
        return torch.where(keep, x * self.scale, 0.0)       # bf16 (autocast): stays bf16

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BertEmbeddings(nn.Module):
    """word + token type + position embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        # padding_idx as in HF: the [PAD] row starts at zero and gets no gradient from lookups
        # (the JAX twin stops the gradient of [PAD] lookups: ELECTRA's generator may sample [PAD]
        # into a real position, which its discriminator's loss reads).
        E = getattr(config, "embedding_size", config.hidden_size)   # ELECTRA's may be narrower
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.LayerNorm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        L = input_ids.shape[1]
        positions = torch.arange(L, device=input_ids.device)                    # (L,)
        # Same summation order as HF ((word + type) + position) so fp32 results match closely.
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)                              # (B, L, H)
        return self.dropout(self.LayerNorm(x))


def attention_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) with masked keys excluded: (B, N, L, D) x2 -> (B, N, L, L).

    What F.scaled_dot_product_attention's math backend computes, spelled out for the CPU dropout
    path; masked keys get 0.7 * finfo.min, as the JAX twin's function of the same name.
    """
    logits = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    logits = logits.masked_fill(~mask, 0.7 * torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=-1, dtype=torch.float32)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with separate query/key/value projections (HF layout)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, H = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:                   # (B, L, H) -> (B, N, L, D)
            return t.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        # `mask` is boolean (B, 1, 1, L): True = attend to this key.
        if not self.training or self.dropout.p == 0.0 or q.device.type != "cpu":
            # The fused kernel computes softmax(q k^T / sqrt(D) + mask) v, with dropout on the
            # probabilities (on CUDA), without materialising them where a fused backend exists.
            # (JAX twin: jax.nn.dot_product_attention, heads on axis 2 instead of 1.)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0)
        else:
            # CPU training with attention dropout: what SDPA's math backend (its one CPU backend
            # with dropout) computes, with Dropout's cheaper masks (docs/twins.md). The JAX twin
            # takes the same branch.
            y = self.dropout(attention_probs(q, k, mask)).to(v.dtype) @ v        # (B, N, L, D)
        return y.transpose(1, 2).reshape(B, L, H)                     # (B, L, H)


class BertSelfOutput(nn.Module):
    """Attention output projection, dropout, residual (+ LayerNorm in post-LN)."""

    def __init__(self, config: BertConfig, in_features: int | None = None):
        super().__init__()
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        # post-LN: normalises (attention output + residual). pre-LN: the same parameter normalises
        # the attention *input* instead (applied by BertAttention), so names stay HF's.
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.pre_ln = config.layer_norm_position == "pre"

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.dense(hidden)) + residual
        return x if self.pre_ln else self.LayerNorm(x)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)
        self.pre_ln = config.layer_norm_position == "pre"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.output.LayerNorm(x) if self.pre_ln else x     # pre-LN: normalise the input
        return self.output(self.self(h, mask), x)                        # (B, L, H)


class BertIntermediate(nn.Module):
    """First feed-forward projection H -> intermediate_size with exact (erf) GELU."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact erf GELU, HF "gelu" (not the tanh approximation)


class BertOutput(BertSelfOutput):
    """Same computation as BertSelfOutput from intermediate_size back to H (dense, dropout,
    residual, LayerNorm); in pre-LN its LayerNorm normalises the feed-forward input (applied by
    BertLayer). The JAX twin subclasses the same way."""

    def __init__(self, config: BertConfig):
        super().__init__(config, in_features=config.intermediate_size)


class BertLayer(nn.Module):
    """One transformer block: self-attention sublayer, then feed-forward sublayer."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)
        self.pre_ln = config.layer_norm_position == "pre"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, mask)                                      # (B, L, H)
        h = self.output.LayerNorm(a) if self.pre_ln else a     # pre-LN: normalise the input
        return self.output(self.intermediate(h), a)                      # (B, L, H)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False   # BertForPreTraining.gradient_checkpointing_enable
        # pre-LN leaves the residual stream un-normalised, so one final LayerNorm closes it.
        self.LayerNorm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                          if config.layer_norm_position == "pre" else None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            if self.gradient_checkpointing and self.training:
                # Keep only the layer's input; recompute its insides in the backward pass, with
                # the same dropout masks (the RNG state is saved). JAX twin: nn.remat.
                x = torch.utils.checkpoint.checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return x if self.LayerNorm is None else self.LayerNorm(x)


class BertPooler(nn.Module):
    """dense + tanh on the [CLS] position: the sentence vector the NSP head reads."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))                          # (B, H)


def _init_weights(module: nn.Module, std: float) -> None:
    """HF's `_init_weights`: normal(0, std) for Linear/Embedding, zero biases and [PAD] row,
    LayerNorm weight 1 and bias 0. (The JAX twin passes the same initialisers to its layers.)"""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BertModel(nn.Module):
    """Embeddings, encoder and pooler. Returns (sequence_output (B, L, H), pooled (B, H))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, pool: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`pool=False` skips the pooler (pooled is None): MLM-only training never runs it."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Built once per forward, shared by every layer: (B, 1, 1, L), True where the *key* is a
        # real token, broadcast over heads and queries. A boolean mask is dtype-free (no -inf
        # that bf16 autocast could overflow), and padded keys get exactly zero probability.
        mask = attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids)                   # (B, L, H)
        x = self.encoder(x, mask)                                        # (B, L, H)
        return x, (self.pooler(x) if pool else None)


class BertPredictionHeadTransform(nn.Module):
    """MLM transform before the vocabulary projection: dense, GELU, LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


def tied_logits(h: torch.Tensor, table: torch.Tensor, bias: torch.Tensor,
                pad_vocab_to: int = 1) -> torch.Tensor:
    """h @ table^T + bias, the decoder tied to the token embeddings (`table`, V x H). With
    pad_vocab_to=M > 1 the matmul runs on the table padded with zero rows to a multiple of M
    (aligned tensor-core tiles) and the padded logits are dropped. The JAX twin's function of
    the same name takes the embedding module and leaves the bias to add_bias."""
    V = table.shape[0]
    pad = -V % pad_vocab_to
    if pad:
        table = F.pad(table, (0, 0, 0, pad))                             # (V + pad, H)
    logits = F.linear(h, table)[..., :V]                                 # (B, P or L, V)
    # The bias in the logits' dtype (bf16 under autocast, as nn.Linear's output); jaxbert's
    # twin line is add_bias(logits, self.bias.astype(logits.dtype)).
    return logits + bias.to(logits.dtype)


class BertLMPredictionHead(nn.Module):
    """transform, then logits = h @ word_embeddings^T + bias (tied by BertForPreTraining).

    pad_vocab_to=M > 1 runs the decoder matmul on the table padded with zero rows to a multiple
    of M (aligned tensor-core tiles on GPUs) and drops the padded logits: the weights, their
    gradients, checkpoints and exports keep the true vocabulary, and the loss is unchanged."""

    def __init__(self, config: BertConfig, pad_vocab_to: int = 1):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # one Parameter under two names, exactly as HF
        self.pad_vocab_to = pad_vocab_to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.transform(x)
        if not -self.bias.shape[0] % self.pad_vocab_to:
            return self.decoder(h)                                       # (B, P or L, V)
        return tied_logits(h, self.decoder.weight, self.bias, self.pad_vocab_to)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, pad_vocab_to: int = 1):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, pad_vocab_to)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, sequence_output: torch.Tensor, pooled_output: torch.Tensor | None):
        nsp = None if pooled_output is None else self.seq_relationship(pooled_output)   # (B, 2)
        return self.predictions(sequence_output), nsp


class BertForPreTraining(nn.Module):
    """BERT with the MLM and NSP heads: forward returns (mlm_logits, nsp_logits): [B, P, V] with
    masked_positions [B, P], else [B, L, V] (fill-mask, HF parity); nsp_logits [B, 2], or None
    with `nsp=False` (MLM-only: the pooler and NSP head are not run)."""

    def __init__(self, config: BertConfig, pad_vocab_to: int = 1):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, pad_vocab_to)
        self.cls.apply(lambda m: _init_weights(m, config.initializer_range))
        # Tie after initialising, as HF does, so the decoder's init does not overwrite the
        # embedding (and its zero [PAD] row). Module.to()/.cuda() keep the tie (in-place moves).
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                masked_positions: torch.Tensor | None = None, nsp: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        seq, pooled = self.bert(input_ids, token_type_ids, attention_mask, pool=nsp)  # (B, L, H)
        if masked_positions is not None:
            # Sparse MLM head: keep only the P predicted positions before the transform and the
            # V-wide decoder, the dominant cost at small sizes (google-research/bert does this).
            idx = masked_positions.long()[:, :, None].expand(-1, -1, seq.shape[-1])  # (B, P, H)
            seq = torch.gather(seq, 1, idx)                                           # (B, P, H)
        return self.cls(seq, pooled)

    # ---- helpers -----------------------------------------------------------------------------

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing of every encoder layer (`--remat`), HF's method name."""
        self.bert.encoder.gradient_checkpointing = True

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (the tied decoder counted once); optionally without embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            e = self.bert.embeddings
            n -= sum(m.weight.numel() for m in (e.word_embeddings, e.position_embeddings,
                                                 e.token_type_embeddings))
        return n

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """`state_dict()` without the tied aliases: each tensor once, as HF writes its files.

        HF exposes the decoder twice: its weight *is* the word-embedding matrix and its bias *is*
        `cls.predictions.bias` (bertcore.model.hf.TIED). Both aliases are in `state_dict()`, as in
        HF."""
        return {k: v for k, v in self.state_dict().items() if k not in TIED}

    def load_hf_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint"
                           ) -> list[str]:
        """Copy HF-named tensors into this model; return the keys the file did not have.

        Accepts keys with or without the `bert.` prefix (a bare `BertModel` save), the tied
        aliases or not, and TF-era `gamma`/`beta` LayerNorm names. Missing pooler or heads stay
        initialised; unknown keys, wrong shapes or missing encoder weights raise UserError.
        Tensors may be torch tensors or numpy arrays.
        """
        # Names, tied copies and shapes are checked by the one table in bertcore.model.hf, the same
        # code jaxbert's from_pretrained and parity use.
        fixed = normalize_hf_names({k: _as_numpy(t) for k, t in state.items()})
        missing = check_hf_state(fixed, self.config, missing_ok=HEAD_PREFIXES, source=source)
        own = self.state_dict()
        with torch.no_grad():
            for k, a in fixed.items():
                # state_dict tensors share the parameters' storage
                own[k].copy_(torch.from_numpy(a))
        return missing

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, output_loading_info: bool = False,
                        **config_overrides: Any):
        """Load a Hugging Face BERT directory (config.json + model.safetensors or, read with
        `weights_only=True`, pytorch_model.bin), saved from BertForPreTraining, BertForMaskedLM
        or BertModel. Missing heads stay initialised and are logged; with
        `output_loading_info=True` returns `(model, {"missing_keys": [...]})` as HF does."""
        model, missing = load_hf_directory(path, BertConfig, config_overrides, cls)
        return (model, {"missing_keys": missing}) if output_loading_info else model

    def save_pretrained(self, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None
                        ) -> None:
        """Write config.json + model.safetensors (and `tokenizer`'s files, if given) in HF
        layout (loads in `transformers`; bertcore.model.hf.save_hf_directory)."""
        state = {k: _as_numpy(v) for k, v in self.hf_state_dict().items()}
        save_hf_directory(path, self.config, state, None if tokenizer is None else Path(tokenizer))


def _select_masked(mlm_logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """(B, P, V) logits at the masked slots, from sparse (B, P, V) or dense (B, L, V) logits."""
    P = batch["masked_ids"].shape[1]
    if mlm_logits.shape[1] == P:
        return mlm_logits  # sparse (also read this way when L == P: gather dense logits first)
    pos = torch.as_tensor(batch["masked_positions"], device=mlm_logits.device).long()
    return torch.gather(mlm_logits, 1, pos[:, :, None].expand(-1, -1, mlm_logits.shape[-1]))


def pretraining_loss(mlm_logits: torch.Tensor, nsp_logits: torch.Tensor, batch: dict[str, Any],
                     mlm_denominator: float | torch.Tensor | None = None,
                     nsp_denominator: float | torch.Tensor | None = None,
                     nsp: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MLM + NSP loss of the batch contract (docs/CONTRACTS.md); returns (loss, metrics).

    MLM = sum(masked_weights * ce) / mlm_denominator (default max(sum(masked_weights), 1));
    NSP = sum(ce) / nsp_denominator (default B). Data-parallel / accumulation code passes the
    *global* counts, so per-rank losses and metrics add up to the global ones. Accuracies use
    the same denominators. Metrics are detached 0-d tensors (call .item() when logging).
    Batch values may be numpy arrays or tensors; the loss is computed in fp32 under autocast.
    """
    dev = mlm_logits.device
    ids = torch.as_tensor(batch["masked_ids"], device=dev).long()                  # (B, P)
    w = torch.as_tensor(batch["masked_weights"], device=dev, dtype=torch.float32)  # (B, P)
    logits = _select_masked(mlm_logits, batch).float()                             # (B, P, V)
    ce = F.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="none").view_as(w)
    if mlm_denominator is None:
        mlm_denominator = w.sum().clamp(min=1.0)
    mlm_loss = (w * ce).sum() / mlm_denominator
    mlm_acc = (w * (logits.argmax(-1) == ids).float()).sum() / mlm_denominator
    metrics = {"mlm_loss": mlm_loss.detach(), "mlm_accuracy": mlm_acc.detach()}
    loss = mlm_loss
    if nsp:
        if "next_sentence_label" not in batch:
            raise ValueError("pretraining_loss(nsp=True) needs batch['next_sentence_label']: the "
                             "NSP loss reads it (pass nsp=False for MLM-only)")
        labels = torch.as_tensor(batch["next_sentence_label"], device=dev).long()   # (B,)
        nsp_logits = nsp_logits.float()
        if nsp_denominator is None:
            nsp_denominator = float(labels.shape[0])
        nsp_loss = F.cross_entropy(nsp_logits, labels, reduction="sum") / nsp_denominator
        nsp_acc = (nsp_logits.argmax(-1) == labels).float().sum() / nsp_denominator
        metrics.update(nsp_loss=nsp_loss.detach(), nsp_accuracy=nsp_acc.detach())
        loss = loss + nsp_loss
    metrics["loss"] = loss.detach()
    return loss, metrics


def load_hf_directory(path: str | os.PathLike, config_cls: Any,
                      config_overrides: dict[str, Any], model_cls: Any) -> tuple[Any, list[str]]:
    """(model, missing HF names) of a Hugging Face directory: `config_cls` (BertConfig or
    ModernBertConfig) from its config.json with `config_overrides`, `model_cls(config)` with the
    weights `read_hf_weights` finds; what they lack stays initialised, logged. What both
    architectures' `from_pretrained` share."""
    path = Path(path)
    arch = {"modernbert": "ModernBERT", "electra": "ELECTRA"}.get(
        getattr(config_cls, "model_type", "bert"), "BERT")
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; pass a Hugging Face {arch} directory")
    config = config_cls.from_json_file(path / "config.json").replace(**config_overrides)
    model = model_cls(config)
    state, source = read_hf_weights(path)
    missing = model.load_hf_state_dict(state, source=str(source))
    if missing:
        logger.warning("%s: %d tensor(s) not in the checkpoint, left initialised: %s",
                       source, len(missing), ", ".join(missing))
    return model, missing


def _as_numpy(t: Any) -> Any:
    """A CPU numpy view of a tensor (bf16/fp16 widened to fp32: numpy has no bfloat16)."""
    if not isinstance(t, torch.Tensor):
        return t
    t = t.detach().cpu()
    return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()


def _unpickling_reason(e: Exception) -> str:
    """Why torch.load refused a file, in our words: the Python object the pickle names (code a
    weights file never needs), or else the first line of torch's reason. Never torch's advice to
    allowlist that object or to turn weights_only off: either would run the code the file may
    carry."""
    m = re.search(r"GLOBAL ([\w.]+)", str(e))
    if m:
        return (f"it is a pickle that calls {m.group(1)}, which is no tensor or number: loading "
                f"it could run code")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    why = [ln for ln in lines if not any(w in ln for w in (
        "weights_only", "torch.load", "safe_globals", "allowlist", "Weights only load failed"))]
    return (why or [type(e).__name__])[0].removeprefix("WeightsUnpickler error: ")


def read_hf_weights(path: Path) -> tuple[dict[str, Any], Path]:
    """(tensors, source file) of a HF directory: model.safetensors, its sharded index (numpy, read
    by bertcore.model.hf), or pytorch_model.bin (torch tensors, read with weights_only=True)."""
    found = read_hf_safetensors(path)
    if found is not None:
        return found
    binary = path / "pytorch_model.bin"
    if binary.is_file():
        try:
            # weights_only=True: the restricted unpickler that refuses arbitrary code.
            state = torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"{binary} is refused: torch.load with weights_only=True, which "
                            f"reads tensors only, could not read it ({_unpickling_reason(e)}); "
                            f"it was not loaded. Use a model.safetensors of these weights "
                            f"(safetensors holds no code)")
        if not isinstance(state, dict):
            raise UserError(f"{binary} does not hold a state dict")
        return state, binary
    raise UserError(f"{path} has no model.safetensors or pytorch_model.bin")
