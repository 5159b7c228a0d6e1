"""The framework-free half of `python -m torchbert.fill_mask` / `python -m jaxbert.fill_mask`.

Both twins parse the same flags, find the model directory the same way, tokenize the text, and
print the same table; only "weights -> logits at the [MASK] positions" is theirs.

The model is a pretraining RUNDIR (its latest checkpoint) or a Hugging Face BERT directory
(bertcore.modeldirs.resolve's layouts "pretraining-run" and "hf"); a fine-tuned classifier has no
masked-language-model head, and is refused with the command that uses it. ELECTRA fills masks
with its generator: an ELECTRA RUNDIR's (the pair's generator, on the discriminator's
embeddings) or a transformers ElectraForMaskedLM directory; its other models have no MLM head.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bertcore.data.tokenizer import WordPiece
from bertcore.infra.errors import UserError
from bertcore.modeldirs.resolve import ELECTRA_MODELS, ModelDir, electra_export
from bertcore.modeldirs.resolve import open_model_dir as _open


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Predict the tokens behind each [MASK] in a text.",
        epilog='example: %(prog)s runs/torchbert-tiny '
               '"the function returns a [MASK] of the values ."')
    p.add_argument("model", help="a RUNDIR (latest checkpoint) or a Hugging Face BERT directory")
    p.add_argument("text", nargs="+", help="text with one or more [MASK] tokens")
    p.add_argument("--top-k", type=int, default=5, help="candidates per [MASK] (default: 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def parse_args(prog: str, argv: list[str] | None) -> argparse.Namespace:
    """The parsed flags, refused in one line before any model is loaded."""
    args = parser(prog).parse_args(argv)
    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: give the number of candidates to show per "
                        f"[MASK], at least 1")
    return args


def open_model_dir(path: str | Path, framework: str) -> ModelDir:
    """The model `python -m {framework}bert.fill_mask PATH` runs: a pretraining RUNDIR or a
    Hugging Face BERT directory (bertcore.modeldirs.resolve.open_model_dir, which names anything
    else). ELECTRA's export (a run's hf/: discriminator/ + generator/) is its generator."""
    path = Path(path).expanduser()
    md = _open(electra_export(path, "generator") or path)
    if md.is_classifier:
        what = ("a fine-tuned classifier (a classify RUNDIR)" if md.layout == "classify-run" else
                "a Hugging Face sequence classifier")
        raise UserError(f"{md.path} is {what}, which has no masked-language-model head to fill "
                        f"[MASK] with; classify texts with python -m {framework}bert.classify "
                        f"predict {md.path} \"TEXT\", or fill masks with the pretraining RUNDIR "
                        f"or BERT directory it was fine-tuned from")
    if md.electra in ("discriminator", "classifier", "encoder"):
        cls, what = ELECTRA_MODELS[md.electra]
        raise UserError(f"{md.path} is {what} ({cls}), which has no masked-language-model head; "
                        f"ELECTRA fills [MASK] with its generator: pass the "
                        f"{ELECTRA_MODELS['generator'][0]} directory trained with it, or the "
                        f"ELECTRA pretraining RUNDIR")
    return md


def encode(tok: WordPiece, text: str, max_len: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A one-row batch for `text` and the positions of its [MASK] tokens."""
    ids = tok.encode(text)
    if len(ids) > max_len:
        raise UserError(f"the text is {len(ids)} tokens long; the model takes at most {max_len}")
    ids_arr = np.asarray([ids], dtype=np.int32)
    positions = np.flatnonzero(ids_arr[0] == tok.mask_id)
    if len(positions) == 0:
        raise UserError("the text has no [MASK] token; write [MASK] where a word should be "
                        "predicted, e.g. \"the movie was [MASK] .\"")
    batch = {"input_ids": ids_arr, "token_type_ids": np.zeros_like(ids_arr),
             "attention_mask": np.ones_like(ids_arr),
             "masked_positions": positions[None].astype(np.int32)}
    return batch, positions


def top_k(logits: np.ndarray, tok: WordPiece, k: int) -> list[list[tuple[str, float]]]:
    """Softmax over the vocabulary at each [MASK] ([n, V] logits) and the k best tokens."""
    logits = logits.astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    best = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [[(tok.id_to_token(int(i)), float(p[i])) for i in row] for row, p in zip(best, probs)]


def report(text: str, predictions: list[list[tuple[str, float]]], as_json: bool) -> str:
    if as_json:
        return json.dumps({"text": text, "masks": [[{"token": t, "probability": p}
                                                    for t, p in m] for m in predictions]},
                          indent=2)
    lines = [text]
    for n, cands in enumerate(predictions, 1):
        lines.append(f"[MASK] #{n}:")
        lines += [f"  {t:<20} {p:7.2%}" for t, p in cands]
    return "\n".join(lines)
