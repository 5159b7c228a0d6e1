"""`python -m jaxbert.classify train|evaluate|predict`: fine-tune BERT, ModernBERT or
ELECTRA (its discriminator) for sequence classification or regression, of single texts or
sentence pairs, with JAX/Flax (the twin of torchbert/classify.py).

Flags, data, batches, metrics, best/ and the RUNDIR are bertcore's (bertcore.classify: cli, data,
run), and so is the loop (bertcore.train.loop, pretraining's own), shared with torchbert; this
file fills the loop's `Twin` with what is JAX: reading the pretrained weights, one jitted AdamW
step (optax), jitted logits, and jaxbert's orbax checkpoints. The model is
jaxbert/classifier.py's, of the config's architecture (arch.py).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bertcore.classify import cli as classify
from bertcore.classify.data import Classifier, open_classifier
from bertcore.classify.run import ClassifyRun
from bertcore.infra.errors import cli_entry
from bertcore.model.hf import classifier_flax_to_hf, classifier_hf_to_flax, classifier_param_table
from bertcore.train.loop import Result, Twin, train_loop
from bertcore.train.stopping import Stopper, run_train

from .arch import classifier_model
from .checkpoint import Checkpointer
from .classifier import sequence_loss
from .optim import adamw
from .pretrained import pretrained_weights
from .runtime import compute_dtype, configure_process
from .step import TrainState, create_state, seed_keys


def train_step(state: TrainState, batch: dict, dropout_key: jax.Array, *, model, tx, loss
               ) -> tuple[TrainState, jax.Array]:
    """One AdamW update of `loss` (classifier.py's sequence_loss); pure, jitted. Dropout masks
    come from (key, step), so a resumed run draws the same ones (torch reseeds its generator
    from (seed, step) instead)."""
    key = jax.random.fold_in(dropout_key, state.step)

    def loss_fn(params):
        logits = model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                             batch["attention_mask"], deterministic=False, rngs={"dropout": key})
        return loss(logits, batch["labels"])

    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss


def logits_fn(model):
    """Jitted logits [B, num_labels] (dropout off) as a numpy function of (params, batch)."""
    apply = jax.jit(lambda params, ids, types, mask: model.apply({"params": params}, ids, types,
                                                                   mask))
    return lambda params, b: np.asarray(apply(params, b["input_ids"], b["token_type_ids"],
                                              b["attention_mask"]), np.float32)


class ClassifierTwin(Twin):
    """What bertcore.train.loop.train_loop asks of JAX to fine-tune a classifier: one jitted
    AdamW step, logits, the weights and checkpoints (torchbert/classify.py's ClassifierTwin
    mirrors it)."""

    prog = "python -m jaxbert.classify"
    compiles = True   # the first step compiles: the loop times it apart

    def __init__(self, run: ClassifyRun, state: dict[str, np.ndarray] | None):
        self.run, n, mcfg = run, len(run.labels), run.model_config
        self.model = classifier_model(mcfg, n, dtype=compute_dtype("auto"))
        # AdamW with bertcore's weight-decay rule and the fine-tuning schedule, after global-norm
        # clipping, as in pretraining (torch: torchbert.optim's make_optimizer + clip_grad_norm,
        # the rate set by the loop each step).
        self.tx = adamw(run.classify_config, run.classify_config.lr_at(run.total_steps))
        if state is not None:
            params = jax.tree_util.tree_map(jnp.asarray, classifier_hf_to_flax(state, mcfg, n))
            self.train_state = create_state(params, self.tx)
        else:    # --resume: only the structure (shapes, no arrays); the checkpoint fills it
            zeros = {p.hf_name: np.zeros(p.hf_shape, np.float32)
                     for p in classifier_param_table(mcfg, n)}
            self.train_state = jax.eval_shape(lambda p: create_state(p, self.tx),
                                              classifier_hf_to_flax(zeros, mcfg, n))
        self.dropout_key = seed_keys(run.classify_config.seed)[1]
        self.step_fn = jax.jit(functools.partial(train_step, model=self.model, tx=self.tx,
                                                 loss=sequence_loss(run.labels.regression)),
                               donate_argnums=(0,))
        self.apply = logits_fn(self.model)
        self.ckpt = Checkpointer(run.rundir, run.model_config, keep=1)

    def step(self, step: int, batch: dict[str, np.ndarray], lr: float) -> dict[str, Any]:
        # lr is for the log only: optax computes the same rate from its own update count.
        self.train_state, loss = self.step_fn(self.train_state, batch, self.dropout_key)
        return {"loss": loss}

    def wait(self, metrics: dict[str, Any]) -> None:
        jax.block_until_ready(metrics)

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.apply(self.train_state.params, batch)

    def weights(self) -> dict[str, np.ndarray]:
        params = jax.tree_util.tree_map(np.asarray, self.train_state.params)
        return classifier_flax_to_hf(params, self.run.model_config, len(self.run.labels))

    def save(self, step: int, extra: dict[str, Any]) -> None:
        self.ckpt.save(step, self.train_state, extra)

    def restore(self) -> dict[str, Any]:
        state, extra = self.ckpt.restore(self.train_state)
        self.train_state = jax.tree_util.tree_map(jnp.asarray, state)
        return extra


def load_classifier(clf: Classifier):
    """(model, params) of a trained classifier (framework-free weights from open_classifier)."""
    model = classifier_model(clf.config, len(clf.labels), dtype=compute_dtype("auto"))
    params = classifier_hf_to_flax(clf.state, clf.config, len(clf.labels))
    return model, jax.tree_util.tree_map(jnp.asarray, params)


def train(args, argv: list[str], stopper: Stopper) -> Result:
    run = ClassifyRun(args, "jax")
    state = None if run.resume else run.initial_state(pretrained_weights(run.src))
    twin = ClassifierTwin(run, state)
    resumed = run.begin(twin)
    return train_loop(run, twin, stopper, resumed=resumed, stop_after=run.stop_after, argv=argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """train: exit 0 (done, or --time-budget reached), 75 (stopped by a signal, with a
    checkpoint), 74 (a checkpoint could not be written), 2 (a usage error); evaluate, predict:
    0 or 2."""
    args = classify.parser("jax").parse_args(argv)
    configure_process()     # before JAX starts its backend
    if args.cmd == "train":
        return run_train(train, args, argv)
    clf = open_classifier(args.model)
    model, params = load_classifier(clf)
    apply = logits_fn(model)
    command = classify.run_evaluate if args.cmd == "evaluate" else classify.run_predict
    command(args, clf, lambda batch: apply(params, batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
