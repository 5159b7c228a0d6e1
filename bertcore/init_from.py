"""`--init-from PATH`: which weights a run starts from, framework-free. Pretraining (both
train CLIs) and fine-tuning (both classify CLIs) resolve it here; each twin then reads the
weights with its own `pretrained_weights` (torchbert/pretrained.py, jaxbert/pretrained.py).

PATH is a Hugging Face BERT directory, a pretraining RUNDIR of this twin (its latest
checkpoint), a RUNDIR of the other twin that holds its export RUNDIR/hf/ (a twin cannot read the
other's checkpoint format; every pretraining run writes hf/ when it ends), or a fine-tuned
classify RUNDIR (its best/ weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import BertConfig
from .errors import UserError
from .hf import is_hf_dir
from .rundir import RunDir
from .tokenizer import WordPiece, load_tokenizer


@dataclass
class InitSource:
    kind: str                  # "hf": a Hugging Face dir; "rundir": a pretraining run of this twin
    path: Path                 # the HF dir or the RUNDIR
    config: BertConfig         # as it will be fine-tuned (dropout as configured there)
    tokenizer: WordPiece
    note: str = ""
    label_map: Any = None      # bertcore.classify: an HF classifier dir's labels, if any
    tokenizer_dir: Path | None = None   # where `tokenizer` was loaded from


def resolve_init(path: str | Path, framework: str, tokenizer: str | None = None,
                 fallback_tokenizer: str | None = None) -> InitSource:
    """What `--init-from PATH` names: a Hugging Face BERT directory, a pretraining RUNDIR of
    this twin (its latest checkpoint), or one of the other twin that holds an exported
    RUNDIR/hf/ (a twin cannot read the other's checkpoint format).

    The model's tokenizer is `tokenizer` if given (classify's --tokenizer), else its own, else
    `fallback_tokenizer` (pretraining: a HF directory without tokenizer files takes the run's
    --tokenizer; with its own files, those are the model's vocabulary and the run must match)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"--init-from {path} is not a directory; pass a pretraining RUNDIR or a "
                        f"Hugging Face BERT directory (config.json + model.safetensors)")
    note = ""
    run_dir = RunDir(path)
    if run_dir.is_run():
        try:
            info = run_dir.info()
        except UserError as e:
            raise UserError(f"--init-from {e}") from None
        if info.get("task") == "classify":     # a fine-tuned run: start from its best weights
            path, note = path / "best", f"starting from the fine-tuned weights in {path}/best"
        else:
            run = run_dir.read()
            if run.framework == framework:
                tok_dir = Path(tokenizer or path / "tokenizer")
                return _checked(InitSource("rundir", path, run.config, load_tokenizer(tok_dir),
                                           tokenizer_dir=tok_dir))
            if not is_hf_dir(path / "hf"):
                raise UserError(f"--init-from {path} is a {run.framework}bert run, whose "
                                f"checkpoints {framework}bert cannot read; export it with python "
                                f"-m parity.convert {path} DIR --to hf and pass --init-from DIR")
            path, note = path / "hf", f"{run.framework}bert run: reading its export {path}/hf"
    if not is_hf_dir(path):
        raise UserError(f"--init-from {path} is neither a pretraining RUNDIR (run.json) nor a "
                        f"Hugging Face BERT directory (config.json + model.safetensors)")
    tok_dir = tokenizer or (path if any((path / f).is_file() for f in
                                        ("tokenizer.json", "vocab.txt")) else None) \
        or fallback_tokenizer
    if tok_dir is None:
        raise UserError(f"--init-from {path} has no tokenizer (vocab.txt or tokenizer.json); "
                        f"pass the one it was trained with as --tokenizer DIR")
    return _checked(InitSource("hf", path, BertConfig.from_json_file(path / "config.json"),
                               load_tokenizer(tok_dir), note, tokenizer_dir=Path(tok_dir)))


def _checked(src: InitSource) -> InitSource:
    if src.config.vocab_size != src.tokenizer.vocab_size:
        raise UserError(f"--init-from {src.path} has vocab_size={src.config.vocab_size} but its "
                        f"tokenizer has {src.tokenizer.vocab_size} entries; the vocabularies "
                        f"differ: pass the tokenizer the model was trained with (--tokenizer)")
    return src
