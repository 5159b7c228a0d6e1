"""BERT for pretraining (masked LM + next-sentence prediction) in JAX/Flax linen.

The twin of `torchbert/model.py`: the same classes in the same order, and Hugging Face's
parameter names, so the flattened Flax tree reads `bert/encoder/layer/3/attention/self/query/kernel`
where torch reads `bert.encoder.layer.3.attention.self.query.weight`. What differs is only the
frameworks' conventions, all handled by the one table in `bertcore/model/hf.py`:

- A Flax `Dense` stores `kernel` as [in, out] (x @ kernel); torch's `Linear.weight` is [out, in].
- `LayerNorm` calls its gain `scale` (torch: `weight`); `Embed` calls its table `embedding`.
- Flax modules hold no state: `init` returns the params, `apply` takes them. Dropout draws from
  an explicit key, `model.apply({'params': p}, ..., deterministic=False, rngs={'dropout': key})`,
  where torch uses its global generator. Use `fold_in(base_key, step)` per step so a resumed run
  draws the same masks.
- `dtype` is the compute dtype (bfloat16 on accelerators), `param_dtype` the storage dtype
  (float32); torch gets the same effect from `torch.autocast`.

Shapes: B = batch, L = sequence length, H = hidden size, N = heads, D = head size,
I = intermediate size, P = masked positions per sequence, V = vocabulary.

One file for the whole model, as nanoGPT's model.py: the twins read side by side class by
class, and splitting one would split its mirror too.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertcore.model.config import BertConfig
from bertcore.model.dropout import dropout_threshold
from bertcore.infra.errors import UserError
from bertcore.model.hf import (flatten, flax_to_hf, head_prefixes, hf_to_flax, param_table,
                               read_hf_safetensors, save_hf_directory, unflatten)

Dtype = Any
logger = logging.getLogger(__name__)


def gelu(x):
    """Exact (erf) GELU, as original BERT, HF "gelu" and torch's `F.gelu` (jax's default is the
    tanh form). Written with `lax.erf` rather than `jax.nn.gelu(x, approximate=False)`, which goes
    through erfc: XLA's CPU backend computes that with two branches, slower than one erf. The
    two differ by float rounding (< 1e-6). Python-float constants keep a bf16 input in bf16."""
    return x * (0.5 + 0.5 * jax.lax.erf(x * 0.7071067811865476))


def _normal(config: BertConfig):
    # HF's _init_weights: every Linear and Embedding ~ N(0, initializer_range), biases 0,
    # LayerNorm 1/0. (HF's own Flax port uses lecun_normal in the MLM transform; we follow torch.)
    return nn.initializers.normal(stddev=config.initializer_range)


def _word_embedding_init(config: BertConfig):
    """N(0, initializer_range) with the pad row zeroed, as torch's nn.Embedding(padding_idx=...)."""
    base = _normal(config)

    def init(key, shape, dtype=jnp.float32):
        return base(key, shape, dtype).at[config.pad_token_id].set(0)

    return init


def _rows(fn, x):
    """fn applied to x's rows, [..., H] flattened to [rows, H] and back. Same numbers as fn(x);
    the point is the gradient: autodiff of a matmul on a 3-D [B, L, H] input contracts the weight
    gradient over two axes, and XLA's CPU backend then writes transposed copies of both operands
    first (the feed-forward's activations, the decoder's [rows, V] logits gradient). On 2-D rows
    it is one plain dot, no copies. (Torch twin: nothing to do, nn.Linear flattens the rows
    itself.)"""
    y = fn(x.reshape(-1, x.shape[-1]))
    return y.reshape(*x.shape[:-1], y.shape[-1])


class _Dense(nn.Dense):
    """nn.Dense (same `kernel`/`bias` parameters) over the rows of x: see `_rows`."""

    def __call__(self, x):
        return _rows(super().__call__, x)


class _Module(nn.Module):
    """What every module below shares: the config, the compute dtype (bfloat16 on accelerators),
    the parameter dtype (float32) and `remat`, passed down to every child, plus HF-initialised
    Dense and LayerNorm factories."""
    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False     # activation checkpointing of each encoder layer (see _LayerList)
    pad_vocab_to: int = 1   # decoder matmul on a table padded to this multiple (the LM head)

    def _shared(self) -> dict[str, Any]:
        """The fields every child takes from its parent, as keywords: `BertLayer(**self._shared())`
        is BertLayer(config=self.config, dtype=self.dtype, param_dtype=..., remat=...)."""
        return dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype,
                    remat=self.remat)

    def _dense(self, features: int) -> nn.Dense:
        return _Dense(features, kernel_init=_normal(self.config), dtype=self.dtype,
                      param_dtype=self.param_dtype)  # bias: zeros (Flax's default)

    def _layer_norm(self) -> nn.LayerNorm:
        return nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype,
                            param_dtype=self.param_dtype)  # scale 1, bias 0; fp32 statistics

    @property
    def pre_ln(self) -> bool:
        return self.config.layer_norm_position == "pre"


class Dropout(nn.Module):
    """nn.Dropout's job, with bertcore/model/dropout.py's rule: 16 random bits per element from the
    `dropout` key (each 32-bit word split in two), kept iff >= t. flax's nn.Dropout draws a 32-bit
    float per element, twice the random bits and a conversion, which on a CPU is a large share of
    a step. (Torch twin: the same class; there only on a CPU, as CUDA's F.dropout is a fused
    kernel.)"""
    rate: float

    def __call__(self, x, deterministic: bool = True):
        if deterministic or self.rate == 0.0:
            return x
        threshold, scale = dropout_threshold(self.rate)
        words = jax.random.bits(self.make_rng("dropout"), ((x.size + 1) // 2,), jnp.uint32)
        bits = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:x.size]
        return jnp.where(bits.reshape(x.shape) >= threshold, x * scale, 0)  # keeps x's dtype


class BertEmbeddings(_Module):
    """word + token type + position embeddings, then LayerNorm and dropout."""

    def setup(self):
        c, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        E = getattr(c, "embedding_size", c.hidden_size)   # ELECTRA's may be narrower
        self.word_embeddings = nn.Embed(c.vocab_size, E, embedding_init=_word_embedding_init(c),
                                        **kw)
        self.position_embeddings = nn.Embed(c.max_position_embeddings, E,
                                            embedding_init=_normal(c), **kw)
        self.token_type_embeddings = nn.Embed(c.type_vocab_size, E, embedding_init=_normal(c),
                                              **kw)
        self.LayerNorm = self._layer_norm()
        self.dropout = Dropout(rate=c.hidden_dropout_prob)

    def __call__(self, input_ids, token_type_ids, deterministic: bool = True):
        positions = jnp.arange(input_ids.shape[1])[None, :]                      # (1, L)
        words = self.word_embeddings(input_ids)                                  # (B, L, E)
        # torch's padding_idx (HF's too): a [PAD] id's lookup gives its row no gradient. BERT's
        # [PAD]s sit at padded positions, which reach no loss; ELECTRA's generator may sample
        # [PAD] into a real position, whose discriminator loss would otherwise train that row.
        pad = (input_ids == self.config.pad_token_id)[..., None]
        words = jnp.where(pad, jax.lax.stop_gradient(words), words)
        # HF's (and the torch twin's) summation order, (word + type) + position, so fp32 agrees.
        x = words + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)                              # (B, L, H)
        return self.dropout(self.LayerNorm(x), deterministic=deterministic)


def attention_probs(q, k, mask):
    """softmax(q k^T / sqrt(D)) with masked keys excluded: (B, L, N, D) x2 -> (B, N, L, L).

    The same math as jax.nn.dot_product_attention's XLA path, spelled out for the dropout path:
    fp32 logits and softmax whatever the compute dtype, masked keys set to 0.7 * finfo.min so
    their weight underflows to exactly 0 (appended padding changes nothing).
    """
    logits = jnp.einsum("btnd,bsnd->bnts", q, k, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(1.0 / np.sqrt(q.shape[-1]))
    logits = jnp.where(mask, logits, 0.7 * jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(logits, axis=-1)


class BertSelfAttention(_Module):
    """Multi-head self-attention with separate query/key/value projections (HF layout)."""

    def setup(self):
        H = self.config.hidden_size
        self.query, self.key, self.value = self._dense(H), self._dense(H), self._dense(H)
        self.dropout = Dropout(rate=self.config.attention_probs_dropout_prob)

    def __call__(self, x, mask, deterministic: bool = True):
        """x (B, L, H); mask (B, 1, 1, L) bool, True where the key is a real token."""
        c = self.config
        B, L, _ = x.shape
        heads = lambda t: t.reshape(B, L, c.num_attention_heads, c.head_dim)   # (B, L, N, D)
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        if deterministic or self.dropout.rate == 0.0:
            # JAX's attention op (the twin of torch's F.scaled_dot_product_attention); with
            # implementation=None it lowers to XLA's fused softmax on every backend. It has no
            # dropout on the probabilities, hence the explicit path below when training with it.
            # Taken in the same cases as torch takes SDPA, though on a CPU the explicit path takes
            # 0.90-1.00 of the op's time in training (and 1.01-1.14 in evaluation at L=128):
            # benchmarks.attention, BENCHMARKS.md.
            ctx = jax.nn.dot_product_attention(q, k, v, mask=mask)               # (B, L, N, D)
        else:
            probs = self.dropout(attention_probs(q, k, mask).astype(v.dtype),
                                 deterministic=False)                            # (B, N, L, L)
            ctx = jnp.einsum("bnts,bsnd->btnd", probs, v)
        return ctx.reshape(B, L, c.hidden_size)


class BertSelfOutput(_Module):
    """Projection, dropout, residual; then LayerNorm (post-LN). In pre-LN the same LayerNorm
    (same name) is applied by BertAttention to the attention's *input* instead."""

    def setup(self):
        self.dense = self._dense(self.config.hidden_size)
        self.LayerNorm = self._layer_norm()
        self.dropout = Dropout(rate=self.config.hidden_dropout_prob)

    def __call__(self, hidden, residual, deterministic: bool = True):
        x = self.dropout(self.dense(hidden), deterministic=deterministic) + residual
        return x if self.pre_ln else self.LayerNorm(x)


class BertAttention(_Module):
    def setup(self):
        self.self = BertSelfAttention(**self._shared())
        self.output = BertSelfOutput(**self._shared())

    def __call__(self, x, mask, deterministic: bool = True):
        h = self.output.LayerNorm(x) if self.pre_ln else x     # pre-LN: normalise the input
        return self.output(self.self(h, mask, deterministic), x, deterministic)  # (B, L, H)


class BertIntermediate(_Module):
    """First feed-forward projection H -> intermediate_size with exact (erf) GELU."""

    def setup(self):
        self.dense = self._dense(self.config.intermediate_size)

    def __call__(self, x):
        return gelu(self.dense(x))                                               # (B, L, I)


class BertOutput(BertSelfOutput):
    """Same computation as BertSelfOutput (dense I -> H, dropout, residual, LayerNorm); its
    LayerNorm normalises the feed-forward input in pre-LN."""


class BertLayer(_Module):
    """One transformer block: self-attention sublayer, then feed-forward sublayer."""

    def setup(self):
        self.attention = BertAttention(**self._shared())
        self.intermediate = BertIntermediate(**self._shared())
        self.output = BertOutput(**self._shared())

    def __call__(self, x, mask, deterministic: bool = True):
        a = self.attention(x, mask, deterministic)                               # (B, L, H)
        h = self.output.LayerNorm(a) if self.pre_ln else a     # pre-LN: normalise the input
        return self.output(self.intermediate(h), a, deterministic)               # (B, L, H)


class _LayerList(_Module):
    """Flax's stand-in for torch's nn.ModuleList: the layers as children named "0", "1", ...
    so their params sit at encoder/layer/{i}/..., as in HF's modeling_flax_bert. (A Python list
    assigned in setup would be named layer_0, layer_1, ...)"""

    @nn.compact
    def __call__(self, x, mask, deterministic: bool = True):
        # remat: keep only each layer's input and recompute its insides in the backward pass
        # (torch twin: torch.utils.checkpoint per layer). `deterministic` (argument 3, counting
        # self) is a Python bool, so it stays static. Param names are unchanged.
        layer = nn.remat(BertLayer, static_argnums=(3,)) if self.remat else BertLayer
        for i in range(self.config.num_hidden_layers):
            x = layer(**self._shared(), name=str(i))(x, mask, deterministic)
        return x


class BertEncoder(_Module):
    def setup(self):
        self.layer = _LayerList(**self._shared())
        if self.pre_ln:
            # Pre-LN leaves the residual stream unnormalised; one final LayerNorm closes it.
            self.LayerNorm = self._layer_norm()

    def __call__(self, x, mask, deterministic: bool = True):
        x = self.layer(x, mask, deterministic)
        return self.LayerNorm(x) if self.pre_ln else x


class BertPooler(_Module):
    """dense + tanh on the [CLS] position: the sentence vector the NSP head reads."""

    def setup(self):
        self.dense = self._dense(self.config.hidden_size)

    def __call__(self, x):
        return jnp.tanh(self.dense(x[:, 0]))                                     # (B, H): [CLS]


class BertModel(_Module):
    """The encoder: returns (sequence_output (B, L, H), pooled_output (B, H))."""

    def setup(self):
        self.embeddings = BertEmbeddings(**self._shared())
        self.encoder = BertEncoder(**self._shared())
        self.pooler = BertPooler(**self._shared())

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 deterministic: bool = True, pool: bool = True):
        """`pool=False` skips the pooler (pooled is None): MLM-only training never runs it."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        # (B, 1, 1, L), True where the *key* is a real token, broadcast over heads and queries.
        # Boolean, so no -inf constant that a bf16 compute dtype could overflow.
        mask = (attention_mask > 0)[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids, deterministic)
        x = self.encoder(x, mask, deterministic)                                 # (B, L, H)
        return x, (self.pooler(x) if pool else None)


class BertPredictionHeadTransform(_Module):
    """MLM transform before the vocabulary projection: dense, GELU, LayerNorm."""

    def setup(self):
        self.dense = self._dense(self.config.hidden_size)
        self.LayerNorm = self._layer_norm()

    def __call__(self, x):
        return self.LayerNorm(gelu(self.dense(x)))


@jax.custom_vjp
def add_bias(x, bias):
    """x + bias over the last axis, with the bias gradient computed as ones @ g (a
    matrix-vector product) instead of XLA's reduction over the rows. Same math; on a CPU, XLA's
    reduction of the MLM logits' [B*P, V] gradient is slow and the product one fast dot
    (`python -m benchmarks.profile` shows both). The torch twin needs nothing like it: its
    decoder is one nn.Linear (addmm), whose bias gradient is fast."""
    return x + bias


def _add_bias_fwd(x, bias):
    return x + bias, None


def _add_bias_bwd(_, g):
    rows = g.reshape(-1, g.shape[-1])                                            # (N, V)
    ones = jnp.ones((rows.shape[0],), g.dtype)
    return g, jnp.dot(ones, rows, preferred_element_type=jnp.float32).astype(g.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def tied_logits(h, word_embeddings: nn.Embed, pad_vocab_to: int = 1):
    """h @ word_embeddings.embedding.T over the rows of h (`_rows`): the decoder tied to the
    token embeddings, without its bias. pad_vocab_to=M > 1 runs the matmul on the table padded
    with zero rows to a multiple of M (aligned tiles on GPU/TPU) and drops the padded logits."""
    V = word_embeddings.num_embeddings
    pad = -V % pad_vocab_to
    if not pad:
        logits = _rows(word_embeddings.attend, h)                            # (B, *, V)
    else:
        table = jnp.pad(word_embeddings.embedding, ((0, pad), (0, 0)))      # (V + pad, H)
        logits = _rows(lambda r: jnp.dot(r, table.astype(r.dtype).T), h)[..., :V]
    return logits


class BertLMPredictionHead(_Module):
    """Transform, then the decoder tied to the word embeddings, plus an output bias. The decoder
    has no weight of its own: `word_embeddings.attend` is x @ embedding.T, applied to the rows
    of x (`_rows`).

    pad_vocab_to=M > 1 runs that matmul on the table padded with zero rows to a multiple of M
    (aligned tiles on GPU/TPU) and drops the padded logits: parameters, gradients, checkpoints
    and exports keep the true vocabulary, and the loss is unchanged."""

    def setup(self):
        self.transform = BertPredictionHeadTransform(**self._shared())
        self.bias = self.param("bias", nn.initializers.zeros, (self.config.vocab_size,),
                               self.param_dtype)

    def __call__(self, x, word_embeddings: nn.Embed):
        logits = tied_logits(self.transform(x), word_embeddings, self.pad_vocab_to)
        return add_bias(logits, self.bias.astype(logits.dtype))


class BertPreTrainingHeads(_Module):
    def setup(self):
        self.predictions = BertLMPredictionHead(**self._shared(), pad_vocab_to=self.pad_vocab_to)
        self.seq_relationship = self._dense(2)

    def __call__(self, sequence_output, pooled_output, word_embeddings):
        nsp = None if pooled_output is None else self.seq_relationship(pooled_output)  # (B, 2)
        return self.predictions(sequence_output, word_embeddings), nsp


class BertForPreTraining(_Module):
    """`apply({'params': p}, input_ids, token_type_ids, attention_mask, masked_positions=None,
    deterministic=True, nsp=True, rngs={'dropout': key})` -> (mlm_logits, nsp_logits): [B, P, V]
    with masked_positions [B, P], else [B, L, V] (fill-mask, HF parity); nsp_logits [B, 2], or
    None with `nsp=False` (MLM-only: the pooler and NSP head are not run; their params, made by
    `init`, get zero gradients)."""

    def setup(self):
        self.bert = BertModel(**self._shared())
        self.cls = BertPreTrainingHeads(**self._shared(), pad_vocab_to=self.pad_vocab_to)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, masked_positions=None,
                 deterministic: bool = True, nsp: bool = True):
        seq, pooled = self.bert(input_ids, token_type_ids, attention_mask, deterministic,
                                pool=nsp)                                         # (B, L, H)
        if masked_positions is not None:
            # Sparse MLM head: keep only the P predicted positions before the transform and the
            # V-wide decoder, the dominant cost at small sizes (google-research/bert does this).
            seq = jnp.take_along_axis(seq, masked_positions[:, :, None], axis=1)  # (B, P, H)
        return self.cls(seq, pooled, self.bert.embeddings.word_embeddings)

    @nn.nowrap
    def save_pretrained(self, path: str | Path, params: dict, tokenizer: str | Path | None = None
                        ) -> None:
        """Write config.json + model.safetensors of `params` (this model's 'params' dict, as
        `from_pretrained` returns it), and `tokenizer`'s files if given, in HF layout: the files
        torchbert's `save_pretrained` writes (bertcore.model.hf.save_hf_directory)."""
        save_hf_directory(path, self.config, flax_to_hf(params, self.config),
                          None if tokenizer is None else Path(tokenizer))


def pretraining_loss(mlm_logits, nsp_logits, batch, mlm_denominator=None, nsp_denominator=None,
                     nsp: bool = True):
    """MLM + NSP loss and metrics (docs/CONTRACTS.md); cross-entropy in fp32 whatever the logits.

    mlm_logits are the sparse [B, P, V] ones, or dense [B, L, V] ones (gathered at
    masked_positions here; with L == P they are read as sparse). The denominators default to this
    batch's count of real predictions (at least 1) and rows; data-parallel or accumulation code
    passes global counts. Accuracies use the same denominators, so they too sum over ranks and
    micro-batches. Metrics are 0-d arrays (convert with float() when logging, off the hot path).
    """
    def ce_and_hit(logits, labels):
        logits = logits.astype(jnp.float32)
        labels = labels.astype(jnp.int32)
        picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
        ce = jax.nn.logsumexp(logits, axis=-1) - picked
        return ce, (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)

    w = batch["masked_weights"].astype(jnp.float32)                              # (B, P)
    if mlm_denominator is None:
        mlm_denominator = jnp.maximum(w.sum(), 1.0)
    if mlm_logits.shape[1] != w.shape[1]:
        mlm_logits = jnp.take_along_axis(mlm_logits, batch["masked_positions"][:, :, None], 1)
    ce, hit = ce_and_hit(mlm_logits, batch["masked_ids"])
    mlm_loss = (w * ce).sum() / mlm_denominator
    metrics = {"mlm_loss": mlm_loss, "mlm_accuracy": (w * hit).sum() / mlm_denominator}
    loss = mlm_loss
    if nsp:
        if "next_sentence_label" not in batch:
            raise ValueError("pretraining_loss(nsp=True) needs batch['next_sentence_label']: the "
                             "NSP loss reads it (pass nsp=False for MLM-only)")
        labels = batch["next_sentence_label"]
        if nsp_denominator is None:
            nsp_denominator = labels.shape[0]
        ce, hit = ce_and_hit(nsp_logits, labels)
        metrics["nsp_loss"] = ce.sum() / nsp_denominator
        metrics["nsp_accuracy"] = hit.sum() / nsp_denominator
        loss = loss + metrics["nsp_loss"]
    metrics["loss"] = loss
    return loss, metrics


@functools.lru_cache(maxsize=8)
def _jitted_init(model_cls: type[nn.Module], config: Any, param_dtype: Dtype):
    # One compiled program instead of one eager op per parameter, cached per config: XLA's
    # compile of the random initialisers is most of the cost on CPU, paid once per process.
    # model_cls is BertForPreTraining or modernbert.ModernBertForMaskedLM (the same call).
    model = model_cls(config, param_dtype=param_dtype)
    # numpy, not jnp: a jnp array made while the first caller traces (jax.eval_shape of
    # init_params) would be a tracer, kept in this cache and leaked into later calls.
    ids = np.zeros((1, min(8, config.max_position_embeddings)), np.int32)
    return jax.jit(lambda rng: model.init(rng, ids, ids, np.ones_like(ids))["params"])


def init_params(config: BertConfig, rng, param_dtype: Dtype = jnp.float32) -> dict:
    """Fresh parameters of BertForPreTraining(config): the nested 'params' dict."""
    return _jitted_init(BertForPreTraining, config, param_dtype)(rng)


def merge_hf_params(state: dict[str, Any], config: BertConfig, fresh) -> tuple[dict, list[str]]:
    """Flax params of BertForPreTraining(config) (or ModernBertForMaskedLM(config), for a
    ModernBertConfig) from HF-named weights (checked by bertcore.model.hf's table); the pooler and
    heads a save may lack (bertcore.model.hf.head_prefixes) come from `fresh()` (fresh init params,
    called only when needed). Returns (params, the HF names taken from `fresh`). torch: the same
    through BertForPreTraining.load_hf_state_dict."""
    state = {k: np.asarray(v, np.float32) for k, v in state.items()}
    loaded = flatten(hf_to_flax(state, config, missing_ok=head_prefixes(config)))
    hf_name = {"/".join(p.flax_path): p.hf_name for p in param_table(config)}
    missing = sorted(hf_name[p] for p in hf_name if p not in loaded)
    new = flatten(fresh()) if missing else {}
    params = unflatten({p: jnp.asarray(loaded[p]) if p in loaded else new[p] for p in hf_name})
    return params, missing


def from_pretrained(path: str | Path, output_loading_info: bool = False,
                    dtype: Dtype = jnp.float32, rng=None, **config_overrides: Any):
    """Load a Hugging Face BERT directory (config.json + model.safetensors, or a sharded
    model.safetensors.index.json), saved from BertForPreTraining, BertForMaskedLM or BertModel:
    the directories `torchbert.model.BertForPreTraining.from_pretrained` loads.

    Returns `(model, params)`, or `(model, params, {"missing_keys": [...]})` with
    `output_loading_info=True`. Missing pooler/heads (`bert.pooler.*`, `cls.*`, HF names) are
    initialised from `rng` and logged. Params are fp32; `dtype` is the compute dtype.
    (No pytorch_model.bin here: unpickling it needs torch; convert it to safetensors.)
    """
    config, params, missing = load_hf_directory(path, BertConfig, config_overrides, init_params,
                                                rng)
    model = BertForPreTraining(config, dtype=dtype)
    return (model, params, {"missing_keys": missing}) if output_loading_info else (model, params)


def load_hf_directory(path: str | Path, config_cls: Any, config_overrides: dict[str, Any], init,
                      rng) -> tuple[Any, dict, list[str]]:
    """(config, params, missing HF names) of a Hugging Face directory: `config_cls` (BertConfig
    or ModernBertConfig) from its config.json with `config_overrides`, params from the weights
    `read_hf_weights` finds (through `merge_hf_params`); what they lack comes from
    `init(config, rng)`, logged. What both architectures' `from_pretrained` share."""
    path = Path(path)
    arch = {"modernbert": "ModernBERT", "electra": "ELECTRA"}.get(
        getattr(config_cls, "model_type", "bert"), "BERT")
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; pass a Hugging Face {arch} directory")
    config = config_cls.from_json_file(path / "config.json").replace(**config_overrides)
    state, source = read_hf_weights(path)
    params, missing = merge_hf_params(
        state, config, lambda: init(config, jax.random.PRNGKey(0) if rng is None else rng))
    if missing:
        logger.warning("%s: %d tensor(s) not in the checkpoint, initialised: %s", path,
                       len(missing), ", ".join(missing))
    return config, params, missing


def read_hf_weights(path: Path) -> tuple[dict[str, Any], Path]:
    """(arrays, source file) of a HF directory: model.safetensors or its sharded index (read by
    bertcore.model.hf). A pytorch_model.bin is refused by name: unpickling it needs torch."""
    found = read_hf_safetensors(path)
    if found is not None:
        return found
    hint = (" (it has pytorch_model.bin: convert it to safetensors, e.g. load and re-save it "
            "with torchbert or transformers)" if (path / "pytorch_model.bin").is_file() else "")
    raise UserError(f"{path} has no model.safetensors{hint}")
