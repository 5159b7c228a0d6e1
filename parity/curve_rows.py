"""Rows over many steps: loss curves, cross-framework resume (parity.convert), dropout statistics.

Both twins train with their own make_optimizer and train_step on the Case's batches. Every bar
comes from parity/thresholds.py.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import jax
import numpy as np

from bertcore.model.config import TrainConfig
from bertcore.data.batches import BatchIterator
from bertcore.train.rundir import RunDir

from . import thresholds as T
from .cases import (Case, highest_precision, jax_layout, jax_params, jax_setup, jax_steps,
                    torch_setup, torch_steps)
from .convert import convert
from .report import Row


def _write_rundir(path: Path, framework: str, case: Case, train: TrainConfig) -> Path:
    """The framework-free files of a RUNDIR (bertcore.train.rundir) so parity.convert can read
    it."""
    info = {"framework": framework, "data": str(case.shards.path.resolve()), "corpus": None}
    RunDir(path).create(info, {"config.json": case.config.to_json_file,
                               "train_config.json": train.to_json_file,
                               "tokenizer": case.tokenizer.save})
    return path


def _curve_row(ln, what, ref, other, name: str, first_step: int = 1) -> Row:
    """Two loss curves against the bar parity/thresholds.py names `name`, at every step."""
    bar = getattr(T, name)
    ref, other = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    d = np.abs(ref - other)
    r = d / np.abs(ref)
    return Row(ln, what, float(d.max()), float(r.max()), f"{name}: rel <= {bar:g} every step",
               bool(r.max() <= bar),
               note=f"{len(ref)} steps; worst at step {first_step + int(np.argmax(r))}")


@highest_precision
def training_rows(case: Case, curves: dict, steps: int | None = None) -> list[Row]:
    """N-step curves of both twins, plus resume across frameworks through files on disk.
    N = `steps` (default: the whole schedule, case.train.steps)."""
    from jaxbert.checkpoint import Checkpointer, key_from_list, key_to_list
    from torchbert.checkpoint import Checkpointer as TorchCheckpointer
    ln, mcfg, train = case.layer_norm_position, case.model_config, case.train
    n = steps or train.steps
    half = n // 2
    work = Path(tempfile.mkdtemp(prefix=f"resume-{ln}-", dir=case.workdir))

    # torch: N steps straight, checkpoint at N/2 (torchbert's own Checkpointer)
    model, opt = torch_setup(case, train, mcfg)
    t_dir = _write_rundir(work / "torch", "torch", case, train)

    def t_save(step):
        if step == half:
            TorchCheckpointer(t_dir, mcfg, keep=1).save(
                step, model, opt, {"step": step, "batches": case.batch_states[step]})
    lt = torch_steps(case, model, opt, train, 0, n, t_save)

    # jax: N steps straight, checkpoint at N/2 (jaxbert's own Checkpointer)
    state, layout, key = jax_setup(case, train, mcfg)
    j_dir = _write_rundir(work / "jax", "jax", case, train)

    def j_save(step, st):
        if step == half:
            with Checkpointer(j_dir, mcfg) as c:
                c.save(step, st, {"step": step, "batches": case.batch_states[step],
                                  "rng": key_to_list(key)})
    state, lj = jax_steps(case, state, layout, key, 0, n, j_save)
    rows = [_curve_row(ln, f"{n}-step loss curve: torch vs jax", lt, lj, "CURVE_REL")]

    # torch N/2 -> convert -> jax N/2, against torch N
    convert(t_dir, work / "torch-to-jax", "jax")
    from jaxbert.step import create_state
    tx, layout = jax_layout(mcfg, train)
    with Checkpointer(work / "torch-to-jax", mcfg) as c:
        st, extra = c.restore(create_state(jax_params(mcfg, case.init), tx))
    same_data = _next_batch_equal(case, extra["batches"], half)
    # via host arrays, so the state is placed exactly as a fresh one (no second compilation)
    st = layout.put_state(jax.device_get(st))
    _, l_tj = jax_steps(case, st, layout, key_from_list(extra["rng"]), half, n)
    row = _curve_row(ln, f"resume: torch {half} -> convert -> jax {n - half} vs torch {n}",
                     lt[half:], l_tj, "RESUME_REL", half + 1)
    rows.append(_with_data_check(row, same_data))

    # jax N/2 -> convert -> torch N/2, against jax N
    convert(j_dir, work / "jax-to-torch", "torch")
    from torchbert.arch import pretraining_model
    from torchbert.optim import make_optimizer
    m2 = pretraining_model(mcfg).train()
    o2 = make_optimizer(m2, train)
    extra = TorchCheckpointer(work / "jax-to-torch", mcfg).restore(m2, o2)
    same_data = _next_batch_equal(case, extra["batches"], half)
    l_jt = torch_steps(case, m2, o2, train, half, n)
    row = _curve_row(ln, f"resume: jax {half} -> convert -> torch {n - half} vs jax {n}",
                     lj[half:], l_jt, "RESUME_REL", half + 1)
    rows.append(_with_data_check(row, same_data))
    curves.update(torch=lt, jax=lj, torch_to_jax=l_tj, jax_to_torch=l_jt, half=half)
    return rows


def _next_batch_equal(case: Case, batch_state: dict, step: int) -> bool:
    nxt = next(BatchIterator(case.shards, case.tokenizer, case.train, state=batch_state))
    return all(np.array_equal(nxt[k], case.batches[step][k]) for k in nxt)


def _with_data_check(row: Row, same: bool) -> Row:
    if not same:
        row.passed, row.note = False, "the converted data position gives another next batch"
    else:
        row.note += "; next batch after conversion identical"
    return row


@highest_precision
@highest_precision
def bf16_rows(case: Case, steps: int | None = None) -> list[Row]:
    """Both twins computing in bfloat16 (`--dtype bf16`), same init and batches: N steps.

    ELECTRA's generator samples from its logits, and bf16 logits of the twins differ by about
    a bf16 unit: now and then (measured: from about step 25 on tiny) one slot's sample differs,
    which flips a replaced-token label and moves that step's loss by ~1%, after which the
    trajectories part. So for ELECTRA the curve's bar holds at the first step (same weights)
    and the N steps are compared as the dropout rows compare theirs, by the paired mean."""
    ln, mcfg, train = case.layer_norm_position, case.model_config, case.train
    n = steps or train.steps
    model, opt = torch_setup(case, train, mcfg)
    lt = torch_steps(case, model, opt, train, 0, n, dtype="bf16")
    state, layout, key = jax_setup(case, train, mcfg, dtype="bf16")
    _, lj = jax_steps(case, state, layout, key, 0, n)
    if not case.electra:
        return [_curve_row(ln, f"bf16 curve ({n} steps): torch vs jax", lt, lj,
                           "BF16_CURVE_REL")]
    first = _curve_row(ln, "bf16 first step (same weights): torch vs jax", lt[:1], lj[:1],
                       "BF16_CURVE_REL")
    first.note = "the generator's samples from bf16 logits: identical unless a near-tie"
    return [first, paired_mean_row(ln, f"bf16 mean loss over {n} steps, torch vs jax (samples "
                                       f"of bf16 logits may differ)", lt, lj)]


def paired_mean_row(ln: str, what: str, lt, lj) -> Row:
    """Two twins' loss curves over the same batches whose steps may differ at random (dropout's
    masks, ELECTRA's bf16 samples): the paired differences' mean within DROPOUT_Z standard
    errors, the lag-1 autocorrelation shrinking the effective sample (parity/thresholds.py)."""
    lt, lj = np.asarray(lt, np.float64), np.asarray(lj, np.float64)
    d = lt - lj
    n = len(d)
    dc = d - d.mean()
    r1 = float(np.clip((dc[1:] * dc[:-1]).sum() / max((dc * dc).sum(), 1e-30), 0.0, 0.9))
    n_eff = n * (1 - r1) / (1 + r1)
    se = float(d.std(ddof=1) / math.sqrt(n_eff)) if n > 1 else float("inf")
    tol = T.DROPOUT_Z * se
    return Row(ln, what, abs(d.mean()), abs(d.mean()) / lt.mean(),
               f"DROPOUT_Z: |diff| <= {T.DROPOUT_Z:g} SE = {tol:.3g}", abs(d.mean()) <= tol,
               note=f"means {lt.mean():.4f} vs {lj.mean():.4f}; SE {se:.3g} "
                    f"(std {d.std(ddof=1):.3g}, lag-1 autocorr {r1:.2f}, n_eff {n_eff:.0f})")


def dropout_rows(case: Case, curves: dict, steps: int | None = None) -> list[Row]:
    """Dropout on: the twins' RNGs differ, so compare mean losses (parity/thresholds.py).
    Needs `curves` from training_rows (the dropout-off curves) of at least as many steps."""
    ln = case.layer_norm_position
    mcfg, train = case.with_dropout()
    n = steps or train.steps
    model, opt = torch_setup(case, train, mcfg)
    lt = np.asarray(torch_steps(case, model, opt, train, 0, n))
    state, layout, key = jax_setup(case, train, mcfg)
    _, lj = jax_steps(case, state, layout, key, 0, n)
    lj = np.asarray(lj)
    n = len(lj)
    rows = [paired_mean_row(ln, f"dropout on: mean loss over {n} steps, torch vs jax", lt, lj)]
    off_t, off_j = np.asarray(curves["torch"][:n]), np.asarray(curves["jax"][:n])
    act = min(float(np.max(np.abs(lt - off_t) / off_t)), float(np.max(np.abs(lj - off_j) / off_j)))
    rows.append(Row(ln, "dropout on: active in both twins (vs own dropout-off curve)", act, act,
                    f"DROPOUT_ACTIVE_REL: rel > {T.DROPOUT_ACTIVE_REL:g}",
                    act > T.DROPOUT_ACTIVE_REL,
                    note="the smaller of the two twins' worst-step changes"))
    curves.update(torch_dropout=lt.tolist(), jax_dropout=lj.tolist())
    return rows
