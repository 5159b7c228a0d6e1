"""parity.convert: full training state torch <-> jax (bit-exact round trips, resume across
frameworks), Hugging Face export and import, and one-line errors for bad input."""

from __future__ import annotations

import importlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import assert_one_line_error, base_args, metrics, run_cli, write_corpus
from bertcore.model.hf import flax_to_hf
from bertcore.train.rundir import read_run
from jaxbert.checkpoint import key_to_list
from jaxbert.step import seed_keys
from parity import convert as C
from parity import thresholds as T
from parity.jax_state import adam_state, opt_nodes, read_jax
from parity.torch_state import read_torch

STEPS = ("--steps", "6", "--checkpoint-every", "3", "--warmup-steps", "2", "--no-dropout")


def train(twin: str, *args: str) -> None:
    """The twin's own command line, in-process (no subprocess start-up)."""
    assert importlib.import_module(f"{twin}bert.train").main(list(args)) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 6-step torchbert run and a 6-step jaxbert run (checkpoints at 3 and 6), dropout off."""
    d = tmp_path_factory.mktemp("runs")
    corpus = write_corpus(d)
    out = {}
    for twin in ("torch", "jax"):
        out[twin] = d / twin
        train(twin, *base_args(corpus, out[twin], *STEPS))
    out["args"] = lambda rundir, *extra: base_args(corpus, rundir, *STEPS, *extra)
    return out


def restore_jax(rundir: Path):
    run = read_run(rundir)
    from jaxbert.checkpoint import Checkpointer
    from jaxbert.step import abstract_state
    with Checkpointer(rundir, run.trained_config) as ckpt:
        return ckpt.restore(abstract_state(run.trained_config, run.train))


def leaves(tree) -> list[np.ndarray]:
    import jax
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


# ---- full training state ------------------------------------------------------------------------

def test_torch_to_jax_to_torch_is_bit_exact(runs, tmp_path):
    src = runs["torch"]
    C.convert(src, tmp_path / "jax", "jax")
    C.convert(tmp_path / "jax", tmp_path / "torch", "torch")
    a, b = src / "checkpoints/step_00000006", tmp_path / "torch/checkpoints/step_00000006"
    for f in ("model.safetensors", "optimizer.safetensors"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert json.loads((a / "state.json").read_text()) == json.loads((b / "state.json").read_text())
    # the jax RUNDIR in between: a complete run of the other twin
    info = json.loads((tmp_path / "jax/run.json").read_text())
    assert info["framework"] == "jax" and info["converted_from"]["step"] == 6
    assert (tmp_path / "jax/metrics.jsonl").read_text() == (src / "metrics.jsonl").read_text()
    for f in ("config.json", "train_config.json", "tokenizer/vocab.txt"):
        assert (tmp_path / "jax" / f).read_bytes() == (src / f).read_bytes(), f


def test_moments_and_counters_follow_the_table(runs, tmp_path):
    """Torch exp_avg / exp_avg_sq become optax mu / nu (kernels transposed like the weights), every
    step counter is the step, and the dropout key is the one jaxbert derives from the seed."""
    C.convert(runs["torch"], tmp_path / "jax", "jax")
    t = read_torch(read_run(runs["torch"]))
    state, extra = restore_jax(tmp_path / "jax")
    adam = adam_state(state.opt_state)
    q = "bert/encoder/layer/1/attention/self/query/kernel".split("/")
    node = lambda tree: tree[q[0]][q[1]][q[2]][q[3]][q[4]][q[5]][q[6]][q[7]]
    name = "bert.encoder.layer.1.attention.self.query.weight"
    assert np.array_equal(np.asarray(node(state.params)), t.params[name].T)
    assert np.array_equal(np.asarray(node(adam.mu)), t.exp_avg[name].T)
    assert np.array_equal(np.asarray(node(adam.nu)), t.exp_avg_sq[name].T)
    assert not np.array_equal(t.exp_avg[name], 0)
    counts = [int(n.count) for n in opt_nodes(state.opt_state) if "count" in n._fields]
    assert int(state.step) == 6 and counts == [6, 6]
    _, native = restore_jax(runs["jax"])   # a real jax run of the same seed
    assert extra["rng"] == native["rng"] == key_to_list(seed_keys(0)[1])
    assert extra["batches"] == native["batches"] == t.batches


def test_jax_to_torch_to_jax_is_bit_exact(runs, tmp_path):
    C.convert(runs["jax"], tmp_path / "torch", "torch")
    C.convert(tmp_path / "torch", tmp_path / "jax", "jax")
    (s1, e1), (s2, e2) = restore_jax(runs["jax"]), restore_jax(tmp_path / "jax")
    a, b = leaves(s1), leaves(s2)
    assert len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y)
                                    for x, y in zip(a, b))
    assert {k: e1[k] for k in ("step", "batches", "rng")} == \
        {k: e2[k] for k in ("step", "batches", "rng")}


def test_step_selection_and_metrics_cut(runs, tmp_path):
    C.convert(runs["torch"], tmp_path / "a", "jax", step=3)
    state, extra = restore_jax(tmp_path / "a")
    assert extra["step"] == int(state.step) == 3
    assert [json.loads(l)["step"]
            for l in (tmp_path / "a/metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    # one checkpoint directory as SRC is the same as RUNDIR --step
    C.convert(runs["jax"] / "checkpoints/3", tmp_path / "b", "torch")
    assert (tmp_path / "b/checkpoints/step_00000003/state.json").is_file()


@pytest.mark.slow
def test_resume_across_frameworks_with_the_clis(runs, tmp_path):
    """torch 3 steps -> convert -> `python -m jaxbert.train --resume` 3 more == torch 6 steps,
    and jax 3 -> convert -> `torchbert.train --resume` == jax 6 (CURVE_REL at every step)."""
    for first, second in (("torch", "jax"), ("jax", "torch")):
        dst = tmp_path / f"{first}-to-{second}"
        C.convert(runs[first], dst, second, step=3)
        args = runs["args"](dst, "--resume")
        if second == "jax":   # the real command line once, as a user runs it
            p = run_cli("-m", "jaxbert.train", *args)
            assert p.returncode == 0, p.stderr[-3000:]
        else:
            train(second, *args)
        ref, got = metrics(runs[first]), metrics(dst)
        assert [m["step"] for m in got] == list(range(1, 7))
        assert got[:3] == ref[:3]                       # the curve so far, carried over
        for r, g in zip(ref[3:], got[3:]):
            for k in ("loss", "mlm_loss", "nsp_loss"):
                assert abs(r[k] - g[k]) <= T.CURVE_REL * abs(r[k]), (first, r["step"], k)
            assert r["learning_rate"] == pytest.approx(g["learning_rate"], rel=1e-6)


# ---- Hugging Face -----------------------------------------------------------------------------

@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_hf_export_loads_in_transformers(runs, tmp_path, twin):
    import transformers

    dst = tmp_path / "hf"
    C.convert(runs[twin], dst, "hf")
    hf, info = transformers.BertForPreTraining.from_pretrained(dst, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    tok = transformers.BertTokenizerFast.from_pretrained(dst)
    from bertcore.data.tokenizer import load_tokenizer
    text = "the movie was wonderful but the plot felt slow"
    assert tok(text)["input_ids"] == load_tokenizer(runs[twin] / "tokenizer").encode(text)
    # the same weights as the checkpoint, and the same outputs as the twin
    state = read_torch(read_run(runs[twin])) if twin == "torch" else \
        read_jax(read_run(runs[twin]))
    hf_state = hf.state_dict()
    assert all(np.array_equal(hf_state[n].numpy(), a) for n, a in state.params.items())
    from torchbert.model import BertForPreTraining
    ours = BertForPreTraining.from_pretrained(dst).eval()
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        mlm, nsp = ours(ids)
        out = hf.eval()(input_ids=ids)
    assert (mlm - out.prediction_logits).abs().max() <= T.FORWARD_MAX_ABS
    assert (nsp - out.seq_relationship_logits).abs().max() <= T.FORWARD_MAX_ABS


def _hf_dir(tmp_path: Path, cls_name: str) -> Path:
    import transformers
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    d = tmp_path / cls_name
    getattr(transformers, cls_name)(cfg).save_pretrained(d)
    return d


def test_hf_sources_bertmodel_gets_fresh_heads(tmp_path, caplog):
    import transformers
    src = _hf_dir(tmp_path, "BertModel")          # keys without `bert.`, no MLM/NSP heads
    with caplog.at_level(logging.INFO, logger="parity"):
        C.convert(src, tmp_path / "out", "hf")
    notes = [r.getMessage() for r in caplog.records]
    assert any("cls.predictions" in n and "initialised fresh" in n for n in notes)
    hf, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "out",
                                                               output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    base = transformers.BertModel.from_pretrained(src).state_dict()
    assert all(torch.equal(hf.bert.state_dict()[k], v) for k, v in base.items())


def test_hf_to_twin_is_weights_only_and_loads_in_both(tmp_path, caplog):
    src = _hf_dir(tmp_path, "BertForPreTraining")
    with caplog.at_level(logging.INFO, logger="parity"):
        C.convert(src, tmp_path / "out", "jax")
    notes = [r.getMessage() for r in caplog.records]
    assert any("weights" in n and "from_pretrained" in n for n in notes)
    from jaxbert.model import from_pretrained
    from torchbert.model import BertForPreTraining
    _, params, info = from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"]
    _, tinfo = BertForPreTraining.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not tinfo["missing_keys"]
    from safetensors.numpy import load_file
    a, b = (load_file(str(src / "model.safetensors")),
            load_file(str(tmp_path / "out/model.safetensors")))
    assert all(np.array_equal(a[k], b[k]) for k in b)
    assert flax_to_hf(params).keys() == b.keys()


# ---- bad input: one line, exit 2, nothing touched --------------------------------------------

def fails(capsys, *argv: str, needles=()) -> str:
    assert C.main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_cli_bad_sources_one_line_errors(tmp_path):
    """Through the real command line (these fail before torch or jax is imported)."""
    p = run_cli("-m", "parity.convert", str(tmp_path / "nope"), str(tmp_path / "out"),
                "--to", "jax")
    assert_one_line_error(p, "does not exist")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    p = run_cli("-m", "parity.convert", str(junk), str(tmp_path / "out"), "--to", "hf")
    assert_one_line_error(p, "is not a checkpoint")
    p = run_cli("-m", "parity.convert", str(junk / "notes.txt"), str(tmp_path / "out"),
                "--to", "hf")
    assert_one_line_error(p, "is a file")
    p = run_cli("-m", "parity.convert", str(junk), str(tmp_path / "out"), "--to", "tf")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--to" in p.stderr
    assert not (tmp_path / "out").exists()
    p = run_cli("-m", "parity.convert", "--help")
    assert p.returncode == 0 and "--to hf" in p.stdout and "--resume" in p.stdout


def test_existing_destination_needs_overwrite(runs, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    fails(capsys, str(runs["torch"]), str(dst), "--to", "jax", needles=("--overwrite",))
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    fails(capsys, str(runs["torch"]), str(runs["torch"]), "--to", "jax",
          needles=("source itself",))
    # --overwrite replaces only what convert writes, never the user's files (issue 34)
    for to in ("jax", "hf"):
        fails(capsys, str(runs["torch"]), str(dst), "--to", to, "--overwrite",
              needles=("keep.txt", "move those files away"))
        assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    (dst / "keep.txt").unlink()
    assert C.main([str(runs["torch"]), str(dst), "--to", "hf", "--overwrite"]) == 0
    assert (dst / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp dirs left


@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_checkpoint_from_another_config(runs, tmp_path, capsys, twin):
    bad = tmp_path / "run"
    shutil.copytree(runs[twin], bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 256}))
    fails(capsys, str(bad), str(tmp_path / "out"), "--to", "hf",
          needles=("intermediate_size",))
    fails(capsys, str(runs[twin]), str(tmp_path / "out"), "--to", "hf", "--step", "4",
          needles=("step 4",))
    assert not (tmp_path / "out").exists()


def test_unknown_missing_and_misshaped_names_are_listed(tmp_path, capsys):
    from safetensors.numpy import load_file, save_file
    src = _hf_dir(tmp_path, "BertForPreTraining")
    w = load_file(str(src / "model.safetensors"))
    w["bert.encoder.layer.0.attention.self.sideways.weight"] = w.pop(
        "bert.encoder.layer.0.attention.self.query.weight")
    save_file(w, str(src / "model.safetensors"), metadata={"format": "pt"})
    fails(capsys, str(src), str(tmp_path / "out"), "--to", "hf",
          needles=("unexpected parameter names", "attention.self.sideways.weight"))
    del w["bert.encoder.layer.0.attention.self.sideways.weight"]
    save_file(w, str(src / "model.safetensors"), metadata={"format": "pt"})
    fails(capsys, str(src), str(tmp_path / "out"), "--to", "hf",
          needles=("missing parameters", "layer.0.attention.self.query.weight"))
    src2 = _hf_dir(tmp_path, "BertModel")
    cfg = json.loads((src2 / "config.json").read_text())
    (src2 / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    fails(capsys, str(src2), str(tmp_path / "out"), "--to", "hf",
          needles=("wrong shape", "intermediate.dense.weight"))
    fails(capsys, str(src2), str(tmp_path / "out"), "--to", "hf", "--step", "3",
          needles=("--step",))
    assert not (tmp_path / "out").exists()
