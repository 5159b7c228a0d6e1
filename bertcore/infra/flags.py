"""The ranges of every numeric setting, one table for both commands (train, classify) of both
twins: the flag stage (bertcore.train.cli.check_train_args, bertcore.classify.cli's
check_classify_args) checks each flag given against it before anything is read or written, and
TrainConfig.validate / ClassifyConfig.validate check a config file (a hand-edited
train_config.json, classify_config.json) against the same rows.

Floats must be finite everywhere: argparse's `float` takes "nan" and "inf", which no setting
means, and a NaN written into a config file makes it invalid JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from bertcore.infra.errors import UserError

# jax.random.PRNGKey keeps only the low 32 bits of a seed (64-bit mode is off), so seeds 0 and
# 2^32 would draw the same weights and dropout in jaxbert but not in torchbert; torch takes
# seeds below 2^64 and numpy's SeedSequence any non-negative integer.
SEED_LIMIT = 2 ** 32


@dataclass(frozen=True)
class Range:
    """The values of one numeric setting: an int or a finite float between `low` and `high`
    (each bound closed unless marked open)."""
    kind: type
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True
    text: str | None = None       # what a value must be, where the bounds alone read badly

    def allows(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if self.kind is int and not isinstance(v, int):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        return ((self.low < v) if self.low_open else (self.low <= v)) and \
            ((v < self.high) if self.high_open else (v <= self.high))

    def describe(self) -> str:
        """What a value must be: 'a positive integer', 'a finite number in [0, 1)', ..."""
        if self.text:
            return self.text
        if self.kind is int:
            if self.high == math.inf:
                return "a positive integer" if self.low == 1 else f"an integer >= {self.low:g}"
            return f"an integer in [{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.high == math.inf:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        return (f"a finite number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


def _int(low: int, high: float = math.inf, text: str | None = None) -> Range:
    return Range(int, low, high, text=text)


def _float(low: float, high: float = math.inf, low_open: bool = False,
           high_open: bool = True) -> Range:
    return Range(float, low, high, low_open, high_open)


_PROBABILITY = _float(0.0, 1.0)
_BETA = _float(0.0, 1.0)

# By argparse dest = config field name. A name means the same thing wherever it appears: the
# optimizer's settings are pretraining's and fine-tuning's alike.
RANGES: dict[str, Range] = {
    # TrainConfig (and the train flags of the same names)
    "batch_size": _int(1), "max_predictions": _int(1), "steps": _int(1), "grad_accum": _int(1),
    "log_every": _int(1), "checkpoint_every": _int(1), "keep_checkpoints": _int(1),
    "seq_len": _int(0), "warmup_steps": _int(0),
    "seed": _int(0, SEED_LIMIT, text=f"an integer from 0 to {SEED_LIMIT - 1} (2^32 - 1: JAX keys "
                                     f"keep a seed's low 32 bits)"),
    "mask_prob": _float(0.0, 1.0, low_open=True),
    "short_seq_prob": _float(0.0, 1.0, high_open=False),
    "lr": _float(0.0, low_open=True), "weight_decay": _float(0.0),
    "beta1": _BETA, "beta2": _BETA, "eps": _float(0.0, low_open=True),
    "grad_clip": _float(0.0),
    "mask_replace_prob": _float(0.0, 1.0, high_open=False),
    "random_replace_prob": _float(0.0, 1.0, high_open=False),
    "disc_weight": _float(0.0, low_open=True),
    # ClassifyConfig (and classify train's flags)
    "max_len": _int(1), "epochs": _int(1), "warmup_ratio": _float(0.0, 1.0),
    "val_fraction": _float(0.0, 1.0, low_open=True),
    # the command lines' own
    "eval_every": _int(0), "eval_batches": _int(1), "stop_after": _int(1), "pad_vocab": _int(1),
    "attention_dropout": _PROBABILITY, "vocab_size": _int(1),
    "generator_size": _float(0.0, 1.0, low_open=True, high_open=False),
    "generator_layers": _float(0.0, 1.0, low_open=True, high_open=False),
    "num_processes": _int(1), "process_id": _int(0),
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_flags(args: Any, names: Iterable[str] | None = None) -> None:
    """Each numeric flag of `args` that was given (not None) against RANGES (`names`: these
    only; default: every name in RANGES that `args` has). UserError naming the flag and the
    value as a command line may spell them (`--lr=nan`) and what the value must be."""
    for name in RANGES if names is None else names:
        v = getattr(args, name, None)
        if v is not None and not RANGES[name].allows(v):
            raise UserError(f"{flag(name)}={v!r} must be {RANGES[name].describe()}")


def check_fields(obj: Any, names: Iterable[str]) -> None:
    """A config's fields against RANGES (a config file's `name=value`, as the file spells it)."""
    for name in names:
        v = getattr(obj, name)
        if not RANGES[name].allows(v):
            raise UserError(f"{name.replace('_', '-')}={v!r} must be {RANGES[name].describe()}")
