"""The train flags turned into configs, for both twins (the parser and its checks are cli.py's):
the model and train configs of a new run (from --preset or --config, or --init-from's weights),
and, for --resume, which given flags would change the saved run.
"""

from __future__ import annotations

from typing import Any

from bertcore.model.config import (ELECTRA_PRESETS, MODERNBERT_PRESETS, PRESETS, BertConfig,
                                   ElectraConfig, ModelConfig, ModernBertConfig, TrainConfig,
                                   arch_of, load_model_config, special_ids)
from bertcore.data.tokenizer import WordPiece
from bertcore.infra.errors import UserError
from bertcore.train.cli import DEFAULT_PRESET
from bertcore.train.init_from import InitSource
from bertcore.train.rundir import RunFiles

TRAIN_FIELDS = [f for f in TrainConfig.__dataclass_fields__]


def train_config_from_args(args: Any, base: TrainConfig | None = None) -> TrainConfig:
    """TrainConfig from the flags the user gave (None = not given) on top of `base`."""
    base = base or TrainConfig()
    given = {k: getattr(args, k) for k in TRAIN_FIELDS
             if getattr(args, k, None) is not None}
    return base.replace(**given)


def model_config_from_args(args: Any, tok: WordPiece) -> ModelConfig:
    """The model of a new run: --config's file or --arch's --preset, for this tokenizer, with
    --layer-norm-position and --attention-dropout applied."""
    vocab_size = tok.vocab_size
    arch = getattr(args, "arch", None)
    if args.config:
        mcfg = load_model_config(args.config)
        if arch and arch_of(mcfg) != arch:
            raise UserError(f"--arch {arch}: config {args.config} is a {arch_of(mcfg)} config "
                            f"(model_type); drop --arch or pass a {arch} config")
        if mcfg.vocab_size != vocab_size:
            raise UserError(f"config {args.config} has vocab_size={mcfg.vocab_size} but the "
                            f"tokenizer has {vocab_size} entries; use a matching --tokenizer or "
                            f"set vocab_size to {vocab_size}")
        if isinstance(mcfg, ModernBertConfig):
            # torchbert keeps the [PAD] row out of the lookup gradient (padding_idx): a config
            # naming another pad id would make the twins train different models.
            wrong = [f"{k}={getattr(mcfg, k)} (tokenizer: {v})"
                     for k, v in special_ids(tok).items() if getattr(mcfg, k) != v]
            if wrong:
                raise UserError(f"config {args.config} names other special tokens than the "
                                f"tokenizer ({', '.join(wrong)}); set them to the tokenizer's ids")
    elif arch == "modernbert":
        # ModernBERT's config names its special tokens; ours are the tokenizer's.
        mcfg = ModernBertConfig.from_preset(args.preset or DEFAULT_PRESET, vocab_size=vocab_size,
                                            **special_ids(tok))
    elif arch == "electra":
        mcfg = ElectraConfig.from_preset(args.preset or DEFAULT_PRESET, vocab_size=vocab_size,
                                         pad_token_id=tok.pad_id)
    else:
        mcfg = BertConfig.from_preset(args.preset or DEFAULT_PRESET, vocab_size=vocab_size)
    return _generator_flags(args, _model_flags(args, mcfg, "this config"), "this config")


def _generator_flags(args: Any, mcfg: ModelConfig, whose: str) -> ModelConfig:
    """--generator-size and --generator-layers applied to an ELECTRA config (refused on others:
    cli.py refuses them with another --arch; here a --config or --init-from decides)."""
    given = {field: getattr(args, flag) for flag, field in
             (("generator_size", "generator_hidden_size"), ("generator_layers",
                                                            "generator_layers"))
             if getattr(args, flag, None) is not None}
    if given and not isinstance(mcfg, ElectraConfig):
        raise UserError(f"--{next(iter(given)).replace('_hidden_size', '_size').replace('_', '-')} "
                        f"applies to ELECTRA; {whose} is {arch_of(mcfg)}: drop the flag")
    return mcfg.replace(**given) if given else mcfg


def _model_flags(args: Any, mcfg: ModelConfig, whose: str) -> ModelConfig:
    """--layer-norm-position and --attention-dropout applied to `mcfg` (ModernBERT has no
    LayerNorm placement to choose: it is pre-norm)."""
    if args.layer_norm_position and isinstance(mcfg, ModernBertConfig):
        raise UserError(f"--layer-norm-position applies to BERT; {whose} is ModernBERT, which "
                        f"is pre-norm by design; drop the flag")
    if args.layer_norm_position and isinstance(mcfg, ElectraConfig):
        raise UserError(f"--layer-norm-position applies to BERT; {whose} is ELECTRA, whose "
                        f"layers are post-LN as published; drop the flag")
    if args.layer_norm_position:
        mcfg = mcfg.replace(layer_norm_position=args.layer_norm_position)
    if getattr(args, "attention_dropout", None) is not None:
        mcfg = (mcfg.replace(attention_dropout=args.attention_dropout)
                if isinstance(mcfg, ModernBertConfig) else
                mcfg.replace(attention_probs_dropout_prob=args.attention_dropout))
    return mcfg


def init_model_config(init: InitSource, args: Any, tok: WordPiece) -> ModelConfig:
    """The model of a run that starts from --init-from's weights: their config (the preset and
    --config do not apply), with --attention-dropout applied; refuses another vocabulary."""
    if init.tokenizer.fingerprint != tok.fingerprint:
        raise UserError(f"--init-from {init.path} has another vocabulary "
                        f"({init.tokenizer.vocab_size} entries) than this run's tokenizer "
                        f"({tok.vocab_size}); tokenize the data with the model's own: "
                        f"--tokenizer {init.tokenizer_dir}")
    mcfg = init.config
    arch = getattr(args, "arch", None)
    if arch and arch != arch_of(mcfg):
        raise UserError(f"--arch {arch}: the weights of {init.path} are {arch_of(mcfg)}; drop "
                        f"the flag")
    if (args.layer_norm_position and isinstance(mcfg, BertConfig)
            and args.layer_norm_position != mcfg.layer_norm_position):
        raise UserError(f"--layer-norm-position {args.layer_norm_position}: the weights of "
                        f"{init.path} are {mcfg.layer_norm_position}-LN; drop the flag")
    if isinstance(mcfg, ElectraConfig) and _generator_flags(args, mcfg, "") != mcfg:
        raise UserError(f"--generator-size/--generator-layers: the weights of {init.path} fix "
                        f"the generator's size; drop the flags")
    return _model_flags(args, mcfg, f"--init-from {init.path}")


# The flags that may change on --resume: the rest decide what the next batch and update are.
RESUMABLE_CHANGES = ("steps", "log_every", "checkpoint_every", "keep_checkpoints")


def model_changes(args: Any, run: RunFiles) -> list[str]:
    """The model flags given to --resume that would build another model than the run's (a run
    started --init-from took its model from those weights: --preset and --config never applied).
    A preset names a depth, width and head count; a --config file, every field."""
    saved, changed = run.config, []
    modern = isinstance(saved, ModernBertConfig)
    electra = isinstance(saved, ElectraConfig)
    arch = getattr(args, "arch", None)
    if arch and arch != arch_of(saved):
        changed.append("arch")
    if not run.info.get("init_from"):
        if args.config:
            given = load_model_config(args.config)
            # what --layer-norm-position and --attention-dropout set is compared on its own
            if type(given) is not type(saved) or (
                    given.replace(attention_dropout=saved.attention_dropout) if modern else
                    given.replace(attention_probs_dropout_prob=saved.attention_probs_dropout_prob,
                                  generator_hidden_size=saved.generator_hidden_size,
                                  generator_layers=saved.generator_layers) if electra else
                    given.replace(layer_norm_position=saved.layer_norm_position,
                                  attention_probs_dropout_prob=saved.attention_probs_dropout_prob)
            ) != saved:
                changed.append("config")
        elif args.preset and args.preset not in (ELECTRA_PRESETS if electra else PRESETS):
            changed.append("preset")
        elif args.preset and ((MODERNBERT_PRESETS if modern else ELECTRA_PRESETS if electra
                               else PRESETS)[args.preset][:3]
                              != (saved.num_hidden_layers, saved.hidden_size,
                                  saved.num_attention_heads)):
            changed.append("preset")
    for flag, field in (("generator_size", "generator_hidden_size"),
                        ("generator_layers", "generator_layers")):
        given_value = getattr(args, flag, None)
        if given_value is not None and given_value != getattr(saved, field, None):
            changed.append(flag)
    if args.layer_norm_position and (modern or
                                     args.layer_norm_position != saved.layer_norm_position):
        changed.append("layer_norm_position")
    dropout = getattr(args, "attention_dropout", None)
    if dropout is not None and dropout != (saved.attention_dropout if modern else
                                           saved.attention_probs_dropout_prob):
        changed.append("attention_dropout")
    return changed
