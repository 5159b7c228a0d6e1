"""Token classification (tagging) in JAX/Flax linen, BERT, ModernBERT and ELECTRA: the twin of
`torchbert/tagger.py`.

Hugging Face's `BertForTokenClassification`: the encoder without its pooler (`bert/...`,
model.py's BertModel called with pool=False, so no pooler parameters exist), dropout on every
token's vector and `classifier`, a Dense H -> num_labels. `ModernBertForTokenClassification`:
the encoder (`model/...`), the MLM head's transform on every token (`head/...`: dense, GELU,
norm), dropout (`classifier_dropout`) and `classifier`. `ElectraForTokenClassification`: the
discriminator's encoder (`electra/...`), dropout and `classifier` (one Dense). The Flax paths are
the HF names split at the dots; bertcore.tag.model's `tagger_param_table` is the one table both
twins use (bertcore.model.hf's `table_to_flax` / `table_to_hf` convert by it). Dropout is
model.py's `Dropout` (the shared 16-bit rule), as in the encoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bertcore.model.config import ElectraConfig, ModelConfig, ModernBertConfig
from bertcore.tag.data import IGNORE

from . import electra, modernbert
from .model import BertModel, Dropout, _Module


class BertForTokenClassification(_Module):
    """`model.apply({'params': p}, input_ids, token_type_ids, attention_mask, deterministic=True,
    rngs={'dropout': key})` -> logits (B, L, num_labels)."""
    num_labels: int = 2

    def setup(self):
        self.bert = BertModel(**self._shared())
        # HF uses config.classifier_dropout when set, else hidden_dropout_prob; we write
        # classifier_dropout=None into config.json, so it is always the latter.
        self.dropout = Dropout(rate=self.config.hidden_dropout_prob)
        self.classifier = self._dense(self.num_labels)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 deterministic: bool = True):
        seq, _ = self.bert(input_ids, token_type_ids, attention_mask, deterministic,
                           pool=False)                                             # (B, L, H)
        return self.classifier(self.dropout(seq, deterministic=deterministic))    # (B, L, T)


class ModernBertForTokenClassification(modernbert._Module):
    """`model.apply(...)` as BertForTokenClassification's -> logits (B, L, num_labels).
    token_type_ids are accepted for the batch contract and ignored."""
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
        h = self.drop(self.head(seq), deterministic=deterministic)
        return self.classifier(h)                                                  # (B, L, T)


class ElectraForTokenClassification(_Module):
    """`model.apply(...)` as BertForTokenClassification's -> logits (B, L, num_labels): the
    discriminator's encoder (a pretraining run's `discriminator/electra/...`) and a Dense."""
    num_labels: int = 2

    def setup(self):
        self.electra = electra.ElectraModel(**self._shared())
        self.dropout = Dropout(rate=self.config.hidden_dropout_prob)   # as BERT's
        self.classifier = self._dense(self.num_labels)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 deterministic: bool = True):
        seq = self.electra(input_ids, token_type_ids, attention_mask, deterministic)  # (B, L, H)
        return self.classifier(self.dropout(seq, deterministic=deterministic))       # (B, L, T)


def tagger_model(config: ModelConfig, num_labels: int, **kwargs):
    """The config's token classifier (dtype, remat): the same `apply` signature, logits
    (B, L, num_labels) out."""
    if isinstance(config, ElectraConfig):
        return ElectraForTokenClassification(config, num_labels=num_labels, **kwargs)
    if isinstance(config, ModernBertConfig):
        return ModernBertForTokenClassification(config, num_labels=num_labels, **kwargs)
    return BertForTokenClassification(config, num_labels=num_labels, **kwargs)


def tagging_loss(logits, labels) -> tuple[jax.Array, dict]:
    """Mean cross-entropy over the labelled pieces (each word's first; IGNORE elsewhere), in fp32
    whatever the compute dtype; and their accuracy. (torch: F.cross_entropy with ignore_index;
    here logsumexp - picked under a mask.)"""
    logits = logits.astype(jnp.float32)                                            # (B, L, T)
    scored = labels != IGNORE
    safe = jnp.where(scored, labels, 0).astype(jnp.int32)
    picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    n = jnp.maximum(scored.sum(), 1).astype(jnp.float32)
    loss = jnp.where(scored, jax.nn.logsumexp(logits, axis=-1) - picked, 0.0).sum() / n
    accuracy = jnp.where(scored, logits.argmax(-1) == safe, False).sum() / n
    return loss, {"loss": loss, "accuracy": accuracy}
