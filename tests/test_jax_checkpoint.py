"""jaxbert.checkpoint's own: the RNG key as JSON ints (raw and typed keys), an existing step left
alone, orbax's logging left alone. What both twins' checkpoints promise (round trip, keeping the
newest k, temp directories, missing/corrupt/mismatched checkpoints, JSON extra state) is
tests/test_checkpoint.py's."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertcore.model.config import BertConfig
from jaxbert.checkpoint import Checkpointer, key_from_list, key_to_list, latest_step
from jaxbert.model import init_params

# The same config as tests/test_jax_model.py: init_params compiles once per config and process.
CFG = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=64)
TX = optax.adamw(1e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01)


def fresh_state(seed):
    params = init_params(CFG, jax.random.PRNGKey(seed))
    return {"params": params, "opt_state": TX.init(params), "step": jnp.zeros((), jnp.int32)}


@pytest.fixture(scope="module")
def state():
    return fresh_state(0)


def test_rng_key_round_trips_as_ints(tmp_path, state):
    key = jax.random.fold_in(jax.random.PRNGKey(42), 2)
    extra = {"batches": {"epoch": 0, "position": 64, "seed": 0}, "rng": key_to_list(key)}
    json.dumps(extra)
    Checkpointer(tmp_path, CFG).save(2, state, extra)
    _, got = Checkpointer(tmp_path, CFG).restore(fresh_state(1))
    assert np.array_equal(key_from_list(got["rng"]), key)
    typed = jax.random.key(3)
    assert jax.random.key_data(key_from_list(key_to_list(typed), typed=True)).tolist() == \
        jax.random.key_data(typed).tolist()


def test_an_existing_step_is_not_overwritten(tmp_path, state):
    ck = Checkpointer(tmp_path, CFG, keep=3)
    assert ck.save(2, state, {"n": 1}) == ck.path(2) == tmp_path / "checkpoints" / "2"
    assert ck.save(2, state, {"n": 2}) is None  # orbax never replaces a step
    assert latest_step(tmp_path) == ck.latest_step() == 2
    assert Checkpointer(tmp_path, CFG).restore(fresh_state(1))[1]["n"] == 1


def test_making_a_checkpointer_leaves_logging_alone(tmp_path):
    # Process-wide settings (absl's log level among them) are the entry points' to make
    # (jaxbert.runtime.configure_process), not a library object's.
    absl = logging.getLogger("absl")
    before = absl.level
    Checkpointer(tmp_path, CFG).close()
    assert absl.level == before
