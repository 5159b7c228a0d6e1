"""bertcore: the framework-free half of twinbert (numpy + tokenizers only).

Config, tokenizer, corpus readers, pretokenized shards, masking, batches and schedules shared by
torchbert and jaxbert. Importing bertcore never imports torch or jax.
"""

from bertcore.model.config import PRESETS, BertConfig, TrainConfig
from bertcore.infra.errors import UserError

__all__ = ["BertConfig", "TrainConfig", "PRESETS", "UserError"]
