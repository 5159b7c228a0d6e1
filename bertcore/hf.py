"""Reading Hugging Face model directories, framework-free (numpy + safetensors).

Both twins' `from_pretrained` and parity/convert.py read HF BERT weights through here:
`model.safetensors`, or the shards listed in `model.safetensors.index.json`. (A
`pytorch_model.bin` is a pickle: only torchbert reads it, with `torch.load(weights_only=True)`.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import UserError


def safetensors_files(path: Path) -> list[Path] | None:
    """The safetensors file(s) of an HF directory, or None when it has none."""
    files = [path / "model.safetensors"]
    index = path / "model.safetensors.index.json"
    if not files[0].is_file() and index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{index} is unreadable ({e}); re-download or re-save the model")
        files = [path / name for name in sorted(set(weight_map.values()))]
    return files if all(f.is_file() for f in files) else None


def read_safetensors(files: list[Path]) -> dict[str, np.ndarray]:
    """All tensors of `files` as numpy arrays (HF names, as stored)."""
    from safetensors.numpy import load_file

    state: dict[str, np.ndarray] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # safetensors raises its own error type for corrupt files
            raise UserError(f"{f} is not a readable safetensors file ({e}); re-save it")
    return state
