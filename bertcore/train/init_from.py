"""`--init-from PATH`: which weights a run starts from, framework-free. Pretraining (both
train CLIs) and fine-tuning (both classify CLIs) resolve it here; each twin then reads the
weights with its own `pretrained_weights` (torchbert/pretrained.py, jaxbert/pretrained.py).

PATH is a Hugging Face BERT directory, a pretraining RUNDIR of this twin (its latest
checkpoint), a RUNDIR of the other twin that holds its export RUNDIR/hf/ (a twin cannot read the
other's checkpoint format; every pretraining run writes hf/ when it ends), or a fine-tuned
classifier (a classify RUNDIR's best/ weights, or a Hugging Face classifier directory); which is
which is bertcore.modeldirs.resolve's to say.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from bertcore.model.config import (BertConfig, ElectraConfig, electra_pair_config,
                                   load_model_config)
from bertcore.data.tokenizer import WordPiece, load_tokenizer
from bertcore.infra.errors import UserError
from bertcore.model.hf import electra_join
from bertcore.modeldirs.resolve import electra_export, open_model_dir

T = TypeVar("T")


@dataclass
class InitSource:
    weights_from: str          # "hf": a Hugging Face dir; "rundir": a pretraining run of this twin
    path: Path                 # the HF dir or the RUNDIR
    config: BertConfig         # as it will be fine-tuned (dropout as configured there)
    tokenizer: WordPiece
    note: str = ""
    labels: list[str] | None = None     # the labels of the classifier head its weights hold
    tokenizer_dir: Path | None = None   # where `tokenizer` was loaded from
    unused: tuple[str, ...] = ()        # prefixes of its weight names the run leaves out
    # ELECTRA from Hugging Face weights: the directory of each of its two transformers models
    # (None: that one starts fresh), which pretraining joins into its pair (`electra_state`).
    electra: dict[str, Path | None] | None = None

    def used(self, weights: Mapping[str, T]) -> dict[str, T]:
        """`weights` without the ones this run leaves out (a pretraining run: a classifier)."""
        return {k: v for k, v in weights.items() if not k.startswith(self.unused)}


def resolve_init(path: str | Path, framework: str, tokenizer: str | None = None,
                 fallback_tokenizer: str | None = None, keep_classifier: bool = False
                 ) -> InitSource:
    """What `--init-from PATH` names (bertcore.modeldirs.resolve's layouts): a Hugging Face BERT
    directory, a pretraining RUNDIR of this twin (its latest checkpoint), one of the other twin
    that holds an exported RUNDIR/hf/ (a twin cannot read the other's checkpoint format), or a
    classifier (a classify RUNDIR's best/ weights, or a Hugging Face classifier directory).

    A classifier's head is the fine-tuning's to keep (`keep_classifier`, with its labels); a
    pretraining run starts from its encoder and leaves the head out (`InitSource.unused`).

    The model's tokenizer is `tokenizer` if given (classify's --tokenizer), else its own, else
    `fallback_tokenizer` (pretraining: a HF directory without tokenizer files takes the run's
    --tokenizer; with its own files, those are the model's vocabulary and the run must match)."""
    if _is_electra_export(Path(path).expanduser()):
        return _electra_export_source(Path(path).expanduser(), tokenizer, fallback_tokenizer, "")
    md = open_model_dir(path, flag="--init-from")
    note = ""
    if md.layout == "classify-run":     # a fine-tuned run: start from its best weights
        if md.weights_dir is None:
            raise UserError(f"--init-from {md.path} is a classify run with no best/ weights yet; "
                            f"let it finish an epoch, or pass the model it was fine-tuned from")
        note = f"starting from the fine-tuned weights in {md.path}/best"
        md = md.open_weights(flag="--init-from")
    elif md.layout == "pretraining-run":
        if md.framework == framework:
            tok_dir = Path(tokenizer or md.tokenizer_dir)
            return _checked(InitSource("rundir", md.path, md.config, load_tokenizer(tok_dir),
                                       tokenizer_dir=tok_dir))
        if md.weights_dir is None and _is_electra_export(md.path / "hf"):
            return _electra_export_source(md.path / "hf", tokenizer,
                                          str(tokenizer or md.tokenizer_dir),
                                          f"{md.framework}bert run: reading its export "
                                          f"{md.path}/hf")
        if md.weights_dir is None:
            raise UserError(f"--init-from {md.path} is a {md.framework}bert run, whose "
                            f"checkpoints {framework}bert cannot read; export it with python "
                            f"-m parity.convert {md.path} DIR --to hf and pass --init-from DIR")
        note = f"{md.framework}bert run: reading its export {md.path}/hf"
        md = md.open_weights(flag="--init-from")
    unused: tuple[str, ...] = ()
    if md.labels is not None and not keep_classifier:
        unused = ("classifier.",)
        note = "; ".join(filter(None, [note, f"its classifier head ({', '.join(md.labels)}) is "
                                             f"left out: pretraining continues the encoder"]))
    tok_dir = tokenizer or md.tokenizer_dir or fallback_tokenizer
    if tok_dir is None:
        raise UserError(f"--init-from {md.path} has no tokenizer (vocab.txt or tokenizer.json); "
                        f"pass the one it was trained with as --tokenizer DIR")
    electra = None
    if isinstance(md.config, ElectraConfig):
        if md.electra == "generator" and not keep_classifier:
            raise UserError(f"--init-from {md.path} is an ELECTRA generator "
                            f"(ElectraForMaskedLM), which cannot say the discriminator's size; "
                            f"pass the discriminator, or the directory holding both "
                            f"(discriminator/ and generator/, as a run's hf/ export)")
        electra = {"discriminator": md.path, "generator": None}
        if not keep_classifier:
            note = "; ".join(filter(None, [note, "the generator starts fresh (only the "
                                                 "discriminator was given)"]))
    return _checked(InitSource("hf", md.path, md.config, load_tokenizer(tok_dir), note,
                               md.labels if keep_classifier else None, Path(tok_dir), unused,
                               electra))


def _is_electra_export(path: Path) -> bool:
    """ELECTRA's export: discriminator/ and/or generator/ transformers directories side by side
    (a run's hf/, parity.convert --to hf)."""
    return any(electra_export(path, role) is not None for role in ("discriminator", "generator"))


def _electra_export_source(path: Path, tokenizer: str | None, fallback: str | None,
                           note: str) -> InitSource:
    """An ELECTRA export as --init-from of a pretraining run: the discriminator's config, with
    the generator's size read from its own config.json (it must be one google-research/electra's
    rule derives: a fraction of the width and depth, a head per 64 features, 4x wide
    feed-forward); without generator/ the generator starts fresh at the default size."""
    disc, gen = electra_export(path, "discriminator"), electra_export(path, "generator")
    if disc is None:
        raise UserError(f"--init-from {path} holds an ELECTRA generator but no discriminator/; "
                        f"pretraining needs the discriminator (the generator cannot say its "
                        f"size): pass the directory a run exported, with both models")
    config = load_model_config(disc / "config.json")
    if not isinstance(config, ElectraConfig):
        raise UserError(f"--init-from {disc} is not an ELECTRA model (model_type "
                        f"{config.model_type if hasattr(config, 'model_type') else 'bert'})")
    if gen is not None:
        g = load_model_config(gen / "config.json")
        if not isinstance(g, ElectraConfig):
            raise UserError(f"--init-from {gen} is not an ELECTRA model; an ELECTRA export holds "
                            f"two ELECTRA models")
        config = electra_pair_config(config, g, f"--init-from {path}")
    else:
        note = "; ".join(filter(None, [note, "the generator starts fresh (no generator/)"]))
    tok_dir = tokenizer or (disc if (disc / "vocab.txt").is_file() or
                            (disc / "tokenizer.json").is_file() else None) or fallback
    if tok_dir is None:
        raise UserError(f"--init-from {disc} has no tokenizer (vocab.txt or tokenizer.json); "
                        f"pass the one it was trained with as --tokenizer DIR")
    return _checked(InitSource("hf", path, config, load_tokenizer(tok_dir), note,
                               tokenizer_dir=Path(tok_dir),
                               electra={"discriminator": disc, "generator": gen}))


def electra_state(src: InitSource, read: Callable[[Path], Mapping[str, T]]) -> dict[str, T]:
    """ELECTRA pretraining's starting weights from `src.electra`'s transformers directories, each
    read by the twin's `read` (HF name -> array), joined into the pair's names
    (bertcore.model.hf.electra_join: shared embeddings checked equal); a model not given is
    absent, for the twin to initialise."""
    assert src.electra is not None
    parts = {role: (None if d is None else src.used(read(d))) for role, d in src.electra.items()}
    return electra_join(parts, src.config, {role: str(d) for role, d in src.electra.items()
                                            if d is not None})


def _checked(src: InitSource) -> InitSource:
    if src.config.vocab_size != src.tokenizer.vocab_size:
        raise UserError(f"--init-from {src.path} has vocab_size={src.config.vocab_size} but its "
                        f"tokenizer has {src.tokenizer.vocab_size} entries; the vocabularies "
                        f"differ: pass the tokenizer the model was trained with (--tokenizer)")
    return src


def fresh_note(path: Path, fresh: list[str]) -> str:
    """The run's note on the parameters --init-from's weights lacked (initialised fresh): the
    names, with a whole model that was missing (ELECTRA's generator) named once."""
    whole = [m for m in ("generator.",) if any(n.startswith(m) for n in fresh)]
    rest = [n for n in fresh if not n.startswith(tuple(whole))]
    parts = [f"the {m.rstrip('.')} ({sum(n.startswith(m) for n in fresh)} tensors)"
             for m in whole] + rest
    return f"not in {path}, initialised fresh: {', '.join(parts)}"
