"""`--init-from`: the weights a jaxbert run (pretraining or fine-tuning) starts from, as
HF-named numpy arrays. Which path is what is bertcore.train.init_from's (shared with torchbert);
reading the weights is the twin's: a Hugging Face directory, or this twin's own pretraining
checkpoint. (The twin of torchbert/pretrained.py.)"""

from __future__ import annotations

import numpy as np

from bertcore.infra.errors import UserError
from bertcore.model.hf import read_hf_safetensors
from bertcore.train.init_from import InitSource

from .checkpoint import latest_step, restore_params


def pretrained_weights(src: InitSource) -> dict[str, np.ndarray]:
    """HF-named numpy weights of --init-from: a Hugging Face directory (safetensors; a
    pytorch_model.bin needs torch to unpickle) or this twin's latest pretraining checkpoint."""
    if src.weights_from == "hf":
        found = read_hf_safetensors(src.path)
        if found is None:
            raise UserError(f"{src.path} has no model.safetensors; convert its pytorch_model.bin "
                            f"(e.g. load and re-save it with torchbert or transformers)")
        return src.used(found[0])
    if latest_step(src.path) is None:
        raise UserError(f"--init-from {src.path} has no checkpoint yet; pretrain it first")
    return restore_params(src.path)     # checks config, structure and shapes
