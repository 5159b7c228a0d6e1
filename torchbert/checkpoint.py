"""Training checkpoints for torchbert: safetensors + JSON, atomic, no pickle anywhere.

    RUNDIR/checkpoints/step_00000100/
        model.safetensors       model tensors, HF names, the tied decoder stored once
        optimizer.safetensors   AdamW state by *parameter name*: exp_avg/<name>, exp_avg_sq/<name>,
                                step/<name> (the same name table parity/convert.py maps to optax)
        state.json              step, model config, optimizer hyper-parameters and param-group
                                layout, extra_state and a sha256 for each tensor file

A checkpoint is written into a temporary sibling directory and renamed into place, so a crash
leaves either the old set of checkpoints or the new one, never a half-written step directory.
`extra_state` is the training loop's (the step and the batch-iterator state) and must be JSON-able:
there is no RNG state to save, since the loop reseeds dropout from (seed, step, rank) every step
(an `rng.safetensors` found beside the files above holds nothing a run needs; loading ignores it).

The API is jaxbert/checkpoint.py's, by int step, in the same order: the module's
`latest_step(rundir)` and `remove_temp_dirs(rundir)` (what killed saves left), a `Checkpointer`
per run (`path`, `steps`, `latest_step`, `save`, `restore`, `abandon`, `close`), and
`restore_params(rundir)`, the weights alone as HF-named numpy arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bertcore.model.config import ModelConfig, arch_of, model_config_from_dict
from bertcore.infra.errors import UserError
from bertcore.infra.files import atomic_path
from bertcore.train.rundir import CHECKPOINT_NAME, CHECKPOINTS, read_run

from .arch import pretraining_model

FORMAT = "twinbert-torch-checkpoint/1"
TENSOR_FILES = ("model.safetensors", "optimizer.safetensors")


# ---- what a checkpoint holds: the optimizer by parameter name --------------------------------

def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The BertForPreTraining inside DistributedDataParallel (.module) / torch.compile."""
    while True:
        if isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _param_names(model: torch.nn.Module) -> dict[int, str]:
    # named_parameters() lists a tied Parameter once, under its first name (the embedding).
    return {id(p): n for n, p in model.named_parameters()}


def _group_hparams(group: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in group.items():
        if k == "params":
            continue
        if isinstance(v, torch.Tensor):   # e.g. a tensor learning rate (capturable/compiled)
            v = v.item()
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _optimizer_tensors(model, optimizer) -> tuple[dict[str, torch.Tensor], dict, dict]:
    names = _param_names(model)
    tensors, scalars, groups = {}, {}, []
    for group in optimizer.param_groups:
        group_names = []
        for p in group["params"]:
            if id(p) not in names:
                raise ValueError("the optimizer holds a parameter that is not in the model")
            name = names[id(p)]
            group_names.append(name)
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{key}/{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(name, {})[key] = value
        groups.append({**_group_hparams(group), "params": group_names})
    layout = {"class": type(optimizer).__name__, "param_groups": groups}
    return tensors, scalars, layout


# ---- the checkpoints of a run, on disk -------------------------------------------------------

def _steps(rundir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints of a run, oldest first (temp and half-written dirs are
    skipped)."""
    root = Path(rundir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(int(m["torch"]) for d in root.iterdir()
                  if (m := CHECKPOINT_NAME.fullmatch(d.name)) and m["torch"]
                  and (d / "state.json").is_file())


def latest_step(rundir: str | os.PathLike) -> int | None:
    """The newest complete checkpoint step in RUNDIR/checkpoints, or None."""
    found = _steps(rundir)
    return found[-1] if found else None


def remove_temp_dirs(rundir: str | os.PathLike) -> list[Path]:
    """Delete the temporary directories of saves that did not finish (atomic_path names them
    `.step_XXXXXXXX.tmp-<pid>-<n>`, in RUNDIR/checkpoints); returns them."""
    root = Path(rundir) / CHECKPOINTS
    if not root.is_dir():
        return []
    gone = sorted(root.glob(".step_*"))
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def _prune(rundir: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints; what killed saves left goes too."""
    for old in _steps(rundir)[:-keep]:
        shutil.rmtree(Path(rundir) / CHECKPOINTS / f"step_{old:08d}", ignore_errors=True)
    remove_temp_dirs(rundir)


# ---- save ------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save(final: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          config: ModelConfig, extra_state: dict[str, Any]) -> None:
    """Write checkpoint directory `final` atomically (a temporary sibling, renamed)."""
    json.dumps(extra_state)   # fail here, naming the offending type, before anything is written
    opt_tensors, opt_scalars, layout = _optimizer_tensors(model, optimizer)
    model_tensors = {k: v.detach().cpu().contiguous() for k, v in model.hf_state_dict().items()}
    with atomic_path(final, is_dir=True) as tmp:
        meta = {"format": "pt"}
        save_file(model_tensors, str(tmp / "model.safetensors"), metadata=meta)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"), metadata=meta)
        state = {"format": FORMAT, "step": int(step), "config": config.to_dict(),
                 "optimizer": {**layout, "state_scalars": opt_scalars},
                 "extra_state": extra_state,
                 "sha256": {f: _sha256(tmp / f) for f in TENSOR_FILES}}
        (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        for f in (*TENSOR_FILES, "state.json"):   # on disk before the rename makes them visible
            _fsync(tmp / f)
    _fsync(final.parent)


# ---- restore ---------------------------------------------------------------------------------

def _earlier(path: Path) -> str:
    """How to use the checkpoint before a corrupt one (train has no flag that picks a step)."""
    return (f"delete {path} to resume from an earlier checkpoint (python -m parity.convert "
            f"--step N reads one without deleting)")


def _read_state(path: Path) -> dict[str, Any]:
    """The parsed state.json of a checkpoint directory (step, config, ...), validated."""
    if not path.is_dir():
        raise UserError(f"checkpoint {path} does not exist")
    f = path / "state.json"
    if not f.is_file():
        raise UserError(f"checkpoint file {f} is missing; the checkpoint is incomplete")
    try:
        state = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"checkpoint file {f} is corrupt ({e}); {_earlier(path)}")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"checkpoint file {f} is not a torchbert checkpoint (format "
                        f"{state.get('format') if isinstance(state, dict) else None!r})")
    return state


def _read_tensors(path: Path, state: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    for name in TENSOR_FILES:     # report a missing file before a corrupt one
        if not (path / name).is_file():
            raise UserError(f"checkpoint file {path / name} is missing; the checkpoint is "
                            f"incomplete")
    out = {}
    for name in TENSOR_FILES:
        f = path / name
        if _sha256(f) != state.get("sha256", {}).get(name):
            raise UserError(f"checkpoint file {f} is corrupt (checksum mismatch); "
                            f"{_earlier(path)}")
        try:
            out[name] = load_file(str(f), device="cpu")
        except Exception as e:   # safetensors' own error type for a malformed file
            raise UserError(f"checkpoint file {f} is corrupt ({e})")
    return out


def _check_config(state: dict[str, Any], config: ModelConfig, path: Path) -> None:
    try:
        saved = model_config_from_dict(state["config"])
    except (KeyError, TypeError, AttributeError, UserError) as e:
        raise UserError(f"checkpoint {path}/state.json has no valid model config ({e})")
    if type(saved) is not type(config):
        raise UserError(f"checkpoint {path} was saved from a {arch_of(saved)} model, this run "
                        f"is {arch_of(config)}; use the run's config.json or start a new run")
    diff = [f.name for f in dataclasses.fields(config)
            if getattr(saved, f.name) != getattr(config, f.name)]
    if diff:
        detail = ", ".join(f"{k}: checkpoint {getattr(saved, k)!r} vs model "
                           f"{getattr(config, k)!r}" for k in diff)
        raise UserError(f"checkpoint {path} was saved from a different model config ({detail}); "
                        f"use the run's config.json or start a new run")


def _optimizer_state_dict(state, tensors, model, optimizer, path: Path) -> dict[str, Any]:
    """A torch optimizer state_dict rebuilt from named tensors, checked against the optimizer."""
    layout = state.get("optimizer", {})
    names = _param_names(model)
    if any(id(p) not in names for g in optimizer.param_groups for p in g["params"]):
        raise ValueError("the optimizer holds a parameter that is not in the model")
    if layout.get("class") != type(optimizer).__name__:
        raise UserError(f"checkpoint {path} holds {layout.get('class')} state, the run uses "
                        f"{type(optimizer).__name__}")
    now = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    saved = [g.get("params") for g in layout.get("param_groups", [])]
    if now != saved:
        raise UserError(f"checkpoint {path}: optimizer parameter groups differ from this run's "
                        f"(e.g. another weight-decay split); they cannot be matched by name")
    per_param: dict[str, dict[str, Any]] = {}
    for key, t in tensors.items():
        slot, _, name = key.partition("/")   # "exp_avg/bert.pooler.dense.bias"
        per_param.setdefault(name, {})[slot] = t
    for name, scalars in layout.get("state_scalars", {}).items():
        per_param.setdefault(name, {}).update(scalars)
    known = {n for g in now for n in g}
    unknown = sorted(set(per_param) - known)
    if unknown:
        raise UserError(f"checkpoint {path}/optimizer.safetensors has state for unknown "
                        f"parameters: {', '.join(unknown)}")
    index = {n: i for i, n in enumerate(n for g in now for n in g)}  # torch's numbering
    groups = []
    for g_now, g_saved in zip(optimizer.param_groups, layout["param_groups"]):
        g = {}
        for k, v in g_saved.items():       # JSON turned tuples into lists, tensors into floats
            cur = g_now.get(k)
            if isinstance(cur, tuple):
                v = tuple(v)
            elif isinstance(cur, torch.Tensor):
                v = cur.detach().clone().fill_(v)
            g[k] = v
        g["params"] = [index[n] for n in g_saved["params"]]
        groups.append(g)
    return {"state": {index[n]: s for n, s in per_param.items()}, "param_groups": groups}


def _load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
          config: ModelConfig) -> dict[str, Any]:
    """Restore model (and optimizer, if given) from checkpoint directory `path`; its extra_state.
    Everything is validated before anything is changed."""
    state = _read_state(path)
    _check_config(state, config, path)
    tensors = _read_tensors(path, state)
    weights = tensors["model.safetensors"]
    expected = set(model.hf_state_dict())
    if set(weights) != expected:
        absent = ", ".join(sorted(expected - set(weights))) or "-"
        unknown = ", ".join(sorted(set(weights) - expected)) or "-"
        raise UserError(f"checkpoint file {path}/model.safetensors does not match the model "
                        f"(missing: {absent}; unknown: {unknown})")
    opt_state = None
    if optimizer is not None:
        opt_state = _optimizer_state_dict(state, tensors["optimizer.safetensors"], model,
                                          optimizer, path)
    extra = state.get("extra_state", {})
    model.load_hf_state_dict(weights, source=str(path / "model.safetensors"))
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)   # moves moments to each parameter's device
    return extra


# ---- the Checkpointer ------------------------------------------------------------------------

class Checkpointer:
    """Save and restore the training state of one run, RUNDIR/checkpoints/step_XXXXXXXX/, by
    int step: the same methods as jaxbert.checkpoint.Checkpointer. torch's state lives in the
    model and the optimizer, so `restore` loads into them in place and returns the extra state
    (jaxbert's returns a new state with it).

    `save` is synchronous: when it returns, the checkpoint is on disk, fsynced (what a crash-safe
    resume needs). `config` is the model's; restore refuses a checkpoint of another config.
    """

    def __init__(self, rundir: str | os.PathLike, config: ModelConfig, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1")
        self.root, self.config, self.keep = Path(rundir) / CHECKPOINTS, config, keep

    def path(self, step: int) -> Path:
        """The directory of checkpoint `step` (whether or not it exists)."""
        return self.root / f"step_{int(step):08d}"

    def steps(self) -> list[int]:
        """The complete checkpoints' steps, oldest first."""
        return _steps(self.root.parent)

    def latest_step(self) -> int | None:
        return latest_step(self.root.parent)

    def _model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = _unwrap(model)
        if model.config != self.config:
            raise ValueError("the model was built from another config than this Checkpointer's")
        return model

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             extra_state: dict[str, Any]) -> Path:
        """Write checkpoint `step` atomically (replacing one of that step), then keep only the
        newest `keep`; returns its directory.

        `extra_state` must be JSON-able (dicts with string keys, lists, numbers, strings);
        anything else raises TypeError before a file is written."""
        final = self.path(step)
        _save(final, step, self._model(model), optimizer, self.config, extra_state)
        _prune(self.root.parent, self.keep)
        return final

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                step: int | None = None) -> dict[str, Any]:
        """Load checkpoint `step` (default: the latest) into `model` (and `optimizer`, if given);
        returns its extra_state.

        UserError, naming the path, if there is no checkpoint, if a file is missing or corrupt,
        if it was saved from another model config (the differing fields listed) or if the
        optimizer has another parameter layout; nothing is changed then."""
        model = self._model(model)
        if step is None:
            step = self.latest_step()
            if step is None:
                raise UserError(f"no checkpoint in {self.root}; start without --resume or "
                                f"point to the right run directory")
        return _load(self.path(step), model, optimizer, self.config)

    def abandon(self) -> None:
        """After a failed save: nothing to undo (the save's temporary directory is gone)."""

    def close(self) -> None:
        """Nothing to release (jaxbert's closes orbax's manager)."""

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def restore_params(rundir: str | os.PathLike, step: int | None = None) -> dict[str, np.ndarray]:
    """The weights of a pretraining RUNDIR's checkpoint `step` (default: the latest), HF-named
    numpy arrays, after every check `Checkpointer.restore` makes (fill-mask, --init-from)."""
    config = read_run(rundir).trained_config
    model = pretraining_model(config)
    Checkpointer(rundir, config).restore(model, step=step)
    return {k: v.detach().numpy() for k, v in model.hf_state_dict().items()}
