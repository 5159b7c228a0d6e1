"""Named training recipes: a set of the training CLIs' own flags a user gets by one name.

`python -m jaxbert.train --recipe budget --steps 2200` (or torchbert's) is the same run as giving
the recipe's flags one by one; a flag given on the command line still wins over the recipe's
value. A recipe only sets options that exist anyway, so everything it does is visible in `--help`,
in the run's config.json and train_config.json, and `--resume` needs nothing new.

"budget" is what issue 26's recipe search found best downstream for 15 minutes of pretraining
on a 2-core CPU (`python -m benchmarks.budget`, BENCHMARKS.md "Which recipe for the budget"):
BERT without next-sentence prediction fine-tuned best on sentiment and within the seeds' spread
of the best on topics (pre-LN, a higher learning rate and no dropout did not help), even though
its held-out MLM loss stays on the plateau where ModernBERT's leaves it; "budget-modernbert" is
that ModernBERT run. The rest is the benchmark's
shape: `mini`, 128-token sequences, batch 32, 20 predictions (15%), LR 1e-3, linear decay after
200 warmup steps. The number of steps is yours to size to the budget (jaxbert on 2 CPU cores:
~2,200 BERT steps in 15 minutes).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bertcore.infra.errors import UserError


@dataclass(frozen=True)
class Recipe:
    summary: str
    flags: dict[str, object]      # argparse dest -> value, as if the flag were given
    command_line: str             # the same flags written out, for --help and the docs


# The benchmark's shape, shared by both: `mini`, 128-token sequences, batch 32, 20 predictions
# (15%), LR 1e-3 with linear decay after 200 warmup steps.
_SHAPE = {"preset": "mini", "seq_len": 128, "batch_size": 32, "max_predictions": 20, "lr": 1e-3,
          "schedule": "linear", "warmup_steps": 200}
_SHAPE_FLAGS = ("--preset mini --seq-len 128 --batch-size 32 --max-predictions 20 --lr 1e-3 "
                "--schedule linear --warmup-steps 200")

RECIPES: dict[str, Recipe] = {
    "budget": Recipe(
        summary="the 15-minute CPU benchmark's best downstream: BERT mini, MLM only; size "
                "--steps to your budget",
        flags={"arch": "bert", "nsp": False, **_SHAPE},
        command_line=f"--arch bert --no-nsp {_SHAPE_FLAGS}"),
    "budget-modernbert": Recipe(
        summary="the same budget's best held-out MLM loss: ModernBERT mini",
        flags={"arch": "modernbert", **_SHAPE},
        command_line=f"--arch modernbert {_SHAPE_FLAGS}"),
}


MODEL_FLAGS = ("arch", "preset")


def recipe_help() -> str:
    return "a named set of flags; flags given on the command line win. " + "; ".join(
        f"{name} = {r.command_line} ({r.summary})" for name, r in RECIPES.items())


def apply_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the flags the user left out (None) with `args.recipe`'s values."""
    name = getattr(args, "recipe", None)
    if name is None:
        return args
    recipe = RECIPES[name]      # argparse's choices= has checked the name
    arch = recipe.flags.get("arch")
    if arch and getattr(args, "arch", None) not in (None, arch):
        # the recipe's other values were measured for its architecture, not this one
        raise UserError(f"--recipe {name} trains {arch} ({recipe.command_line}); drop --arch "
                        f"{args.arch} or the recipe")
    # --config and --init-from name the model themselves: the recipe's training flags apply,
    # its model flags do not (they would contradict the file or the weights).
    model_given = getattr(args, "config", None) or getattr(args, "init_from", None)
    for dest, value in recipe.flags.items():
        if dest in MODEL_FLAGS and model_given:
            continue
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)
    return args
