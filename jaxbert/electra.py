"""ELECTRA's replaced-token detection in JAX/Flax linen: the twin of `torchbert/electra.py`.

ELECTRA (Clark et al., ICLR 2020) trains the encoder on every token, not the 15% MLM predicts:
a small generator fills the masked slots with tokens sampled from its MLM softmax, and the
encoder (the discriminator) learns to tell each token of the corrupted sequence as original or
replaced. Both models are BERT encoders (model.py's layers, under transformers' `electra/`
names) that share one embedding block of width `embedding_size`, each projecting it to its own
hidden size (`embeddings_project`) where they differ.

    masked batch -> generator (MLM at the masked slots) -> sample (no gradient) -> corrupted ids
                 -> discriminator (a logit per token)   -> loss = MLM + disc_weight x BCE

The same classes as the torch twin, in the same order. Where the twins differ: the generator
inside the pair gets the discriminator's embedding *module* as a call argument (Flax shares a
module by passing it; torch passes it the same way), and the sample's hash runs on uint32 here
(torch: int32 holding the same bits, its shifts masked). Shapes as in torchbert/electra.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertcore.infra.errors import UserError
from bertcore.model.config import ElectraConfig
from bertcore.model.hf import (check_electra_state, electra_model_table, electra_split,
                               flax_to_hf, normalize_hf_names, save_hf_directory, table_to_flax,
                               table_to_hf, unflatten, flatten)
from bertcore.model.sampling import MUL_A, MUL_B, UNIFORM_BITS

from .model import (BertEmbeddings, BertEncoder, _Module, add_bias, gelu, load_hf_directory,
                    merge_hf_params, pretraining_loss, read_hf_weights, tied_logits)

Dtype = Any
logger = logging.getLogger(__name__)

# ELECTRA's embeddings are BERT's at width embedding_size (BertEmbeddings reads that field).
ElectraEmbeddings = BertEmbeddings


class ElectraModel(_Module):
    """Embeddings (projected to H where E != H), then BERT's encoder; no pooler. Returns the
    sequence output (B, L, H). `own_embeddings=False` (the generator inside the pretraining pair)
    leaves the embeddings out: the call then takes the shared ones (`embeddings=`)."""
    own_embeddings: bool = True

    def setup(self):
        if self.own_embeddings:
            self.embeddings = ElectraEmbeddings(**self._shared())
        if self.config.embedding_size != self.config.hidden_size:
            self.embeddings_project = self._dense(self.config.hidden_size)
        self.encoder = BertEncoder(**self._shared())

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 deterministic: bool = True, embeddings=None):
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        mask = (attention_mask > 0)[:, None, None, :]           # (B, 1, 1, L), as BertModel's
        embed = self.embeddings if embeddings is None else embeddings
        x = embed(input_ids, token_type_ids, deterministic)                     # (B, L, E)
        if self.config.embedding_size != self.config.hidden_size:
            x = self.embeddings_project(x)                                       # (B, L, H)
        return self.encoder(x, mask, deterministic)                              # (B, L, H)


class ElectraDiscriminatorPredictions(_Module):
    """dense, GELU, dense_prediction: one logit per token, "replaced" when positive."""

    def setup(self):
        self.dense = self._dense(self.config.hidden_size)
        self.dense_prediction = self._dense(1)

    def __call__(self, x):
        return self.dense_prediction(gelu(self.dense(x)))[..., 0]               # (B, L)


class ElectraGeneratorPredictions(_Module):
    """The generator's MLM transform: dense H -> E, GELU, LayerNorm (then the tied decoder)."""

    def setup(self):
        self.dense = self._dense(self.config.embedding_size)
        self.LayerNorm = self._layer_norm()

    def __call__(self, x):
        return self.LayerNorm(gelu(self.dense(x)))


class ElectraLMHead(_Module):
    """transformers' `generator_lm_head`: logits = h @ word_embeddings^T + bias; its weight is
    the (shared) word embedding matrix, passed in, so only the bias is a parameter here."""

    def setup(self):
        self.bias = self.param("bias", nn.initializers.zeros, (self.config.vocab_size,),
                               self.param_dtype)

    def __call__(self, h, word_embeddings: nn.Embed):
        logits = tied_logits(h, word_embeddings, self.pad_vocab_to)
        return add_bias(logits, self.bias.astype(logits.dtype))


class ElectraForPreTraining(_Module):
    """The discriminator, as transformers': a replaced-token logit per token (B, L)."""

    def setup(self):
        self.electra = ElectraModel(**self._shared())
        self.discriminator_predictions = ElectraDiscriminatorPredictions(**self._shared())

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 deterministic: bool = True):
        return self.discriminator_predictions(
            self.electra(input_ids, token_type_ids, attention_mask, deterministic))


class ElectraForMaskedLM(_Module):
    """The generator, as transformers': MLM logits, (B, P, V) at `masked_positions` (the sparse
    head) or (B, L, V). `own_embeddings=False`: the generator inside the pretraining pair."""
    own_embeddings: bool = True

    def setup(self):
        self.electra = ElectraModel(**self._shared(), own_embeddings=self.own_embeddings)
        self.generator_predictions = ElectraGeneratorPredictions(**self._shared())
        self.generator_lm_head = ElectraLMHead(**self._shared(), pad_vocab_to=self.pad_vocab_to)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 masked_positions=None, deterministic: bool = True, embeddings=None):
        if embeddings is None:
            embeddings = self.electra.embeddings
        seq = self.electra(input_ids, token_type_ids, attention_mask, deterministic,
                           embeddings)                                           # (B, L, H)
        if masked_positions is not None:
            seq = jnp.take_along_axis(seq, masked_positions[:, :, None], axis=1)  # (B, P, H)
        return self.generator_lm_head(self.generator_predictions(seq),
                                      embeddings.word_embeddings)


def _hash32(x):
    """bertcore.model.sampling.hash32 on uint32 (wrapping multiplication is uint32's own).
    Torch twin: the same on int32 holding the uint32 bits, its right shifts masked."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(MUL_A)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(MUL_B)
    return x ^ (x >> 16)


def sample_tokens(logits, seeds):
    """One token per slot from softmax(logits) (B, P, V), by Gumbel-max with the noise of
    bertcore.model.sampling, so both twins draw the same tokens; no gradient. int32 (B, P)."""
    V = logits.shape[-1]
    h = _hash32(seeds.astype(jnp.uint32))[..., None]                             # (B, P, 1)
    h = _hash32(h ^ (jnp.arange(V, dtype=jnp.uint32) * jnp.uint32(MUL_B)))      # (B, P, V)
    u = ((h >> (32 - UNIFORM_BITS)).astype(jnp.float32) + 0.5) * (2.0 ** -UNIFORM_BITS)
    scores = jax.lax.stop_gradient(logits).astype(jnp.float32) - jnp.log(-jnp.log(u))
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


class ElectraPreTrainingModel(_Module):
    """Generator + discriminator, trained together (google-research/electra's PretrainingModel):
    `apply({'params': p}, input_ids [masked], token_type_ids, attention_mask, masked_positions,
    masked_ids, masked_weights, sample_seeds, deterministic=True, rngs={'dropout': key})` ->
    (mlm_logits (B, P, V), disc_logits (B, L), replaced (B, L) float labels). The generator has
    no embeddings of its own: it runs on the discriminator's."""

    def setup(self):
        self.discriminator = ElectraForPreTraining(**self._shared())
        self.generator = ElectraForMaskedLM(**{**self._shared(),
                                               "config": self.config.generator_config()},
                                            own_embeddings=False, pad_vocab_to=self.pad_vocab_to)

    def __call__(self, input_ids, token_type_ids, attention_mask, masked_positions, masked_ids,
                 masked_weights, sample_seeds, deterministic: bool = True):
        embeddings = self.discriminator.electra.embeddings
        mlm_logits = self.generator(input_ids, token_type_ids, attention_mask, masked_positions,
                                    deterministic, embeddings)                   # (B, P, V)
        live = masked_weights > 0                                                # (B, P)
        sampled = sample_tokens(mlm_logits, sample_seeds)                        # (B, P)
        rows = jnp.arange(input_ids.shape[0])[:, None]
        # Unused slots point at position 0 ([CLS]) with weight 0: they write [CLS] back.
        first = jnp.broadcast_to(input_ids[:, :1], masked_positions.shape)
        ids = jnp.asarray(input_ids, jnp.int32)
        corrupted = ids.at[rows, masked_positions].set(jnp.where(live, sampled, first))
        original = ids.at[rows, masked_positions].set(jnp.where(live, masked_ids, first))
        # A sample equal to the original counts as original (the paper's labels).
        replaced = ((corrupted != original) & (attention_mask > 0)).astype(jnp.float32)
        disc_logits = self.discriminator(corrupted, token_type_ids, attention_mask,
                                         deterministic)
        return mlm_logits, disc_logits, replaced

    @nn.nowrap
    def save_pretrained(self, path: str | Path, params: dict, tokenizer: str | Path | None = None
                        ) -> None:
        """Write the two models as transformers directories, path/discriminator and
        path/generator: the files torchbert's `save_pretrained` writes."""
        parts = electra_split(flax_to_hf(params, self.config))
        Path(path).mkdir(parents=True, exist_ok=True)
        for role, state in parts.items():
            save_hf_directory(Path(path) / role, self.config, state,
                              None if tokenizer is None else Path(tokenizer), role=role)


def electra_loss(mlm_logits, disc_logits, replaced, batch, mlm_denominator=None,
                 token_denominator=None, disc_weight: float = 50.0):
    """Generator MLM + disc_weight x discriminator loss: the torch twin's function (its
    docstring has the whole contract); binary cross-entropy in fp32 as
    optax.sigmoid_binary_cross_entropy computes it."""
    mlm_loss, metrics = pretraining_loss(mlm_logits, None, batch, mlm_denominator, nsp=False)
    real = batch["attention_mask"].astype(jnp.float32)                           # (B, L)
    if token_denominator is None:
        token_denominator = jnp.maximum(real.sum(), 1.0)
    logits = disc_logits.astype(jnp.float32)
    # log(1 + e^x) - x y, the stable form torch's binary_cross_entropy_with_logits uses
    bce = jnp.maximum(logits, 0) - logits * replaced + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    disc_loss = (real * bce).sum() / token_denominator
    predicted = (logits > 0).astype(jnp.float32)
    loss = mlm_loss + disc_weight * disc_loss
    return loss, {
        "mlm_loss": metrics["mlm_loss"], "mlm_accuracy": metrics["mlm_accuracy"],
        "disc_loss": disc_loss,
        "disc_accuracy": (real * (predicted == replaced)).sum() / token_denominator,
        "disc_replaced": (real * replaced).sum() / token_denominator,
        "disc_predicted": (real * predicted).sum() / token_denominator,
        "disc_tp": (real * predicted * replaced).sum() / token_denominator,
        "loss": loss,
    }


def init_params(config: ElectraConfig, rng, param_dtype: Dtype = jnp.float32) -> dict:
    """Fresh parameters of ElectraPreTrainingModel(config): the nested 'params' dict."""
    return _jitted_init(config, param_dtype)(rng)


def _jitted_init(config: ElectraConfig, param_dtype: Dtype):
    model = ElectraPreTrainingModel(config, param_dtype=param_dtype)
    L = min(8, config.max_position_embeddings)
    ids = np.zeros((1, L), np.int32)
    slots = np.zeros((1, 1), np.int32)
    return jax.jit(lambda rng: model.init(rng, ids, ids, np.ones_like(ids), slots, slots,
                                          np.ones((1, 1), np.float32), slots)["params"])


def from_pretrained(path: str | Path, output_loading_info: bool = False,
                    dtype: Dtype = jnp.float32, rng=None, **config_overrides: Any):
    """A directory with our pretraining config.json and the pair's weights (`discriminator.*`,
    `generator.*`): `(model, params)` (+ `{"missing_keys": [...]}`), as model.from_pretrained.
    transformers' two directories are read by discriminator_ / generator_from_pretrained."""
    config, params, missing = load_hf_directory(path, ElectraConfig, config_overrides,
                                                init_params, rng)
    model = ElectraPreTrainingModel(config, dtype=dtype)
    return (model, params, {"missing_keys": missing}) if output_loading_info else (model, params)


def _standalone(path: str | Path, role: str, dtype: Dtype, rng, config_overrides: dict):
    """(model, params, missing) of one transformers ELECTRA directory (its own config.json; a
    generator's is the generator's): weights checked against bertcore.model.hf's table, heads an
    ElectraModel save lacks initialised from `rng`."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; pass a Hugging Face ELECTRA directory")
    config = ElectraConfig.from_json_file(path / "config.json").replace(**config_overrides)
    state, source = read_hf_weights(path)
    state = normalize_hf_names({k: np.asarray(v, np.float32) for k, v in state.items()}, config)
    missing = check_electra_state(state, config, role, str(source))
    cls = ElectraForPreTraining if role == "discriminator" else ElectraForMaskedLM
    model = cls(config, dtype=dtype)
    params = table_to_flax(state, electra_model_table(config, role))
    if missing:
        ids = np.zeros((1, min(8, config.max_position_embeddings)), np.int32)
        fresh = flatten(model.init(jax.random.PRNGKey(0) if rng is None else rng, ids)["params"])
        params = unflatten({**fresh, **flatten(params)})
        logger.warning("%s: %d tensor(s) not in the checkpoint, initialised: %s", path,
                       len(missing), ", ".join(missing))
    return model, jax.tree_util.tree_map(jnp.asarray, params), missing


def discriminator_from_pretrained(path: str | Path, dtype: Dtype = jnp.float32, rng=None,
                                  **config_overrides: Any):
    """A transformers ElectraForPreTraining directory: `(model, params)` (torch twin:
    ElectraForPreTraining.from_pretrained)."""
    return _standalone(path, "discriminator", dtype, rng, config_overrides)[:2]


def generator_from_pretrained(path: str | Path, dtype: Dtype = jnp.float32, rng=None,
                              **config_overrides: Any):
    """A transformers ElectraForMaskedLM directory: `(model, params)` (torch twin:
    ElectraForMaskedLM.from_pretrained)."""
    return _standalone(path, "generator", dtype, rng, config_overrides)[:2]


def standalone_hf_state(params: dict, config: ElectraConfig, role: str) -> dict[str, np.ndarray]:
    """One standalone model's Flax params -> its transformers-named arrays."""
    return table_to_hf(params, electra_model_table(config, role))


__all__ = ["ElectraEmbeddings", "ElectraModel", "ElectraDiscriminatorPredictions",
           "ElectraGeneratorPredictions", "ElectraLMHead", "ElectraForPreTraining",
           "ElectraForMaskedLM", "sample_tokens", "ElectraPreTrainingModel", "electra_loss",
           "init_params", "merge_hf_params", "from_pretrained", "discriminator_from_pretrained",
           "generator_from_pretrained", "standalone_hf_state"]
