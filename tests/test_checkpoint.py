"""What both twins' checkpoint.py promise, one test per behaviour, run once per twin
(`test_keeps_the_newest_k[torch]`, `test_keeps_the_newest_k[jax]`): a round trip continues
exactly, the newest k are kept, temp directories of killed saves are ignored and swept, missing
and corrupt checkpoints are named, another config names its fields, another training-state
layout is refused, extra state must be JSON.

Each twin's own format (safetensors file and HF parameter names, the older rng file, a failed
write; orbax's logging, typed RNG keys, an existing step left alone) is tested in
tests/test_torch_checkpoint.py and tests/test_jax_checkpoint.py. The `twin` adapters below only
hide the one API difference: torch's `restore` loads into the model and optimizer in place,
jax's returns the state.
"""

from __future__ import annotations

import re

import pytest

from bertcore.infra.errors import UserError
from bertcore.model.config import BertConfig


class TorchTwin:
    """torchbert's checkpointer on a tiny BertForPreTraining + AdamW (two param groups)."""

    CFG = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32)
    not_json = "Tensor"

    def __init__(self):
        import torch
        import torchbert.checkpoint as ckpt
        self.torch, self.ckpt = torch, ckpt
        self.Checkpointer, self.latest_step = ckpt.Checkpointer, ckpt.latest_step

    def step_dir(self, step: int) -> str:
        return f"step_{step:08d}"

    def temp_dir(self, step: int) -> str:
        return f".step_{step:08d}.tmp-abc123"      # an atomic_path directory of a killed save

    def fresh(self, seed: int = 0, config: BertConfig | None = None):
        from torchbert.model import BertForPreTraining
        self.torch.manual_seed(seed)
        model = BertForPreTraining(config or self.CFG)
        # The split a training loop uses: no weight decay on biases and LayerNorm.
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        opt = self.torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=1e-3, eps=1e-6)
        return model, opt

    def trained(self):
        return self.go_on(self.fresh(0), 0, 2)

    def go_on(self, state, start: int, n: int):
        """n training steps from step `start`: dropout on, reseeded per step as torchbert's loop
        does (so there is no RNG state to save)."""
        from bertcore.data.batches import step_seed
        from torchbert.model import pretraining_loss
        torch = self.torch
        model, opt = state
        model.train()
        for s in range(start, start + n):
            torch.manual_seed(step_seed(0, s))
            g = torch.Generator().manual_seed(s)
            ids = torch.randint(1, self.CFG.vocab_size, (4, 16), generator=g)
            pos = torch.stack([torch.randperm(15, generator=g)[:3] + 1 for _ in range(4)])
            b = dict(input_ids=ids, token_type_ids=torch.zeros_like(ids),
                     attention_mask=torch.ones_like(ids), masked_positions=pos,
                     masked_ids=torch.gather(ids, 1, pos), masked_weights=torch.ones(4, 3),
                     next_sentence_label=torch.tensor([0, 1, 0, 1]))
            mlm, nsp = model(b["input_ids"], b["token_type_ids"], b["attention_mask"],
                             b["masked_positions"])
            loss, _ = pretraining_loss(mlm, nsp, b)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return state

    def save(self, ck, step: int, state, extra: dict):
        return ck.save(step, *state, extra)

    def stored_extra(self, extra: dict) -> dict:
        return extra

    def restore(self, ck, target, step: int | None = None):
        return target, ck.restore(*target, step=step)

    def assert_same(self, a, b) -> None:
        """Weights, AdamW moments and step counts, and the param groups' hyper-parameters."""
        torch = self.torch
        (ma, oa), (mb, ob) = a, b
        for (k, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
            assert torch.equal(x, y), k
        for p, q in zip(ma.parameters(), mb.parameters()):
            sp, sq = oa.state[p], ob.state[q]
            assert set(sp) == {"step", "exp_avg", "exp_avg_sq"}
            for k in sp:
                assert torch.equal(sp[k], sq[k]), k
        assert ob.param_groups[1]["weight_decay"] == 0.0
        assert ob.param_groups[0]["betas"] == (0.9, 0.999)

    def corrupt_weights(self, path) -> str:
        """Flip bytes in a tensor; the message restore must give."""
        f = path / "model.safetensors"
        data = bytearray(f.read_bytes())
        data[-10:] = b"\xff" * 10
        f.write_bytes(bytes(data))
        return (rf"{re.escape(str(f))} is corrupt .*; delete {re.escape(str(path))} to resume "
                rf"from an earlier checkpoint .*--step N")

    def corrupt_metadata(self, path) -> str:
        (path / "state.json").write_text('{"format": "twinbert-torch-checkpoint/1", "step": ')
        return rf"{re.escape(str(path / 'state.json'))} is corrupt"

    def config_mismatch(self, path, saved: BertConfig, now: BertConfig) -> str:
        return (rf"checkpoint {re.escape(str(path))} was saved from a different model config "
                rf"\(hidden_size: checkpoint {saved.hidden_size} vs model {now.hidden_size}, "
                rf"intermediate_size.*layer_norm_position")

    def other_layout(self):
        """The same model with one AdamW param group instead of two."""
        model, _ = self.fresh(1)
        return (model, self.torch.optim.AdamW(model.parameters(), lr=1e-3)), \
            "optimizer parameter groups differ"

    def not_json_value(self):
        return self.torch.get_rng_state()


class JaxTwin:
    """jaxbert's checkpointer on a dict train state (params, optax AdamW state, step)."""

    # The same config as tests/test_jax_model.py: init_params compiles once per config and process.
    CFG = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64)
    not_json = "ArrayImpl"

    def __init__(self):
        import jax
        import jax.numpy as jnp
        import optax
        import jaxbert.checkpoint as ckpt
        self.jax, self.jnp, self.optax, self.ckpt = jax, jnp, optax, ckpt
        self.Checkpointer, self.latest_step = ckpt.Checkpointer, ckpt.latest_step
        self.tx = optax.adamw(1e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01)

        @jax.jit
        def step_fn(state):
            # A synthetic but state-dependent gradient: the checkpoint is what is under test
            # here, and this avoids compiling the model's backward pass.
            grads = jax.tree.map(lambda p: jnp.sin(p * 7.0 + state["step"]), state["params"])
            updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
            return {"params": optax.apply_updates(state["params"], updates),
                    "opt_state": opt_state, "step": state["step"] + 1}

        self.step_fn = step_fn
        self._trained = None

    def step_dir(self, step: int) -> str:
        return str(step)

    def temp_dir(self, step: int) -> str:
        return f"{step}.orbax-checkpoint-tmp-1234"   # orbax's directory of a killed save

    def fresh(self, seed: int = 0, config: BertConfig | None = None):
        # Another config's checkpoint is refused before any array is read: a state of CFG is
        # the target either way (and init compiles once).
        from jaxbert.model import init_params
        params = init_params(self.CFG, self.jax.random.PRNGKey(seed))
        return {"params": params, "opt_state": self.tx.init(params),
                "step": self.jnp.zeros((), self.jnp.int32)}

    def trained(self):
        if self._trained is None:
            self._trained = self.go_on(self.fresh(0), 0, 2)
        return self._trained

    def go_on(self, state, start: int, n: int):
        for _ in range(n):
            state = self.step_fn(state)
        return state

    def save(self, ck, step: int, state, extra: dict):
        return ck.save(step, state, extra)

    def stored_extra(self, extra: dict) -> dict:
        return dict(extra, model_config=self.CFG.to_dict())   # what restore compares

    def restore(self, ck, target, step: int | None = None):
        return ck.restore(target, step)

    def assert_same(self, a, b) -> None:
        """The whole state pytree bit for bit: params, AdamW moments (non-zero), step."""
        import numpy as np
        jax = self.jax
        la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
        assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
        for x, y in zip(la, lb):
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        mu = b["opt_state"][0].mu  # optax.adamw = chain(scale_by_adam, ...): AdamW moments
        assert np.abs(np.asarray(mu["cls"]["predictions"]["bias"])).sum() > 0
        assert int(a["step"]) == int(b["step"])

    def corrupt_weights(self, path) -> str:
        for f in (path / "state").rglob("*"):
            if f.is_file() and f.stat().st_size > 0:
                f.write_bytes(b"\0garbage" * 8)
        return rf"checkpoint {re.escape(str(path))} is corrupt"

    def corrupt_metadata(self, path) -> str:
        (path / "extra" / "metadata").write_text("{not json")
        return rf"checkpoint {re.escape(str(path))} is corrupt or unreadable"

    def config_mismatch(self, path, saved: BertConfig, now: BertConfig) -> str:
        return (rf"checkpoint {re.escape(str(path))} was written for another model config "
                rf"\(hidden_size: checkpoint {saved.hidden_size}, now {now.hidden_size}; "
                rf"intermediate_size.*layer_norm_position")

    def other_layout(self):
        """The same params with another optimizer's state (SGD: no moments)."""
        params = self.fresh(1)["params"]
        return ({"params": params, "step": self.jnp.zeros((), self.jnp.int32),
                 "opt_state": self.optax.sgd(0.1).init(params)},
                "does not match this run's training state")

    def not_json_value(self):
        return self.jax.random.PRNGKey(0)


_TWINS: dict[str, object] = {}


@pytest.fixture
def tw(twin):
    """The twin's adapter (made once per process: jax's trained state is reused)."""
    if twin not in _TWINS:
        _TWINS[twin] = TorchTwin() if twin == "torch" else JaxTwin()
    return _TWINS[twin]


def extra(step: int) -> dict:
    return {"step": step, "batches": {"epoch": 0, "position": 8 * step, "seed": 7},
            "tokens": [3, 1, 2], "lr": 0.5, "note": None}


def test_round_trip_continues_exactly(tw, tmp_path):
    trained = tw.trained()
    ck = tw.Checkpointer(tmp_path, tw.CFG, keep=3)
    path = tw.save(ck, 2, trained, extra(2))
    assert path == ck.path(2) == tmp_path / "checkpoints" / tw.step_dir(2)
    assert tw.latest_step(tmp_path) == ck.latest_step() == 2

    restored, got = tw.restore(tw.Checkpointer(tmp_path, tw.CFG), tw.fresh(1))  # other values
    assert got == tw.stored_extra(extra(2))
    tw.assert_same(trained, restored)
    # Three more steps from the original and from the copy: the same bits.
    tw.assert_same(tw.go_on(trained, 2, 3), tw.go_on(restored, 2, 3))


def test_keeps_the_newest_k(tw, tmp_path):
    trained = tw.trained()
    ck = tw.Checkpointer(tmp_path, tw.CFG, keep=2)
    for s in (1, 2, 3, 4):
        tw.save(ck, s, trained, {"s": s})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
        sorted([tw.step_dir(3), tw.step_dir(4)])
    assert tw.latest_step(tmp_path) == 4 and ck.steps() == [3, 4]
    assert tw.latest_step(tmp_path / "elsewhere") is None
    _, got = tw.restore(tw.Checkpointer(tmp_path, tw.CFG), tw.fresh(1), step=3)
    assert got["s"] == 3
    with pytest.raises(UserError, match=r"step 1 .*available: 3, 4" if tw.step_dir(1) == "1"
                       else rf"{tw.step_dir(1)} does not exist"):
        tw.restore(tw.Checkpointer(tmp_path, tw.CFG), tw.fresh(1), step=1)


def test_temp_dirs_are_ignored_then_swept(tw, tmp_path):
    """A killed save's temporary directory is no checkpoint; a reader leaves it (a writer may be
    at work), the next writer's save removes it, also after it resumed from a checkpoint."""
    trained = tw.trained()
    tw.save(tw.Checkpointer(tmp_path, tw.CFG), 1, trained, {"s": 1})
    stale = tmp_path / "checkpoints" / tw.temp_dir(2)
    (stale / "state").mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    assert tw.latest_step(tmp_path) == 1
    ck = tw.Checkpointer(tmp_path, tw.CFG)
    assert ck.steps() == [1]
    tw.restore(ck, tw.fresh(1))
    assert stale.is_dir()
    tw.save(ck, 3, trained, {"s": 3})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
        sorted([tw.step_dir(1), tw.step_dir(3)])


def test_missing_checkpoint_is_named(tw, tmp_path):
    assert tw.latest_step(tmp_path) is None
    with pytest.raises(UserError, match=f"no checkpoint in {tmp_path}"):
        tw.restore(tw.Checkpointer(tmp_path, tw.CFG), tw.fresh(1))
    assert not (tmp_path / "checkpoints").exists()     # looking created nothing
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match="no checkpoint in"):
        tw.restore(tw.Checkpointer(tmp_path, tw.CFG), tw.fresh(1))


def test_corrupt_checkpoint_is_named(tw, tmp_path):
    trained = tw.trained()
    ck = tw.Checkpointer(tmp_path, tw.CFG)
    one = tw.save(ck, 1, trained, {"s": 1})
    two = tw.save(ck, 2, trained, {"s": 2})
    message = tw.corrupt_weights(two)
    with pytest.raises(UserError, match=message):
        tw.restore(tw.Checkpointer(tmp_path, tw.CFG), tw.fresh(1))
    _, got = tw.restore(tw.Checkpointer(tmp_path, tw.CFG), tw.fresh(1), step=1)
    assert got["s"] == 1                                   # the earlier one still loads
    message = tw.corrupt_metadata(one)
    with pytest.raises(UserError, match=message):
        tw.restore(tw.Checkpointer(tmp_path, tw.CFG), tw.fresh(1), step=1)


def test_config_mismatch_names_the_fields(tw, tmp_path):
    path = tw.save(tw.Checkpointer(tmp_path, tw.CFG), 2, tw.trained(), {})
    other = tw.CFG.replace(hidden_size=2 * tw.CFG.hidden_size,
                           intermediate_size=2 * tw.CFG.intermediate_size,
                           layer_norm_position="pre")
    with pytest.raises(UserError, match=tw.config_mismatch(path, tw.CFG, other)):
        tw.restore(tw.Checkpointer(tmp_path, other), tw.fresh(1, other))


def test_another_state_layout_is_refused(tw, tmp_path):
    """Same config, another optimizer layout: one clear error, nothing loaded."""
    tw.save(tw.Checkpointer(tmp_path, tw.CFG), 1, tw.trained(), {})
    target, message = tw.other_layout()
    with pytest.raises(UserError, match=message):
        tw.restore(tw.Checkpointer(tmp_path, tw.CFG), target)


def test_extra_state_must_be_json(tw, tmp_path):
    with pytest.raises(TypeError, match=f"{tw.not_json} is not JSON serializable"):
        tw.save(tw.Checkpointer(tmp_path, tw.CFG), 1, tw.trained(), {"rng": tw.not_json_value()})
    assert tw.latest_step(tmp_path) is None                # nothing was written
