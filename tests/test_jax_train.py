"""jaxbert.train end to end: resume, SIGKILL, pmap/sharded == single, learning, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import twin_train_cases as cases
from helpers import build_shards

TWIN = "jax"


@pytest.mark.slow
def test_resume_is_bit_exact(tmp_path, cache_env):
    cases.resume_is_exact(TWIN, tmp_path, cache_env)


@pytest.mark.slow
def test_sigkill_right_after_checkpoint_then_resume(tmp_path, cache_env):
    cases.sigkill_then_resume(TWIN, tmp_path, cache_env)


@pytest.mark.slow
def test_bad_inputs_one_line_errors(tmp_path, cache_env):
    cases.bad_inputs(TWIN, tmp_path, cache_env)
    corpus = cases.write_corpus(tmp_path)
    # a global batch that the 4 devices cannot split (subprocess: 4 CPU devices)
    env = {**cache_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    p = cases.train(TWIN, *cases.base_args(corpus, tmp_path / "d", "--batch-size", "6",
                                           "--steps", "1", "--parallel", "sharded"),
                    env=env, check=False)
    cases.assert_one_line_error(p, "does not split into 4 devices")
    # an orbax checkpoint from another config
    run = tmp_path / "run"
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 64}))
    p = cases.train(TWIN, *cases.base_args(corpus, run, "--steps", "2", "--resume"),
                    env=cache_env, check=False)
    cases.assert_one_line_error(p, "another model config", "intermediate_size")


@pytest.mark.slow
def test_run_files_summary_and_no_recompilation(tmp_path, cache_env):
    """Also `--parallel pmap` on this one-device machine: a note, and the run goes on."""
    corpus = cases.write_corpus(tmp_path)
    out = tmp_path / "run"
    p = cases.train(TWIN, *cases.base_args(corpus, out, "--steps", "6", "--log-every", "2",
                                           "--parallel", "pmap"), env=cache_env)
    assert "pmap with a single device" in p.stdout + p.stderr
    for f in ("config.json", "train_config.json", "run.json", "metrics.jsonl", "summary.json",
              "loss.png", "tokenizer/vocab.txt"):
        assert (out / f).exists(), f
    assert [r["step"] for r in cases.metrics(out)] == [2, 4, 6]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["first_step_seconds"] > 0
    assert summary["step_compilations"] == 1  # six steps, one compiled program


@pytest.mark.slow
@pytest.mark.parametrize("nsp", [True, False], ids=["mlm+nsp", "mlm-only"])
def test_pmap_and_sharded_equal_single_device(tmp_path, cache_env, nsp):
    """4 CPU devices (subprocess), dropout off: the same losses as one device within 1e-5, also
    MLM-only (pooler and NSP head not run) and with no recompilation after the first step."""
    corpus = cases.write_corpus(tmp_path)
    common = ("--steps", "5", "--no-dropout", "--batch-size", "8", "--grad-accum", "2",
              *([] if nsp else ["--no-nsp"]))
    env = {**cache_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    curves = {}
    for kind in ("single", "pmap", "sharded"):
        out = tmp_path / kind
        cases.train(TWIN, *cases.base_args(corpus, out, *common, "--parallel", kind), env=env)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["parallel"] == kind and summary["step_compilations"] == 1, summary
        curves[kind] = cases.metrics(out)
    keys = ("loss", "mlm_loss", "grad_norm") + (("nsp_loss",) if nsp else ())
    for kind in ("pmap", "sharded"):
        assert len(curves[kind]) == len(curves["single"]) == 5
        for x, y in zip(curves["single"], curves[kind]):
            assert ("nsp_loss" in y) == nsp
            for k in keys:
                assert abs(x[k] - y[k]) <= 1e-5 * max(1.0, abs(x[k])), (kind, k, x[k], y[k])


@pytest.mark.slow
def test_multi_host_two_processes_equal_one_process(tmp_path, cache_env):
    """jax.distributed with 2 CPU processes (gloo) on localhost, each reading its own rows of
    every global batch, sharded over the 2 global devices: the same losses as one process."""
    import os
    import socket
    import subprocess
    import sys

    from helpers import ROOT

    corpus = cases.write_corpus(tmp_path)
    common = ("--steps", "3", "--no-dropout", "--batch-size", "8")
    cases.train(TWIN, *cases.base_args(corpus, tmp_path / "one", *common), env=cache_env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **cache_env}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "jaxbert.train", *cases.base_args(corpus, tmp_path / "two", *common),
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    try:
        outs = [p.communicate(timeout=500)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    a, b = cases.metrics(tmp_path / "one"), cases.metrics(tmp_path / "two")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        for k in ("loss", "mlm_loss", "nsp_loss", "grad_norm"):
            assert abs(x[k] - y[k]) <= 1e-5 * max(1.0, abs(x[k])), (k, x[k], y[k])


@pytest.mark.slow
def test_learns_and_memorises_one_batch(tmp_path):
    import functools

    import jax

    from bertcore.data.batches import BatchIterator
    from bertcore.config import BertConfig, TrainConfig
    from jaxbert.model import BertForPreTraining, init_params
    from jaxbert.optim import make_optimizer
    from jaxbert.parallel import Layout
    from jaxbert.step import create_state, train_step

    shards, tok = build_shards(tmp_path, n_docs=300, vocab_size=300)

    def setup(**kw):
        cfg = TrainConfig(**{**dict(batch_size=16, seq_len=32, max_predictions=5, lr=1e-3,
                                    warmup_steps=10, steps=300, dropout=False), **kw})
        mcfg = BertConfig.from_preset("tiny", vocab_size=tok.vocab_size,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        tx = make_optimizer(cfg, mcfg.hidden_size)
        layout = Layout("single", cfg, functools.partial(
            train_step, model=BertForPreTraining(mcfg), tx=tx, cfg=cfg))
        state = create_state(init_params(mcfg, jax.random.PRNGKey(0)), tx)
        return cfg, layout, state, BatchIterator(shards, tok, cfg)

    cfg, layout, state, it = setup()
    key = jax.random.PRNGKey(1)
    losses = []
    for _ in range(cfg.steps):
        state, m = layout.fn(state, layout.put_batch(next(it)), key)
        losses.append(m["mlm_loss"])
    losses = np.array(jax.device_get(losses))
    start, end = losses[:5].mean(), losses[-20:].mean()
    assert abs(start - np.log(tok.vocab_size)) < 0.5, start
    assert end < start - 1.5, (start, end)
    counts = np.bincount(np.asarray(shards.tokens), minlength=tok.vocab_size)
    p = counts[counts > 0] / counts.sum()
    assert end < -(p * np.log(p)).sum() - 0.1
    assert layout.traces == 1  # 300 steps, one compilation

    cfg, layout, state, it = setup(schedule="constant", warmup_steps=1)
    batch = layout.put_batch(next(it))
    for _ in range(200):
        state, m = layout.fn(state, batch, key)
    assert float(m["mlm_accuracy"]) > 0.95, float(m["mlm_accuracy"])


_LAYOUT_PROBE = r"""
import functools, json, sys
import jax, numpy as np
from bertcore.data.batches import BatchIterator
from bertcore.config import BertConfig, TrainConfig
from bertcore.data.prefetch import Prefetch
from bertcore.data.shards import Shards
from bertcore.data.tokenizer import load_tokenizer
from jaxbert.model import BertForPreTraining, init_params
from jaxbert.optim import make_optimizer
from jaxbert.parallel import Layout
from jaxbert.step import create_state, train_step

data = sys.argv[1]
tok = load_tokenizer(data + "/tokenizer")
shards = Shards(data, tok)
cfg = TrainConfig(batch_size=8, seq_len=32, max_predictions=5, steps=4, grad_accum=2)
mcfg = BertConfig.from_preset("tiny", vocab_size=tok.vocab_size)
tx = make_optimizer(cfg, mcfg.hidden_size)
out = {}
for kind in ("single", "pmap", "sharded"):
    layout = Layout(kind, cfg, functools.partial(train_step, model=BertForPreTraining(mcfg),
                                                 tx=tx, cfg=cfg))
    state = layout.put_state(create_state(init_params(mcfg, jax.random.PRNGKey(0)), tx))
    key = layout.put_key(jax.random.PRNGKey(1))
    donated, placed = [], []
    with Prefetch(BatchIterator(shards, tok, cfg), layout.put_batch) as batches:
        for _ in range(cfg.steps):
            batch = next(batches)
            # already on the devices, in the layout's sharding, before the step asks for it
            placed.append(all(isinstance(v, jax.Array) and len(v.devices()) ==
                              (1 if kind == "single" else 4) for v in batch.values()))
            old = jax.tree_util.tree_leaves(state.params)
            state, metrics = layout.fn(state, batch, key)
            donated.append(all(x.is_deleted() for x in old))
        jax.block_until_ready(metrics)
    out[kind] = {"donated": donated, "placed": placed, "traces": layout.traces}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_every_layout_donates_prefetches_and_compiles_once(tmp_path):
    """single, pmap and sharded (4 CPU devices): every step donates the old state's buffers
    (they are deleted, the new state reuses them), batches arrive already placed on the
    devices by the prefetch thread, and the step compiles once."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    shards, tok = build_shards(tmp_path, n_docs=100, vocab_size=300)
    tok.save(shards.path / "tokenizer")
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    p = subprocess.run([sys.executable, "-c", _LAYOUT_PROBE, str(shards.path)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(out) == {"single", "pmap", "sharded"}
    for kind, r in out.items():
        assert r["donated"] == [True] * 4, (kind, r)
        assert r["placed"] == [True] * 4, (kind, r)
        assert r["traces"] == 1, (kind, r)


@pytest.mark.slow
def test_eval_is_fixed_and_resumes_exactly(tmp_path, cache_env):
    cases.eval_is_fixed_and_resumes_exactly(TWIN, tmp_path, cache_env)


@pytest.mark.slow
def test_sigterm_mid_run_checkpoints_then_resume_is_exact(tmp_path, cache_env):
    cases.sigterm_then_resume(TWIN, tmp_path, cache_env)


@pytest.mark.slow
def test_time_budget_stops_with_a_checkpoint_in_time(tmp_path, cache_env):
    # a compilation cannot be interrupted, so the budget leaves room for the first step's (the
    # session's XLA cache usually has this program already; ~10-20 s when it has not)
    cases.time_budget_stops_in_time(TWIN, tmp_path, cache_env, budget=60)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_then_resume(tmp_path, cache_env):
    """jax.distributed, 2 CPU processes; SIGTERM to process 1 only: JAX's preemption sync
    point makes both stop at the same step and write one checkpoint; both exit 75."""
    import os
    import socket
    import subprocess
    import sys

    from helpers import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), **cache_env}

    def start(corpus, out, *args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return [subprocess.Popen(
            [sys.executable, "-m", "jaxbert.train", *cases.base_args(corpus, out, *args),
             "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
             "--process-id", str(i)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(2)]

    def launch(corpus, out, *args):
        procs = start(corpus, out, *args)
        return procs, lambda: procs[1].pid

    def resume(corpus, out, *args):
        procs = start(corpus, out, *args)
        try:
            outs = [p.communicate(timeout=500)[0] for p in procs]
        finally:
            for p in procs:
                p.kill()
        assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]

    cases.sigterm_one_of_two_processes(TWIN, tmp_path, cache_env, launch, resume)


CPU_DOTS = """
import json, os, jax, jax.numpy as jnp
from jaxbert.cpu import use_eigen_for_cpu_dots
added = use_eigen_for_cpu_dots()
x = jnp.ones((256, 256))
hlo = jax.jit(lambda a, b: a @ b).lower(x, x).compile().as_text()
print(json.dumps({"added": added, "ynn_dot": "__ynn_fusion" in hlo,
                  "flags": os.environ.get("XLA_FLAGS", "")}))
"""


def test_cpu_dots_leave_ynnpack_unless_the_user_chose():
    # jaxlib 0.10 only (the flag is experimental; XLA aborts on an unknown one): the dot
    # compiles outside YNNPACK with it, and a user's own YNN setting is kept as given.
    import jaxlib

    def run(xla_flags):
        out = subprocess.run([sys.executable, "-c", CPU_DOTS], capture_output=True, text=True,
                             check=True, env={**os.environ, "XLA_FLAGS": xla_flags})
        return json.loads(out.stdout)

    ours, users = run(""), run("--xla_cpu_experimental_ynn_fusion_type=-reduce")
    if not jaxlib.__version__.startswith("0.10."):
        assert not ours["added"] and ours["flags"] == ""
        return
    assert ours["added"] and not ours["ynn_dot"]
    assert not users["added"] and users["ynn_dot"]
    assert users["flags"] == "--xla_cpu_experimental_ynn_fusion_type=-reduce"


THREEFRY = """
import json, jax, jax.numpy as jnp
from jaxbert.cpu import unroll_threefry_on_cpu

def bits():
    f = jax.jit(lambda k: jax.random.bits(k, (3, 1000), jnp.uint32))   # a new program each call
    key = jax.random.fold_in(jax.random.PRNGKey(7), 3)
    return f(key).tolist(), " while(" in f.lower(key).compile().as_text()

before, loop_before = bits()
done = unroll_threefry_on_cpu()
after, loop_after = bits()
print(json.dumps({"done": done, "same": before == after, "loops": [loop_before, loop_after]}))
"""


def test_threefry_unrolled_on_cpu_gives_the_same_bits():
    # jaxbert.cpu swaps jax's CPU lowering of threefry (a 5-iteration loop, a pass over the
    # array each) for its unrolled one: the compiled program loses its loop, the bits stay.
    out = subprocess.run([sys.executable, "-c", THREEFRY], capture_output=True, text=True,
                         check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    got = json.loads(out.stdout)
    if not got["done"]:
        pytest.skip("this jax has no jax._src.random.threefry2x32 rule to register (nothing done)")
    assert got["same"]
    assert got["loops"] == [True, False]
