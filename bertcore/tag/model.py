"""Token classifiers' weights and directories, framework-free: the name table both twins'
tagger.py load and save by, where fine-tuning starts from, and best/ as a Hugging Face
directory.

    tagger_param_table(config, n)   every parameter of transformers' BertForTokenClassification
                                    (`bert.*` without the pooler, `classifier`),
                                    ModernBertForTokenClassification (`model.*`, `head.*`,
                                    `classifier`) or ElectraForTokenClassification (`electra.*`,
                                    `classifier`), with its HF shape and Flax path
    initial_state(weights, ...)     the tagger's starting weights from a pretrained model's
    hf_config / write_tagger_dir    config.json (id2label, architectures) + model.safetensors
    open_tagger(path)               a tag RUNDIR (its best/) or a Hugging Face token classifier
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bertcore.classify.cli import resolve_init as classify_resolve_init
from bertcore.data.tokenizer import WordPiece, load_tokenizer
from bertcore.infra.errors import UserError
from bertcore.infra.files import atomic_path
from bertcore.model.config import ElectraConfig, ModelConfig, ModernBertConfig, load_model_config
from bertcore.model.hf import (ELECTRA_PREFIXES, TOKENIZER_FILES, Param, electra_param_table,
                               electra_split, fail_names, fresh_classifier_params,
                               normalize_hf_names, param_table, read_hf_safetensors)
from bertcore.modeldirs.resolve import is_hf_dir, layout_of
from bertcore.tag.data import TagMap
from bertcore.train.init_from import InitSource
from bertcore.train.rundir import TAG_CONFIG

CLASSIFIER = "classifier"


def tagger_class(config: ModelConfig) -> str:
    """The transformers class a tagger of this config is: its config.json's architectures."""
    if isinstance(config, ElectraConfig):
        return "ElectraForTokenClassification"
    return ("ModernBertForTokenClassification" if isinstance(config, ModernBertConfig)
            else "BertForTokenClassification")


def tagger_param_table(config: ModelConfig, num_labels: int) -> list[Param]:
    """Every parameter of the config's token classifier, in model order. BERT's has no pooler
    (transformers builds it with add_pooling_layer=False); ModernBERT's keeps the MLM head's
    transform (`head.dense`, `head.norm`), applied to every token before the classifier;
    ELECTRA's is the discriminator's encoder and one Linear (no two-layer head, unlike its
    sequence classifier)."""
    if isinstance(config, ElectraConfig):
        body = [p for p in electra_param_table(config, "discriminator")
                if p.hf_name.startswith("electra.")]
    else:
        body = [p for p in param_table(config) if p.hf_name.startswith(("bert.", "model.", "head."))
                and not p.hf_name.startswith("bert.pooler.")]
    return body + [Param(f"{CLASSIFIER}.weight", (CLASSIFIER, "kernel"), True,
                         (num_labels, config.hidden_size)),
                   Param(f"{CLASSIFIER}.bias", (CLASSIFIER, "bias"), False, (num_labels,))]


def check_tagger_state(state: Mapping[str, Any], config: ModelConfig, num_labels: int,
                       source: str = "the checkpoint") -> None:
    """Exactly the tagger's parameters with its shapes (canonical HF names), or one UserError
    naming the unknown, missing and misshaped ones."""
    expected = {p.hf_name: p for p in tagger_param_table(config, num_labels)}
    fail_names(f"{source} has unexpected parameter names for a token classifier",
               set(state) - set(expected), "check that the weights and config.json belong "
                                           "together")
    fail_names(f"{source} has missing parameters", set(expected) - set(state),
               "the checkpoint is incomplete or from another model")
    fail_names(f"{source} has parameters with the wrong shape", [
        f"{n} {tuple(np.shape(a))} (config wants {expected[n].hf_shape})"
        for n, a in state.items() if tuple(np.shape(a)) != expected[n].hf_shape],
        "config.json (vocab_size, sizes, id2label) does not match the weights")


# ---- --init-from --------------------------------------------------------------------------------

def resolve_init(path: str | Path, framework: str, tokenizer: str | None = None) -> InitSource:
    """classify's --init-from (a pretraining RUNDIR or export, a Hugging Face BERT, ModernBERT or
    ELECTRA directory, a classifier; an ELECTRA generator refused), plus a tag RUNDIR: its best/
    weights, whose head is kept when the tags are the same."""
    path = Path(path).expanduser()
    if (path / TAG_CONFIG).is_file():
        if not is_hf_dir(path / "best"):
            raise UserError(f"--init-from {path} is a tag run with no best/ weights yet; let it "
                            f"finish an epoch (train --out {path} --resume)")
        path = path / "best"
    return classify_resolve_init(path, framework, tokenizer)


def _is_tagger(path: Path) -> bool:
    try:
        archs = json.loads((path / "config.json").read_text(encoding="utf-8"))["architectures"]
        return any(str(a).endswith("ForTokenClassification") for a in archs)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def initial_state(weights: Mapping[str, np.ndarray], src: InitSource, config: ModelConfig,
                  tags: TagMap, seed: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """The tagger's starting weights (HF names, numpy) from a pretrained model's: the encoder as
    it is (an ELECTRA pair's discriminator), ModernBERT's MLM head transform `head.*` (as
    transformers' ModernBertForTokenClassification reuses it), every other head left out (BERT's
    `cls.*` and pooler, the decoder, the replaced-token head, a sequence classifier's). The
    `classifier` is kept only from a token classifier with the same tags; else it, and a missing
    `head.*`, start fresh with transformers' initialisation drawn from `seed` (the same numbers
    in both twins). Returns (state, notes)."""
    n = len(tags)
    table = tagger_param_table(config, n)
    names = {p.hf_name for p in table}
    if isinstance(config, ElectraConfig) and any(k.startswith(ELECTRA_PREFIXES) for k in weights):
        weights = electra_split(weights)["discriminator"]
    head = {k: np.asarray(v, np.float32) for k, v in weights.items()
            if k.startswith(f"{CLASSIFIER}.")}
    named = normalize_hf_names({k: v for k, v in weights.items() if k not in head}, config)
    state = {k: np.asarray(v, np.float32) for k, v in named.items() if k in names}
    notes = [src.note] if src.note else []
    if head and _is_tagger(src.path) and src.labels == tags.tags and set(head) <= names:
        state.update(head)
    elif head:
        notes.append(f"{src.path}'s classifier head is not a tagger of these tags; a fresh one "
                     f"is trained")
    fresh = [p.hf_name for p in table if p.hf_name not in state
             and p.hf_name.startswith(("head.", f"{CLASSIFIER}."))]
    rng = np.random.default_rng([seed, 0x7A6])
    if isinstance(config, ElectraConfig):   # one Linear: N(0, initializer_range), zero bias
        for p in table:
            if p.hf_name in fresh:
                state[p.hf_name] = (np.zeros(p.hf_shape, np.float32) if p.hf_name.endswith("bias")
                                    else rng.normal(0.0, config.initializer_range, p.hf_shape)
                                    .astype(np.float32))
    else:   # BERT's and ModernBERT's classifier and head: the same names as their classifiers'
        state.update(fresh_classifier_params(config, n, fresh, rng))
    if any(k.startswith("head.") for k in fresh):
        notes.append(f"{src.path} has no MLM head (head.dense, head.norm); it starts fresh")
    check_tagger_state(state, config, n, source=str(src.path))
    return {p.hf_name: state[p.hf_name] for p in table}, notes


# ---- Hugging Face token-classifier directories --------------------------------------------------

def hf_config(config: ModelConfig, tags: TagMap) -> dict[str, Any]:
    """config.json of transformers' BertForTokenClassification,
    ModernBertForTokenClassification or ElectraForTokenClassification."""
    out = {**config.to_dict(), "architectures": [tagger_class(config)],
           "id2label": tags.id2label(),
           "label2id": {t: int(i) for i, t in tags.id2label().items()}}
    if not isinstance(config, ModernBertConfig):
        # BERT's and ELECTRA's head dropout is then hidden_dropout_prob, as ours (ModernBERT's
        # config has its own field).
        out["classifier_dropout"] = None
    return out


def write_tagger_dir(out: Path, config: ModelConfig, tags: TagMap, state: dict[str, np.ndarray],
                     tokenizer: Path | None = None, info: dict | None = None) -> Path:
    """config.json + model.safetensors (+ tokenizer files, + tagger.json: the epoch it is),
    atomically."""
    from safetensors.numpy import save_file

    check_tagger_state(state, config, len(tags), source="the tagger state")
    with atomic_path(out, is_dir=True) as tmp:
        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(config, tags), indent=2,
                                                    sort_keys=True) + "\n", encoding="utf-8")
        if info is not None:
            (tmp / "tagger.json").write_text(json.dumps(info, indent=2) + "\n")
        for f in TOKENIZER_FILES:
            if tokenizer is not None and (tokenizer / f).is_file():
                shutil.copy2(tokenizer / f, tmp / f)
    return out


@dataclass
class Tagger:
    """A trained token classifier, framework-free: what evaluate and predict hand to a twin."""
    path: Path
    config: ModelConfig
    tags: TagMap
    state: dict[str, np.ndarray]
    tokenizer: WordPiece
    max_len: int


def open_tagger(path: str | Path) -> Tagger:
    """A tag RUNDIR (its best/ weights, its --max-len) or a Hugging Face token classifier
    directory (config.json naming a ...ForTokenClassification with id2label, model.safetensors)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"{path} {'is not a directory' if path.exists() else 'does not exist'}; "
                        f"pass a tag RUNDIR or a Hugging Face token classifier directory")
    rundir = path if (path / TAG_CONFIG).is_file() else None
    hf = path / "best" if rundir else path
    if rundir and not is_hf_dir(hf):
        raise UserError(f"{path} has no best/ weights yet; fine-tune it first (train --out "
                        f"{path})")
    if not is_hf_dir(hf) or not _is_tagger(hf):
        what = {"classify-run": "a classify run", "pretraining-run": "a pretraining run",
                "hf-classifier": "a sequence classifier", "hf": "a Hugging Face model"}.get(
                    layout_of(hf) or "", "no model directory")
        raise UserError(f"{path} is {what}, not a token classifier (a tag RUNDIR, or a config.json "
                        f"naming a ...ForTokenClassification); fine-tune one first: tag train "
                        f"--init-from {path} --data DATA")
    config = load_model_config(hf / "config.json")
    raw = json.loads((hf / "config.json").read_text(encoding="utf-8"))
    try:
        id2 = raw["id2label"]
        tags = TagMap([str(id2[str(i)]) for i in range(len(id2))])
    except (KeyError, TypeError):
        raise UserError(f"{hf}/config.json has no id2label 0..N-1; it is not a token classifier's "
                        f"config") from None
    found = read_hf_safetensors(hf)
    if found is None:
        raise UserError(f"{hf} has no model.safetensors (a pytorch_model.bin: load and re-save it "
                        f"with transformers' save_pretrained(..., safe_serialization=True))")
    head = {k: v for k, v in found[0].items() if k.startswith(f"{CLASSIFIER}.")}
    state = {**normalize_hf_names({k: v for k, v in found[0].items() if k not in head}, config),
             **head}
    check_tagger_state(state, config, len(tags), source=str(found[1]))
    max_len = min(config.max_position_embeddings, 512)
    if rundir:
        try:
            settings = json.loads((rundir / TAG_CONFIG).read_text(encoding="utf-8"))
            max_len = int(settings["max_len"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{rundir / TAG_CONFIG} is unreadable ({e}); fix or remove it") \
                from None
    tok = load_tokenizer(rundir / "tokenizer" if rundir else hf)
    if tok.vocab_size != config.vocab_size:
        raise UserError(f"{path}: the tokenizer has {tok.vocab_size} entries, the model "
                        f"vocab_size={config.vocab_size}; the vocabularies differ")
    return Tagger(path, config, tags, {k: np.asarray(v, np.float32) for k, v in state.items()},
                  tok, max_len)
