"""ELECTRA pretraining end to end, in both twins: `--arch electra` trains the generator and the
discriminator together, logs both models' metrics, resumes exactly, exports two transformers
directories whose logits equal ours, and refuses the flags that do not fit, in one line. (The
model-level agreement of the twins and transformers is parity's: tests/test_electra_parity.py.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import (assert_one_line_error, base_args, metrics, train_cli, train_in_process,
                     write_corpus)

ELECTRA = ("--arch", "electra", "--warmup-steps", "2")


@pytest.mark.slow
def test_electra_run_logs_exports_and_resumes(twin, tmp_path, cache_env):
    """A short ELECTRA run: the train rows carry the generator's MLM and the discriminator's
    loss, accuracy, precision and recall; train_config.json records the objective and ELECTRA's
    masking; hf/ holds ElectraForPreTraining and ElectraForMaskedLM directories that
    transformers loads, with logits equal to the twin's own on the same ids; and the run
    stopped half-way and resumed draws the same replacements: the same curve, bit for bit."""
    import torch
    import transformers

    corpus = write_corpus(tmp_path)
    out, resumed = tmp_path / "run", tmp_path / "resumed"
    common = (*ELECTRA, "--steps", "6", "--checkpoint-every", "3", "--log-every", "1")
    train_cli(twin, *base_args(corpus, out, *common), env=cache_env)
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "mlm_loss", "mlm_accuracy", "disc_loss", "disc_accuracy",
                "disc_precision", "disc_recall", "replaced", "grad_norm"):
        assert key in rows[-1], key
    assert "nsp_loss" not in rows[-1]
    # loss = MLM + 50 x discriminator (the paper's weight, the default)
    assert rows[-1]["loss"] == pytest.approx(rows[-1]["mlm_loss"] + 50 * rows[-1]["disc_loss"],
                                             rel=1e-5)
    train = json.loads((out / "train_config.json").read_text())
    assert (train["objective"], train["nsp"], train["mask_replace_prob"],
            train["random_replace_prob"], train["disc_weight"]) == ("electra", False, 0.85,
                                                                   0.0, 50.0)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "electra" and config["generator_hidden_size"] == 0.25

    ids = torch.tensor(np.random.default_rng(0).integers(5, config["vocab_size"], (2, 12)))
    disc = transformers.ElectraForPreTraining.from_pretrained(out / "hf" / "discriminator")
    gen = transformers.ElectraForMaskedLM.from_pretrained(out / "hf" / "generator")
    assert gen.config.hidden_size == 32 and disc.config.hidden_size == 128   # tiny, 1/4
    with torch.no_grad():
        hf_disc = disc.eval()(ids).logits.numpy()
        hf_gen = gen.eval()(ids).logits.numpy()
    ours_disc, ours_gen = _own_logits(twin, out / "hf", ids.numpy())
    np.testing.assert_allclose(ours_disc, hf_disc, atol=2e-5)
    np.testing.assert_allclose(ours_gen, hf_gen, atol=2e-5)
    assert (out / "hf" / "discriminator" / "README.md").is_file()

    train_cli(twin, *base_args(corpus, resumed, *common, "--stop-after", "3"), env=cache_env)
    train_cli(twin, *base_args(corpus, resumed, *common, "--resume"), env=cache_env)

    def curve(rundir):
        return [(m["step"], m["loss"], m["mlm_loss"], m["disc_loss"], m["replaced"])
                for m in metrics(rundir)]

    assert curve(resumed) == curve(out)


def _own_logits(twin: str, hf: object, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The twin's own standalone models loaded from the run's export, on `ids`."""
    if twin == "torch":
        import torch

        from torchbert.electra import ElectraForMaskedLM, ElectraForPreTraining

        with torch.no_grad():
            t = torch.as_tensor(ids)
            return (ElectraForPreTraining.from_pretrained(hf / "discriminator").eval()(t).numpy(),
                    ElectraForMaskedLM.from_pretrained(hf / "generator").eval()(t).numpy())
    from jaxbert.electra import discriminator_from_pretrained, generator_from_pretrained

    (dm, dp), (gm, gp) = (discriminator_from_pretrained(hf / "discriminator"),
                          generator_from_pretrained(hf / "generator"))
    return (np.asarray(dm.apply({"params": dp}, ids)), np.asarray(gm.apply({"params": gp}, ids)))


@pytest.mark.parametrize("flags, needles", [
    (("--arch", "electra", "--generator-size", "1.5"), ("--generator-size", "(0, 1]")),
    (("--arch", "bert", "--generator-size", "0.5"), ("--generator-size", "--arch electra")),
    (("--arch", "modernbert", "--disc-weight", "10"), ("--disc-weight", "--arch electra")),
    (("--arch", "electra", "--layer-norm-position", "pre"), ("--layer-norm-position",
                                                             "post-LN")),
    (("--arch", "bert", "--preset", "electra-small"), ("electra-small", "ELECTRA-Small")),
    (("--arch", "electra", "--preset", "base", "--generator-size", "0.3"),
     ("generator", "heads")),
    (("--arch", "electra", "--mask-replace-prob", "0.9", "--random-replace-prob", "0.2"),
     ("exceed 1",)),
])
def test_electra_flags_that_do_not_fit_are_refused_in_one_line(twin, tmp_path, cache_env,
                                                               flags, needles):
    """A generator wider than the discriminator, ELECTRA's flags with another architecture, a
    generator width that does not split into heads, masking shares above 1: one line naming
    the flag, exit 2, nothing written."""
    corpus = write_corpus(tmp_path, n_docs=40)
    out = tmp_path / "run"
    p = train_in_process(twin, *base_args(corpus, out, "--steps", "2"), *flags, env=cache_env)
    assert_one_line_error(p, *needles)
    assert not (out / "run.json").exists()


@pytest.mark.slow
def test_electra_init_from_the_other_twin_and_transformers_directories(tmp_path, cache_env):
    """jaxbert starts from a torchbert ELECTRA run (its hf/: both models joined into the pair,
    shared embeddings and all) and from the discriminator alone (the generator starts fresh,
    said once); a generator alone cannot say the discriminator's size: one line."""
    corpus = write_corpus(tmp_path)
    src = tmp_path / "torch-run"
    train_cli("torch", *base_args(corpus, src, *ELECTRA, "--steps", "2"), env=cache_env)
    out = tmp_path / "jax-run"
    p = train_cli("jax", *base_args(corpus, out, "--init-from", str(src), "--steps", "1"),
                  env=cache_env)
    assert "reading its export" in p.stdout + p.stderr
    assert "initialised fresh" not in p.stdout + p.stderr      # both models came
    assert json.loads((out / "config.json").read_text())["model_type"] == "electra"
    out2 = tmp_path / "from-disc"
    p = train_cli("jax", *base_args(corpus, out2, "--init-from", str(src / "hf" / "discriminator"),
                                    "--steps", "1"), env=cache_env)
    assert "the generator starts fresh" in p.stdout + p.stderr
    assert "the generator (" in p.stdout + p.stderr            # named once, not tensor by tensor
    p = train_in_process("jax", *base_args(corpus, tmp_path / "x", "--init-from",
                                           str(src / "hf" / "generator")), env=cache_env)
    assert_one_line_error(p, "ELECTRA generator", "discriminator")
