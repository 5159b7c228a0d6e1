"""Train a few steps in each jaxbert layout (single, pmap, sharded) on the prepared data in
argv[1] (with its tokenizer/) and print, as one JSON line per --parallel layout, whether each step
donated the old state's buffers, whether each batch arrived already placed on the devices,
and how many times the step was traced. Run with 4 CPU devices (XLA_FLAGS)."""

import functools
import json
import sys

import jax

from bertcore.model.config import BertConfig, TrainConfig
from bertcore.data.batches import BatchIterator
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
for parallel in ("single", "pmap", "sharded"):
    layout = Layout(parallel, cfg, functools.partial(train_step, model=BertForPreTraining(mcfg),
                                                     tx=tx, cfg=cfg))
    state = layout.put_state(create_state(init_params(mcfg, jax.random.PRNGKey(0)), tx))
    key = layout.put_key(jax.random.PRNGKey(1))
    donated, placed = [], []
    with Prefetch(BatchIterator(shards, tok, cfg), layout.put_batch) as batches:
        for _ in range(cfg.steps):
            batch = next(batches)
            # already on the devices, in the layout's sharding, before the step asks for it
            placed.append(all(isinstance(v, jax.Array) and len(v.devices()) ==
                              (1 if parallel == "single" else 4) for v in batch.values()))
            old = jax.tree_util.tree_leaves(state.params)
            state, metrics = layout.fn(state, batch, key)
            donated.append(all(x.is_deleted() for x in old))
        jax.block_until_ready(metrics)
    out[parallel] = {"donated": donated, "placed": placed, "traces": layout.traces}
print(json.dumps(out))
