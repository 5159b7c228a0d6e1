"""One jaxbert training step and the held-out evaluation, as pure functions of an explicit
state, without the loop around them (jaxbert/train.py) or the device layout (jaxbert/parallel.py):

    train_step(state, batch, dropout_key) -> (state, metrics)

jitted or pmapped by parallel.Layout. (The twin of torchbert/step.py, where the state lives in
the model and the optimizer.)
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from bertcore.model.config import BertConfig, TrainConfig
from bertcore.train import evaluation

from .arch import init_params
from .electra import electra_loss
from .model import pretraining_loss
from .optim import make_optimizer


class TrainState(struct.PyTreeNode):
    """Everything that changes during training, as one pytree (checkpointed by orbax).
    torch keeps the same three things in `model`, `optimizer` and the loop's `step`."""
    step: jax.Array
    params: Any
    opt_state: Any


def create_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init key, dropout key) of a run: the only place a jaxbert run's keys come from its seed
    (torch has no key: it reseeds per step from bertcore.data.batches.step_seed)."""
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, dropout_key


def abstract_state(config: BertConfig, cfg: TrainConfig) -> TrainState:
    """The TrainState `train` builds, shapes and dtypes only (eval_shape runs no initialiser):
    the target a checkpoint is restored into (fill-mask, parity.convert)."""
    tx = make_optimizer(cfg, config.hidden_size)
    return jax.eval_shape(lambda: create_state(init_params(config, jax.random.PRNGKey(0)), tx))


def train_step(state: TrainState, batch: dict, dropout_key: jax.Array, *, model, tx, cfg,
               axis_name: str | None = None) -> tuple[TrainState, dict]:
    """One AdamW update on a batch laid out as [grad_accum, rows, ...].

    Pure: jit/pmap it. Under pmap (`axis_name`), each device holds its rows and gradients and
    metrics are summed over devices; losses are normalised by the global number of predictions
    either way, so every layout computes the gradient of the one global batch.
    """
    mlm_den = jnp.maximum(batch["masked_weights"].sum(), 1.0)
    if axis_name:
        mlm_den = jnp.maximum(jax.lax.psum(batch["masked_weights"].sum(), axis_name), 1.0)
    nsp_den = float(cfg.batch_size)
    tok_den = None
    if cfg.objective == "electra":   # the discriminator's loss: a mean over real tokens
        tok_den = batch["attention_mask"].sum().astype(jnp.float32)
        tok_den = jnp.maximum(jax.lax.psum(tok_den, axis_name) if axis_name else tok_den, 1.0)
    # Dropout masks depend only on (seed, step, device): torch mirrors this by reseeding
    # its generator from (seed, step, rank) every step.
    key = jax.random.fold_in(dropout_key, state.step)
    if axis_name:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))

    def micro_step(carry, inputs):
        grads_sum, metrics_sum = carry
        mb, i = inputs

        def loss_fn(params):
            return forward_loss(model, params, mb, cfg, mlm_den, nsp_den, tok_den,
                                deterministic=not cfg.dropout,
                                rngs={"dropout": jax.random.fold_in(key, i)})

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        add = functools.partial(jax.tree_util.tree_map, jnp.add)
        return (add(grads_sum, grads), add(metrics_sum, metrics)), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    metric_zeros = {k: jnp.zeros((), jnp.float32) for k in metric_names(cfg)}
    steps = jnp.arange(batch["input_ids"].shape[0])
    (grads, metrics), _ = jax.lax.scan(micro_step, (zeros, metric_zeros), (batch, steps))
    if axis_name:
        grads = jax.lax.psum(grads, axis_name)
        metrics = jax.lax.psum(metrics, axis_name)
    metrics["grad_norm"] = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def forward_loss(model, params, mb: dict, cfg: TrainConfig, mlm_den, nsp_den, tok_den=None, *,
                 deterministic: bool = True, rngs=None):
    """The model's forward and its objective's loss on one micro-batch: MLM (+ NSP) for BERT and
    ModernBERT, replaced-token detection for ELECTRA (electra.py; `tok_den`: real tokens).
    Torch twin: step.py's function of the same name."""
    if cfg.objective == "electra":
        outputs = model.apply(
            {"params": params}, mb["input_ids"], mb["token_type_ids"], mb["attention_mask"],
            mb["masked_positions"], mb["masked_ids"], mb["masked_weights"], mb["sample_seeds"],
            deterministic=deterministic, rngs=rngs)
        return electra_loss(*outputs, mb, mlm_den, tok_den, cfg.disc_weight)
    mlm_logits, nsp_logits = model.apply(
        {"params": params}, mb["input_ids"], mb["token_type_ids"], mb["attention_mask"],
        mb["masked_positions"], deterministic=deterministic, nsp=cfg.nsp, rngs=rngs)
    return pretraining_loss(mlm_logits, nsp_logits, mb, mlm_den, nsp_den, nsp=cfg.nsp)


def metric_names(cfg: TrainConfig) -> list[str]:
    """The metrics a step returns (the scan over micro-batches starts them at zero)."""
    if cfg.objective == "electra":
        return ["mlm_loss", "mlm_accuracy", "disc_loss", "disc_accuracy", "disc_replaced",
                "disc_predicted", "disc_tp", "loss"]
    return ["mlm_loss", "mlm_accuracy", "loss"] + (["nsp_loss", "nsp_accuracy"] if cfg.nsp
                                                   else [])


def eval_step(params, batch: dict, mlm_den, nsp_den, tok_den=None, *, model, cfg) -> dict:
    """Metrics of one fixed eval batch (bertcore.train.evaluation), dropout off; the denominators
    are the totals over all eval batches, so the batches' metrics add up. Pure: jit it."""
    return forward_loss(model, params, batch, cfg, mlm_den, nsp_den, tok_den)[1]


def evaluate(eval_fn, params, batches: list[dict]) -> dict[str, Any]:
    """The eval line over the fixed batches: every process evaluates all of them (the same
    numbers everywhere), as each torchbert rank does."""
    mlm_den, nsp_den = evaluation.denominators(batches)
    tok_den = evaluation.token_denominator(batches)
    rows = [eval_fn(params, b, mlm_den, nsp_den, tok_den) for b in batches]
    return evaluation.eval_row(evaluation.sum_metrics(jax.device_get(rows)))
