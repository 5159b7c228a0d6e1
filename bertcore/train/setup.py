"""A training run's set-up, for both twins: `setup_run(args, framework)` checks every flag,
resolves the model and train configs, the tokenizer and the pretokenized data (bertcore.data.cache
builds and caches them for a corpus) and the held-out batches, then locks and prepares RUNDIR
through bertcore.train.rundir's `RunDir` (the layout is written there): nothing is written before
every check has passed. A new run and a resumed one are set up apart (`_new_run`,
`_resumed_run`); both end in the same `Run` (bertcore.train.run).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bertcore.model.config import (ElectraConfig, ModelConfig, ModernBertConfig, TrainConfig,
                                   load_model_config)
from bertcore.data.cache import resolve_data
from bertcore.data.shards import Shards, dir_is_prepared
from bertcore.data.tokenizer import WordPiece, load_tokenizer
from bertcore.infra.errors import UserError
from bertcore.infra.files import check_apart
from bertcore.train import evaluation
from bertcore.train.cli import DEFAULT_PRESET, check_resume_args, check_train_args
from bertcore.train.configs import (RESUMABLE_CHANGES, TRAIN_FIELDS, init_model_config,
                                    model_changes, model_config_from_args, train_config_from_args)
from bertcore.train.init_from import InitSource, resolve_init
from bertcore.train.report import parse_report_to
from bertcore.train.run import Run
from bertcore.train.rundir import CONFIG, TOKENIZER, TRAIN_CONFIG, RunDir


def _inputs(args: Any) -> dict[str, Any]:
    """The paths a run reads, by flag (for bertcore.infra.files.check_apart)."""
    corpus = getattr(args, "corpus", None)
    return {"--corpus": None if corpus in (None, "builtin", "imdb") else corpus,
            "--data": args.data, "--tokenizer": args.tokenizer,
            "--eval-data": getattr(args, "eval_data", None),
            "--init-from": getattr(args, "init_from", None), "--config": args.config}


def setup_run(args: Any, framework: str, is_main: bool = True) -> Run:
    """Check every flag, resolve configs and data, then lock and prepare RUNDIR (nothing is
    written there before all checks pass). Data-parallel jobs call it on the main process first
    and on the others after a barrier (they only read what it wrote)."""
    arch = getattr(args, "arch", None)
    arch = f"{arch}-" if arch in ("modernbert", "electra") else ""
    rundir = Path(args.out or f"runs/{framework}bert-{arch}{args.preset or DEFAULT_PRESET}")
    files = RunDir(rundir)
    progress = not getattr(args, "no_progress", False)
    eval_flags = (getattr(args, "eval_data", None), getattr(args, "eval_batches", 0),
                  getattr(args, "eval_every", 0))

    if not is_main:
        # Another data-parallel process: the main one has already set RUNDIR up (it runs
        # first, behind a barrier), so read what it wrote instead of checking again.
        saved = files.read()
        tok = load_tokenizer(files.tokenizer_dir)
        run = Run(rundir, framework, saved.config, saved.train, tok,
                  Shards(saved.info["data"], tok), args.resume, is_main=False,
                  progress=progress, files=files)
        run.set_eval(*eval_flags)
        return run
    check_train_args(args)
    check_apart(rundir, _inputs(args))
    files.recover()   # a run an interrupted --overwrite left beside is back before it is read
    made = (_resumed_run if args.resume else _new_run)(args, framework, files, progress)
    model_config, train_config, tok, shards, info, init = made
    if model_config.vocab_size != tok.vocab_size:
        raise UserError(f"the model's vocab_size={model_config.vocab_size} differs from the "
                        f"tokenizer's {tok.vocab_size}; use the tokenizer the model was made for")
    train_config.validate(model_config)
    if evaluation.eval_shards(eval_flags[0], shards, tok) is None and eval_flags[2]:
        raise UserError(f"--eval-every {eval_flags[2]}: this run has no held-out data to "
                        f"evaluate on; pass --eval-data DATADIR (or prepare the data with "
                        f"--eval-fraction F), or drop --eval-every")

    # Every check has passed: from here on RUNDIR is ours alone, and written.
    files.lock()
    try:
        if args.resume:
            train_config.to_json_file(rundir / TRAIN_CONFIG)   # atomic
        else:
            files.check_target(args.overwrite)   # again: another process may have been quicker
            files.create(info, {
                CONFIG: lambda p: model_config.to_json_file(p),
                TRAIN_CONFIG: lambda p: train_config.to_json_file(p),
                TOKENIZER: tok.save})
    except BaseException:
        files.discard()
        raise
    run = Run(rundir, framework, model_config, train_config, tok, shards, args.resume,
              progress=progress, files=files,
              report_to=parse_report_to(getattr(args, "report_to", None)))
    if not args.resume:
        full = round(train_config.mask_prob * (train_config.seq_len - 3))  # [CLS], two [SEP]
        if full > train_config.max_predictions:
            # Masking predicts min(mask-prob of the tokens, P) a sequence
            # (bertcore.data.masking): a higher --mask-prob (ModernBERT's and RoBERTa's 30%)
            # wants a larger P to take effect.
            run.note(f"--mask-prob {train_config.mask_prob:g} of a full {train_config.seq_len}-"
                     f"token sequence is {full} predictions, but --max-predictions "
                     f"{train_config.max_predictions} caps it; pass --max-predictions {full} "
                     f"for the full rate")
        run.init_source = init
        if init is not None:
            run.note(f"starting from the weights of {init.path} (not its optimizer, step or "
                     f"data position){'; ' + init.note if init.note else ''}")
    run.set_eval(*eval_flags)
    return run


Made = tuple[ModelConfig, TrainConfig, WordPiece, Shards, dict[str, Any], InitSource | None]


def _new_run(args: Any, framework: str, files: RunDir, progress: bool) -> Made:
    """The configs, data and run.json of a new run (from a preset, --config or --init-from)."""
    files.check_target(args.overwrite)   # before the data work: refuse early
    if args.config:
        load_model_config(args.config)   # a bad or oversized config too (bertcore.model.sizes)
    init = (resolve_init(args.init_from, framework, fallback_tokenizer=args.tokenizer)
            if getattr(args, "init_from", None) else None)
    data_args = SimpleNamespace(**vars(args))   # resolved here, not in the caller's namespace
    if init is not None and not args.data and not args.tokenizer:
        data_args.tokenizer = str(init.tokenizer_dir)   # tokenize --corpus with its vocab
    tok, shards = resolve_data(data_args, progress)
    if init is None:
        model_config = model_config_from_args(args, tok)
    else:
        model_config = init_model_config(init, args, tok)
    train_config = train_config_from_args(args)
    if isinstance(model_config, ModernBertConfig):
        # ModernBERT has no next-sentence head (nor RoBERTa's lineage before it): MLM only,
        # whether or not --no-nsp was given.
        train_config = train_config.replace(nsp=False)
    if isinstance(model_config, ElectraConfig):
        # ELECTRA: replaced-token detection, no NSP, and google-research/electra's masking
        # (85% [MASK], 15% kept, none random) unless the flags say otherwise.
        train_config = train_config.replace(
            objective="electra", nsp=False,
            **{k: v for k, v in (("mask_replace_prob", 0.85), ("random_replace_prob", 0.0))
               if getattr(args, k, None) is None})
    info = {"framework": framework, "data": str(shards.path.resolve()),
            "corpus": args.corpus if not args.data else None,
            # --text-column and --split as given (None: the default), to rebuild the cache
            **{k: getattr(args, k, None) for k in ("text_column", "split")
               if not args.data and getattr(args, k, None) is not None},
            "init_from": str(init.path.resolve()) if init is not None else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return model_config, train_config, tok, shards, info, init


def _resumed_run(args: Any, framework: str, files: RunDir, progress: bool) -> Made:
    """The saved run's configs and data, after refusing flags that would change it."""
    rundir = files.path
    check_resume_args(args, files)   # who holds RUNDIR first, then data the run would ignore
    files.check_run_file()
    if not files.is_run():
        raise UserError(f"--resume: {rundir} holds no run to resume (no run.json); drop "
                        f"--resume to start a new run there")
    saved = files.read()
    if saved.framework != framework:
        raise UserError(
            f"{rundir} is a {saved.framework}bert run; resume it with python -m "
            f"{saved.framework}bert.train, or convert it with python -m parity.convert "
            f"{rundir} NEW_RUNDIR --to {framework}")
    if not files.has_checkpoint():
        raise UserError(f"--resume: {files.checkpoint_dir} has no checkpoint yet; drop "
                        f"--resume to start the run again")
    info, model_config = saved.info, saved.config
    train_config = train_config_from_args(args, saved.train)
    changed = [k for k in TRAIN_FIELDS if getattr(train_config, k) != getattr(saved.train, k)
               and k not in RESUMABLE_CHANGES] + model_changes(args, saved)
    if changed:
        raise UserError(f"--resume with changed settings ({', '.join(changed)}); resume "
                        f"with the run's own settings or start a new run with --out")
    if train_config.steps != saved.train.steps and saved.train.schedule in ("linear",
                                                                             "cosine"):
        # The schedule's total is --steps: another total would change every later rate.
        raise UserError(f"--resume with --steps {train_config.steps}: the run's "
                        f"{saved.train.schedule} learning-rate schedule decays to 0 at its "
                        f"--steps {saved.train.steps}, so another total would change the "
                        f"rate of every step from here; resume with --steps "
                        f"{saved.train.steps} (--stop-after N stops a job early), or start "
                        f"a new run")
    tok = load_tokenizer(files.tokenizer_dir)
    data = Path(info["data"])
    if not dir_is_prepared(data) and not info.get("corpus"):
        # A --data run: its prepared directory is the user's, and only they can bring it back.
        raise UserError(f"--resume: the run's data directory {data} is missing or incomplete; "
                        f"restore it, or prepare it again with the run's tokenizer: python -m "
                        f"bertcore.data prepare --corpus CORPUS --tokenizer {rundir}/tokenizer "
                        f"--out {data}")
    if dir_is_prepared(data):
        shards = Shards(data, tok)
    else:
        # The cached shards were cleared: rebuild them from the run's corpus.
        data_args = SimpleNamespace(**vars(args))
        data_args.data, data_args.tokenizer = None, str(files.tokenizer_dir)
        data_args.corpus = info["corpus"]
        data_args.text_column, data_args.split = info.get("text_column"), info.get("split")
        tok, shards = resolve_data(data_args, progress)
    return model_config, train_config, tok, shards, info, None
