"""`--init-from`: the weights a torchbert run (pretraining or fine-tuning) starts from, as
HF-named numpy arrays. Which path is what is bertcore.train.init_from's (shared with jaxbert);
reading the weights is the twin's: a Hugging Face directory, or this twin's own pretraining
checkpoint. (The twin of jaxbert/pretrained.py.)"""

from __future__ import annotations

import numpy as np

from bertcore.infra.errors import UserError
from bertcore.train.init_from import InitSource, electra_state

from .checkpoint import latest_step, restore_params
from .model import _as_numpy, read_hf_weights


def pretrained_weights(src: InitSource) -> dict[str, np.ndarray]:
    """HF-named numpy weights of --init-from: a Hugging Face directory (safetensors or a
    pytorch_model.bin, read with weights_only=True) or this twin's latest pretraining checkpoint."""
    if src.weights_from == "hf":
        state, _ = read_hf_weights(src.path)
        return src.used({k: _as_numpy(v) for k, v in state.items()})
    if latest_step(src.path) is None:
        raise UserError(f"--init-from {src.path} has no checkpoint yet; pretrain it first")
    return restore_params(src.path)     # checks the files, config, names and shapes


def pretraining_weights(src: InitSource) -> dict[str, np.ndarray]:
    """`pretrained_weights` as pretraining's model names them: for ELECTRA from Hugging Face
    directories, its two transformers models joined into the pair's `discriminator.*` and
    `generator.*` (bertcore.train.init_from.electra_state)."""
    if src.electra is None:
        return pretrained_weights(src)
    return electra_state(src, lambda d: {k: _as_numpy(v) for k, v in read_hf_weights(d)[0].items()})
