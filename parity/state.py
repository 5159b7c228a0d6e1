"""One framework-free form of a training state, between every reader and every writer.

Readers (parity/torch_state.py, parity/jax_state.py, `read_hf` here) turn a torchbert
checkpoint, a jaxbert checkpoint or a Hugging Face directory into a `TrainingState` (HF names,
torch layout, numpy); writers turn it into the other forms. The Flax side of every tensor
(params *and* AdamW moments) goes through bertcore.model.hf's `hf_to_flax` / `flax_to_hf`, so there
is no second copy of the name or layout rules anywhere.

This module imports neither torch nor jax at module level (only `read_hf` of a
`pytorch_model.bin` borrows torchbert's safe reader).

ELECTRA's Hugging Face form is two directories, DIR/discriminator (ElectraForPreTraining) and
DIR/generator (ElectraForMaskedLM), as `--to hf` and a run's hf/ write them; the training state
holds the pair (`discriminator.*`, `generator.*`, the generator on the discriminator's
embeddings), and bertcore.model.hf's `electra_split` / `electra_join` go between the two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bertcore.modeldirs.card import pretraining_card, run_corpus, write_model_card
from bertcore.model.config import (ElectraConfig, ModelConfig, ModernBertConfig, arch_of,
                                   electra_pair_config, load_model_config)
from bertcore.infra.errors import UserError
from bertcore.model.hf import (ELECTRA_PREFIXES, ELECTRA_ROLES, check_electra_state,
                               check_hf_state, electra_join, electra_split, fresh_params,
                               head_prefixes, hf_names, normalize_hf_names, read_hf_safetensors,
                               save_hf_files)
from bertcore.modeldirs.resolve import ModelDir, electra_export, find_model_dir, is_hf_dir
from bertcore.train.metrics import learned, learned_lines
from bertcore.train.rundir import CHECKPOINTS, RunDir, checkpoint_step


@dataclass
class TrainingState:
    """A checkpoint, framework-free. `exp_avg`/`exp_avg_sq` are torch's names for AdamW's first
    and second moments (optax `mu`/`nu`); a parameter that never had a gradient may lack them
    (torch keeps no state for it; optax holds zeros, which is the same thing)."""
    config: ModelConfig                 # the model config (RUNDIR/config.json, dropout as set)
    params: dict[str, np.ndarray]       # HF name -> torch-layout array
    step: int = 0                       # optimizer updates done = every step counter there is
    exp_avg: dict[str, np.ndarray] | None = None
    exp_avg_sq: dict[str, np.ndarray] | None = None
    batches: dict[str, Any] | None = None   # bertcore BatchIterator.state(), identical in both
    rng: list[int] | None = None        # jaxbert's dropout key (torch reseeds per step: none)
    notes: list[str] = field(default_factory=list)


def _as_numpy(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """torch tensors (a pytorch_model.bin) or numpy arrays -> numpy, floats as float32."""
    out = {}
    for k, v in state.items():
        if hasattr(v, "detach"):
            v = v.detach().float().numpy() if v.is_floating_point() else v.numpy()
        out[k] = np.asarray(v)
    return out


# ---- what SRC is ----------------------------------------------------------------------------

def open_source(src: Path, step: int | None) -> tuple[ModelDir, int | None]:
    """SRC opened (bertcore.modeldirs.resolve), and the step to read: a model directory, or one
    checkpoint directory of a pretraining run (RUNDIR/checkpoints/step_00000100 or
    RUNDIR/checkpoints/100), which opens its run at that step."""
    if not src.exists():
        raise UserError(f"{src} does not exist; pass a torchbert or jaxbert run directory, one "
                        f"of its checkpoints, or a Hugging Face BERT directory")
    if not src.is_dir():
        raise UserError(f"{src} is a file, not a checkpoint: pass a run directory, a checkpoint "
                        f"directory or a Hugging Face BERT directory (config.json + "
                        f"model.safetensors)")
    if src.parent.name == CHECKPOINTS:
        run = find_model_dir(src.parent.parent)
        if run is not None and run.layout == "pretraining-run":
            ckpt_step = checkpoint_step(src.name)
            if ckpt_step is None:
                raise UserError(f"{src} is not a checkpoint directory (step_XXXXXXXX or a step "
                                f"number)")
            if step is not None and step != ckpt_step:
                raise UserError(f"--step {step} contradicts the checkpoint {src} (step "
                                f"{ckpt_step})")
            return run, ckpt_step
    if is_electra_export(src):
        return open_electra_export(src), step
    md = find_model_dir(src)
    if md is None:
        raise UserError(f"{src} is not a checkpoint: no run.json (torchbert/jaxbert run "
                        f"directory) and no config.json + model.safetensors (Hugging Face BERT "
                        f"directory)")
    return md, step


# ---- Hugging Face directories ---------------------------------------------------------------

def read_hf(path: Path) -> TrainingState:
    """Weights of a Hugging Face BERT directory (BertForPreTraining, BertForMaskedLM or BertModel
    save; with or without the `bert.` prefix; tied decoder copies checked), or of a ModernBERT one
    (ModernBertForMaskedLM or ModernBertModel), or an ELECTRA export (its two directories).
    Missing heads get a fresh initialisation."""
    if is_electra_export(path):
        return read_electra_export(path)
    config = load_model_config(path / "config.json")    # checks it is valid JSON
    position_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get(
        "position_embedding_type", "absolute")
    if position_type != "absolute":
        raise UserError(f"{path}/config.json has position_embedding_type={position_type!r}; only "
                        f"'absolute' (original BERT) is supported")
    found = read_hf_safetensors(path)
    if found is None:
        # A pytorch_model.bin is a pickle: torchbert's reader opens it with weights_only=True.
        from torchbert.model import read_hf_weights

        found = read_hf_weights(path)
    state = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
             for k, v in normalize_hf_names(_as_numpy(found[0]), config).items()}
    if isinstance(config, ElectraConfig) and not any(k.startswith(ELECTRA_PREFIXES)
                                                     for k in state):
        _refuse_one_electra_model(path, state)
    return _with_fresh_heads(path, config, state, str(found[1]))


def _with_fresh_heads(path: Path, config: ModelConfig, state: dict[str, np.ndarray],
                      source: str) -> TrainingState:
    """The TrainingState of canonically named weights, checked against the config's table; the
    heads a save may lack initialised fresh (with a note)."""
    missing = check_hf_state(state, config, missing_ok=head_prefixes(config), source=source)
    out = TrainingState(config, {**state, **fresh_params(config, missing)})
    if missing:
        modules = sorted({m.rsplit(".", 1)[0] for m in missing})
        out.notes.append(f"note: {path} has no {', '.join(modules)}; initialised fresh "
                         f"({'truncated ' if isinstance(config, ModernBertConfig) else ''}"
                         f"N(0, {config.initializer_range}) weights, seed 0)")
    out.params = {n: out.params[n] for n in hf_names(config)}
    return out


def write_hf(out: Path, state: TrainingState, tokenizer: Path | None,
             card: str | dict[str, str] | None = None) -> None:
    """config.json + model.safetensors + the tokenizer files (bertcore.model.hf.save_hf_files): a
    directory `transformers.BertForPreTraining.from_pretrained` loads; `card` its README.md.
    ELECTRA: the same in OUT/discriminator and OUT/generator, loaded by transformers'
    ElectraForPreTraining and ElectraForMaskedLM; `card` {role: README.md}."""
    if not isinstance(state.config, ElectraConfig):
        save_hf_files(out, state.config, state.params, tokenizer)
        if card is not None:
            write_model_card(out, card)
        return
    for role, params in electra_split(state.params).items():
        (out / role).mkdir()
        save_hf_files(out / role, state.config, params, tokenizer, role=role)
        if card is not None:
            write_model_card(out / role, card[role])


def pretraining_card_of(dst: Path, state: TrainingState, src: ModelDir
                        ) -> str | dict[str, str]:
    """The model card of DST, the Hugging Face export of `state`: from a run, what its files
    say about the converted step (its summary's `learned:` line when the run ended there);
    from a Hugging Face directory, where the weights came from. ELECTRA: {role: card} for
    DST/discriminator and DST/generator."""
    if isinstance(state.config, ElectraConfig):
        return {role: _pretraining_card(dst / role, state, src, dst.name)
                for role in ELECTRA_ROLES}
    return _pretraining_card(dst, state, src, dst.name)


def _pretraining_card(dst: Path, state: TrainingState, src: ModelDir, name: str) -> str:
    run, root = src.run, src.path
    if run is None:
        return pretraining_card(dst, state.config, name=name, source=str(root))
    summary, seconds = src.summary, None
    if summary is not None and summary.get("steps") == state.step and summary.get("learned"):
        lrn, seconds = summary["learned"], summary.get("train_seconds")
    else:   # an earlier step: its metrics lines, without the end-of-run baseline
        lrn = learned(RunDir(root).metrics_until(state.step), None)
    lines = learned_lines(lrn, run.framework, root)
    return pretraining_card(
        dst, state.config, framework=run.framework, name=name, train=run.train.to_dict(),
        steps=state.step, corpus=run_corpus(run.info), data=run.info.get("data"),
        init_from=run.info.get("init_from"), learned_line=lines[0] if lines else None,
        held_out=lrn.get("eval"), train_seconds=seconds,
        source=f"{root}, step {state.step}")


# ---- ELECTRA's two Hugging Face models ---------------------------------------------------------

ELECTRA_CLASSES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}


def is_electra_export(path: Path) -> bool:
    """An ELECTRA export (bertcore.modeldirs.resolve.electra_export), or what is left of one: a
    discriminator/ or generator/ transformers directory, no model of its own."""
    return any(electra_export(path, role) is not None for role in ELECTRA_ROLES)


def open_electra_export(path: Path) -> ModelDir:
    """An ELECTRA export opened as a Hugging Face source: both models present, or one UserError
    naming the missing one; its config the pair's (`export_pair_config`)."""
    for role, other in zip(ELECTRA_ROLES, reversed(ELECTRA_ROLES)):
        if not is_hf_dir(path / role):
            raise UserError(f"{path} holds an ELECTRA {other} but no {role} ({path / role}: "
                            f"transformers' {ELECTRA_CLASSES[role]}, config.json + "
                            f"model.safetensors); converting ELECTRA needs both models, as "
                            f"--to hf and a run's hf/ write them: put the {role} back, or convert "
                            f"the run itself")
    config = export_pair_config(path)
    tok = next((path / role for role in ELECTRA_ROLES
                if any((path / role / f).is_file() for f in ("tokenizer.json", "vocab.txt"))),
               None)
    return ModelDir(path, "hf", config, tok, path)


def export_pair_config(path: Path) -> ElectraConfig:
    """The pair's ElectraConfig (the discriminator's, with the generator's size as fractions of
    it) from the two config.json files of an export; one UserError where the generator is not
    the one that config derives."""
    own = {}
    for role in ELECTRA_ROLES:
        own[role] = load_model_config(path / role / "config.json")
        if not isinstance(own[role], ElectraConfig):
            raise UserError(f"{path / role / 'config.json'} is not an ELECTRA config (it is "
                            f"{arch_of(own[role])}'s); an ELECTRA export holds two ELECTRA models")
    return electra_pair_config(own["discriminator"], own["generator"], str(path))


def read_electra_export(path: Path) -> TrainingState:
    """The pair's state from an ELECTRA export: each model's weights checked against its own
    table (bertcore.model.hf.check_electra_state), joined (`electra_join`: the generator's copy
    of the embeddings must equal the discriminator's), missing heads initialised fresh."""
    config = open_electra_export(path).config
    parts, sources = {}, {}
    for role in ELECTRA_ROLES:
        own = load_model_config(path / role / "config.json")
        found = read_hf_safetensors(path / role)
        if found is None:
            from torchbert.model import read_hf_weights   # a pytorch_model.bin: torch's reader

            found = read_hf_weights(path / role)
        state = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
                 for k, v in normalize_hf_names(_as_numpy(found[0]), own).items()}
        check_electra_state(state, own, role, source=str(found[1]))
        parts[role], sources[role] = state, str(found[1])
    return _with_fresh_heads(path, config, electra_join(parts, config, sources), str(path))


def _refuse_one_electra_model(path: Path, state: dict[str, np.ndarray]) -> None:
    """A directory of one transformers ELECTRA model where the pair is needed: one UserError
    naming which model it is and what to pass."""
    role = ("generator" if any(k.startswith("generator_") for k in state) else
            "discriminator" if any(k.startswith("discriminator_") for k in state) else None)
    what = (f"an ELECTRA {role} (transformers' {ELECTRA_CLASSES[role]})" if role
            else "one ELECTRA model")
    other = [r for r in ELECTRA_ROLES if r != role]
    parent = path.parent if role and is_hf_dir(path.parent / other[0]) else None
    raise UserError(f"{path} is {what} alone; parity.convert converts ELECTRA's generator + "
                    f"discriminator pair: pass the directory that holds both as discriminator/ "
                    f"and generator/ ({parent or 'what --to hf and a run hf/ write'})")


def _json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---- fine-tuned classifiers (bertcore.classify.cli) ----------------------------------------------
# A classify RUNDIR keeps its best weights as a Hugging Face BertForSequenceClassification (or
# ModernBertForSequenceClassification) directory (RUNDIR/best/), framework-free whichever twin
# trained it, so exporting one is reading and rewriting that directory (checked by bertcore's one
# table), never a twin's checkpoint.

def write_hf_classifier(src: ModelDir, dst: Path) -> str:
    """DST: config.json (id2label, label2id, architectures) + model.safetensors + the tokenizer,
    loadable with transformers' BertForSequenceClassification (or
    ModernBertForSequenceClassification).from_pretrained. Returns a line."""
    from bertcore.classify.data import classifier_class, open_classifier, write_classifier_dir

    clf = open_classifier(src)          # checks names, shapes, labels and the vocabulary
    tokenizer = src.tokenizer_dir if src.layout == "classify-run" else clf.path
    write_classifier_dir(dst, clf.config, clf.labels, clf.state, tokenizer,
                         card=classifier_card_of(src, dst, clf))
    return (f"wrote {dst}: a Hugging Face {classifier_class(clf.config)} ({len(clf.labels)} "
            f"labels: {', '.join(clf.labels.labels)}) from {src.path}; load it with transformers "
            f"or either twin's classify evaluate/predict")


def classifier_card_of(src: ModelDir, dst: Path, clf: Any) -> str:
    """The model card of DST, the export of classifier SRC: a classify RUNDIR's settings, data,
    --init-from and best epoch; for a Hugging Face classifier directory, its best epoch when it
    is a classify run's best/ (classifier.json)."""
    from bertcore.modeldirs.card import classifier_card

    best = _json_or_none(src.weights_dir / "classifier.json")
    kw: dict[str, Any] = {}
    if src.layout == "classify-run":
        kw = {"framework": src.info.get("framework"), "settings": src.settings,
              "base_model": (src.info.get("init_from") or {}).get("path"),
              "data": src.info.get("data"), "validation": src.info.get("validation")}
    return classifier_card(dst, clf.config, list(clf.labels.labels), name=dst.name,
                           best=best if isinstance(best, dict) else None, source=str(src.path),
                           **kw)
