"""torchbert.checkpoint's own: its files (safetensors with HF and parameter names, state.json),
a failed write, each file missing or corrupt, a model of another config, restoring the model
alone, an older checkpoint's rng file. What both twins' checkpoints promise (round trip, keeping
the newest k, temp directories, missing/corrupt/mismatched checkpoints, JSON extra state) is
tests/test_checkpoint.py's."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import torchbert.checkpoint as ckpt
from bertcore.model.config import BertConfig
from bertcore.data.batches import step_seed
from bertcore.infra.errors import UserError
from torchbert.checkpoint import Checkpointer, latest_step
from torchbert.model import BertForPreTraining, pretraining_loss

CFG = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=32)


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = BertForPreTraining(CFG)
    # The split a training loop uses: no weight decay on biases and LayerNorm.
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, eps=1e-6)
    return model, opt


def batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(1, CFG.vocab_size, (4, 16), generator=g)
    pos = torch.stack([torch.randperm(15, generator=g)[:3] + 1 for _ in range(4)])
    return dict(input_ids=ids, token_type_ids=torch.zeros_like(ids),
                attention_mask=torch.ones_like(ids), masked_positions=pos,
                masked_ids=torch.gather(ids, 1, pos), masked_weights=torch.ones(4, 3),
                next_sentence_label=torch.tensor([0, 1, 0, 1]))


def train(model, opt, steps: range) -> None:
    model.train()   # dropout on, reseeded per step as torchbert's loop does: no RNG state to save
    for s in steps:
        torch.manual_seed(step_seed(0, s))
        b = batch(s)
        mlm, nsp = model(b["input_ids"], b["token_type_ids"], b["attention_mask"],
                         b["masked_positions"])
        loss, _ = pretraining_loss(mlm, nsp, b)
        opt.zero_grad()
        loss.backward()
        opt.step()


def extra(step: int) -> dict:
    return {"step": step, "data": {"epoch": 0, "index": 8 * step, "seed": 7},
            "tokens": [3, 1, 2], "lr": 0.5, "note": None}


def assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k



def test_files_use_hf_and_parameter_names(tmp_path):
    model, opt = make()
    train(model, opt, range(1))
    path = Checkpointer(tmp_path, CFG, keep=1).save(1, model, opt, {})
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors",
                                                      "optimizer.safetensors", "state.json"]
    with safe_open(path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert keys == set(model.hf_state_dict())
    assert "cls.predictions.decoder.weight" not in keys        # tied: stored once
    with safe_open(path / "optimizer.safetensors", "pt") as f:
        keys = set(f.keys())
    name = "bert.embeddings.word_embeddings.weight"
    assert {f"exp_avg/{name}", f"exp_avg_sq/{name}", f"step/{name}"} <= keys
    assert len(keys) == 3 * len(list(model.parameters()))
    state = json.loads((path / "state.json").read_text())
    assert state["step"] == 1 and state["config"]["hidden_size"] == 32
    assert state["optimizer"]["param_groups"][0]["params"][0] == name



def test_a_step_without_state_json_is_incomplete(tmp_path):
    model, opt = make()
    Checkpointer(tmp_path, CFG).save(5, model, opt, {})
    (tmp_path / "checkpoints" / "step_00000007").mkdir()      # no state.json: not complete
    assert latest_step(tmp_path) == 5


def test_exception_during_write_keeps_previous(tmp_path, monkeypatch):
    model, opt = make()
    ck = Checkpointer(tmp_path, CFG, keep=3)
    good = ck.save(1, model, opt, {"n": 1})
    real_save = ckpt.save_file

    def failing(tensors, filename, metadata=None):
        if filename.endswith("optimizer.safetensors"):
            raise OSError("disk full")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", failing)
    for step in (2, 1):                        # a new step, and overwriting the existing one
        with pytest.raises(OSError, match="disk full"):
            ck.save(step, model, opt, {"n": 2})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [good.name]
    assert latest_step(tmp_path) == 1
    assert ck.restore(*make(1)) == {"n": 1}


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    model, opt = make()
    ck = Checkpointer(tmp_path, CFG)
    path = ck.save(3, model, opt, extra(3))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    data = bytearray((path / "model.safetensors").read_bytes())
    data[-10:] = b"\xff" * 10                                  # flipped bytes in a tensor
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"model.safetensors is corrupt .*; delete {path} to "
                                        rf"resume from an earlier checkpoint .*--step N"):
        ck.restore(model, opt)
    (path / "model.safetensors").write_bytes(b"\x00\x01")      # not safetensors at all
    with pytest.raises(UserError, match="model.safetensors"):
        ck.restore(model, opt, step=3)
    for k, v in model.state_dict().items():                     # nothing was changed
        assert torch.equal(v, before[k]), k

    (path / "optimizer.safetensors").unlink()
    with pytest.raises(UserError, match="optimizer.safetensors is missing"):
        ck.restore(model, opt)
    (path / "state.json").write_text('{"format": "twinbert-torch-checkpoint/1", "step": ')
    with pytest.raises(UserError, match="state.json is corrupt"):
        ck.restore(model, opt, step=3)
    with pytest.raises(UserError, match="step_00000099 does not exist"):
        ck.restore(model, opt, step=99)
    with pytest.raises(UserError, match=f"no checkpoint in {tmp_path / 'elsewhere'}"):
        Checkpointer(tmp_path / "elsewhere", CFG).restore(model, opt)


def test_a_model_of_another_config_is_a_bug(tmp_path):
    # torch's restore takes the model: one built from another config than the Checkpointer's is
    # the caller's mistake, not the checkpoint's (tests/test_checkpoint.py has a config mismatch).
    model, opt = make()
    Checkpointer(tmp_path, CFG).save(1, model, opt, {})
    other = BertForPreTraining(CFG.replace(hidden_size=64, layer_norm_position="pre"))
    with pytest.raises(ValueError, match="another config"):
        Checkpointer(tmp_path, CFG).restore(other)


def test_restore_without_optimizer_loads_the_model(tmp_path):
    model, opt = make()
    train(model, opt, range(1))
    ck = Checkpointer(tmp_path, CFG)
    ck.save(1, model, opt, {})
    copy, _ = make(1)
    ck.restore(copy)                                           # model only: fine
    assert_same(model, copy)



def test_older_checkpoint_with_rng_file_loads(tmp_path):
    # Checkpoints written before the loop stopped saving RNG state hold an rng.safetensors (with
    # no tensors in it) and its checksum; loading ignores the file, whatever is in it.
    model, opt = make()
    train(model, opt, range(1))
    ck = Checkpointer(tmp_path, CFG)
    path = ck.save(1, model, opt, extra(1))
    ckpt.save_file({}, str(path / "rng.safetensors"), metadata={"format": "pt"})
    state = json.loads((path / "state.json").read_text())
    state["sha256"]["rng.safetensors"] = ckpt._sha256(path / "rng.safetensors")
    (path / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    copy, copy_opt = make(1)
    assert ck.restore(copy, copy_opt) == extra(1)
    assert_same(model, copy)
    (path / "rng.safetensors").write_bytes(b"anything")
    assert ck.restore(copy, copy_opt) == extra(1)
