"""`python -m jaxbert.fill_mask RUNDIR|HF_DIR "the movie was [MASK] ."`

Top-k tokens and probabilities for every [MASK]. The flags, tokenization and output are
bertcore.modeldirs.fillmask's (shared with torchbert.fill_mask); this file only loads weights and
runs the sparse MLM head on the [MASK] positions (ELECTRA's: its generator's).
"""

from __future__ import annotations

import sys

import numpy as np

from bertcore.modeldirs import fillmask
from bertcore.infra.errors import UserError, cli_entry
from bertcore.model.hf import hf_to_flax
from bertcore.modeldirs.resolve import ModelDir

from . import electra
from .checkpoint import latest_step, restore_params
from .arch import from_pretrained, pretraining_model


def load_model(md: ModelDir):
    """(model, params) of BertForPreTraining, ModernBertForMaskedLM or ELECTRA's
    ElectraPreTrainingModel (the pair; a transformers generator directory: ElectraForMaskedLM),
    from a Hugging Face directory or a jaxbert RUNDIR's latest checkpoint."""
    if md.layout == "hf":
        if md.electra == "generator":
            return electra.generator_from_pretrained(md.path)
        return from_pretrained(md.path)
    if md.framework != "jax":
        raise UserError(f"{md.path} is a {md.framework}bert run; use python -m "
                        f"{md.framework}bert.fill_mask, or convert it with python -m "
                        f"parity.convert")
    if latest_step(md.path) is None:
        raise UserError(f"{md.path} has no checkpoint yet; train it first (python -m "
                        f"jaxbert.train --out {md.path})")
    config = md.trained_config
    return pretraining_model(config), hf_to_flax(restore_params(md.path), config)


def _generator_logits(pair, *args):
    """ELECTRA's MLM is the generator's, on the embeddings the discriminator holds (`apply`'s
    method on the pair: torch calls model.generator the same way)."""
    return pair.generator(*args, embeddings=pair.discriminator.electra.embeddings)


def predict(model, params, batch: dict) -> np.ndarray:
    """Logits [n_masks, V] at batch['masked_positions'] (the sparse MLM head)."""
    args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
            batch["masked_positions"])
    if isinstance(model, electra.ElectraPreTrainingModel):
        mlm_logits = model.apply({"params": params}, *args, method=_generator_logits)
    elif isinstance(model, electra.ElectraForMaskedLM):
        mlm_logits = model.apply({"params": params}, *args)
    else:
        mlm_logits, _ = model.apply({"params": params}, *args)
    return np.asarray(mlm_logits[0])


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = fillmask.parse_args("python -m jaxbert.fill_mask", argv)
    md = fillmask.open_model_dir(args.model, "jax")
    tok = md.load_tokenizer()
    text = " ".join(args.text)
    batch, _ = fillmask.encode(tok, text, md.config.max_position_embeddings)
    model, params = load_model(md)
    logits = predict(model, params, batch)
    print(fillmask.report(text, fillmask.top_k(logits, tok, args.top_k), args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
