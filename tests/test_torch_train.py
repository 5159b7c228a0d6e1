"""What only torchbert's training has: DDP under torchrun equals one process, the step function
learns and memorises, and no host sync outside log and checkpoint steps. The command line's
behaviour shared with jaxbert is tested in test_train.py."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, base_args, build_shards, metrics, train_cli, write_corpus


@pytest.mark.slow
@pytest.mark.parametrize("nsp", [True, False], ids=["mlm+nsp", "mlm-only"])
def test_ddp_two_processes_equal_one_process(tmp_path, cache_env, nsp):
    """torchrun with 2 gloo ranks of B/2 rows == 1 process with B rows (dropout off), also
    MLM-only, where the pooler and NSP head are not run (DDP must not wait for them)."""
    corpus = write_corpus(tmp_path)
    common = ("--steps", "6", "--no-dropout", "--batch-size", "8", *([] if nsp else ["--no-nsp"]))
    one, two = tmp_path / "one", tmp_path / "two"
    train_cli("torch", *base_args(corpus, one, *common), env=cache_env)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **cache_env, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node", "2", "-m", "torchbert.train",
                        *base_args(corpus, two, *common)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = metrics(one), metrics(two)
    assert len(a) == len(b) == 6
    keys = ("loss", "mlm_loss", "grad_norm") + (("nsp_loss",) if nsp else ())
    assert all(("nsp_loss" in m) == nsp for m in a + b)
    for x, y in zip(a, b):
        for k in keys:
            assert abs(x[k] - y[k]) <= 1e-5 * max(1.0, abs(x[k])), (k, x[k], y[k])
    if not nsp:   # the unused heads were decayed identically: both runs saved the same pooler
        from safetensors.numpy import load_file
        w = [load_file(str(d / "checkpoints" / "step_00000006" / "model.safetensors"))
             for d in (one, two)]
        for k in ("bert.pooler.dense.weight", "cls.seq_relationship.weight"):
            assert np.allclose(w[0][k], w[1][k], rtol=0, atol=1e-7), k


def _direct_setup(tmp_path, **cfg):
    from bertcore.model.config import BertConfig, TrainConfig
    from bertcore.data.batches import BatchIterator
    from torchbert.model import BertForPreTraining
    from torchbert.optim import make_optimizer

    shards, tok = build_shards(tmp_path, n_docs=300, vocab_size=300)
    tcfg = TrainConfig(batch_size=16, seq_len=32, max_predictions=5, lr=1e-3, warmup_steps=10,
                       steps=300, **cfg)
    mcfg = BertConfig.from_preset("tiny", vocab_size=tok.vocab_size,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = BertForPreTraining(mcfg)
    return model, make_optimizer(model, tcfg), \
        BatchIterator(shards, tok, tcfg), tcfg


@pytest.mark.slow
def test_learns_and_memorises_one_batch(tmp_path):
    from bertcore.train.schedule import make_schedule
    from torchbert.step import train_step

    model, opt, it, cfg = _direct_setup(tmp_path)
    lr_at = make_schedule(cfg, 128)
    losses = []
    for step in range(cfg.steps):
        m = train_step(model, opt, next(it), float(lr_at(step)), cfg, torch.device("cpu"), 1)
        losses.append(float(m["mlm_loss"]))
    start, end = np.mean(losses[:5]), np.mean(losses[-20:])
    vocab = it.tok.vocab_size
    assert abs(start - np.log(vocab)) < 0.5, start          # starts near ln(vocab)
    assert end < start - 1.5, (start, end)                  # falls well below it
    # ...and below the unigram entropy of the corpus: it uses context, not just frequencies
    counts = np.bincount(np.asarray(it.shards.tokens), minlength=vocab)
    p = counts[counts > 0] / counts.sum()
    assert end < -(p * np.log(p)).sum() - 0.1, (end, -(p * np.log(p)).sum())

    model, opt, it, cfg = _direct_setup(tmp_path / "again", nsp=True)
    batch = next(it)
    for step in range(200):
        m = train_step(model, opt, batch, 1e-3, cfg, torch.device("cpu"), 1)
    assert float(m["mlm_accuracy"]) > 0.95, float(m["mlm_accuracy"])


def test_no_host_sync_except_at_log_and_checkpoint_steps(tmp_path, cache_env, monkeypatch):
    """On a GPU every read of a device value (.item(), float(), .tolist(), bool(), .numpy(),
    .cpu()) waits for the queued work. train_step makes none; the loop reads the metrics once,
    through global_metrics, at log and checkpoint steps only."""
    import torchbert.parallel as tp
    from bertcore.model.config import BertConfig, TrainConfig
    from bertcore.data.batches import BatchIterator
    from torchbert.model import BertForPreTraining
    from torchbert.optim import make_optimizer
    from torchbert.step import to_device, train_step
    from torchbert.train import main

    for k, v in cache_env.items():
        monkeypatch.setenv(k, v)
    shards, tok = build_shards(tmp_path, n_docs=100, vocab_size=300)
    cfg = TrainConfig(batch_size=8, seq_len=32, max_predictions=5, grad_accum=2)
    model = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=tok.vocab_size))
    opt, it, cpu = make_optimizer(model, cfg), BatchIterator(shards, tok, cfg), torch.device("cpu")
    reads = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy", "cpu"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _r=real, _n=name, **k:
                            reads.append(_n) or _r(self, *a, **k))
    for _ in range(3):     # the first step creates AdamW's state, the next ones reuse it
        train_step(model, opt, to_device(next(it), cpu), 1e-3, cfg, cpu, 1)
    assert reads == [], reads
    monkeypatch.undo()

    for k, v in cache_env.items():
        monkeypatch.setenv(k, v)
    calls = []
    real_global = tp.global_metrics
    monkeypatch.setattr(tp, "global_metrics", lambda m, w: calls.append(1) or real_global(m, w))
    corpus = write_corpus(tmp_path)
    args = base_args(corpus, tmp_path / "run", "--steps", "12", "--log-every", "4",
                     "--checkpoint-every", "6")
    assert main(args) == 0       # the CLI, in this process
    assert len(calls) == len({4, 6, 8, 12}), calls   # log steps 4, 8, 12; checkpoint 6 and 12

