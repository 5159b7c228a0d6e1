"""The agreement rows of `python -m parity.check` (parity/model_rows.py, parity/curve_rows.py)
for `tiny`, both LayerNorm positions and ModernBERT, against the bars in parity/thresholds.py. Fast
tests run each part on one batch or a few steps; the slow test runs the whole
`python -m parity.check --preset tiny` (100 steps, resume, dropout statistics)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from parity import check, curve_rows, model_rows
from parity import thresholds as T
from parity.cases import make_case

LNS = ["post", "pre", "modernbert"]


@pytest.fixture(scope="module")
def parity_work(tmp_path_factory):
    return tmp_path_factory.mktemp("parity-work")


@pytest.fixture(scope="module")
def cases(parity_work):
    """make_case per LN, built lazily; the same 100-step schedule as the full check, so the
    compiled jax programs are shared with test_full_check_tiny."""
    made = {}

    def get(ln):
        if ln not in made:
            made[ln] = make_case("tiny", ln, parity_work, steps=100)
        return made[ln]
    return get


def assert_rows_pass(rows, expected: int):
    assert len(rows) == expected, [r.quantity for r in rows]
    failed = [f"{r.ln} {r.quantity}: {r.max_abs:.3g} / {r.rel:.3g} vs {r.bar} ({r.note})"
              for r in rows if not r.passed]
    assert not failed, failed


@pytest.mark.parametrize("ln", LNS)
def test_forward_twins_and_hf(cases, ln):
    rows = model_rows.forward_rows(cases(ln))
    # 5 outputs twin vs twin; post-LN also each twin vs transformers.BertForPreTraining;
    # ModernBERT: 3 (no pooler, no NSP), each also vs transformers.ModernBertForMaskedLM
    assert_rows_pass(rows, {"post": 15, "pre": 5, "modernbert": 9}[ln])
    assert all(r.max_abs <= T.FORWARD_MAX_ABS for r in rows)


@pytest.mark.parametrize("ln", LNS)
def test_loss_and_gradients(cases, ln):
    rows = model_rows.loss_grad_rows(cases(ln))
    assert_rows_pass(rows, 2 if ln == "pre" else 4)
    grad = rows[-1]
    assert grad.rel <= T.GRAD_REL
    if ln != "modernbert":      # BERT's key bias: gradients exactly zero (ModernBERT has none)
        assert "key.bias" in grad.note


@pytest.mark.parametrize("ln", LNS)
def test_bf16_curves(cases, ln):
    """Both twins in bf16 (--dtype bf16) from the same init: 8 steps within BF16_CURVE_REL, and
    really in bf16 (the curve differs from the fp32 one by more than fp32 rounding)."""
    from parity.cases import torch_setup, torch_steps
    case = cases(ln)
    rows = curve_rows.bf16_rows(case, steps=8)
    assert_rows_pass(rows, 1)
    model, opt = torch_setup(case, case.train, case.model_config)
    fp32 = torch_steps(case, model, opt, case.train, 0, 2)
    model, opt = torch_setup(case, case.train, case.model_config)
    bf16 = torch_steps(case, model, opt, case.train, 0, 2, dtype="bf16")
    assert max(abs(a - b) / a for a, b in zip(fp32, bf16)) > 10 * T.LOSS_REL, (fp32, bf16)


@pytest.mark.parametrize("ln", LNS)
def test_eval_metrics(cases, ln):
    """The twins' held-out evaluation (train.evaluate) on the same weights and fixed batches."""
    rows = model_rows.eval_rows(cases(ln))
    assert_rows_pass(rows, 1)
    assert rows[0].rel <= T.LOSS_REL


@pytest.mark.parametrize("ln", LNS)
def test_one_adamw_step(cases, ln):
    rows = model_rows.adamw_rows(cases(ln))
    assert_rows_pass(rows, 3)
    assert "clipped" in rows[1].note and "not clipped" not in rows[1].note  # clipping exercised
    assert rows[2].max_abs <= T.ADAMW_STEP_MAX_ABS


@pytest.mark.parametrize("ln", LNS)
def test_short_curves_and_resume_across_frameworks(cases, ln):
    """8 steps: curves, and resume across frameworks at step 4 through parity.convert's files
    (the 100-step version is in the slow test)."""
    curves = {}
    rows = curve_rows.training_rows(cases(ln), curves, steps=8)
    assert_rows_pass(rows, 3)
    assert len(curves["torch"]) == 8 and len(curves["torch_to_jax"]) == 4
    assert all("next batch after conversion identical" in r.note for r in rows[1:])
    if ln == "post":   # dropout really on in both twins (100-step statistics: the slow test)
        dropout = curve_rows.dropout_rows(cases(ln), curves, steps=8)
        assert dropout[1].passed, dropout[1]


def test_rows_have_teeth(cases, monkeypatch):
    """A jax twin whose weights differ by noise of 1e-4 in one tensor fails the forward rows."""
    real = model_rows.jax_params

    def perturbed(config, weights):
        w = dict(weights)
        name = "bert.encoder.layer.0.output.dense.weight"
        noise = np.random.default_rng(0).normal(0, 1e-4, w[name].shape).astype(np.float32)
        w[name] = w[name] + noise
        return real(config, w)

    monkeypatch.setattr(model_rows, "jax_params", perturbed)
    rows = model_rows.forward_rows(cases("post"))
    assert not any(r.passed for r in rows if "jax" in r.quantity)
    assert all(r.passed for r in rows if r.quantity.endswith("torch vs HF"))


def test_resume_rows_catch_a_lost_optimizer_state(cases, monkeypatch):
    """A conversion that dropped the AdamW moments fails the torch -> jax resume row."""
    import dataclasses

    import parity.torch_state as torch_state
    real = torch_state.read_torch

    def forgetful(*args, **kwargs):
        s = real(*args, **kwargs)
        zero = lambda d: {k: v * 0 for k, v in d.items()}
        return dataclasses.replace(s, exp_avg=zero(s.exp_avg), exp_avg_sq=zero(s.exp_avg_sq))

    monkeypatch.setattr(torch_state, "read_torch", forgetful)
    rows = curve_rows.training_rows(cases("post"), {}, steps=8)
    assert rows[0].passed and not rows[1].passed and rows[2].passed


@pytest.mark.slow
def test_full_check_tiny(tmp_path, capsys):
    """`python -m parity.check --preset tiny` (its main, in-process), post-LN: every row passes,
    100-step curves, resume at 50 both ways, dropout statistics. (Pre-LN: the fast tests above;
    `python -m parity.check` runs both by default. One LN position here keeps the suite within
    its time budget on a 2-core machine.)"""
    out = tmp_path / "report"
    assert check.main(["--preset", "tiny", "--out", str(out), "--threads", "1",
                       "--layer-norm-position", "post"]) == 0
    table = capsys.readouterr().out
    assert "FAIL" not in table
    assert "29/29 rows pass" in table
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and len(report["rows"]) == 29
    quantities = {r["quantity"] for r in report["rows"]}
    for q in ("100-step loss curve: torch vs jax",
              "resume: torch 50 -> convert -> jax 50 vs torch 100",
              "resume: jax 50 -> convert -> torch 50 vs jax 100",
              "dropout on: mean loss over 100 steps, torch vs jax",
              "bf16 curve (100 steps): torch vs jax",
              "eval metrics over 3 fixed batches: torch vs jax (train.evaluate)"):
        assert q in quantities
    assert (out / "report.md").read_text().count("| pass |") == 29
    assert (out / "loss_curves.png").stat().st_size > 10_000


def test_check_cli_rejects_too_few_steps(capsys):
    with pytest.raises(SystemExit) as e:
        check.parse_args(["--steps", "1"])
    assert e.value.code == 2 and "--steps" in capsys.readouterr().err
