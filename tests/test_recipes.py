"""--recipe NAME: a named set of the training CLIs' own flags (bertcore.train.recipes)."""

import json

from helpers import assert_one_line_error, base_args, metrics, train_in_process, write_corpus


def test_a_recipe_fills_the_flags_not_given_and_given_flags_win():
    from bertcore.train.recipes import RECIPES
    from jaxbert.train import parse_args as jax_args
    from torchbert.train import parse_args as torch_args

    flags = RECIPES["budget"].flags
    for parse in (torch_args, jax_args):
        a = parse(["--recipe", "budget"])
        assert {k: getattr(a, k) for k in flags} == flags
        plain = parse([])     # no recipe: the flags stay "not given" (TrainConfig's defaults)
        assert all(getattr(plain, k) is None for k in flags)
        a = parse(["--recipe", "budget", "--lr", "5e-4", "--preset", "tiny"])
        assert (a.lr, a.preset, a.arch, a.nsp) == (5e-4, "tiny", "bert", False)
        assert parse(["--recipe", "budget-modernbert"]).arch == "modernbert"
        # --init-from and --config name the model: only the recipe's training flags apply
        for model in (["--init-from", "RUNDIR"], ["--config", "config.json"]):
            a = parse(["--recipe", "budget", *model])
            assert a.arch is None and a.preset is None
            assert (a.lr, a.seq_len, a.warmup_steps) == (1e-3, 128, 200)


def test_a_recipe_run_is_the_run_of_its_flags(tmp_path, cache_env):
    """`--recipe budget` trains exactly the run its flags written out train, and the run's own
    files say what it was (config.json, train_config.json)."""
    corpus = write_corpus(tmp_path, n_docs=50)
    a, b = tmp_path / "recipe", tmp_path / "flags"
    p = train_in_process("torch", *base_args(corpus, a, "--recipe", "budget", "--steps", "3"),
                         env=cache_env)
    assert p.returncode == 0, p.stderr[-2000:]
    p = train_in_process("torch", *base_args(corpus, b, "--arch", "bert", "--no-nsp", "--lr",
                                             "1e-3", "--schedule", "linear", "--warmup-steps",
                                             "200", "--steps", "3"), env=cache_env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((a / "config.json").read_text())["model_type"] == "bert"
    train = json.loads((a / "train_config.json").read_text())
    assert (train["lr"], train["warmup_steps"], train["schedule"], train["nsp"]) == \
        (1e-3, 200, "linear", False)
    assert train["seq_len"] == 32          # base_args' --seq-len 32 won over the recipe's 128
    ra, rb = metrics(a), metrics(b)
    assert len(ra) == 3 and all("nsp_loss" not in m for m in ra)
    assert [m["loss"] for m in ra] == [m["loss"] for m in rb]


def test_a_recipe_with_another_arch_is_refused(tmp_path, cache_env):
    corpus = write_corpus(tmp_path, n_docs=50)
    p = train_in_process("jax", *base_args(corpus, tmp_path / "r", "--arch", "modernbert",
                                           "--recipe", "budget"), env=cache_env)
    assert_one_line_error(p, "--recipe budget trains bert", "--arch modernbert")
    assert not (tmp_path / "r").exists()
