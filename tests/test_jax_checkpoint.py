"""jaxbert.checkpoint: orbax save/restore of the train state, resume exactness, bad checkpoints."""

import json
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertcore.model.config import BertConfig
from bertcore.infra.errors import UserError
from jaxbert.checkpoint import Checkpointer, key_from_list, key_to_list, latest_step
from jaxbert.model import init_params

# The same config as tests/test_jax_model.py: init_params compiles once per config and process.
CFG = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=64)
TX = optax.adamw(1e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01)


@jax.jit
def step_fn(state):
    # A synthetic but state-dependent gradient: the checkpoint is what is under test here, and
    # this avoids compiling the model's backward pass.
    grads = jax.tree.map(lambda p: jnp.sin(p * 7.0 + state["step"]), state["params"])
    updates, opt_state = TX.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
            "step": state["step"] + 1}


def fresh_state(seed):
    params = init_params(CFG, jax.random.PRNGKey(seed))
    return {"params": params, "opt_state": TX.init(params), "step": jnp.zeros((), jnp.int32)}


def run(state, n):
    for _ in range(n):
        state = step_fn(state)
    return state


def assert_bit_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


@pytest.fixture(scope="module")
def trained():
    return run(fresh_state(0), 2)


def test_round_trip_and_resume_exact(tmp_path, trained):
    key = jax.random.fold_in(jax.random.PRNGKey(42), 2)
    extra = {"batches": {"epoch": 0, "position": 64, "seed": 0}, "rng": key_to_list(key)}
    ck = Checkpointer(tmp_path, CFG, keep=3)
    t = time.perf_counter()
    assert ck.save(2, trained, extra) == ck.path(2) == tmp_path / "checkpoints" / "2"
    save_s = time.perf_counter() - t
    assert ck.save(2, trained, extra) is None  # an existing step is never overwritten
    assert latest_step(tmp_path) == ck.latest_step() == 2

    target = fresh_state(1)  # other values, the same structure
    t = time.perf_counter()
    restored, got = Checkpointer(tmp_path, CFG).restore(target)
    restore_s = time.perf_counter() - t
    print(f"orbax save {save_s:.2f}s, restore {restore_s:.2f}s")
    assert_bit_equal(restored, trained)
    assert int(restored["step"]) == 2
    mu = restored["opt_state"][0].mu  # optax.adamw = chain(scale_by_adam, ...): AdamW moments
    assert_bit_equal(mu, trained["opt_state"][0].mu)
    assert np.abs(np.asarray(mu["cls"]["predictions"]["bias"])).sum() > 0
    assert got["batches"] == extra["batches"] and got["model_config"] == CFG.to_dict()
    assert np.array_equal(key_from_list(got["rng"]), key)
    typed = jax.random.key(3)
    assert jax.random.key_data(key_from_list(key_to_list(typed), typed=True)).tolist() == \
        jax.random.key_data(typed).tolist()

    assert_bit_equal(run(restored, 3), run(trained, 3))


def test_keep_last_k(tmp_path, trained):
    ck = Checkpointer(tmp_path, CFG, keep=2)
    for s in (1, 2, 3, 4):
        ck.save(s, trained, {"s": s})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3", "4"]
    assert latest_step(tmp_path) == 4 and ck.steps() == [3, 4]
    _, extra = Checkpointer(tmp_path, CFG).restore(fresh_state(1), step=3)
    assert extra["s"] == 3
    with pytest.raises(UserError, match="step 1 .*available: 3, 4"):
        Checkpointer(tmp_path, CFG).restore(fresh_state(1), step=1)


def test_first_save_sweeps_a_killed_saves_temp_dirs(tmp_path, trained):
    """orbax's temp directories of a save that never finished (a kill, a second Ctrl-C) are
    removed by the next writer's first save, also when it resumed from a checkpoint first."""
    ck = Checkpointer(tmp_path, CFG)
    ck.save(1, trained, {"s": 1})
    stale = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234" / "state"
    stale.mkdir(parents=True)
    ck = Checkpointer(tmp_path, CFG)
    ck.restore(fresh_state(1))
    assert stale.is_dir()                 # a reader leaves them: a writer may be at work
    ck.save(3, trained, {"s": 3})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1", "3"]


def test_missing_checkpoint(tmp_path):
    assert latest_step(tmp_path) is None
    with pytest.raises(UserError, match=f"no checkpoint in {tmp_path}"):
        Checkpointer(tmp_path, CFG).restore(fresh_state(1))
    assert not (tmp_path / "checkpoints").exists()  # looking created nothing
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match="no checkpoint in"):
        Checkpointer(tmp_path, CFG).restore(fresh_state(1))


def test_config_mismatch(tmp_path, trained):
    Checkpointer(tmp_path, CFG).save(2, trained, {})
    other = CFG.replace(hidden_size=128, intermediate_size=256)
    with pytest.raises(UserError, match=r"checkpoints/2 was written for another model config "
                                        r"\(hidden_size: checkpoint 64, now 128; "
                                        r"intermediate_size"):
        Checkpointer(tmp_path, other).restore(fresh_state(1))
    # Same config, different state structure (e.g. another optimizer): still one clear error.
    params = fresh_state(1)["params"]
    with pytest.raises(UserError, match="does not match this run's training state"):
        Checkpointer(tmp_path, CFG).restore({"params": params, "step": jnp.zeros((), jnp.int32),
                                             "opt_state": optax.sgd(0.1).init(params)})


def test_corrupt_checkpoint(tmp_path, trained):
    Checkpointer(tmp_path, CFG).save(1, trained, {})
    Checkpointer(tmp_path, CFG).save(2, trained, {})
    for f in (tmp_path / "checkpoints" / "2" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0garbage" * 8)
    with pytest.raises(UserError, match=r"checkpoints/2 is corrupt"):
        Checkpointer(tmp_path, CFG).restore(fresh_state(1))
    (tmp_path / "checkpoints" / "1" / "extra" / "metadata").write_text("{not json")
    with pytest.raises(UserError, match=r"checkpoints/1 is corrupt or unreadable"):
        Checkpointer(tmp_path, CFG).restore(fresh_state(1), step=1)


def test_extra_state_must_be_json(tmp_path, trained):
    with pytest.raises(TypeError):
        Checkpointer(tmp_path, CFG).save(1, trained, {"rng": jax.random.PRNGKey(0)})
    json.dumps({"rng": key_to_list(jax.random.PRNGKey(0))})


def test_making_a_checkpointer_leaves_logging_alone(tmp_path):
    # Process-wide settings (absl's log level among them) are the entry points' to make
    # (jaxbert.runtime.configure_process), not a library object's.
    absl = logging.getLogger("absl")
    before = absl.level
    Checkpointer(tmp_path, CFG).close()
    assert absl.level == before
