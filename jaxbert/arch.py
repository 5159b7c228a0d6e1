"""The model a config builds: BERT (model.py), ModernBERT (modernbert.py) or ELECTRA
(electra.py), for pretraining or sequence classification (classifier.py). The twin of
torchbert/arch.py; the training, fill-mask, classify and conversion code asks here, so neither
architecture's file knows of the other."""

from __future__ import annotations

import os

from typing import Any

import jax.numpy as jnp

from bertcore.model.config import ElectraConfig, ModelConfig, ModernBertConfig, load_model_config

from . import classifier, electra, model, modernbert


def _module(config: ModelConfig):
    if isinstance(config, ElectraConfig):
        return electra
    return modernbert if isinstance(config, ModernBertConfig) else model


def pretraining_model(config: ModelConfig, **kwargs: Any):
    """BertForPreTraining(config, ...) or ModernBertForMaskedLM(config, ...) (dtype, remat,
    pad_vocab_to): the same `apply` signature, (mlm_logits, nsp_logits) out."""
    if isinstance(config, ElectraConfig):     # its own apply: generator + discriminator
        return electra.ElectraPreTrainingModel(config, **kwargs)
    if isinstance(config, ModernBertConfig):
        return modernbert.ModernBertForMaskedLM(config, **kwargs)
    return model.BertForPreTraining(config, **kwargs)


def classifier_model(config: ModelConfig, num_labels: int, **kwargs: Any):
    """BertForSequenceClassification, ModernBertForSequenceClassification or
    ElectraForSequenceClassification (config, ..., num_labels) (dtype, remat): the same `apply`
    signature, logits out."""
    if isinstance(config, ElectraConfig):
        return classifier.ElectraForSequenceClassification(config, num_labels=num_labels, **kwargs)
    if isinstance(config, ModernBertConfig):
        return classifier.ModernBertForSequenceClassification(config, num_labels=num_labels,
                                                              **kwargs)
    return classifier.BertForSequenceClassification(config, num_labels=num_labels, **kwargs)


def init_params(config: ModelConfig, rng, param_dtype: Any = jnp.float32) -> dict:
    """Fresh parameters of the config's model: the nested 'params' dict."""
    return _module(config).init_params(config, rng, param_dtype)


def merge_hf_params(state: dict[str, Any], config: ModelConfig, fresh) -> tuple[dict, list[str]]:
    """Params of the config's model from HF-named weights, missing heads from `fresh()`."""
    return _module(config).merge_hf_params(state, config, fresh)


def from_pretrained(path: str | os.PathLike, **kwargs: Any):
    """A Hugging Face directory of either architecture (its config.json's `model_type`):
    `(model, params)` as the architecture's `from_pretrained` returns them."""
    return _module(load_model_config(path)).from_pretrained(path, **kwargs)
