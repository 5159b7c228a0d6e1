"""`python -m parity.convert SRC DST --to torch|jax|hf`: BERT weights or a whole training state
between torchbert, jaxbert and Hugging Face (BERT, ModernBERT and ELECTRA: its generator +
discriminator pair, whose Hugging Face form is two directories).

Every reader produces one framework-free `TrainingState` (parity/state.py) and every writer
consumes it; the names and layouts are bertcore/model/hf.py's one table. Per framework:
parity/torch_state.py and parity/jax_state.py, which reuse the twin's own checkpoint code. The
framework a direction needs is imported only when it is used.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bertcore.model.config import ElectraConfig, arch_of
from bertcore.infra.errors import UserError, cli_entry
from bertcore.infra.files import Output, check_apart, check_output, replace_output, writing
from bertcore.model.hf import ELECTRA_ROLES, HF_OUTPUT
from bertcore.modeldirs.resolve import ModelDir
from bertcore.train.rundir import FRAMEWORKS, RUN_OUTPUT, RunDir, copy_tree

from .state import (TrainingState, open_source, pretraining_card_of, read_hf, write_hf,
                    write_hf_classifier)

logger = logging.getLogger(__name__)
# ELECTRA's Hugging Face export: the two models' directories (each HF_OUTPUT's files), what its
# --overwrite may replace.
ELECTRA_HF_OUTPUT = Output("an ELECTRA export", frozenset(ELECTRA_ROLES))


def read_state(src: ModelDir, step: int | None) -> TrainingState:
    """The TrainingState of SRC: a torchbert run, a jaxbert run or a Hugging Face directory."""
    if src.framework == "torch":
        from .torch_state import read_torch

        return read_torch(src.run, step)
    if src.framework == "jax":
        from .jax_state import read_jax

        return read_jax(src.run, step)
    return read_hf(src.path)


def write_rundir(out: Path, to: str, state: TrainingState, src: ModelDir) -> None:
    """A complete RUNDIR of twin `to` that `python -m {to}bert.train --out DST --resume`
    continues."""
    run = src.run
    info = {**run.info, "framework": to,
            "converted_from": {"path": str(src.path.resolve()), "framework": run.framework,
                               "step": state.step}}
    files = RunDir(out)
    files.create(info, {"config.json": run.config.to_json_file,
                        "train_config.json": run.train.to_json_file,
                        "tokenizer": copy_tree(src.tokenizer_dir)})
    # the curve continues: the metrics lines up to the converted step
    files.write_metrics(RunDir(src.path).metrics_until(state.step))
    if to == "torch":
        from .torch_state import write_torch_checkpoint as write
    else:
        from .jax_state import write_jax_checkpoint as write
    write(out, state, run)


# ---- the command ------------------------------------------------------------------------------

def convert(src: str | Path, dst: str | Path, to: str, step: int | None = None,
            overwrite: bool = False) -> Path:
    """Convert SRC into DST for `to` ("torch" | "jax" | "hf"); see `python -m parity.convert -h`.

    Everything is read and checked before anything is written; DST appears complete or not at
    all (written into a temporary sibling, swapped into place: bertcore.infra.files.replace_output),
    and --overwrite replaces only what convert writes (a run, a Hugging Face directory), never a
    user's files."""
    if to not in (*FRAMEWORKS, "hf"):
        raise UserError(f"--to {to!r}: choose torch, jax or hf")
    src, dst = Path(src), Path(dst)
    md, step = open_source(src, step)
    if md.is_classifier:
        return convert_classifier(md, dst, to, step, overwrite)
    if md.run is None and step is not None:
        raise UserError(f"--step applies to run directories; {src} is a Hugging Face BERT "
                        f"directory with a single set of weights")
    root, run = md.path, md.run
    whole_state = run is not None and to in FRAMEWORKS
    check_apart(dst, {"SRC": src, "its run": root}, out_flag="DST")
    electra = isinstance(md.config, ElectraConfig)
    output = RUN_OUTPUT if whole_state else ELECTRA_HF_OUTPUT if electra else HF_OUTPUT
    check_output(dst, output, overwrite=overwrite, flag="DST")
    state = read_state(md, step)
    for note in state.notes:
        logger.info(note)
    target = RunDir(dst)
    if target.is_run():
        target.lock()    # --overwrite of a run: never while a process is writing it
    try:
        with writing(dst, "the converted model"), replace_output(dst, output, flag="DST") as tmp:
            if whole_state:
                write_rundir(tmp, to, state, md)
            else:
                write_hf(tmp, state, md.tokenizer_dir or root,
                         card=pretraining_card_of(dst, state, md))
    finally:
        target.unlock()
    if whole_state:
        logger.info(f"wrote {dst}: a {to}bert run at step {state.step} (weights, AdamW moments, "
                    f"step counts, data position{', dropout key' if to == 'jax' else ''}); "
                    f"continue it with python -m {to}bert.train --out {dst} --resume")
        return dst
    what = f"step {state.step} of {root}" if run else str(root)
    if electra:
        tok = ", tokenizer" if (dst / "discriminator/vocab.txt").is_file() else ""
        logger.info(f"wrote {dst}: Hugging Face ELECTRA models ({what}), {dst}/discriminator "
                    f"(ElectraForPreTraining) and {dst}/generator (ElectraForMaskedLM), each with "
                    f"config.json, model.safetensors{tok}, model card README.md")
        if to in FRAMEWORKS:
            logger.info(f"note: from a Hugging Face directory only weights exist (no optimizer "
                        f"state or data position); {to}bert's electra.py loads each model with "
                        f"from_pretrained")
        return dst
    kind = "ModernBERT" if arch_of(state.config) == "modernbert" else "BERT"
    logger.info(f"wrote {dst}: Hugging Face {kind} weights ({what}), config.json, model.safetensors"
                f"{', tokenizer' if (dst / 'vocab.txt').is_file() else ''}, model card README.md")
    if to in FRAMEWORKS:
        logger.info(f"note: from a Hugging Face directory only weights exist (no optimizer state "
                    f"or data position); {to}bert loads {dst} with from_pretrained")
    if getattr(state.config, "layer_norm_position", None) == "pre":
        logger.info("note: layer_norm_position=pre: transformers' BertForPreTraining computes "
                    "post-LN BERT and cannot run these weights; torchbert/jaxbert "
                    "from_pretrained can")
    return dst


def convert_classifier(src: ModelDir, dst: Path, to: str, step: int | None, overwrite: bool
                       ) -> Path:
    """A fine-tuned classifier (classify RUNDIR: its best/ weights; or a HF classifier dir) ->
    a Hugging Face directory. Its weights are framework-free already, so both twins read them
    as they are: only --to hf makes sense."""
    if to != "hf":
        raise UserError(f"{src.path} is a sequence classifier; its weights are a Hugging Face "
                        f"directory both twins read as they are: convert it with --to hf")
    if step is not None:
        raise UserError(f"--step does not apply to a classifier; {src.path} exports its best "
                        f"epoch")
    check_apart(dst, {"SRC": src.path}, out_flag="DST")
    check_output(dst, HF_OUTPUT, overwrite=overwrite, flag="DST")
    with writing(dst, "the converted model"):
        logger.info(write_hf_classifier(src, dst))
    return dst


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m parity.convert",
        description="Convert BERT weights or a whole training state between torchbert, jaxbert "
                    "and Hugging Face, with one name/layout table (bertcore/model/hf.py).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""SRC is one of
  a torchbert or jaxbert RUNDIR     its latest checkpoint, or --step N
  one checkpoint of a RUNDIR        RUNDIR/checkpoints/step_00000100 (torch), RUNDIR/checkpoints/100 (jax)
  a Hugging Face BERT directory     config.json + model.safetensors (BertForPreTraining,
                                    BertForMaskedLM or BertModel save; missing heads start fresh)
  an ELECTRA export                 DIR/discriminator + DIR/generator (what --to hf writes)
  a fine-tuned classifier           a `classify train` RUNDIR (its best/ weights), --to hf only:
                                    transformers' Bert- or ModernBertForSequenceClassification
                                    loads DST

DST is written according to --to:
  --to hf            config.json + model.safetensors + tokenizer files, loadable with
                     transformers.BertForPreTraining.from_pretrained(DST) and BertTokenizerFast;
                     ELECTRA: the same in DST/discriminator (ElectraForPreTraining) and
                     DST/generator (ElectraForMaskedLM), each with its model card
  --to torch | jax   from a RUNDIR: a complete RUNDIR of that twin with the FULL training state
                     (weights, AdamW moments, step counts, data position, RNG) and the metrics so
                     far, so `python -m {torch,jax}bert.train --out DST --resume` continues the run;
                     from a Hugging Face directory: weights only, written as a Hugging Face
                     directory (both twins' from_pretrained load it).

examples:
  python -m parity.convert runs/torchbert-tiny runs/jaxbert-tiny --to jax
  python -m parity.convert runs/jaxbert-tiny --step 200 export/bert-tiny --to hf""")
    p.add_argument("src", metavar="SRC", help="run directory, checkpoint or Hugging Face dir")
    p.add_argument("dst", metavar="DST", help="output directory (must not exist, see --overwrite)")
    p.add_argument("--to", required=True, choices=["torch", "jax", "hf"], help="target format")
    p.add_argument("--step", type=int, help="which checkpoint of a RUNDIR (default: the latest)")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    convert(args.src, args.dst, args.to, step=args.step, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
