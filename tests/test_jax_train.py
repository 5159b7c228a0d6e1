"""What only jaxbert's training has: pmap and sharded layouts equal one device, multi-host equals
one process, the step learns and memorises, every layout donates, prefetches and compiles once,
and the CPU lowering choices (jaxbert.cpu). The command line's behaviour shared with torchbert
is tested in test_train.py."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import (ROOT, base_args, build_shards, metrics, program, train_cli, wait_all,
                     write_corpus)


@pytest.mark.slow
@pytest.mark.parametrize("nsp", [True, False], ids=["mlm+nsp", "mlm-only"])
def test_pmap_and_sharded_equal_single_device(tmp_path, cache_env, nsp):
    """4 CPU devices (subprocess), dropout off: the same losses as one device within 1e-5, also
    MLM-only (pooler and NSP head not run) and with no recompilation after the first step."""
    corpus = write_corpus(tmp_path)
    common = ("--steps", "5", "--no-dropout", "--batch-size", "8", "--grad-accum", "2",
              *([] if nsp else ["--no-nsp"]))
    env = {**cache_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    curves = {}
    for parallel in ("single", "pmap", "sharded"):
        out = tmp_path / parallel
        train_cli("jax", *base_args(corpus, out, *common, "--parallel", parallel), env=env)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["parallel"] == parallel and summary["step_compilations"] == 1, summary
        curves[parallel] = metrics(out)
    keys = ("loss", "mlm_loss", "grad_norm") + (("nsp_loss",) if nsp else ())
    for parallel in ("pmap", "sharded"):
        assert len(curves[parallel]) == len(curves["single"]) == 5
        for x, y in zip(curves["single"], curves[parallel]):
            assert ("nsp_loss" in y) == nsp
            for k in keys:
                assert abs(x[k] - y[k]) <= 1e-5 * max(1.0, abs(x[k])), (parallel, k, x[k], y[k])


@pytest.mark.slow
def test_multi_host_two_processes_equal_one_process(tmp_path, cache_env):
    """jax.distributed with 2 CPU processes (gloo) on localhost, each reading its own rows of
    every global batch, sharded over the 2 global devices: the same losses as one process."""
    corpus = write_corpus(tmp_path)
    common = ("--steps", "3", "--no-dropout", "--batch-size", "8")
    train_cli("jax", *base_args(corpus, tmp_path / "one", *common), env=cache_env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **cache_env}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "jaxbert.train", *base_args(corpus, tmp_path / "two", *common),
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    wait_all(procs)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        for k in ("loss", "mlm_loss", "nsp_loss", "grad_norm"):
            assert abs(x[k] - y[k]) <= 1e-5 * max(1.0, abs(x[k])), (k, x[k], y[k])


@pytest.mark.slow
def test_learns_and_memorises_one_batch(tmp_path):
    import functools

    import jax

    from bertcore.model.config import BertConfig, TrainConfig
    from bertcore.data.batches import BatchIterator
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


@pytest.mark.slow
def test_every_layout_donates_prefetches_and_compiles_once(tmp_path):
    """single, pmap and sharded (4 CPU devices): every step donates the old state's buffers
    (they are deleted, the new state reuses them), batches arrive already placed on the
    devices by the prefetch thread, and the step compiles once."""
    shards, tok = build_shards(tmp_path, n_docs=100, vocab_size=300)
    tok.save(shards.path / "tokenizer")
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    p = subprocess.run(program("layout_probe", str(shards.path)), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(out) == {"single", "pmap", "sharded"}
    for parallel, r in out.items():
        assert r["donated"] == [True] * 4, (parallel, r)
        assert r["placed"] == [True] * 4, (parallel, r)
        assert r["traces"] == 1, (parallel, r)


def test_cpu_dots_leave_ynnpack_unless_the_user_chose():
    # jaxlib 0.10 only (the flag is experimental; XLA aborts on an unknown one): the dot
    # compiles outside YNNPACK with it, and a user's own YNN setting is kept as given.
    import jaxlib

    def run(xla_flags):
        out = subprocess.run(program("cpu_dots"), capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": xla_flags})
        return json.loads(out.stdout)

    ours, users = run(""), run("--xla_cpu_experimental_ynn_fusion_type=-reduce")
    if not jaxlib.__version__.startswith("0.10."):
        assert not ours["added"] and ours["flags"] == ""
        return
    assert ours["added"] and not ours["ynn_dot"]
    assert not users["added"] and users["ynn_dot"]
    assert users["flags"] == "--xla_cpu_experimental_ynn_fusion_type=-reduce"


@pytest.mark.parametrize("flags, added", [
    ("", False),
    ("--xla_force_host_platform_device_count=1", False),
    ("--xla_force_host_platform_device_count=4", True),
    ("--xla_force_host_platform_device_count=4 --xla_cpu_collective_timeout_seconds=60", False)])
def test_simulated_devices_wait_longer_in_collectives(monkeypatch, flags, added):
    # Several simulated CPU devices get XLA's longer collective limits on jaxlib 0.10
    # (jaxbert/cpu.py); one device needs nothing, and a user's own limit is kept as given. The
    # flags are real: the subprocess's backend starts with them (XLA aborts on unknown flags).
    import jaxlib

    from jaxbert.cpu import SIMULATED_DEVICES_FLAGS, wait_longer_in_collectives

    monkeypatch.setenv("XLA_FLAGS", flags)
    on_010 = jaxlib.__version__.startswith("0.10.")
    assert wait_longer_in_collectives() == (added and on_010)
    got = os.environ["XLA_FLAGS"]
    assert got == (" ".join([flags, *SIMULATED_DEVICES_FLAGS]) if added and on_010 else flags)
    if added and on_010:
        code = "import jax; print(len(jax.devices()))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "XLA_FLAGS": got})
        assert out.returncode == 0 and out.stdout.split() == ["4"], out.stderr[-2000:]


def test_threefry_unrolled_on_cpu_gives_the_same_bits():
    # jaxbert.cpu swaps jax's CPU lowering of threefry (a 5-iteration loop, a pass over the
    # array each) for its unrolled one: the compiled program loses its loop, the bits stay.
    out = subprocess.run(program("threefry_bits"), capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    got = json.loads(out.stdout)
    if not got["done"]:
        pytest.skip("this jax has no jax._src.random.threefry2x32 rule to register (nothing done)")
    assert got["same"]
    assert got["loops"] == [True, False]
