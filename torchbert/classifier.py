"""BERT for sequence classification in PyTorch: the twin of `jaxbert/classifier.py`.

Hugging Face's `BertForSequenceClassification`: the encoder with its pooler (`bert.*`, reused
from model.py's BertModel), dropout on the pooled [CLS] vector, and `classifier`, a Linear
H -> num_labels. `state_dict()` has exactly transformers' keys, so a Hugging Face classifier
loads and saves with no renaming; the name table is bertcore.hf's `classifier_param_table`.
The head's dropout is model.py's `Dropout` (the shared 16-bit rule, as in the encoder), and
`gradient_checkpointing_enable()` recomputes each encoder layer in the backward pass, as for
BertForPreTraining.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bertcore.config import BertConfig
from bertcore.hf import check_classifier_state

from .model import BertModel, Dropout, _as_numpy, _init_weights


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
        Names and shapes are checked by bertcore.hf (the table jaxbert uses too); returns the
        missing names, always none (torchbert.checkpoint's Checkpointer.restore calls this)."""
        named = {k: _as_numpy(v) for k, v in state.items()}
        check_classifier_state(named, self.config, self.num_labels, source=source)
        own = self.state_dict()
        with torch.no_grad():
            for k, a in named.items():
                own[k].copy_(torch.from_numpy(np.asarray(a)))
        return []

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def classification_loss(logits: torch.Tensor, labels: torch.Tensor
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cross-entropy over the batch, in fp32 whatever the compute dtype; and accuracy."""
    logits = logits.float()
    labels = labels.long()
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return loss, {"loss": loss.detach(), "accuracy": accuracy.detach()}
