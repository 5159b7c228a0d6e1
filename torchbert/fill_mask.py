"""`python -m torchbert.fill_mask RUNDIR|HF_DIR "the movie was [MASK] ."`

Top-k tokens and probabilities for every [MASK]. The flags, tokenization and output are
bertcore.modeldirs.fillmask's (shared with jaxbert.fill_mask); this file only loads weights and runs
the sparse MLM head on the [MASK] positions (ELECTRA's: its generator's).
"""

from __future__ import annotations

import sys

import torch

from bertcore.modeldirs import fillmask
from bertcore.infra.errors import UserError, cli_entry
from bertcore.modeldirs.resolve import ModelDir

from .checkpoint import latest_step, restore_params
from .arch import from_pretrained, pretraining_model
from .electra import ElectraForMaskedLM, ElectraPreTrainingModel


def load_model(md: ModelDir):
    """BertForPreTraining, ModernBertForMaskedLM or ELECTRA's ElectraPreTrainingModel (the pair;
    a transformers generator directory: ElectraForMaskedLM), from a Hugging Face directory or a
    torchbert RUNDIR's latest checkpoint."""
    if md.layout == "hf":
        if md.electra == "generator":
            return ElectraForMaskedLM.from_pretrained(md.path)
        return from_pretrained(md.path)
    if md.framework != "torch":
        raise UserError(f"{md.path} is a {md.framework}bert run; use python -m "
                        f"{md.framework}bert.fill_mask, or convert it with python -m "
                        f"parity.convert")
    if latest_step(md.path) is None:
        raise UserError(f"{md.path} has no checkpoint yet; train it first (python -m "
                        f"torchbert.train --out {md.path})")
    model = pretraining_model(md.trained_config)
    model.load_hf_state_dict(restore_params(md.path), source=str(md.path))
    return model


def predict(model, batch: dict) -> torch.Tensor:
    """Logits [n_masks, V] at batch['masked_positions'] (the sparse MLM head)."""
    t = {k: torch.from_numpy(v).long() for k, v in batch.items()}
    args = (t["input_ids"], t["token_type_ids"], t["attention_mask"], t["masked_positions"])
    model.eval()
    with torch.no_grad():
        if isinstance(model, ElectraPreTrainingModel):
            # ELECTRA's MLM is the generator's, on the embeddings the discriminator holds
            mlm_logits = model.generator(*args,
                                         embeddings=model.discriminator.electra.embeddings)
        elif isinstance(model, ElectraForMaskedLM):
            mlm_logits = model(*args)
        else:
            mlm_logits, _ = model(*args)
    return mlm_logits[0]


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = fillmask.parse_args("python -m torchbert.fill_mask", argv)
    md = fillmask.open_model_dir(args.model, "torch")
    tok = md.load_tokenizer()
    text = " ".join(args.text)
    batch, _ = fillmask.encode(tok, text, md.config.max_position_embeddings)
    model = load_model(md)
    logits = predict(model, batch).float().numpy()
    print(fillmask.report(text, fillmask.top_k(logits, tok, args.top_k), args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
