"""Sequence classification in JAX/Flax linen, BERT, ModernBERT and ELECTRA: the twin of
`torchbert/classifier.py`.

Hugging Face's `BertForSequenceClassification`: the encoder with its pooler (`bert/...`, reused
from model.py's BertModel), dropout on the pooled [CLS] vector, and `classifier`, a Dense
H -> num_labels. Hugging Face's `ModernBertForSequenceClassification`: the encoder (`model/...`,
modernbert.py's ModernBertModel), the [CLS] vector or the mean over the real tokens
(`classifier_pooling`), the MLM head's transform (`head/...`: dense, GELU, norm), dropout
(`classifier_dropout`) and `classifier`. Hugging Face's `ElectraForSequenceClassification`: the
discriminator's encoder (`electra/...`, electra.py's ElectraModel; no pooler) and `classifier`,
ELECTRA's own head on the [CLS] vector (dropout, dense, GELU, dropout, `out_proj`). The Flax
paths are the HF names split at the dots
(`classifier/kernel` is `classifier.weight` transposed); bertcore.model.hf's `classifier_hf_to_flax`
/ `classifier_flax_to_hf` convert, from the one table both twins use. The heads' dropout is
model.py's `Dropout` (the shared 16-bit rule, as in the encoder), and `remat=True` recomputes
each encoder layer in the backward pass, as for the pretraining models.

The losses: `classification_loss` (cross-entropy) and `regression_loss` (transformers'
problem_type "regression": MSE of the one output); `sequence_loss` picks one for a run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import electra, modernbert
from .model import BertModel, Dropout, _Module, gelu


class BertForSequenceClassification(_Module):
    """`model.apply({'params': p}, input_ids, token_type_ids, attention_mask, deterministic=True,
    rngs={'dropout': key})` -> logits (B, num_labels). `remat=True`: activation checkpointing of
    each encoder layer."""
    num_labels: int = 2

    def setup(self):
        self.bert = BertModel(**self._shared())
        # HF uses config.classifier_dropout when set, else hidden_dropout_prob; we write
        # classifier_dropout=None into config.json, so it is always the latter.
        self.dropout = Dropout(rate=self.config.hidden_dropout_prob)
        self.classifier = self._dense(self.num_labels)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 deterministic: bool = True):
        _, pooled = self.bert(input_ids, token_type_ids, attention_mask, deterministic)  # (B, H)
        return self.classifier(self.dropout(pooled, deterministic=deterministic))   # (B, labels)


class ModernBertForSequenceClassification(modernbert._Module):
    """`model.apply({'params': p}, input_ids, token_type_ids, attention_mask, deterministic=True,
    rngs={'dropout': key})` -> logits (B, num_labels). token_type_ids are accepted for the batch
    contract and ignored (ModernBERT has no segment embeddings). `remat=True`: activation
    checkpointing of each encoder layer."""
    num_labels: int = 2

    def setup(self):
        c = self.config
        self.model = modernbert.ModernBertModel(**self._shared())
        self.head = modernbert.ModernBertPredictionHead(**self._shared())
        self.drop = Dropout(rate=c.classifier_dropout)
        self.classifier = self._dense(self.num_labels, c.classifier_std, True)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 deterministic: bool = True):
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        seq = self.model(input_ids, attention_mask, deterministic)                 # (B, L, H)
        if self.config.classifier_pooling == "cls":
            pooled = seq[:, 0]                                                     # (B, H)
        else:   # "mean": over the real tokens only, summed in float32 (also under bf16)
            mask = attention_mask.astype(jnp.float32)[:, :, None]                  # (B, L, 1)
            pooled = ((seq.astype(jnp.float32) * mask).sum(axis=1)
                      / mask.sum(axis=1)).astype(seq.dtype)                        # (B, H)
        h = self.drop(self.head(pooled), deterministic=deterministic)
        return self.classifier(h)                                                  # (B, labels)


class ElectraClassificationHead(_Module):
    """transformers' ElectraClassificationHead: the [CLS] vector through dropout, dense, GELU
    (exact erf, whatever hidden_act says: transformers fixes it), dropout and `out_proj`. Not
    BERT's pooler (tanh), which ELECTRA does not have. Each call of `dropout` draws its own
    key (make_rng counts the calls)."""
    num_labels: int = 2

    def setup(self):
        self.dense = self._dense(self.config.hidden_size)
        # HF: classifier_dropout when set, else hidden_dropout_prob; we write
        # classifier_dropout=None into config.json, so it is always the latter.
        self.dropout = Dropout(rate=self.config.hidden_dropout_prob)
        self.out_proj = self._dense(self.num_labels)

    def __call__(self, features, deterministic: bool = True):
        x = self.dropout(features[:, 0], deterministic=deterministic)              # (B, H)
        x = self.dropout(gelu(self.dense(x)), deterministic=deterministic)
        return self.out_proj(x)                                                    # (B, labels)


class ElectraForSequenceClassification(_Module):
    """`model.apply({'params': p}, input_ids, token_type_ids, attention_mask, deterministic=True,
    rngs={'dropout': key})` -> logits (B, num_labels): the discriminator's encoder (a pretraining
    run's `discriminator/electra/...`) and a fresh head. `remat=True`: activation checkpointing
    of each encoder layer."""
    num_labels: int = 2

    def setup(self):
        self.electra = electra.ElectraModel(**self._shared())
        self.classifier = ElectraClassificationHead(**self._shared(), num_labels=self.num_labels)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 deterministic: bool = True):
        seq = self.electra(input_ids, token_type_ids, attention_mask, deterministic)  # (B, L, H)
        return self.classifier(seq, deterministic)                                 # (B, labels)


def classification_loss(logits, labels) -> tuple[jax.Array, dict]:
    """Mean cross-entropy over the batch, in fp32 whatever the compute dtype; and accuracy.
    (torch: F.cross_entropy; here logsumexp - picked, as pretraining_loss does.)"""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    loss = (jax.nn.logsumexp(logits, axis=-1) - picked).mean()
    accuracy = (logits.argmax(-1) == labels).astype(jnp.float32).mean()
    return loss, {"loss": loss, "accuracy": accuracy}


def regression_loss(logits, labels) -> tuple[jax.Array, dict]:
    """Mean squared error of the one output against float labels, in fp32: transformers'
    problem_type "regression" (MSELoss on logits.squeeze(), num_labels=1)."""
    loss = jnp.mean(jnp.square(logits.astype(jnp.float32)[:, 0] - labels.astype(jnp.float32)))
    return loss, {"loss": loss}


def sequence_loss(regression: bool):
    """The loss a fine-tuning run trains with: `regression_loss` or `classification_loss`."""
    return regression_loss if regression else classification_loss
