"""Model and training configuration, shared by both twins.

`BertConfig` uses the field names of Hugging Face's `config.json`, so a real BERT config loads as
is (unknown keys are ignored) and the file we write loads in `transformers.BertConfig`.
`TrainConfig` holds everything about a run that is not the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertcore.infra.errors import UserError
from bertcore.infra.files import write_text_atomic
from bertcore.infra.flags import check_fields
from bertcore.model.sizes import check_model_fits, check_size_field, check_training_fits

# Google's BERT miniatures (Turc et al. 2019) plus base and large. FFN width is 4 * hidden.
PRESETS: dict[str, tuple[int, int, int]] = {
    #          layers, hidden, heads
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}

LAYER_NORM_POSITIONS = ("post", "pre")


def is_number(v: Any) -> bool:
    """An int or float that is not a bool (what JSON numbers and number flags give)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)
HIDDEN_ACTS = ("gelu",)  # exact (erf) GELU, as original BERT and HF "gelu"


def _from_json_file(cls, path: Path, what: str, fix: str):
    """`cls.from_dict` of a config file's JSON object; any problem is one UserError naming
    `what`, the file and the `fix`."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {what} {path} ({e}); {fix}")
    except ValueError as e:    # not JSON, or not UTF-8 text
        raise UserError(f"cannot read {what} {path}: not valid JSON ({e}); {fix}")
    if not isinstance(d, dict):
        raise UserError(f"{what} {path} must hold a JSON object; {fix}")
    try:
        return cls.from_dict(d)
    except UserError as e:
        raise UserError(f"{what} {path}: {e}") from None


def _config_json(path: str | Path) -> Path:
    """The config.json of `path` (a file, or a directory holding one); UserError if missing."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass a config.json or a --preset")
    return path


def _check_model_type(d: dict[str, Any], want: str) -> None:
    """A config of the other architecture is refused by name (its fields would half match)."""
    kind = d.get("model_type")      # absent: take the dict as the class asked for
    if kind in ("bert", "modernbert", "electra") and kind != want:
        raise UserError(f"this is a {kind} config (model_type), not a {want} one; load it with "
                        f"bertcore.model.config.load_model_config, or a model with "
                        f"torchbert.arch / jaxbert.arch's from_pretrained, which pick the "
                        f"architecture")


def _validate_bert_fields(config: Any, sizes: tuple[str, ...]) -> None:
    """The checks BERT's and ELECTRA's configs share (the same HF field names): sizes, heads
    that divide the width, dropout, initialiser and epsilon ranges, the activation."""
    for name in sizes:
        check_size_field(name, getattr(config, name))
    if config.hidden_size % config.num_attention_heads:
        raise UserError(
            f"config hidden_size={config.hidden_size} is not divisible by "
            f"num_attention_heads={config.num_attention_heads}; pick a head count that "
            f"divides it")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        v = getattr(config, name)
        if not is_number(v) or not 0.0 <= v < 1.0:
            raise UserError(f"config {name}={v!r} must be a number in [0, 1)")
    for name in ("initializer_range", "layer_norm_eps"):
        v = getattr(config, name)
        if not is_number(v) or not 0.0 < v < math.inf:
            raise UserError(f"config {name}={v!r} must be a positive number")
    if config.hidden_act not in HIDDEN_ACTS:
        raise UserError(f"config hidden_act={config.hidden_act!r} is not supported; use one of "
                        f"{', '.join(HIDDEN_ACTS)}")


class _ModelConfigFile:
    """What both model configs (dataclasses) share: their config.json in and out, and replace."""

    @classmethod
    def from_json_file(cls, path: str | Path):
        return _from_json_file(cls, _config_json(path), "config file", "fix or replace it")

    def to_json_file(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class BertConfig(_ModelConfigFile):
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Not an HF field: "post" is original BERT (and loads HF weights); "pre" normalises before
    # each sublayer (the original project's and Cramming's variant) and adds a final LayerNorm.
    layer_norm_position: str = "post"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        _validate_bert_fields(self, ("vocab_size", "hidden_size", "num_hidden_layers",
                                     "num_attention_heads", "intermediate_size",
                                     "max_position_embeddings", "type_vocab_size"))
        if not isinstance(self.pad_token_id, int) or isinstance(self.pad_token_id, bool):
            raise UserError(f"config pad_token_id={self.pad_token_id!r} must be an integer")
        if self.layer_norm_position not in LAYER_NORM_POSITIONS:
            raise UserError(f"config layer_norm_position={self.layer_norm_position!r} must be "
                            f"'post' or 'pre'")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise UserError(f"config pad_token_id={self.pad_token_id} is outside the vocabulary "
                            f"(vocab_size={self.vocab_size})")
        # last: its weights against the memory there is (bertcore.model.sizes)
        check_model_fits(self)

    # ---- presets and (de)serialisation -------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "BertConfig":
        if name not in PRESETS:
            raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        kw = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                  intermediate_size=4 * hidden)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BertConfig":
        _check_model_type(d, "bert")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # Fields that make the file a complete Hugging Face BERT config.
        d.update(model_type="bert", architectures=["BertForPreTraining"],
                 position_embedding_type="absolute")
        return d

    def without_dropout(self) -> "BertConfig":
        return self.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


# ---- ModernBERT (Warner et al. 2024, arXiv 2412.13663; transformers' ModernBertConfig) --------

# Presets that mirror BERT's: depth, width and heads as ours, the GeGLU width picked so the feed-
# forward has about BERT's 8 H^2 weights (3 H I with I ~ 8H/3), so a ModernBERT preset and the
# BERT preset of the same name have about the same parameter count; base and large as published.
MODERNBERT_PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    #          layers, hidden, heads, intermediate, local_attention
    "tiny": (2, 128, 2, 352, 64),
    "mini": (4, 256, 4, 672, 64),
    "small": (4, 512, 8, 1344, 64),
    "medium": (8, 512, 8, 1344, 64),
    "base": (22, 768, 12, 1152, 128),
    "large": (28, 1024, 16, 2624, 128),
}
MODERNBERT_ACTS = ("gelu",)
CLASSIFIER_POOLINGS = ("cls", "mean")
FULL, SLIDING = "full_attention", "sliding_attention"   # transformers' layer_types names


@dataclass(frozen=True)
class ModernBertConfig(_ModelConfigFile):
    """ModernBERT's config with Hugging Face `ModernBertConfig`'s field names, so the
    `config.json` of a published ModernBERT loads as is and ours loads in transformers (4.48+,
    and 5, which also reads `layer_types` and `rope_parameters`, both written by `to_dict`)."""
    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0   # weights ~ N(0, std) truncated at +-factor * std
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int = 50283
    bos_token_id: int = 50281
    eos_token_id: int = 50282
    cls_token_id: int = 50281
    sep_token_id: int = 50282
    global_rope_theta: float = 160000.0
    local_rope_theta: float = 10000.0
    attention_bias: bool = False
    attention_dropout: float = 0.0
    global_attn_every_n_layers: int = 3      # layer i attends globally iff i % n == 0
    local_attention: int = 128               # window width: |i - j| <= local_attention // 2
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_pooling: str = "cls"
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    tie_word_embeddings: bool = True

    model_type = "modernbert"   # a class attribute, not a field

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def out_std(self) -> float:
        """transformers' init std of the output projections (both Wo) and the MLM head's dense,
        scaled down with depth; the rest start at initializer_range."""
        return self.initializer_range / math.sqrt(2.0 * self.num_hidden_layers)

    @property
    def classifier_std(self) -> float:
        """transformers' init std of a sequence classifier's output layer ("final_out")."""
        return self.hidden_size ** -0.5

    @property
    def layer_types(self) -> list[str]:
        """transformers' per-layer attention kinds: global on layers 0, n, 2n, ..."""
        return [FULL if i % self.global_attn_every_n_layers == 0 else SLIDING
                for i in range(self.num_hidden_layers)]

    def is_global(self, layer: int) -> bool:
        return layer % self.global_attn_every_n_layers == 0

    def rope_theta(self, layer: int) -> float:
        return self.global_rope_theta if self.is_global(layer) else self.local_rope_theta

    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings",
                     "global_attn_every_n_layers", "local_attention"):
            check_size_field(name, getattr(self, name))
        if self.hidden_size % self.num_attention_heads or self.head_dim % 2:
            raise UserError(
                f"config hidden_size={self.hidden_size} must split into "
                f"num_attention_heads={self.num_attention_heads} heads of an even size (RoPE "
                f"rotates pairs of features); pick a head count that does")
        for name in ("attention_dropout", "embedding_dropout", "mlp_dropout",
                     "classifier_dropout"):
            v = getattr(self, name)
            if not is_number(v) or not 0.0 <= v < 1.0:
                raise UserError(f"config {name}={v!r} must be a number in [0, 1)")
        for name in ("initializer_range", "initializer_cutoff_factor", "norm_eps",
                     "global_rope_theta", "local_rope_theta"):
            v = getattr(self, name)
            if not is_number(v) or not 0.0 < v < math.inf:
                raise UserError(f"config {name}={v!r} must be a positive number")
        for name in ("norm_bias", "attention_bias", "mlp_bias", "decoder_bias",
                     "classifier_bias", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"config {name}={getattr(self, name)!r} must be true or false")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id",
                     "sep_token_id"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < self.vocab_size:
                raise UserError(f"config {name}={v!r} must be a token id below vocab_size="
                                f"{self.vocab_size}")
        for name in ("hidden_activation", "classifier_activation"):
            if getattr(self, name) not in MODERNBERT_ACTS:
                raise UserError(f"config {name}={getattr(self, name)!r} is not supported; use "
                                f"one of {', '.join(MODERNBERT_ACTS)}")
        if self.classifier_pooling not in CLASSIFIER_POOLINGS:
            raise UserError(f"config classifier_pooling={self.classifier_pooling!r} must be "
                            f"'cls' or 'mean'")
        if not self.tie_word_embeddings:
            raise UserError("config tie_word_embeddings=false is not supported: the MLM decoder "
                            "is the token embedding matrix; set it to true")
        # last: its weights against the memory there is (bertcore.model.sizes)
        check_model_fits(self)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModernBertConfig":
        if name not in MODERNBERT_PRESETS:
            raise UserError(f"unknown preset {name!r}; choose one of "
                            f"{', '.join(MODERNBERT_PRESETS)}")
        layers, hidden, heads, inter, window = MODERNBERT_PRESETS[name]
        kw: dict[str, Any] = dict(num_hidden_layers=layers, hidden_size=hidden,
                                  num_attention_heads=heads, intermediate_size=inter,
                                  local_attention=window)
        if name not in ("base", "large"):
            kw["max_position_embeddings"] = 512   # as BERT's presets (RoPE has no table)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModernBertConfig":
        """Fields by name (unknown keys ignored), also from transformers 5's spelling:
        `rope_parameters` {full_attention|sliding_attention: {rope_theta}} and `layer_types`."""
        _check_model_type(d, "modernbert")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("eos_token_id", "bos_token_id", "pad_token_id", "cls_token_id",
                  "sep_token_id"):
            if isinstance(kw.get(k), list) and kw[k]:
                kw[k] = kw[k][0]              # transformers allows a list of eos ids
            if k in kw and kw[k] is None:
                del kw[k]
        rope = d.get("rope_parameters")
        if isinstance(rope, dict):
            for kind, field in ((FULL, "global_rope_theta"), (SLIDING, "local_rope_theta")):
                if isinstance(rope.get(kind), dict) and "rope_theta" in rope[kind]:
                    if rope[kind].get("rope_type", "default") != "default":
                        raise UserError(f"config rope_parameters.{kind}.rope_type="
                                        f"{rope[kind]['rope_type']!r} is not supported; only "
                                        f"'default' RoPE is")
                    kw[field] = rope[kind]["rope_theta"]
        types = d.get("layer_types")
        if isinstance(types, list) and types:
            def pattern(n: Any) -> list[str]:
                return [FULL if i % n == 0 else SLIDING for i in range(len(types))]

            globals_ = [i for i, t in enumerate(types) if t == FULL]
            # The file's own n where it gives this pattern (with one global layer many do).
            n = kw.get("global_attn_every_n_layers")
            if not (isinstance(n, int) and n >= 1 and pattern(n) == types):
                n = globals_[1] if len(globals_) > 1 else len(types)
                if not globals_ or pattern(n) != types:
                    raise UserError(f"config layer_types {types} is not global attention every "
                                    f"n layers from layer 0, the only pattern supported")
            kw["global_attn_every_n_layers"] = n
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(model_type="modernbert", architectures=["ModernBertForMaskedLM"],
                 layer_types=self.layer_types,
                 rope_parameters={FULL: {"rope_type": "default",
                                         "rope_theta": self.global_rope_theta},
                                  SLIDING: {"rope_type": "default",
                                            "rope_theta": self.local_rope_theta}})
        return d

    def without_dropout(self) -> "ModernBertConfig":
        return self.replace(attention_dropout=0.0, embedding_dropout=0.0, mlp_dropout=0.0)


# ---- ELECTRA (Clark et al. 2020, "Pre-training Text Encoders as Discriminators Rather Than
# Generators"; transformers' ElectraConfig) ----------------------------------------------------

# The same depths, widths and heads as BERT's presets (so an ELECTRA run and a BERT run of one
# preset name train encoders of one size), embeddings factorised to 128 below base as
# ELECTRA-Small does; base and large as published; `electra-small` is ELECTRA-Small as published.
ELECTRA_PRESETS: dict[str, tuple[int, int, int, int]] = {
    #          layers, hidden, heads, embedding_size
    "tiny": (2, 128, 2, 128),
    "mini": (4, 256, 4, 128),
    "small": (4, 512, 8, 128),
    "medium": (8, 512, 8, 128),
    "base": (12, 768, 12, 768),
    "large": (24, 1024, 16, 1024),
    "electra-small": (12, 256, 4, 128),
}
ELECTRA_ROLES = ("pretraining", "discriminator", "generator")


@dataclass(frozen=True)
class ElectraConfig(_ModelConfigFile):
    """ELECTRA's config with Hugging Face `ElectraConfig`'s field names, so the config.json of a
    published ELECTRA (discriminator or generator) loads as is and ours loads in transformers.

    The config describes the *discriminator*, the encoder a run keeps; the generator is derived
    from it as google-research/electra's `get_generator_config` does: `generator_hidden_size`
    and `generator_layers` are fractions of the discriminator's width and depth (their names in
    that repository's configure_pretraining.py; not HF fields, which transformers keeps as extra
    attributes). Both models share the token, position and token-type embeddings (width
    `embedding_size`, each model projecting them to its own hidden size where that differs)."""
    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    generator_hidden_size: float = 0.25
    generator_layers: float = 1.0

    model_type = "electra"               # class attributes, not fields
    layer_norm_position = "post"         # ELECTRA's layers are post-LN BERT layers

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        _validate_bert_fields(self, ("vocab_size", "embedding_size", "hidden_size",
                                     "num_hidden_layers", "num_attention_heads",
                                     "intermediate_size", "max_position_embeddings",
                                     "type_vocab_size"))
        if (not isinstance(self.pad_token_id, int) or isinstance(self.pad_token_id, bool)
                or not 0 <= self.pad_token_id < self.vocab_size):
            raise UserError(f"config pad_token_id={self.pad_token_id!r} must be a token id below "
                            f"vocab_size={self.vocab_size}")
        for name, flag in (("generator_hidden_size", "--generator-size"),
                           ("generator_layers", "--generator-layers")):
            v = getattr(self, name)
            if not is_number(v) or not 0.0 < v <= 1.0:
                raise UserError(f"config {name}={v!r} ({flag}) must be a fraction in (0, 1]: the "
                                f"generator is at most as wide and deep as the discriminator "
                                f"(the paper's best are 1/4 to 1/2 as wide)")
        self._generator_shape()
        # last: its weights against the memory there is (bertcore.model.sizes)
        check_model_fits(self)

    def _generator_shape(self) -> tuple[int, int, int]:
        """(hidden, layers, heads) of the generator: google-research/electra's rule (hidden and
        depth the fractions of the discriminator's, rounded; one head per 64 features)."""
        hidden = max(1, int(round(self.hidden_size * self.generator_hidden_size)))
        layers = max(1, int(round(self.num_hidden_layers * self.generator_layers)))
        heads = max(1, hidden // 64)
        if hidden % heads:
            raise UserError(f"config generator_hidden_size={self.generator_hidden_size} makes a "
                            f"generator {hidden} wide, which does not split into {heads} heads of "
                            f"64; pick a --generator-size that gives a multiple of 64")
        return hidden, layers, heads

    def generator_config(self) -> "ElectraConfig":
        """The generator's own config (what its Hugging Face directory's config.json holds)."""
        hidden, layers, heads = self._generator_shape()
        return self.replace(hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=4 * hidden,
                            generator_hidden_size=1.0, generator_layers=1.0)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ElectraConfig":
        if name not in ELECTRA_PRESETS:
            raise UserError(f"unknown preset {name!r}; choose one of "
                            f"{', '.join(ELECTRA_PRESETS)}")
        layers, hidden, heads, emb = ELECTRA_PRESETS[name]
        kw: dict[str, Any] = dict(num_hidden_layers=layers, hidden_size=hidden,
                                  num_attention_heads=heads, intermediate_size=4 * hidden,
                                  embedding_size=emb)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ElectraConfig":
        _check_model_type(d, "electra")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self, role: str = "pretraining") -> dict[str, Any]:
        """The config.json of a run (role "pretraining": the discriminator's config with the
        generator's fractions) or of one exported model ("discriminator", "generator": the
        architectures transformers builds from it)."""
        d = dataclasses.asdict(self)
        arch = "ElectraForMaskedLM" if role == "generator" else "ElectraForPreTraining"
        d.update(model_type="electra", architectures=[arch], position_embedding_type="absolute",
                 tie_word_embeddings=True)
        if role != "pretraining":
            del d["generator_hidden_size"], d["generator_layers"]
        return d

    def without_dropout(self) -> "ElectraConfig":
        return self.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


# What a generator's own config.json must say for it to be the generator a pair config derives.
GENERATOR_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "embedding_size", "vocab_size",
                    "max_position_embeddings", "type_vocab_size", "hidden_act")


def electra_pair_config(disc: ElectraConfig, gen: ElectraConfig, where: str) -> ElectraConfig:
    """The pair config (the discriminator's, with the generator's size as fractions of it) of
    two transformers ELECTRA configs, as an export or a Hugging Face pair holds them; one
    UserError naming `where` when the generator is larger than the discriminator or is not the
    one that config derives (google-research/electra's rule: a head per 64 features, a 4x
    feed-forward, the shared embeddings)."""
    if gen.hidden_size > disc.hidden_size or gen.num_hidden_layers > disc.num_hidden_layers:
        raise UserError(f"{where}: the generator is larger than its discriminator "
                        f"({gen.hidden_size} wide, {gen.num_hidden_layers} layers against "
                        f"{disc.hidden_size}, {disc.num_hidden_layers}); this project's ELECTRA "
                        f"generator is at most as wide and deep as the discriminator")
    config = disc.replace(generator_hidden_size=gen.hidden_size / disc.hidden_size,
                          generator_layers=gen.num_hidden_layers / disc.num_hidden_layers)
    derived = config.generator_config()
    off = [f"{f}={getattr(gen, f)} (the pair's: {getattr(derived, f)})" for f in GENERATOR_FIELDS
           if getattr(gen, f) != getattr(derived, f)]
    if off:
        raise UserError(f"{where}: generator/config.json does not make the generator of its "
                        f"discriminator: {', '.join(off)}; this project's pair shares the "
                        f"embeddings and gives the generator a head per 64 features and "
                        f"intermediate 4 x hidden")
    return config


def special_ids(tok: Any) -> dict[str, int]:
    """ModernBertConfig's special-token fields from a tokenizer (bertcore.data.tokenizer's
    WordPiece: pad_id, cls_id, sep_id): [CLS] begins a sequence and [SEP] ends it."""
    return dict(pad_token_id=tok.pad_id, cls_token_id=tok.cls_id, bos_token_id=tok.cls_id,
                sep_token_id=tok.sep_id, eos_token_id=tok.sep_id)


ModelConfig = BertConfig | ModernBertConfig | ElectraConfig
ARCHS = {"bert": BertConfig, "modernbert": ModernBertConfig, "electra": ElectraConfig}


def arch_of(config: ModelConfig) -> str:
    """"bert", "modernbert" or "electra": the architecture a model config describes."""
    return getattr(config, "model_type", "bert")


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """BertConfig, ModernBertConfig or ElectraConfig by the dict's `model_type` (none: BERT, as
    older files)."""
    kind = d.get("model_type", "bert")
    if kind == "modernbert":
        return ModernBertConfig.from_dict(d)
    if kind == "electra":
        return ElectraConfig.from_dict(d)
    if kind not in ("bert", None):
        raise UserError(f"model_type {kind!r} is not supported; this project trains 'bert', "
                        f"'modernbert' and 'electra'")
    return BertConfig.from_dict(d)


def load_model_config(path: str | Path) -> ModelConfig:
    """A config.json (or a directory holding one) of either architecture."""
    return _from_json_file(_Dispatch, _config_json(path), "config file", "fix or replace it")


class _Dispatch:
    from_dict = staticmethod(model_config_from_dict)


SCHEDULES = ("linear", "cosine", "noam", "constant")
OBJECTIVES = ("mlm", "electra")


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a pretraining run except the model."""

    # The defaults are the no-argument demo (with bertcore.train.cli's --preset tiny): on the
    # built-in corpus, a few minutes on a 2-core CPU, ending with an MLM loss clearly below the
    # corpus's unigram entropy and a little below what a model blind to context reaches (figures in
    # README.md; tests/test_first_run.py checks the first part). Short sequences (32 tokens, 64
    # of them a step) because a 2-layer model learns to attend to its neighbours far sooner
    # over 32 positions than over 64 at the same tokens a step (docs/guide.md, "The first run in
    # full", has both runs). Real pretraining: --seq-len 128 --max-predictions 20 --batch-size 256
    # --lr 1e-4 --warmup-steps 10000 --steps 1000000 (BERT's phase 1).
    batch_size: int = 64            # global batch (all ranks, all accumulation micro-steps)
    seq_len: int = 32
    max_predictions: int = 5        # P: static number of MLM slots per sequence (15% of 32)
    mask_prob: float = 0.15
    # Of the slots chosen: the share set to [MASK], the share set to a random token (the rest
    # keep their token). BERT's 80/10/10; ELECTRA's pretraining (google-research/electra's
    # pretrain_helpers.mask) 85/0/15, which `--arch electra` sets unless the flags are given.
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    whole_word_mask: bool = False
    nsp: bool = True                # next-sentence prediction on/off
    # "mlm" (BERT, ModernBERT: masked LM, optional NSP) or "electra" (replaced-token detection:
    # the batches carry `sample_seeds`, one per masked slot, for the generator's sample).
    objective: str = "mlm"
    disc_weight: float = 50.0       # ELECTRA: loss = generator MLM + disc_weight x discriminator
    short_seq_prob: float = 0.1     # google-research/bert: sometimes build shorter sequences
    lr: float = 2e-3
    schedule: str = "linear"        # linear | cosine | noam | constant (all with warmup)
    warmup_steps: int = 40
    steps: int = 1500
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    grad_clip: float = 1.0          # max global grad norm; 0 disables
    grad_accum: int = 1             # micro-batches per optimizer step
    dropout: bool = True            # False turns dropout off (parity, tests)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 3

    def __post_init__(self) -> None:
        self.validate()

    def check_rows_divide(self, parts: int, what: str) -> None:
        """The one divisibility rule of every layout in both twins: batch_size must split into
        `parts` data-parallel workers (`what`: ranks, processes, devices) x grad_accum equal
        pieces. UserError, naming `what` and a batch size that works, where it does not."""
        if self.batch_size % (parts * self.grad_accum):
            raise UserError(f"batch-size={self.batch_size} does not split into {parts} {what} x "
                            f"grad-accum={self.grad_accum} equal parts; use a batch size that is "
                            f"a multiple of {parts * self.grad_accum}")

    def rows_per_part(self, parts: int, what: str) -> int:
        """Rows that each of `parts` workers gets from each micro-batch (`check_rows_divide`
        first)."""
        self.check_rows_divide(parts, what)
        return self.batch_size // (parts * self.grad_accum)

    def validate(self, model: "ModelConfig | None" = None) -> None:
        """Every check on these settings, for both twins: each flag's range and type (a hand-edited
        train_config.json too; the ranges are bertcore.infra.flags.RANGES, which the flag stage
        checks too), so a bad value is refused before a run writes anything."""
        check_fields(self, ("batch_size", "max_predictions", "steps", "grad_accum", "log_every",
                            "checkpoint_every", "keep_checkpoints", "seq_len", "warmup_steps",
                            "seed"))
        for name in ("whole_word_mask", "nsp", "dropout"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name}={getattr(self, name)!r} must be true or false")
        if self.seq_len < 8:
            raise UserError(f"seq-len={self.seq_len} is too short; use at least 8")
        if self.max_predictions > self.seq_len:
            raise UserError(f"max-predictions={self.max_predictions} exceeds seq-len="
                            f"{self.seq_len}; lower --max-predictions")
        check_fields(self, ("mask_prob", "short_seq_prob", "mask_replace_prob",
                            "random_replace_prob", "disc_weight"))
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise UserError(f"mask-replace-prob={self.mask_replace_prob:g} + random-replace-prob="
                            f"{self.random_replace_prob:g} exceed 1: they are shares of the same "
                            f"masked slots; lower one of them")
        if self.objective not in OBJECTIVES:
            raise UserError(f"objective={self.objective!r} must be one of "
                            f"{', '.join(OBJECTIVES)}")
        if self.objective == "electra" and self.nsp:
            raise UserError("objective=electra has no next-sentence prediction; set nsp to false")
        if model is not None and (self.objective == "electra") != (
                getattr(model, "model_type", "bert") == "electra"):
            raise UserError(f"objective={self.objective!r} does not fit a "
                            f"{getattr(model, 'model_type', 'bert')} model: ELECTRA models train "
                            f"with objective electra, the others with mlm")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r}; choose one of "
                            f"{', '.join(SCHEDULES)}")
        check_fields(self, ("lr", "weight_decay", "beta1", "beta2", "eps", "grad_clip"))
        self.check_rows_divide(1, "process")
        if model is not None and self.seq_len > model.max_position_embeddings:
            raise UserError(f"seq-len={self.seq_len} exceeds the model's max_position_embeddings="
                            f"{model.max_position_embeddings}; lower --seq-len")
        if model is not None:   # weights, optimizer state and a micro-batch's activations
            check_training_fits(model, self.batch_size // self.grad_accum, self.seq_len)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_json_file(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, path: str | Path) -> "TrainConfig":
        return _from_json_file(cls, Path(path), "train config", "fix or remove it")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def weight_decay_applies(name: str) -> bool:
    """AdamW decays every parameter except biases and LayerNorm parameters (google-research/bert's
    `exclude_from_weight_decay`; ModernBERT's norms are `norm`, `attn_norm`, `mlp_norm`,
    `final_norm`). Works on torch names (`...LayerNorm.weight`, `...attn_norm.weight`) and Flax
    paths (`.../LayerNorm/scale`), so both twins decay exactly the same tensors."""
    module = name.replace("/", ".").split(".")[-2:-1]
    return not (name.endswith("bias") or "LayerNorm" in name
                or (module != [] and module[0].endswith("norm")))
