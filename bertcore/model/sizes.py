"""What a model config needs in memory, against the memory there is: the one size rule of every
command, checked before anything is allocated or written.

    SIZE_CAP            no size field of a config (layers, widths, vocabulary, positions) may
                        exceed 2^31; the configs' own `validate` refuses it by name
    VOCAB_CAP           a tokenizer's --vocab-size above 2^24 is refused before the (Rust)
                        trainer runs (`check_vocab_size`)
    parameter_count     a config's parameters, in closed form (no per-layer loop, so 10^9 layers
                        cost nothing to count); equal to bertcore.modeldirs.card.parameter_count
    check_model_fits    its fp32 weights against the memory there is: every model config's
                        `validate` calls it, so every command that makes or reads a config
                        (--config, --init-from, --preset, an edited config.json, fill-mask,
                        classify, parity.convert) passes it before it builds anything
    check_training_fits weights, gradients, AdamW's two moments (16 bytes a parameter) and the
                        activations of a micro-batch (at least rows x seq_len x layers x hidden
                        in bf16, what --remat keeps): TrainConfig.validate(model) and classify
                        train
    memory_bytes        the memory there is: the machine's RAM (os.sysconf), or its cgroup's
                        limit when lower; TWINBERT_MEMORY_GB overrides it (a run whose
                        accelerators hold more than the host, or a test)

Both estimates are lower bounds (a real step's activations are several times these, without
--remat): a config refused here cannot run on this machine, and one let through may still run
out of memory.
A refusal is one UserError naming the field that makes the model too large, what it would need
in GB, the memory there is, and the fix.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

from bertcore.infra.errors import UserError

SIZE_CAP = 2 ** 31
VOCAB_CAP = 2 ** 24
MEMORY_ENV = "TWINBERT_MEMORY_GB"
GB = 1e9

# The fields `check_model_fits` may name, with the size a config of that architecture has by
# default (BERT-base, ModernBERT-base): the one furthest above its default is "the" culprit.
_USUAL = {"bert": {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 3072,
                   "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2},
          "electra": {"num_hidden_layers": 12, "hidden_size": 256, "intermediate_size": 1024,
                      "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
                      "embedding_size": 128},
          "modernbert": {"num_hidden_layers": 22, "hidden_size": 768, "intermediate_size": 1152,
                         "vocab_size": 50368, "max_position_embeddings": 8192}}


def check_size_field(name: str, value: Any, what: str = "config") -> None:
    """A positive integer no larger than SIZE_CAP, or one UserError naming the field."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{what} {name}={value!r} must be a positive integer")
    if value > SIZE_CAP:
        raise UserError(f"{what} {name}={value} is beyond any model this project can build (at "
                        f"most 2^31 = {SIZE_CAP}); set a realistic {name}")


def check_vocab_size(n: Any, flag: str = "--vocab-size") -> None:
    """A tokenizer's vocabulary size within VOCAB_CAP, checked before the trainer runs (above it
    the Rust trainer aborts the process, or allocates for hours)."""
    if isinstance(n, int) and not isinstance(n, bool) and n > VOCAB_CAP:
        raise UserError(f"{flag} {n} is beyond any WordPiece vocabulary (at most 2^24 = "
                        f"{VOCAB_CAP}; BERT's has 30522, ModernBERT's 50368); use a few thousand "
                        f"to ~100000")


def _arch(config: Any) -> str:
    return getattr(config, "model_type", "bert")


def _electra_count(config: Any) -> int:
    """ELECTRA's discriminator + generator, sharing one embedding block (width E)."""
    E, V = config.embedding_size, config.vocab_size
    embeddings = (V + config.max_position_embeddings + config.type_vocab_size) * E + 2 * E

    def encoder(H: int, I: int, L: int) -> int:
        project = E * H + H if E != H else 0
        return project + L * (4 * (H * H + H) + 2 * H * I + I + H + 4 * H)

    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    gh = max(1, int(round(H * config.generator_hidden_size)))
    gl = max(1, int(round(L * config.generator_layers)))
    discriminator = encoder(H, I, L) + (H * H + H) + (H + 1)
    generator = encoder(gh, 4 * gh, gl) + (gh * E + E) + 2 * E + V
    return embeddings + discriminator + generator


def parameter_count(config: Any) -> int:
    """Parameters of BertForPreTraining(config) or ModernBertForMaskedLM(config) (the tied MLM
    decoder once), as bertcore.model.hf.param_table lists them, without listing them."""
    H, I, V, L = (config.hidden_size, config.intermediate_size, config.vocab_size,
                  config.num_hidden_layers)
    if _arch(config) == "electra":
        return _electra_count(config)
    if _arch(config) == "modernbert":
        norm = H * (2 if config.norm_bias else 1)
        attn = 4 * H * H + (4 * H if config.attention_bias else 0)           # Wqkv, Wo
        mlp = 3 * H * I + (2 * I + H if config.mlp_bias else 0)              # Wi, Wo
        layers = L * (attn + mlp + 2 * norm) - norm                          # no attn_norm on 0
        head = H * H + (H if config.classifier_bias else 0) + norm
        return V * H + norm + layers + norm + head + (V if config.decoder_bias else 0)
    embeddings = (V + config.max_position_embeddings + config.type_vocab_size) * H + 2 * H
    layer = 4 * (H * H + H) + 2 * H * I + I + H + 4 * H                      # + 2 LayerNorms
    final = 2 * H if config.layer_norm_position == "pre" else 0
    pooler = H * H + H
    heads = (H * H + H) + 2 * H + V + (2 * H + 2)                            # MLM, NSP
    return embeddings + L * layer + final + pooler + heads


def memory_bytes() -> int:
    """The memory there is: TWINBERT_MEMORY_GB if set, else the machine's RAM (its cgroup's
    limit where that is lower); 0 where neither can be read (then nothing is refused)."""
    given = os.environ.get(MEMORY_ENV)
    if given:
        try:
            gb = float(given)
        except ValueError:
            gb = -1.0
        if not 0 < gb < math.inf:
            raise UserError(f"{MEMORY_ENV}={given!r} must be a positive number of GB (the memory "
                            f"to count on); unset it to count this machine's RAM")
        return int(gb * GB)
    return _machine_memory()


@functools.lru_cache(maxsize=1)
def _machine_memory() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 0
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < (total or int(text) + 1):
            total = int(text)
        break
    return max(total, 0)


def _gb(n: float) -> str:
    return f"{n / GB:,.0f} GB" if n >= 10 * GB else f"{n / GB:.2g} GB"


def _count(n: int) -> str:
    """7090000000000000 -> "7.09e15"."""
    return f"{n:,}" if n < 10 ** 7 else f"{n:.3g}".replace("e+", "e")


def _culprit(config: Any) -> str:
    """The size field furthest above its architecture's usual size."""
    usual = _USUAL[_arch(config)]
    return max(usual, key=lambda k: getattr(config, k) / usual[k])


def _have() -> str:
    return f"this machine has {_gb(memory_bytes())} of memory"


def check_model_fits(config: Any) -> None:
    """The config's fp32 weights (4 bytes a parameter) fit in the memory there is; else one
    UserError naming the field that makes the model too large."""
    have = memory_bytes()
    params = parameter_count(config)
    need = 4 * params
    if have and need > have:
        name = _culprit(config)
        raise UserError(f"config {name}={getattr(config, name)} makes a model of "
                        f"{_count(params)} parameters: {_gb(need)} for its weights alone, and "
                        f"{_have()}; use a smaller {name}, or a machine with more memory")


def training_bytes(config: Any, rows: int, seq_len: int) -> tuple[int, int]:
    """(weights + gradients + AdamW moments, activations of `rows` sequences of `seq_len`), in
    bytes, lower bounds whatever the run's options: 16 bytes a parameter (all fp32 in both
    twins); 2 bytes (bf16) for each layer's input, which even --remat keeps, and for one
    layer's working set (4 hidden + intermediate) a token."""
    H, L = config.hidden_size, config.num_hidden_layers
    state = 16 * parameter_count(config)
    acts = 2 * rows * seq_len * (L * H + 4 * H + config.intermediate_size)
    return state, acts


def check_training_fits(config: Any, rows: int, seq_len: int,
                        lower: str = "--batch-size (or raise --grad-accum) or --seq-len") -> None:
    """Training `config` on micro-batches of `rows` x `seq_len` fits in the memory there is
    (`training_bytes`); else one UserError naming what to lower (`lower`: the flags)."""
    have = memory_bytes()
    state, acts = training_bytes(config, rows, seq_len)
    if not have or state + acts <= have:
        return
    need = (f"training needs {_gb(state + acts)} ({_gb(state)} for the weights, gradients and "
            f"AdamW moments, {_gb(acts)} for the activations of {rows} x {seq_len} tokens), and "
            f"{_have()}")
    where = (f" (on an accelerator with more memory than this machine's RAM, set {MEMORY_ENV} "
             f"to its GB)")
    if acts > state:
        raise UserError(f"a micro-batch of {rows} sequences x {seq_len} tokens: {need}; lower "
                        f"{lower}, or use a smaller model{where}")
    name = _culprit(config)
    raise UserError(f"config {name}={getattr(config, name)}: {need}; use a smaller {name}, or "
                    f"a machine with more memory{where}")
