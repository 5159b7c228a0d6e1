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
from typing import Mapping, TypeVar

from bertcore.model.config import BertConfig
from bertcore.data.tokenizer import WordPiece, load_tokenizer
from bertcore.infra.errors import UserError
from bertcore.modeldirs.resolve import open_model_dir

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
    return _checked(InitSource("hf", md.path, md.config, load_tokenizer(tok_dir), note,
                               md.labels if keep_classifier else None, Path(tok_dir), unused))


def _checked(src: InitSource) -> InitSource:
    if src.config.vocab_size != src.tokenizer.vocab_size:
        raise UserError(f"--init-from {src.path} has vocab_size={src.config.vocab_size} but its "
                        f"tokenizer has {src.tokenizer.vocab_size} entries; the vocabularies "
                        f"differ: pass the tokenizer the model was trained with (--tokenizer)")
    return src
