"""An existing run directory, framework-free: the one reader of RUNDIR/run.json and its two
configs (bertcore.run writes them; fill-mask, --init-from, classify and parity.convert read
them here), and the model config the twins build from them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import BertConfig, TrainConfig
from .errors import UserError


def trained_model_config(model: BertConfig, train: TrainConfig) -> BertConfig:
    """The config the twins build their model with: `--no-dropout` zeroes the dropout rates
    (so checkpoints record what was trained, and both twins compare equal)."""
    if train.dropout:
        return model
    return model.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


FRAMEWORKS = ("torch", "jax")


@dataclass
class RunFiles:
    """The framework-free files of an existing RUNDIR: run.json and the two configs."""
    rundir: Path
    info: dict[str, Any]
    config: BertConfig        # RUNDIR/config.json, dropout as the user set it
    train: TrainConfig

    @property
    def framework(self) -> str:
        return self.info["framework"]

    @property
    def trained_config(self) -> BertConfig:
        """The config the twins build the model with, which their checkpoints record."""
        return trained_model_config(self.config, self.train)


def read_run(rundir: str | Path) -> RunFiles:
    """Open a RUNDIR that a twin wrote (the one reader of run.json and the configs there)."""
    rundir = Path(rundir)
    try:
        info = json.loads((rundir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{rundir}/run.json is unreadable ({e}); is {rundir} a training run?")
    if not isinstance(info, dict) or info.get("framework") not in FRAMEWORKS:
        raise UserError(f"{rundir}/run.json names no framework (torch or jax); it is not a "
                        f"torchbert or jaxbert run directory")
    for f in ("config.json", "train_config.json"):
        if not (rundir / f).is_file():
            raise UserError(f"{rundir} lacks {f}; it is not a complete run directory")
    return RunFiles(rundir, info, BertConfig.from_json_file(rundir / "config.json"),
                    TrainConfig.from_json_file(rundir / "train_config.json"))
