"""`--init-from`: the weights a jaxbert run (pretraining or fine-tuning) starts from, as
HF-named numpy arrays. Which path is what is bertcore.init_from's (shared with torchbert); reading
the weights is the twin's: a Hugging Face directory, or this twin's own pretraining checkpoint.
(The twin of torchbert/pretrained.py.)"""

from __future__ import annotations

import jax
import numpy as np

from bertcore.errors import UserError
from bertcore.hf import flax_to_hf, read_hf_safetensors
from bertcore.init_from import InitSource
from bertcore.rundir import read_run

from .checkpoint import Checkpointer, latest_step
from .train import abstract_state


def pretrained_weights(src: InitSource) -> dict[str, np.ndarray]:
    """HF-named numpy weights of --init-from: a Hugging Face directory (safetensors; a
    pytorch_model.bin needs torch to unpickle) or this twin's latest pretraining checkpoint."""
    if src.kind == "hf":
        found = read_hf_safetensors(src.path)
        if found is None:
            raise UserError(f"{src.path} has no model.safetensors; convert its pytorch_model.bin "
                            f"(e.g. load and re-save it with torchbert or transformers)")
        return found[0]
    if latest_step(src.path) is None:
        raise UserError(f"--init-from {src.path} has no checkpoint yet; pretrain it first")
    run = read_run(src.path)
    cfg = run.trained_config
    with Checkpointer(src.path, cfg) as ckpt:      # checks config, structure and shapes
        state, _ = ckpt.restore(abstract_state(cfg, run.train))
    return flax_to_hf(jax.tree_util.tree_map(np.asarray, state.params), cfg)
