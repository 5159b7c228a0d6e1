"""Token classification (tagging) in PyTorch, BERT, ModernBERT and ELECTRA: the twin of
`jaxbert/tagger.py`.

Hugging Face's `BertForTokenClassification`: the encoder without its pooler (`bert.*`, model.py's
BertModel; transformers builds it with add_pooling_layer=False), dropout on every token's vector
and `classifier`, a Linear H -> num_labels. `ModernBertForTokenClassification`: the encoder
(`model.*`, modernbert.py's ModernBertModel), the MLM head's transform on every token (`head.*`:
dense, GELU, norm), dropout (`classifier_dropout`) and `classifier`.
`ElectraForTokenClassification`: the discriminator's encoder (`electra.*`, electra.py's
ElectraModel), dropout and `classifier` (one Linear, not its sequence classifier's two-layer
head). `state_dict()` has exactly transformers' keys; the name table is
bertcore.tag.model's `tagger_param_table`. Dropout is model.py's `Dropout` (the shared 16-bit
rule), as in the encoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bertcore.model.config import BertConfig, ElectraConfig, ModelConfig, ModernBertConfig
from bertcore.tag.data import IGNORE
from bertcore.tag.model import check_tagger_state

from .electra import ElectraModel
from .model import BertModel, Dropout, _as_numpy, _init_weights
from .modernbert import ModernBertModel, ModernBertPredictionHead, _trunc_normal
from .modernbert import _init_weights as _modernbert_init_weights


class _Tagger(nn.Module):
    """What the three taggers share: their HF state, its loading, the parameter count."""

    config: Any
    num_labels: int

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor once under its HF name (no tied aliases: no MLM decoder)."""
        return dict(self.state_dict())

    def load_hf_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> list[str]:
        """Copy a complete tagger state (HF names; torch tensors or numpy) into the model, names
        and shapes checked by bertcore.tag.model (the table jaxbert uses too); returns the missing
        names, always none (torchbert.checkpoint's Checkpointer.restore calls this)."""
        named = {k: _as_numpy(v) for k, v in state.items()}
        check_tagger_state(named, self.config, self.num_labels, source=source)
        own = self.state_dict()
        with torch.no_grad():
            for k, a in named.items():
                own[k].copy_(torch.from_numpy(np.asarray(a)))
        return []

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class BertForTokenClassification(_Tagger):
    """forward(input_ids, token_type_ids, attention_mask) -> logits (B, L, num_labels)."""

    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config)
        self.bert.pooler = None     # transformers: add_pooling_layer=False (no bert.pooler.*)
        # HF uses config.classifier_dropout when set, else hidden_dropout_prob; we write
        # classifier_dropout=None into config.json, so it is always the latter.
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        _init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        seq, _ = self.bert(input_ids, token_type_ids, attention_mask, pool=False)  # (B, L, H)
        return self.classifier(self.dropout(seq))                                  # (B, L, T)

    def gradient_checkpointing_enable(self) -> None:
        self.bert.encoder.gradient_checkpointing = True


class ModernBertForTokenClassification(_Tagger):
    """forward(input_ids, token_type_ids, attention_mask) -> logits (B, L, num_labels).
    token_type_ids are accepted for the batch contract and ignored."""

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
        seq = self.model(input_ids, attention_mask)                                # (B, L, H)
        return self.classifier(self.drop(self.head(seq)))                          # (B, L, T)

    def gradient_checkpointing_enable(self) -> None:
        self.model.gradient_checkpointing = True


class ElectraForTokenClassification(_Tagger):
    """forward(input_ids, token_type_ids, attention_mask) -> logits (B, L, num_labels): the
    discriminator's encoder (a pretraining run's `discriminator.electra.*`) and a Linear."""

    def __init__(self, config: ElectraConfig, num_labels: int):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.electra = ElectraModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)   # classifier_dropout=None, as BERT's
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        seq = self.electra(input_ids, token_type_ids, attention_mask)              # (B, L, H)
        return self.classifier(self.dropout(seq))                                  # (B, L, T)

    def gradient_checkpointing_enable(self) -> None:
        self.electra.encoder.gradient_checkpointing = True


def tagger_model(config: ModelConfig, num_labels: int) -> _Tagger:
    """The config's token classifier: the same forward (input_ids, token_type_ids,
    attention_mask) -> logits (B, L, num_labels) and the same helpers."""
    if isinstance(config, ElectraConfig):
        return ElectraForTokenClassification(config, num_labels)
    if isinstance(config, ModernBertConfig):
        return ModernBertForTokenClassification(config, num_labels)
    return BertForTokenClassification(config, num_labels)


def tagging_loss(logits: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cross-entropy over the labelled pieces (each word's first; IGNORE elsewhere), in fp32
    whatever the compute dtype; and their accuracy."""
    logits = logits.float().flatten(0, 1)                                          # (B*L, T)
    labels = labels.long().flatten()
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    scored = labels != IGNORE
    accuracy = (logits.argmax(-1)[scored] == labels[scored]).float().mean()
    return loss, {"loss": loss.detach(), "accuracy": accuracy.detach()}
