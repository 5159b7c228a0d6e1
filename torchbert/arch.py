"""The model a config builds: BERT (model.py), ModernBERT (modernbert.py) or ELECTRA
(electra.py), for pretraining or sequence classification (classifier.py). The twin of
jaxbert/arch.py; the training, fill-mask, classify and conversion code asks here, so neither
architecture's file knows of the other."""

from __future__ import annotations

import os
from typing import Any

from bertcore.model.config import ElectraConfig, ModelConfig, ModernBertConfig, load_model_config

from .classifier import (BertForSequenceClassification, ElectraForSequenceClassification,
                         ModernBertForSequenceClassification)
from .electra import ElectraPreTrainingModel
from .model import BertForPreTraining
from .modernbert import ModernBertForMaskedLM


def pretraining_model(config: ModelConfig, pad_vocab_to: int = 1):
    """BertForPreTraining(config) or ModernBertForMaskedLM(config): the same forward
    (input_ids, token_type_ids, attention_mask, masked_positions, nsp) -> (mlm_logits, nsp_logits)
    and the same Hugging Face helpers (hf_state_dict, load_hf_state_dict, save_pretrained).
    ElectraPreTrainingModel(config) (generator + discriminator) has those helpers and its own
    forward (electra.py)."""
    return _pretraining_class(config)(config, pad_vocab_to=pad_vocab_to)


def _pretraining_class(config: ModelConfig):
    if isinstance(config, ElectraConfig):
        return ElectraPreTrainingModel
    return ModernBertForMaskedLM if isinstance(config, ModernBertConfig) else BertForPreTraining


def classifier_model(config: ModelConfig, num_labels: int):
    """BertForSequenceClassification, ModernBertForSequenceClassification or
    ElectraForSequenceClassification (config, num_labels): the same forward (input_ids,
    token_type_ids, attention_mask) -> logits and the same helpers (hf_state_dict,
    load_hf_state_dict, gradient_checkpointing_enable)."""
    if isinstance(config, ElectraConfig):
        return ElectraForSequenceClassification(config, num_labels)
    cls = (ModernBertForSequenceClassification if isinstance(config, ModernBertConfig)
           else BertForSequenceClassification)
    return cls(config, num_labels)


def from_pretrained(path: str | os.PathLike, **kwargs: Any):
    """A Hugging Face directory of either architecture (its config.json's `model_type`)."""
    return _pretraining_class(load_model_config(path)).from_pretrained(path, **kwargs)
