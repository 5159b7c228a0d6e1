"""ELECTRA in the parity suite: the rows of `python -m parity.check --arch electra` on tiny
(parity/electra_rows.py for both models, the samples, the loss and gradients; the shared rows on
the `electra` Case), and `python -m parity.convert` of an ELECTRA run and export (full state
torch <-> jax bit for bit, `--to hf` as two transformers directories whose logits are ours, and
one-line errors where one of the two models is missing). Both twins, against transformers 5."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

from bertcore.model.config import ElectraConfig
from bertcore.model.sampling import sample as reference_sample
from bertcore.train.rundir import read_run
from parity import check, curve_rows, electra_rows, model_rows
from parity import convert as C
from parity import thresholds as T
from parity.cases import make_case, torch_batch, torch_setup, torch_steps
from parity.curve_rows import _write_rundir
from parity.jax_state import adam_state, read_jax
from parity.torch_state import read_torch
from test_parity_agreement import assert_rows_pass

ROLES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """tiny ELECTRA (embeddings half the discriminator's width, generator a quarter), the 100-step
    schedule of the full check so the compiled jax programs are shared with it."""
    return make_case("tiny", "electra", tmp_path_factory.mktemp("electra-case"), steps=100)


# ---- rows of one batch ---------------------------------------------------------------------------

def test_forward_of_both_models_twins_and_transformers(case):
    """Discriminator logits, generator MLM logits (sparse, dense) and the pair's discriminator
    on its own samples: torch vs jax, and each vs transformers loaded from that twin's export."""
    rows = electra_rows.forward_rows(case)
    assert_rows_pass(rows, 4 + 2 * 5)
    hf = [r for r in rows if "vs HF" in r.quantity]
    assert {r.quantity.split("(")[-1] for r in hf} == {"ElectraForPreTraining)",
                                                        "ElectraForMaskedLM)"}
    assert all(r.max_abs == 0 for r in hf if "torch vs HF" in r.quantity)  # the same kernels


def test_samples_equal_the_numpy_reference(case):
    rows = electra_rows.sampling_rows(case)
    assert_rows_pass(rows, 4)
    assert all(r.max_abs == 0 for r in rows)
    # the noise acts: the samples are not the generator's argmax (the note counts them)
    assert "moves 0 of them" not in rows[0].note


def test_sample_tokens_follow_the_softmax_in_both_twins():
    """Both twins' sample_tokens equal the numpy reference slot for slot on random logits, and
    the reference draws each token with its softmax probability (4 SE, 20,000 draws)."""
    from jaxbert.electra import sample_tokens as jax_sample
    from torchbert.electra import sample_tokens as torch_sample
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (64, 32, 50)).astype(np.float32)
    seeds = rng.integers(0, 2**31 - 1, (64, 32), dtype=np.int32)
    ref = reference_sample(logits, seeds)
    assert np.array_equal(torch_sample(torch.from_numpy(logits), torch.from_numpy(seeds)).numpy(),
                          ref)
    assert np.array_equal(np.asarray(jax_sample(logits, seeds)), ref)
    row = np.array([2.0, 1.0, 0.0, -1.0, 0.5], np.float32)
    n = 20_000
    draws = reference_sample(np.broadcast_to(row, (n, 5)), np.arange(n, dtype=np.int32))
    p = np.exp(row) / np.exp(row).sum()
    freq = np.bincount(draws, minlength=5) / n
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n)), (freq, p)


def test_loss_and_gradients_of_both_models(case):
    rows = electra_rows.loss_grad_rows(case)
    assert_rows_pass(rows, 5)
    disc, gen = rows[-2:]
    assert "discriminator" in disc.quantity and "generator" in gen.quantity
    # compared, not waved through as zero: only the attention key biases are (BERT's reason)
    assert all("key.bias" in r.note and "ZERO" not in r.note for r in (disc, gen))


def test_pad_lookups_train_nothing_in_either_twin(case):
    """The generator may sample [PAD] into a real position, where the discriminator's loss reads
    it: torch's padding_idx (HF's too) gives that lookup no gradient, and so do jaxbert's
    embeddings (the gradient rows found the difference). A [PAD] at a real position: the
    [PAD] row's gradient (the tied decoder's only) is the same in both twins."""
    from jaxbert.electra import ElectraPreTrainingModel, electra_loss as jax_loss
    from parity.cases import jax_params, torch_model
    from torchbert.electra import electra_loss as torch_loss
    b = {k: v.copy() for k, v in case.batches[0].items()}
    pad, keys = case.config.pad_token_id, electra_rows._PAIR_INPUTS
    free = sorted(set(range(1, int(b["attention_mask"][0].sum()) - 1))
                  - set(b["masked_positions"][0].tolist()))
    b["input_ids"][0, free[0]] = pad                       # a real, unmasked position
    tm = torch_model(case.model_config, case.init).train()
    tb = torch_batch(b)
    torch_loss(*tm(*[tb[k] for k in keys]), tb)[0].backward()
    g_t = tm.discriminator.electra.embeddings.word_embeddings.weight.grad[pad].numpy()
    model = ElectraPreTrainingModel(case.model_config)
    g = jax.jit(jax.grad(lambda p: jax_loss(*model.apply({"params": p}, *[b[k] for k in keys]),
                                            b)[0]))(jax_params(case.model_config, case.init))
    g_j = np.asarray(g["discriminator"]["electra"]["embeddings"]["word_embeddings"]
                     ["embedding"][pad])
    assert np.linalg.norm(g_t - g_j) <= T.GRAD_REL * np.linalg.norm(g_t), (g_t[:4], g_j[:4])


def test_rows_have_teeth(case, monkeypatch):
    """A jax generator whose MLM transform differs by noise of 1e-3 fails the generator rows
    torch vs jax and leaves the discriminator's on its own input alone; jax vs transformers
    still agree, as transformers reads jax's own export (its compute and its export agree)."""
    real = electra_rows.jax_params

    def perturbed(config, weights):
        w = dict(weights)
        name = "generator.generator_predictions.dense.weight"
        w[name] = w[name] + np.random.default_rng(0).normal(0, 1e-3, w[name].shape).astype(
            np.float32)
        return real(config, w)

    monkeypatch.setattr(electra_rows, "jax_params", perturbed)
    rows = {r.quantity: r for r in electra_rows.forward_rows(case)}
    assert not rows["forward generator MLM logits (dense): torch vs jax"].passed
    assert not rows["forward generator MLM logits (sparse): torch vs jax"].passed
    assert rows["forward generator MLM logits (sparse): jax vs HF (ElectraForMaskedLM)"].passed
    assert rows["forward discriminator logits: torch vs jax"].passed


# ---- rows over steps (the shared row functions on the ELECTRA Case) -----------------------------

@pytest.mark.slow
def test_eval_adamw_curves_resume_and_bf16(case):
    """Eval metrics, one AdamW step, 8-step curves with resume across frameworks through
    parity.convert at step 4, and bf16 (first step within BF16_CURVE_REL, the mean paired)."""
    assert_rows_pass(model_rows.eval_rows(case), 1)
    adamw = model_rows.adamw_rows(case)
    assert_rows_pass(adamw, 3)
    assert "generator." in adamw[0].note or "decayed" in adamw[0].note
    curves = {}
    rows = curve_rows.training_rows(case, curves, steps=8)
    assert_rows_pass(rows, 3)
    assert all("next batch after conversion identical" in r.note for r in rows[1:])
    bf16 = curve_rows.bf16_rows(case, steps=8)
    assert_rows_pass(bf16, 2)
    assert bf16[0].bar.startswith("BF16_CURVE_REL") and bf16[1].bar.startswith("DROPOUT_Z")


@pytest.mark.slow
def test_full_check_electra(tmp_path, capsys):
    """`python -m parity.check --preset tiny --arch electra` (its main, in-process): every row
    passes, 100 steps, resume at 50 both ways, dropout and bf16 statistics."""
    out = tmp_path / "report"
    assert check.main(["--preset", "tiny", "--arch", "electra", "--out", str(out),
                       "--threads", "1"]) == 0
    table = capsys.readouterr().out
    assert "FAIL" not in table and "34/34 rows pass" in table
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and {r["ln"] for r in report["rows"]} == {"electra"}
    quantities = {r["quantity"] for r in report["rows"]}
    for q in ("100-step loss curve: torch vs jax",
              "resume: torch 50 -> convert -> jax 50 vs torch 100",
              "resume: jax 50 -> convert -> torch 50 vs jax 100",
              "sampled tokens, each twin's own generator logits: torch vs jax"):
        assert q in quantities


def test_check_cli_offers_electra():
    assert check.parse_args(["--arch", "electra"]).arch == "electra"


# ---- parity.convert ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(case, tmp_path_factory):
    """A torchbert ELECTRA RUNDIR at step 3 (torchbert's own Checkpointer, as the loop writes it;
    dropout off), made from the Case without the command line."""
    from torchbert.checkpoint import Checkpointer
    rundir = _write_rundir(tmp_path_factory.mktemp("electra-run") / "torch", "torch", case,
                           case.train)
    model, opt = torch_setup(case, case.train, case.model_config)
    torch_steps(case, model, opt, case.train, 0, 3)
    Checkpointer(rundir, case.model_config, keep=1).save(
        3, model, opt, {"step": 3, "batches": case.batch_states[3]})
    return rundir


def test_full_state_torch_jax_torch_is_bit_exact(run, tmp_path):
    """The pair's params and AdamW moments map by bertcore.model.hf's rules (`discriminator.` /
    `generator.` prefixes): torch -> jax -> torch gives the checkpoint's bytes back, and the jax
    moments are torch's (kernels transposed)."""
    C.convert(run, tmp_path / "jax", "jax")
    C.convert(tmp_path / "jax", tmp_path / "torch", "torch")
    a, b = run / "checkpoints/step_00000003", tmp_path / "torch/checkpoints/step_00000003"
    for f in ("model.safetensors", "optimizer.safetensors"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    t, j = read_torch(read_run(run)), read_jax(read_run(tmp_path / "jax"))
    name = "generator.electra.encoder.layer.1.attention.self.query.weight"
    assert np.array_equal(j.exp_avg[name], t.exp_avg[name]) and t.exp_avg[name].any()
    assert set(j.params) == set(t.params) and all(np.array_equal(j.params[k], t.params[k])
                                                  for k in t.params)
    from jaxbert.checkpoint import Checkpointer
    from jaxbert.step import abstract_state
    r = read_run(tmp_path / "jax")
    with Checkpointer(r.rundir, r.trained_config) as ckpt:
        state, _ = ckpt.restore(abstract_state(r.trained_config, r.train))
    kernel = adam_state(state.opt_state).mu["generator"]["electra"]["encoder"]["layer"]["1"][
        "attention"]["self"]["query"]["kernel"]
    assert np.array_equal(np.asarray(kernel), t.exp_avg[name].T)
    # and back again from jax: every array of the train state
    C.convert(tmp_path / "torch", tmp_path / "jax2", "jax")
    with Checkpointer(tmp_path / "jax2", r.trained_config) as ckpt:
        again, _ = ckpt.restore(abstract_state(r.trained_config, r.train))
    x, y = jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(again)
    assert len(x) == len(y) and all(np.array_equal(np.asarray(p), np.asarray(q))
                                    for p, q in zip(x, y))


def _hf_models(path: Path):
    import transformers
    out = {}
    for role, cls in ROLES.items():
        m, info = getattr(transformers, cls).from_pretrained(path / role,
                                                             output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), \
            (role, info)
        out[role] = m.eval()
    return out


@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_hf_export_loads_in_transformers_with_our_logits(case, run, tmp_path, twin):
    """`--to hf` of a run (a torchbert one, and the jaxbert one converted from it): DST/
    discriminator and DST/generator load in transformers 5 with nothing missing, their logits
    are the twin's (the pair's models on the checkpoint's weights, and each twin's own loader of
    the exported directories), and each has a model card saying which model it is."""
    import transformers
    src = run
    if twin == "jax":
        src = tmp_path / "jax-run"
        C.convert(run, src, "jax")
    dst = tmp_path / "hf"
    C.convert(src, dst, "hf")
    hf = _hf_models(dst)
    b = torch_batch(case.batches[0])
    ids = {k: b[k].long() for k in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        h_disc = hf["discriminator"](**ids).logits.numpy()
        h_gen = hf["generator"](**ids).logits.numpy()
    state = read_torch(read_run(run))
    from torchbert.electra import ElectraForMaskedLM, ElectraForPreTraining
    from parity.cases import torch_model
    pair = torch_model(case.model_config, state.params).eval()
    ours = {"pair": pair, "torch": (ElectraForPreTraining.from_pretrained(dst / "discriminator"),
                                    ElectraForMaskedLM.from_pretrained(dst / "generator"))}
    with torch.no_grad():
        shared = pair.discriminator.electra.embeddings
        got = {"pair": (pair.discriminator(*ids.values()),
                        pair.generator(*ids.values(), None, shared)),
               "torch": tuple(m.eval()(*ids.values()) for m in ours["torch"])}
    from jaxbert.electra import discriminator_from_pretrained, generator_from_pretrained
    (dm, dp), (gm, gp) = (discriminator_from_pretrained(dst / "discriminator"),
                          generator_from_pretrained(dst / "generator"))
    arrays = [case.batches[0][k] for k in ("input_ids", "token_type_ids", "attention_mask")]
    got["jax"] = (dm.apply({"params": dp}, *arrays), gm.apply({"params": gp}, *arrays))
    for who, (d, g) in got.items():
        assert np.abs(np.asarray(d) - h_disc).max() <= T.FORWARD_MAX_ABS, who
        assert np.abs(np.asarray(g) - h_gen).max() <= T.FORWARD_MAX_ABS, who
    for role, cls in ROLES.items():
        card = (dst / role / "README.md").read_text()
        assert f"`{cls}`" in card and f"{cls}.from_pretrained" in card and f"the {role}" in card
        assert "step 3" in card and "replaced-token detection" in card
        tok = transformers.AutoTokenizer.from_pretrained(dst / role)
        assert tok("the values")["input_ids"] == case.tokenizer.encode("the values")
    fill = transformers.pipeline("fill-mask", model=str(dst / "generator"))
    assert len(fill("the function returns a [MASK] of the values .")) == 5
    assert "pipeline_tag" not in (dst / "discriminator/README.md").read_text()


def test_export_converts_again_unchanged(run, tmp_path):
    """An export is a source too: --to hf of it writes the same weights and configs (and --to
    jax, weights only, the same two directories)."""
    C.convert(run, tmp_path / "a", "hf")
    C.convert(tmp_path / "a", tmp_path / "b", "hf")
    C.convert(tmp_path / "a", tmp_path / "c", "jax")
    for out in ("b", "c"):
        for role in ROLES:
            for f in ("model.safetensors", "config.json", "vocab.txt"):
                assert (tmp_path / "a" / role / f).read_bytes() == \
                    (tmp_path / out / role / f).read_bytes(), (out, role, f)


def _fails(capsys, *argv: str, needles=()) -> str:
    assert C.main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_one_model_missing_is_one_line(run, tmp_path, capsys):
    """An export without one of its models, one model's directory alone, and a generator that
    is not its discriminator's: one line naming the problem, nothing written."""
    export = tmp_path / "export"
    C.convert(run, export, "hf")
    for gone, kept in (("generator", "discriminator"), ("discriminator", "generator")):
        part = tmp_path / f"no-{gone}"
        shutil.copytree(export, part)
        shutil.rmtree(part / gone)
        _fails(capsys, str(part), str(tmp_path / "out"), "--to", "hf",
               needles=(f"no {gone}", ROLES[gone], "needs both"))
        _fails(capsys, str(export / kept), str(tmp_path / "out"), "--to", "jax",
               needles=(f"an ELECTRA {kept}", ROLES[kept], "alone", str(export)))
    bad = tmp_path / "bad"
    shutil.copytree(export, bad)
    cfg = json.loads((bad / "generator/config.json").read_text())
    (bad / "generator/config.json").write_text(json.dumps({**cfg, "intermediate_size": 96}))
    _fails(capsys, str(bad), str(tmp_path / "out"), "--to", "hf",
           needles=("generator/config.json", "intermediate_size=96"))
    assert not (tmp_path / "out").exists()
    # --overwrite replaces an export, and only an export
    assert C.main([str(run), str(export), "--to", "hf", "--overwrite"]) == 0
    _fails(capsys, str(run), str(bad / "generator"), "--to", "hf", "--overwrite",
           needles=("not an ELECTRA export's", "config.json"))
    # the pair's config comes back from the two files
    from parity.state import export_pair_config
    pair = export_pair_config(export)
    assert isinstance(pair, ElectraConfig) and pair == read_run(run).config
