"""ELECTRA's replaced-token detection in PyTorch: the twin of `jaxbert/electra.py`.

ELECTRA (Clark et al., ICLR 2020) trains the encoder on every token, not the 15% MLM predicts:
a small generator fills the masked slots with tokens sampled from its MLM softmax, and the
encoder (the discriminator) learns to tell each token of the corrupted sequence as original or
replaced. Both models are BERT encoders (model.py's layers, under transformers' `electra.` names)
that share one embedding block of width `embedding_size`, each projecting it to its own hidden
size (`embeddings_project`) where they differ.

    masked batch -> generator (MLM at the masked slots) -> sample (no gradient) -> corrupted ids
                 -> discriminator (a logit per token)   -> loss = MLM + disc_weight x BCE

Classes as transformers' (ElectraForPreTraining = the discriminator, ElectraForMaskedLM = the
generator), so their directories load with no renaming (bertcore.model.hf.electra_param_table),
plus `ElectraPreTrainingModel`, the pair a run trains (google-research/electra's
PretrainingModel; its state is `discriminator.*` + `generator.*`). Shapes: B = batch, L =
sequence length, E = embedding size, H = hidden size, P = masked slots, V = vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertcore.model.config import ElectraConfig
from bertcore.model.hf import (ELECTRA_HEAD_PREFIXES, check_electra_state, check_hf_state,
                               electra_split, normalize_hf_names, save_hf_directory)
from bertcore.model.sampling import MASK32, MUL_A, MUL_B, UNIFORM_BITS

from .model import (BertEmbeddings, BertEncoder, _as_numpy, _init_weights, load_hf_directory,
                    pretraining_loss, tied_logits)

# ELECTRA's embeddings are BERT's at width embedding_size (BertEmbeddings reads that field).
ElectraEmbeddings = BertEmbeddings


class ElectraModel(nn.Module):
    """Embeddings (projected to H where E != H), then BERT's encoder; no pooler. Returns the
    sequence output (B, L, H). `own_embeddings=False` (the generator inside the pretraining pair)
    leaves the embeddings out: forward then takes the shared ones (`embeddings=`)."""

    def __init__(self, config: ElectraConfig, own_embeddings: bool = True):
        super().__init__()
        self.config = config
        if own_embeddings:
            self.embeddings = ElectraEmbeddings(config)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = BertEncoder(config)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                embeddings: nn.Module | None = None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.bool()[:, None, None, :]           # (B, 1, 1, L), as BertModel's
        embed = self.embeddings if embeddings is None else embeddings
        x = embed(input_ids, token_type_ids)                                     # (B, L, E)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)                                       # (B, L, H)
        return self.encoder(x, mask)                                             # (B, L, H)


class ElectraDiscriminatorPredictions(nn.Module):
    """dense, GELU, dense_prediction: one logit per token, "replaced" when positive."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(F.gelu(self.dense(x))).squeeze(-1)          # (B, L)


class ElectraGeneratorPredictions(nn.Module):
    """The generator's MLM transform: dense H -> E, GELU, LayerNorm (then the tied decoder)."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class ElectraLMHead(nn.Module):
    """transformers' `generator_lm_head`: logits = h @ word_embeddings^T + bias. Its weight is
    the (shared) word embedding matrix, passed in, so only the bias is a parameter here (HF
    name `generator_lm_head.bias`). pad_vocab_to as BertLMPredictionHead's."""

    def __init__(self, config: ElectraConfig, pad_vocab_to: int = 1):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.pad_vocab_to = pad_vocab_to

    def forward(self, h: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return tied_logits(h, table, self.bias, self.pad_vocab_to)               # (B, P, V)


class ElectraForPreTraining(nn.Module):
    """The discriminator, as transformers': forward -> a replaced-token logit per token (B, L)."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.config = config
        self.electra = ElectraModel(config)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        return self.discriminator_predictions(
            self.electra(input_ids, token_type_ids, attention_mask))

    def load_hf_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> list[str]:
        return _load_standalone(self, state, source, "discriminator")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **config_overrides: Any):
        """A transformers ElectraForPreTraining directory (config.json + weights)."""
        return load_hf_directory(path, ElectraConfig, config_overrides, cls)[0]


class ElectraForMaskedLM(nn.Module):
    """The generator, as transformers': forward -> MLM logits, (B, P, V) at `masked_positions`
    (the sparse head, as BertForPreTraining's) or (B, L, V). `own_embeddings=False`: the
    generator inside the pretraining pair, which is handed the discriminator's embeddings."""

    def __init__(self, config: ElectraConfig, own_embeddings: bool = True, pad_vocab_to: int = 1):
        super().__init__()
        self.config = config
        self.electra = ElectraModel(config, own_embeddings)
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.generator_lm_head = ElectraLMHead(config, pad_vocab_to)
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                masked_positions: torch.Tensor | None = None,
                embeddings: nn.Module | None = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self.electra.embeddings
        seq = self.electra(input_ids, token_type_ids, attention_mask, embeddings)  # (B, L, H)
        if masked_positions is not None:
            idx = masked_positions.long()[:, :, None].expand(-1, -1, seq.shape[-1])
            seq = torch.gather(seq, 1, idx)                                      # (B, P, H)
        return self.generator_lm_head(self.generator_predictions(seq),
                                      embeddings.word_embeddings.weight)

    def load_hf_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> list[str]:
        return _load_standalone(self, state, source, "generator")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **config_overrides: Any):
        """A transformers ElectraForMaskedLM directory (config.json + weights)."""
        return load_hf_directory(path, ElectraConfig, config_overrides, cls)[0]


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """bertcore.model.sampling.hash32 on int32 tensors holding the uint32 bits: a multiply wraps
    modulo 2^32 as uint32's does (two's complement), and each right shift is masked to what a
    logical shift keeps (int32's is arithmetic). int32 rather than int64 (exact without wrapping,
    masked to 32 bits) because it is 3x faster on a CPU: the hash runs over B x P x V entries.
    JAX twin: the same on uint32, where both come for free."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * MUL_A
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * MUL_B
    return x ^ ((x >> 16) & 0xFFFF)


def sample_tokens(logits: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """One token per slot from softmax(logits) (B, P, V), by Gumbel-max with the noise of
    bertcore.model.sampling (the slot's seed hashed with each vocabulary index), so both twins
    draw the same tokens; no gradient. Returns int64 (B, P)."""
    with torch.no_grad():
        V = logits.shape[-1]
        h = _hash32(seeds.to(torch.int32))[..., None]                            # (B, P, 1)
        # v * MUL_B mod 2^32, as int32 bits (computed exactly in int64, then wrapped)
        v = (torch.arange(V, device=logits.device, dtype=torch.int64) * MUL_B) & MASK32
        v = torch.where(v >= 1 << 31, v - (1 << 32), v).to(torch.int32)
        h = _hash32(h ^ v)                                                       # (B, P, V)
        bits = (h >> (32 - UNIFORM_BITS)) & ((1 << UNIFORM_BITS) - 1)
        u = bits.float().add_(0.5).mul_(2.0 ** -UNIFORM_BITS)
        # in place, one buffer for u, -log(u) and log(-log(u)) = -g: B x P x V floats
        return torch.argmax(logits.float() - u.log_().neg_().log_(), dim=-1)


class ElectraPreTrainingModel(nn.Module):
    """Generator + discriminator, trained together (google-research/electra's PretrainingModel).
    forward(input_ids [masked], token_type_ids, attention_mask, masked_positions, masked_ids,
    masked_weights, sample_seeds) -> (mlm_logits (B, P, V), disc_logits (B, L), replaced (B, L)
    float labels). The generator has no embeddings of its own: it runs on the discriminator's."""

    def __init__(self, config: ElectraConfig, pad_vocab_to: int = 1):
        super().__init__()
        self.config = config
        self.discriminator = ElectraForPreTraining(config)
        self.generator = ElectraForMaskedLM(config.generator_config(), own_embeddings=False,
                                            pad_vocab_to=pad_vocab_to)

    def forward(self, input_ids, token_type_ids, attention_mask, masked_positions, masked_ids,
                masked_weights, sample_seeds):
        embeddings = self.discriminator.electra.embeddings
        mlm_logits = self.generator(input_ids, token_type_ids, attention_mask, masked_positions,
                                    embeddings)                                  # (B, P, V)
        pos = masked_positions.long()
        live = masked_weights > 0                                                # (B, P)
        sampled = sample_tokens(mlm_logits, sample_seeds)                        # (B, P)
        # Unused slots point at position 0 ([CLS]) with weight 0: they write [CLS] back.
        first = input_ids[:, :1].long().expand_as(pos)
        corrupted = input_ids.long().scatter(1, pos, torch.where(live, sampled, first))
        original = input_ids.long().scatter(1, pos, torch.where(live, masked_ids.long(), first))
        # A sample equal to the original counts as original (the paper's labels).
        replaced = ((corrupted != original) & (attention_mask > 0)).float()     # (B, L)
        disc_logits = self.discriminator(corrupted, token_type_ids, attention_mask)
        return mlm_logits, disc_logits, replaced

    # ---- helpers, as BertForPreTraining's --------------------------------------------------

    def gradient_checkpointing_enable(self) -> None:
        for m in (self.discriminator, self.generator):
            m.electra.encoder.gradient_checkpointing = True

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            e = self.discriminator.electra.embeddings
            n -= sum(m.weight.numel() for m in (e.word_embeddings, e.position_embeddings,
                                                 e.token_type_embeddings))
        return n

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The pair's state under transformers' names (`discriminator.*`, `generator.*`; no
        tied copies: the generator's decoder and embeddings are the discriminator's)."""
        return dict(self.state_dict())

    def load_hf_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> list[str]:
        """Copy pair-named tensors (bertcore.model.hf.electra_join makes them from the two HF
        models) into this model; return the names the state lacked (left initialised)."""
        fixed = normalize_hf_names({k: _as_numpy(t) for k, t in state.items()}, self.config)
        missing = check_hf_state(fixed, self.config, missing_ok=ELECTRA_HEAD_PREFIXES,
                                 source=source)
        own = self.state_dict()
        with torch.no_grad():
            for k, a in fixed.items():
                own[k].copy_(torch.from_numpy(a))
        return missing

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, output_loading_info: bool = False,
                        **config_overrides: Any):
        """A directory with our pretraining config.json and the pair's weights (a run's hf/
        export of `--to hf` is two transformers directories instead: parity.convert reads
        those)."""
        model, missing = load_hf_directory(path, ElectraConfig, config_overrides, cls)
        return (model, {"missing_keys": missing}) if output_loading_info else model

    def save_pretrained(self, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None
                        ) -> None:
        """Write the two models as transformers directories: path/discriminator
        (ElectraForPreTraining) and path/generator (ElectraForMaskedLM), each with `tokenizer`'s
        files if given."""
        parts = electra_split({k: _as_numpy(v) for k, v in self.hf_state_dict().items()})
        Path(path).mkdir(parents=True, exist_ok=True)
        for role, state in parts.items():
            save_hf_directory(Path(path) / role, self.config, state,
                              None if tokenizer is None else Path(tokenizer), role=role)


def _load_standalone(model: nn.Module, state: dict[str, Any], source: str, role: str
                     ) -> list[str]:
    """Copy a transformers ELECTRA model's tensors into `model`, checked against its own
    config's table (bertcore.model.hf.check_electra_state); heads an ElectraModel save lacks stay
    initialised. Returns the names the state lacked."""
    fixed = normalize_hf_names({k: _as_numpy(t) for k, t in state.items()}, model.config)
    missing = check_electra_state(fixed, model.config, role, source)
    own = model.state_dict()
    with torch.no_grad():
        for k, a in fixed.items():
            own[k].copy_(torch.from_numpy(a))
    return missing


def electra_loss(mlm_logits: torch.Tensor, disc_logits: torch.Tensor, replaced: torch.Tensor,
                 batch: dict[str, Any], mlm_denominator=None, token_denominator=None,
                 disc_weight: float = 50.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Generator MLM + disc_weight x discriminator loss; returns (loss, metrics).

    MLM as pretraining_loss (masked_weights, mlm_denominator). The discriminator's binary
    cross-entropy is summed over real tokens (attention_mask) and divided by token_denominator
    (default: this batch's real tokens; data-parallel code passes the global count), as
    google-research/electra averages it over every input token. Metrics: mlm_loss,
    mlm_accuracy, disc_loss, disc_accuracy, and the shares of real tokens that are replaced
    (disc_replaced), predicted replaced (disc_predicted) and both (disc_tp), from which
    bertcore.train.evaluation makes precision and recall; all add up over micro-batches and
    ranks. JAX twin: the same function in jaxbert/electra.py."""
    mlm_loss, metrics = pretraining_loss(mlm_logits, None, batch, mlm_denominator, nsp=False)
    real = torch.as_tensor(batch["attention_mask"], device=disc_logits.device).float()  # (B, L)
    if token_denominator is None:
        token_denominator = real.sum().clamp(min=1.0)
    logits = disc_logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, replaced, reduction="none")
    disc_loss = (real * bce).sum() / token_denominator
    predicted = (logits > 0).float()
    loss = mlm_loss + disc_weight * disc_loss
    metrics = {
        "mlm_loss": metrics["mlm_loss"], "mlm_accuracy": metrics["mlm_accuracy"],
        "disc_loss": disc_loss.detach(),
        "disc_accuracy": (real * (predicted == replaced).float()).sum() / token_denominator,
        "disc_replaced": (real * replaced).sum() / token_denominator,
        "disc_predicted": (real * predicted).sum() / token_denominator,
        "disc_tp": (real * predicted * replaced).sum() / token_denominator,
        "loss": loss.detach(),
    }
    return loss, metrics
