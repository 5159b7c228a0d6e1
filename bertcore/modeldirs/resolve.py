"""What a model directory is, framework-free: the one resolver behind every command that takes a
model path (both twins' fill_mask, `--init-from` in train and classify, classify evaluate and
predict, parity.convert). Its four layouts:

    pretraining-run  a torchbert or jaxbert RUNDIR (bertcore.train.run): run.json, config.json,
                     train_config.json, tokenizer/, checkpoints/ in the twin's own format, and
                     hf/ (its weights as a Hugging Face directory) once the run has ended
    classify-run     a `classify train` RUNDIR (bertcore.classify.cli): classify_config.json,
                     config.json with id2label, tokenizer/, run.json, and best/ (an
                     hf-classifier directory) once an epoch has ended
    hf               a Hugging Face BERT directory: config.json beside model.safetensors (or the
                     shards of model.safetensors.index.json, or a pytorch_model.bin); tokenizer
                     files (vocab.txt, tokenizer.json) optional. An ELECTRA one holds one of
                     transformers' ELECTRA models, which `ModelDir.electra` names (ELECTRA_MODELS)
    hf-classifier    an hf directory of a BertForSequenceClassification: id2label in config.json
                     and classifier.* among its safetensors weights

`layout_of(path)` only looks (it reads no weights, at most a safetensors header);
`open_model_dir(path)` also reads the configs, and is what the commands call: the `ModelDir` it
returns carries what the directory holds (a run's run.json, configs and summary, its weights
directory), so a caller opens a directory once and passes the object on. Which layouts a
command accepts, and what it says about the others, stays with the command. The names of a
RUNDIR's files are bertcore.train.rundir's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertcore.model.config import ElectraConfig, ModelConfig, load_model_config
from bertcore.data.tokenizer import WordPiece, load_tokenizer
from bertcore.infra.errors import UserError
from bertcore.model.hf import safetensors_files
from bertcore.train.rundir import CLASSIFY_CONFIG, RUN_FILE, SUMMARY, RunFiles, read_run

LAYOUTS = ("pretraining-run", "classify-run", "hf", "hf-classifier")
# The files that hold a vocabulary: a directory with either holds a tokenizer
# (bertcore.data.tokenizer.load_tokenizer).
VOCAB_FILES = ("tokenizer.json", "vocab.txt")
# Which ELECTRA model an hf directory holds: the transformers class, and how a command names it.
# "pair" is the twins' ElectraPreTrainingModel (generator + discriminator, `discriminator.*` and
# `generator.*` names), which a run's checkpoints hold.
ELECTRA_MODELS = {
    "discriminator": ("ElectraForPreTraining", "an ELECTRA discriminator"),
    "generator": ("ElectraForMaskedLM", "an ELECTRA generator"),
    "classifier": ("ElectraForSequenceClassification", "an ELECTRA sequence classifier"),
    "encoder": ("ElectraModel", "an ELECTRA encoder without heads"),
    "pair": ("ElectraPreTrainingModel", "an ELECTRA generator + discriminator pair"),
}


@dataclass
class ModelDir:
    """A model directory, read: its layout, config, tokenizer, where its weights are and, for a
    run, the files that describe it."""
    path: Path
    layout: str                       # one of LAYOUTS
    config: ModelConfig               # its config.json (a run's: dropout as the user set it)
    tokenizer_dir: Path | None        # its tokenizer; None: an hf directory without one
    weights_dir: Path | None          # its weights as a Hugging Face directory: itself (hf,
    #                                   hf-classifier), best/ (classify-run), hf/ (a pretraining
    #                                   run that ended); None where there are none yet
    framework: str | None = None      # the twin that wrote a run ("torch" or "jax")
    labels: list[str] | None = None   # a classifier's labels, in id order (its id2label)
    run: RunFiles | None = None       # a pretraining run's run.json and configs
    info: dict[str, Any] = field(default_factory=dict)  # a run's run.json ({}: no run, or a
    #                                   classify run's that cannot be read)
    settings: dict[str, Any] | None = None  # a classify run's classify_config.json (None if
    #                                   unreadable)
    summary: dict[str, Any] | None = None   # a run's summary.json, written when it ended
    electra: str | None = None        # an ELECTRA hf directory's model (ELECTRA_MODELS); None:
    #                                   not ELECTRA, not hf, or not to be told from its files

    @property
    def trained_config(self) -> ModelConfig:
        """The config a pretraining run's checkpoints record (dropout off after --no-dropout);
        any other layout's config.json."""
        return self.run.trained_config if self.run is not None else self.config

    @property
    def is_classifier(self) -> bool:
        return self.layout in ("classify-run", "hf-classifier")

    def load_tokenizer(self) -> WordPiece:
        return load_tokenizer(self.tokenizer_dir or self.path)

    def open_weights(self, flag: str = "") -> "ModelDir":
        """Its weights directory (`weights_dir`), opened: what a run's weights are read from."""
        assert self.weights_dir is not None, f"{self.path} has no weights directory"
        return self if self.weights_dir == self.path else open_model_dir(self.weights_dir, flag)


def layout_of(path: str | Path) -> str | None:
    """Which of LAYOUTS the directory `path` is, from the files it holds; None if none."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / CLASSIFY_CONFIG).is_file():
        return "classify-run"
    if (path / RUN_FILE).is_file():
        return "pretraining-run"
    if is_hf_dir(path):
        return "hf-classifier" if _labels(path) is not None else "hf"
    return None


def open_model_dir(path: str | Path, flag: str = "") -> ModelDir:
    """The model directory at `path`, its configs read; one UserError (prefixed with `flag`,
    e.g. "--init-from") when it is none of LAYOUTS."""
    path = Path(path).expanduser()
    named = f"{flag} {path}" if flag else str(path)
    if not path.exists():
        raise UserError(f"{named} does not exist; pass a RUNDIR or a Hugging Face BERT directory")
    if not path.is_dir():
        raise UserError(f"{named} is a file, not a directory; pass a RUNDIR or a Hugging Face "
                        f"BERT directory (config.json + model.safetensors)")
    md = find_model_dir(path)
    if md is None:
        raise UserError(f"{named} is neither a pretraining RUNDIR ({RUN_FILE}), a classify "
                        f"RUNDIR ({CLASSIFY_CONFIG}) nor a Hugging Face BERT directory "
                        f"(config.json + model.safetensors)")
    return md


def find_model_dir(path: Path) -> ModelDir | None:
    """The model directory at `path`, its configs read, or None when it is none of LAYOUTS (for
    a command that words that refusal itself)."""
    layout = layout_of(path)
    if layout == "pretraining-run":
        run = read_run(path)
        return ModelDir(path, layout, run.config, path / "tokenizer", _hf_or_none(path / "hf"),
                        run.framework, run=run, info=run.info,
                        summary=_dict_or_none(path / SUMMARY))
    if layout == "classify-run":
        info = _dict_or_none(path / RUN_FILE) or {}   # best/'s weights are framework-free:
        config = load_model_config(path / "config.json")  # nothing depends on run.json here
        return ModelDir(path, layout, config, path / "tokenizer", _hf_or_none(path / "best"),
                        info.get("framework"), _id2label(path / "config.json"), info=info,
                        settings=_dict_or_none(path / CLASSIFY_CONFIG),
                        summary=_dict_or_none(path / SUMMARY))
    if layout in ("hf", "hf-classifier"):
        tok = path if any((path / f).is_file() for f in VOCAB_FILES) else None
        config = load_model_config(path / "config.json")
        return ModelDir(path, layout, config, tok, path, labels=_labels(path),
                        electra=electra_model(path) if isinstance(config, ElectraConfig) else None)
    return None


def is_hf_dir(path: Path) -> bool:
    """A Hugging Face BERT directory: config.json beside weights in any format HF writes."""
    return (path / "config.json").is_file() and any(
        (path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json",
                                       "pytorch_model.bin"))


def electra_export(path: Path, role: str) -> Path | None:
    """`path/role` ("discriminator" or "generator") when `path` is ELECTRA's export, two
    transformers directories side by side (an ELECTRA run's hf/, `parity.convert --to hf`); else
    None. Not a layout of its own: each command takes the one of the two models it needs."""
    sub = Path(path) / role
    return sub if layout_of(path) is None and is_hf_dir(sub) else None


def _hf_or_none(path: Path) -> Path | None:
    return path if is_hf_dir(path) else None


def _dict_or_none(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is absent, unreadable or no object."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _id2label(config_file: Path) -> list[str] | None:
    """config.json's id2label as a list in id order, or None when it has none."""
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
        id2 = raw.get("id2label") if isinstance(raw, dict) else None
        return [str(id2[str(i)]) for i in range(len(id2))] if isinstance(id2, dict) and id2 \
            else None
    except (OSError, ValueError, KeyError):
        return None


def _labels(hf_dir: Path) -> list[str] | None:
    """A Hugging Face directory's classifier labels: its id2label when its weights hold a
    classifier head (transformers writes an id2label into every BERT config, so the weights
    decide). A pytorch_model.bin cannot be looked into without torch: no labels."""
    labels = _id2label(hf_dir / "config.json")
    # ELECTRA's head is two layers (classifier.dense, classifier.out_proj); the others' one.
    heads = {"classifier.weight", "classifier.out_proj.weight"}
    return labels if labels is not None and heads & _tensor_names(hf_dir) else None


def electra_model(hf_dir: Path) -> str | None:
    """Which ELECTRA model (a key of ELECTRA_MODELS) a Hugging Face ELECTRA directory holds: its
    weights' names decide (the heads each class has), else its config.json's `architectures`
    (a pytorch_model.bin cannot be looked into without torch); None if neither tells."""
    names = _tensor_names(hf_dir)
    for model, prefixes in (("pair", ("discriminator.", "generator.")),
                            ("generator", ("generator_predictions.", "generator_lm_head.")),
                            ("classifier", ("classifier.",)),
                            ("discriminator", ("discriminator_predictions.",))):
        if any(n.startswith(prefixes) for n in names):
            return model
    if names:
        return "encoder"
    try:
        archs = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))["architectures"]
        return next(m for m, (cls, _) in ELECTRA_MODELS.items() if cls in archs)
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None


def _tensor_names(hf_dir: Path) -> set[str]:
    """The names in a Hugging Face directory's safetensors files, from their headers only."""
    index = hf_dir / "model.safetensors.index.json"
    if not (hf_dir / "model.safetensors").is_file() and index.is_file():
        try:
            return set(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
        except (OSError, ValueError, KeyError, TypeError):
            return set()
    files = safetensors_files(hf_dir) or []
    names: set[str] = set()
    for f in files:
        try:
            with open(f, "rb") as fh:   # an 8-byte little-endian header size, then JSON
                size = int.from_bytes(fh.read(8), "little")
                if size < 1 << 27:
                    names |= set(json.loads(fh.read(size))) - {"__metadata__"}
        except (OSError, ValueError, TypeError):
            pass    # a corrupt file: its reader reports it when the weights are loaded
    return names
