"""Sequence classification in PyTorch, BERT, ModernBERT and ELECTRA: the twin of
`jaxbert/classifier.py`.

Hugging Face's `BertForSequenceClassification`: the encoder with its pooler (`bert.*`, reused
from model.py's BertModel), dropout on the pooled [CLS] vector, and `classifier`, a Linear
H -> num_labels. Hugging Face's `ModernBertForSequenceClassification`: the encoder (`model.*`,
modernbert.py's ModernBertModel), the [CLS] vector or the mean over the real tokens
(`classifier_pooling`), the MLM head's transform (`head.*`: dense, GELU, norm), dropout
(`classifier_dropout`) and `classifier`. Hugging Face's `ElectraForSequenceClassification`: the
discriminator's encoder (`electra.*`, electra.py's ElectraModel; no pooler) and `classifier`,
ELECTRA's own head on the [CLS] vector (dropout, dense, GELU, dropout, `out_proj`). `state_dict()`
has exactly transformers' keys, so a
Hugging Face classifier loads and saves with no renaming; the name table is bertcore.model.hf's
`classifier_param_table`. The heads' dropout is model.py's `Dropout` (the shared 16-bit rule,
as in the encoder), and `gradient_checkpointing_enable()` recomputes each encoder layer in the
backward pass, as for the pretraining models.

The losses: `classification_loss` (cross-entropy) and `regression_loss` (transformers'
problem_type "regression": MSE of the one output); `sequence_loss` picks one for a run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bertcore.model.config import BertConfig, ElectraConfig, ModernBertConfig
from bertcore.model.hf import check_classifier_state

from .electra import ElectraModel
from .model import BertModel, Dropout, _as_numpy, _init_weights
from .modernbert import ModernBertModel, ModernBertPredictionHead, _trunc_normal
from .modernbert import _init_weights as _modernbert_init_weights


class BertForSequenceClassification(nn.Module):
    """forward(input_ids, token_type_ids, attention_mask) -> logits (B, num_labels)."""

    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config)
        # HF uses config.classifier_dropout when set, else hidden_dropout_prob; we write
        # classifier_dropout=None into config.json, so it is always the latter.
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        _init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        _, pooled = self.bert(input_ids, token_type_ids, attention_mask)     # (B, H)
        return self.classifier(self.dropout(pooled))                          # (B, num_labels)

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing of every encoder layer, as BertForPreTraining's (HF's name)."""
        self.bert.encoder.gradient_checkpointing = True

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor once under its HF name (no tied aliases here: no MLM decoder)."""
        return dict(self.state_dict())

    def load_hf_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> list[str]:
        """Copy a complete classifier state (HF names; torch tensors or numpy) into the model.
        Names and shapes are checked by bertcore.model.hf (the table jaxbert uses too); returns the
        missing names, always none (torchbert.checkpoint's Checkpointer.restore calls this)."""
        return _load_classifier_state(self, state, source)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ModernBertForSequenceClassification(nn.Module):
    """forward(input_ids, token_type_ids, attention_mask) -> logits (B, num_labels).
    token_type_ids are accepted for the batch contract and ignored (ModernBERT has no segment
    embeddings)."""

    def __init__(self, config: ModernBertConfig, num_labels: int):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.drop = Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.head.apply(lambda m: _modernbert_init_weights(m, config))
        _trunc_normal(self.classifier, config.classifier_std, config.initializer_cutoff_factor)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        seq = self.model(input_ids, attention_mask)                           # (B, L, H)
        if self.config.classifier_pooling == "cls":
            pooled = seq[:, 0]                                                # (B, H)
        else:   # "mean": over the real tokens only
            mask = attention_mask.to(seq.dtype).unsqueeze(-1)                 # (B, L, 1)
            pooled = (seq * mask).sum(dim=1) / mask.sum(dim=1)                # (B, H)
        return self.classifier(self.drop(self.head(pooled)))                  # (B, num_labels)

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing of every encoder layer, as ModernBertForMaskedLM's."""
        self.model.gradient_checkpointing = True

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor once under its HF name (no tied aliases here: no MLM decoder)."""
        return dict(self.state_dict())

    def load_hf_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> list[str]:
        """As BertForSequenceClassification's: a complete classifier state, checked by
        bertcore.model.hf; returns the missing names, always none."""
        return _load_classifier_state(self, state, source)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ElectraClassificationHead(nn.Module):
    """transformers' ElectraClassificationHead: the [CLS] vector through dropout, dense, GELU
    (exact erf, whatever hidden_act says: transformers fixes it), dropout and `out_proj`. Not
    BERT's pooler (tanh), which ELECTRA does not have."""

    def __init__(self, config: ElectraConfig, num_labels: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        # HF: classifier_dropout when set, else hidden_dropout_prob; we write
        # classifier_dropout=None into config.json, so it is always the latter.
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.out_proj = nn.Linear(config.hidden_size, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features[:, 0])                                      # (B, H)
        x = self.dropout(F.gelu(self.dense(x)))
        return self.out_proj(x)                                               # (B, num_labels)


class ElectraForSequenceClassification(nn.Module):
    """forward(input_ids, token_type_ids, attention_mask) -> logits (B, num_labels): the
    discriminator's encoder (a pretraining run's `discriminator.electra.*`) and a fresh head."""

    def __init__(self, config: ElectraConfig, num_labels: int):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.electra = ElectraModel(config)
        self.classifier = ElectraClassificationHead(config, num_labels)
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        seq = self.electra(input_ids, token_type_ids, attention_mask)         # (B, L, H)
        return self.classifier(seq)                                           # (B, num_labels)

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing of every encoder layer, as ElectraPreTrainingModel's."""
        self.electra.encoder.gradient_checkpointing = True

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor once under its HF name (no tied aliases here: no generator)."""
        return dict(self.state_dict())

    def load_hf_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> list[str]:
        """As BertForSequenceClassification's: a complete classifier state, checked by
        bertcore.model.hf; returns the missing names, always none."""
        return _load_classifier_state(self, state, source)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _load_classifier_state(model: nn.Module, state: dict[str, Any], source: str) -> list[str]:
    named = {k: _as_numpy(v) for k, v in state.items()}
    check_classifier_state(named, model.config, model.num_labels, source=source)
    own = model.state_dict()
    with torch.no_grad():
        for k, a in named.items():
            own[k].copy_(torch.from_numpy(np.asarray(a)))
    return []


def classification_loss(logits: torch.Tensor, labels: torch.Tensor
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cross-entropy over the batch, in fp32 whatever the compute dtype; and accuracy."""
    logits = logits.float()
    labels = labels.long()
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return loss, {"loss": loss.detach(), "accuracy": accuracy.detach()}


def regression_loss(logits: torch.Tensor, labels: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean squared error of the one output against float labels, in fp32: transformers'
    problem_type "regression" (MSELoss on logits.squeeze(), num_labels=1)."""
    loss = F.mse_loss(logits.float()[:, 0], labels.float())
    return loss, {"loss": loss.detach()}


def sequence_loss(regression: bool):
    """The loss a fine-tuning run trains with: `regression_loss` or `classification_loss`."""
    return regression_loss if regression else classification_loss
