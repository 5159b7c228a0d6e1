"""Shared set-up of the agreement checks: presets, the Case under test, both twins built from it.

A Case is one configuration (preset and variant: BERT post-LN or pre-LN, ModernBERT, or ELECTRA):
configs, a synthetic corpus with its tokenizer and shards, the batches of every step and torch's
one initialisation (HF names). The builders here turn it into a torch model and optimizer, jax
parameters and train state, and run either twin's own train_step over the Case's batches.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bertcore.model.config import (BertConfig, ElectraConfig, ModelConfig, ModernBertConfig,
                                   TrainConfig, special_ids)
from bertcore.data.batches import BatchIterator, step_seed
from bertcore.data.prepare import prepare
from bertcore.data.shards import Shards
from bertcore.data.tokenizer import train_tokenizer
from bertcore.infra.errors import UserError
from bertcore.model.hf import hf_to_flax
from bertcore.train.rundir import trained_model_config
from bertcore.train.schedule import make_schedule

CPU = torch.device("cpu")
PRESETS = {  # batch shapes per preset: quick on a 2-core CPU, big enough to mean something
    "tiny": dict(batch_size=8, seq_len=64, max_predictions=10),
    "mini": dict(batch_size=8, seq_len=64, max_predictions=10),
}

# Full fp32 matmuls in XLA. At DEFAULT precision XLA may run fp32 dots in reduced precision
# (bf16 passes on TPU, TF32 on recent GPUs); "highest" makes the comparison measure the model, not
# the matmul unit. (On CPU it changes nothing today; it keeps the check honest anywhere.) Applied
# only while the checks run (each row function is wrapped in `highest_precision`), never at
# import: a global jax.config.update would change jax for any process (or pytest worker) that
# imports parity.
MATMUL_PRECISION = "highest"


def highest_precision(fn):
    """`fn` run under jax.default_matmul_precision(MATMUL_PRECISION), restored afterwards."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.default_matmul_precision(MATMUL_PRECISION):
            return fn(*args, **kwargs)
    return wrapper


# ---- data: a synthetic corpus, tokenizer and batches ---------------------------------------------

def synthetic_documents(n_docs: int = 400, seed: int = 0) -> list[str]:
    """Zipf-distributed pseudo-words with per-document topics (so NSP has something to learn)."""
    rng = np.random.default_rng(seed)
    syll = "ka lo mi ne ru ta po si ve do gu ha ji be fo wa zu xe qi yo".split()
    words = sorted({"".join(rng.choice(syll, rng.integers(1, 4))) for _ in range(800)})
    p = 1.0 / np.arange(1, len(words) + 1)
    docs = []
    for _ in range(n_docs):
        topic = rng.choice(len(words), 60, replace=False)
        pool, w = np.concatenate([topic, np.arange(30)]), np.concatenate([p[topic] * 8, p[:30]])
        sents = [" ".join(words[i] for i in rng.choice(pool, rng.integers(4, 20), p=w / w.sum()))
                 .capitalize() + "." for _ in range(rng.integers(4, 12))]
        docs.append(" ".join(sents))
    return docs


# What a Case can be: BERT with either LayerNorm position, ModernBERT (pre-norm by design), or
# ELECTRA (generator + discriminator, post-LN BERT layers).
VARIANTS = ("post", "pre", "modernbert", "electra")


@dataclass
class Case:
    """One configuration under test: configs, data, the batches of every step, the init."""
    preset: str
    layer_norm_position: str  # the variant: "post", "pre" (BERT), "modernbert" or "electra"
    config: ModelConfig       # as RUNDIR/config.json would hold it (BERT: dropout 0.1)
    train: TrainConfig        # dropout off
    workdir: Path
    tokenizer: Any
    shards: Shards
    batches: list[dict[str, np.ndarray]]
    batch_states: list[dict]  # batch_states[k]: the iterator's state after k batches
    init: dict[str, np.ndarray]   # torch's initial weights, HF names

    @property
    def model_config(self) -> ModelConfig:   # what the twins build (dropout zeroed)
        return trained_model_config(self.config, self.train)

    @property
    def modern(self) -> bool:
        return isinstance(self.config, ModernBertConfig)

    @property
    def electra(self) -> bool:
        return isinstance(self.config, ElectraConfig)

    def with_dropout(self) -> tuple[ModelConfig, TrainConfig]:
        train = self.train.replace(dropout=True)
        config = self.config
        if self.modern:   # ModernBERT's published rates are 0: give the dropout rows some
            config = config.replace(attention_dropout=0.1, embedding_dropout=0.1,
                                    mlp_dropout=0.1)
        return trained_model_config(config, train), train


@functools.lru_cache(maxsize=4)
def _data(preset: str, workdir: str, seed: int):
    docs = synthetic_documents(400 if preset == "tiny" else 800, seed)
    tok = train_tokenizer(docs, 512)
    data = Path(workdir) / f"data-{preset}-{seed}"
    prepare(docs, tok, data, source="parity-synthetic", progress=False)
    return tok, Shards(data, tok)


def make_case(preset: str, layer_norm_position: str, workdir: Path, steps: int = 100,
              seed: int = 0) -> Case:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if layer_norm_position not in VARIANTS:
        raise UserError(f"unknown variant {layer_norm_position!r}; choose one of "
                        f"{', '.join(VARIANTS)}")
    tok, shards = _data(preset, str(workdir), seed)
    if layer_norm_position == "modernbert":
        # A window of 16 tokens (|i - j| <= 8) on sequences of 64, and three layers (global,
        # local, global at global_attn_every_n_layers=2): both kinds of layer and both RoPE
        # thetas are exercised, and the window binds.
        config = ModernBertConfig.from_preset(
            preset, vocab_size=tok.vocab_size, max_position_embeddings=128, local_attention=16,
            num_hidden_layers=3, global_attn_every_n_layers=2, **special_ids(tok))
    elif layer_norm_position == "electra":
        # Embeddings half as wide as the discriminator (ELECTRA-Small: 128 under 256), so both
        # models project them (embeddings_project); the generator a quarter as wide (the paper's
        # default), one head, as deep.
        hidden = ElectraConfig.from_preset(preset).hidden_size
        config = ElectraConfig.from_preset(preset, vocab_size=tok.vocab_size,
                                           max_position_embeddings=128,
                                           embedding_size=hidden // 2, pad_token_id=tok.pad_id)
    else:
        config = BertConfig.from_preset(preset, vocab_size=tok.vocab_size,
                                        max_position_embeddings=128,
                                        layer_norm_position=layer_norm_position)
    # Warmup 5 then linear decay; weight decay 0.1 so a wrongly decayed LayerNorm scale (1.0)
    # moves by lr * 0.1 = 2e-5 in the first step, far above the 1e-6 AdamW-step bar.
    objective = {"nsp": layer_norm_position in ("post", "pre")}
    if layer_norm_position == "electra":   # google-research/electra's masking: 85/0/15
        objective.update(objective="electra", mask_replace_prob=0.85, random_replace_prob=0.0)
    train = TrainConfig(**PRESETS[preset], steps=steps, lr=1e-3, warmup_steps=5,
                        weight_decay=0.1, grad_clip=1.0, dropout=False, seed=seed,
                        keep_checkpoints=1, **objective)
    it = BatchIterator(shards, tok, train)
    batches, states = [], [it.state()]
    for _ in range(steps):
        batches.append(next(it))
        states.append(it.state())
    torch.manual_seed(seed)
    from torchbert.arch import pretraining_model
    init = {k: v.detach().numpy().copy()
            for k, v in pretraining_model(trained_model_config(config, train))
            .hf_state_dict().items()}
    return Case(preset, layer_norm_position, config, train, Path(workdir), tok, shards, batches,
                states, init)


# ---- the twins, built from the same weights ------------------------------------------------------

def torch_model(config: ModelConfig, weights: dict[str, np.ndarray]):
    from torchbert.arch import pretraining_model
    m = pretraining_model(config)
    m.load_hf_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return m


def jax_params(config: ModelConfig, weights: dict[str, np.ndarray]):
    return jax.tree_util.tree_map(jnp.asarray, hf_to_flax(weights, config))


def torch_batch(batch) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


@functools.lru_cache(maxsize=8)
def jax_layout(config: ModelConfig, train: TrainConfig, dtype: str = "fp32"):
    """jaxbert's own optimizer and jitted train_step (cached per config: compiled once);
    `dtype` "bf16" computes in bfloat16 as `--dtype bf16` does."""
    from jaxbert.arch import pretraining_model
    from jaxbert.optim import make_optimizer
    from jaxbert.parallel import Layout
    from jaxbert.step import train_step
    model = pretraining_model(config, dtype=jnp.bfloat16 if dtype == "bf16" else jnp.float32)
    tx = make_optimizer(train, config.hidden_size)
    return tx, Layout("single", train, functools.partial(train_step, model=model, tx=tx,
                                                         cfg=train))


# ---- optimizer and training, through each twin's own train_step ----------------------------------

def torch_setup(case: Case, train: TrainConfig, config: ModelConfig, weights=None):
    from torchbert.optim import make_optimizer
    model = torch_model(config, case.init if weights is None else weights).train()
    return model, make_optimizer(model, train)


def torch_steps(case: Case, model, optimizer, train: TrainConfig, start: int, stop: int,
                hook=None, dtype: str = "fp32") -> list[float]:
    """Steps start+1..stop, exactly as torchbert.train's loop does them."""
    from torchbert.step import train_step
    lr_at = make_schedule(train, model.config.hidden_size)
    losses = []
    for step in range(start + 1, stop + 1):
        torch.manual_seed(step_seed(train.seed, step, 0))    # this step's dropout masks
        m = train_step(model, optimizer, case.batches[step - 1], float(lr_at(step - 1)), train,
                       CPU, 1, dtype)
        losses.append(float(m["loss"]))
        if hook:
            hook(step)
    return losses


def jax_setup(case: Case, train: TrainConfig, config: ModelConfig, dtype: str = "fp32"):
    from jaxbert.step import create_state, seed_keys
    tx, layout = jax_layout(config, train, dtype)
    key = seed_keys(train.seed)[1]
    return layout.put_state(create_state(jax_params(config, case.init), tx)), layout, key


def jax_steps(case: Case, state, layout, key, start: int, stop: int, hook=None):
    losses = []
    for step in range(start + 1, stop + 1):
        state, m = layout.fn(state, layout.put_batch(case.batches[step - 1]), key)
        losses.append(float(m["loss"]))
        if hook:
            hook(step, state)
    return state, losses
