"""The agreement report: torchbert vs jaxbert vs Hugging Face, in one process.

    python -m parity.check [--preset tiny|mini] [--steps 100] [--out DIR]
                           [--layer-norm-position post|pre|both]

fp32 on CPU. One initialisation (torch's, converted to Flax with bertcore/hf.py's table), one
stream of bertcore batches (a small synthetic corpus), and then, for each LayerNorm position:

    forward      hidden states, pooled output, sparse + dense MLM logits, NSP logits
                 (torch vs jax, and each vs transformers.BertForPreTraining, post-LN only)
    loss         twins (and HF's own loss from labels), relative
    gradients    per tensor ||g_t - g_j|| / ||g_t||, worst tensor reported
    AdamW step   one step of each twin's own train_step/make_optimizer (decay mask, clipping,
                 schedule): updated parameters
    curves       N steps from the same init and batches, relative at every step
    resume       torch N/2 -> parity.convert (files on disk) -> jax N/2 vs torch N; and reverse
    dropout on   mean loss of both twins over N steps within a statistical tolerance

Every bar comes from parity/thresholds.py. Writes report.md, report.json and loss_curves.png into
--out (default runs/parity-<preset>); exits 1 if any row fails.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bertcore.batches import BatchIterator, step_seed
from bertcore.config import BertConfig, TrainConfig
from bertcore.errors import UserError, cli_entry, write_text_atomic
from bertcore.hf import flax_to_hf, hf_to_flax
from bertcore.run import trained_model_config
from bertcore.schedule import make_schedule
from bertcore.shards import Shards, prepare
from bertcore.tokenizer import train_tokenizer

from . import thresholds as T
from .convert import convert

# Full fp32 matmuls in XLA. At DEFAULT precision XLA may run fp32 dots in reduced precision
# (bf16 passes on TPU, TF32 on recent GPUs); "highest" makes the comparison measure the model, not
# the matmul unit. (On CPU it changes nothing today; it keeps the check honest anywhere.)
jax.config.update("jax_default_matmul_precision", "highest")

CPU = torch.device("cpu")
PRESETS = {  # batch shapes per preset: quick on a 2-core CPU, big enough to mean something
    "tiny": dict(batch_size=8, seq_len=64, max_predictions=10),
    "mini": dict(batch_size=8, seq_len=64, max_predictions=10),
}


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


@dataclass
class Case:
    """One configuration under test: configs, data, the batches of every step, the init."""
    preset: str
    layer_norm_position: str
    config: BertConfig        # as RUNDIR/config.json would hold it (dropout 0.1)
    train: TrainConfig        # dropout off
    workdir: Path
    tokenizer: Any
    shards: Shards
    batches: list[dict[str, np.ndarray]]
    batch_states: list[dict]  # batch_states[k]: the iterator's state after k batches
    init: dict[str, np.ndarray]   # torch's initial weights, HF names

    @property
    def model_config(self) -> BertConfig:   # what the twins build (dropout zeroed)
        return trained_model_config(self.config, self.train)

    def with_dropout(self) -> tuple[BertConfig, TrainConfig]:
        train = self.train.replace(dropout=True)
        return trained_model_config(self.config, train), train


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
    tok, shards = _data(preset, str(workdir), seed)
    config = BertConfig.from_preset(preset, vocab_size=tok.vocab_size, max_position_embeddings=128,
                                    layer_norm_position=layer_norm_position)
    # Warmup 5 then linear decay; weight decay 0.1 so a wrongly decayed LayerNorm scale (1.0)
    # moves by lr * 0.1 = 2e-5 in the first step, far above the 1e-6 AdamW-step bar.
    train = TrainConfig(**PRESETS[preset], steps=steps, lr=1e-3, warmup_steps=5,
                        weight_decay=0.1, grad_clip=1.0, dropout=False, seed=seed,
                        keep_checkpoints=1)
    it = BatchIterator(shards, tok, train)
    batches, states = [], [it.state()]
    for _ in range(steps):
        batches.append(next(it))
        states.append(it.state())
    torch.manual_seed(seed)
    from torchbert.model import BertForPreTraining
    init = {k: v.detach().numpy().copy()
            for k, v in BertForPreTraining(trained_model_config(config, train))
            .hf_state_dict().items()}
    return Case(preset, layer_norm_position, config, train, Path(workdir), tok, shards, batches,
                states, init)


# ---- rows ----------------------------------------------------------------------------------------

@dataclass
class Row:
    ln: str
    quantity: str
    max_abs: float
    rel: float
    bar: str
    passed: bool
    note: str = ""

    def __post_init__(self) -> None:   # plain Python types (numpy scalars do not go to JSON)
        self.max_abs, self.rel, self.passed = float(self.max_abs), float(self.rel), \
            bool(self.passed)


def _max_abs(a, b) -> tuple[float, float]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = float(np.max(np.abs(a - b)))
    return d, d / max(float(np.max(np.abs(a))), 1e-30)


def _fwd_row(ln, what, a, b) -> Row:
    d, r = _max_abs(a, b)
    return Row(ln, what, d, r, f"max abs <= {T.FORWARD_MAX_ABS:g}", d <= T.FORWARD_MAX_ABS)


# ---- the twins, built from the same weights --------------------------------------------------------

def torch_model(config: BertConfig, weights: dict[str, np.ndarray]):
    from torchbert.model import BertForPreTraining
    m = BertForPreTraining(config)
    m.load_hf_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return m


def jax_params(config: BertConfig, weights: dict[str, np.ndarray]):
    return jax.tree_util.tree_map(jnp.asarray, hf_to_flax(weights, config))


def _tb(batch) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


@functools.lru_cache(maxsize=8)
def _jax_fns(config: BertConfig):
    """Jitted forward and loss-gradient of jaxbert for one config (cached: compiled once)."""
    from jaxbert.model import BertForPreTraining, pretraining_loss
    model = BertForPreTraining(config, dtype=jnp.float32)

    @jax.jit
    def forward(params, b):
        v = {"params": params}
        seq, pooled = model.apply(v, b["input_ids"], b["token_type_ids"], b["attention_mask"],
                                  method=lambda m, *a: m.bert(*a))
        sparse, nsp = model.apply(v, b["input_ids"], b["token_type_ids"], b["attention_mask"],
                                  b["masked_positions"])
        dense, _ = model.apply(v, b["input_ids"], b["token_type_ids"], b["attention_mask"])
        return seq, pooled, sparse, dense, nsp

    @jax.jit
    def loss_and_grad(params, b):
        def loss_fn(p):
            mlm, nsp = model.apply({"params": p}, b["input_ids"], b["token_type_ids"],
                                   b["attention_mask"], b["masked_positions"])
            return pretraining_loss(mlm, nsp, b)[0]
        return jax.value_and_grad(loss_fn)(params)

    return forward, loss_and_grad


@functools.lru_cache(maxsize=8)
def _jax_layout(config: BertConfig, train: TrainConfig):
    """jaxbert.train's own optimizer and jitted train_step (cached per config: compiled once)."""
    from jaxbert.model import BertForPreTraining
    from jaxbert.train import Layout, make_optimizer, train_step
    model = BertForPreTraining(config, dtype=jnp.float32)
    tx = make_optimizer(train, config.hidden_size)
    return tx, Layout("single", train, functools.partial(train_step, model=model, tx=tx,
                                                         cfg=train))


def _hf_model(config: BertConfig, torch_twin):
    import transformers
    hf = transformers.BertForPreTraining(transformers.BertConfig.from_dict(config.to_dict()))
    hf.load_state_dict(torch_twin.state_dict())   # HF names, tied aliases included: strict
    return hf.eval()


# ---- forward, loss, gradients ----------------------------------------------------------------------

def forward_rows(case: Case) -> list[Row]:
    ln, cfg, b = case.layer_norm_position, case.model_config, case.batches[0]
    tm = torch_model(cfg, case.init).eval()
    tb = _tb(b)
    with torch.no_grad():
        t = dict(zip(("hidden states", "pooled output"),
                     tm.bert(tb["input_ids"], tb["token_type_ids"], tb["attention_mask"])))
        t["MLM logits (sparse)"], t["NSP logits"] = tm(
            tb["input_ids"], tb["token_type_ids"], tb["attention_mask"], tb["masked_positions"])
        t["MLM logits (dense)"], _ = tm(tb["input_ids"], tb["token_type_ids"],
                                        tb["attention_mask"])
    forward, _ = _jax_fns(cfg)
    seq, pooled, sparse, dense, nsp = forward(jax_params(cfg, case.init), b)
    j = {"hidden states": seq, "pooled output": pooled, "MLM logits (sparse)": sparse,
         "MLM logits (dense)": dense, "NSP logits": nsp}
    rows = [_fwd_row(ln, f"forward {k}: torch vs jax", t[k].numpy(), j[k]) for k in j]
    if ln == "post":   # transformers' BERT is post-LN only
        hf = _hf_model(cfg, tm)
        with torch.no_grad():
            o = hf(input_ids=tb["input_ids"].long(), token_type_ids=tb["token_type_ids"].long(),
                   attention_mask=tb["attention_mask"].long(), output_hidden_states=True)
            pooled_hf = hf.bert(input_ids=tb["input_ids"].long(),
                                token_type_ids=tb["token_type_ids"].long(),
                                attention_mask=tb["attention_mask"].long()).pooler_output
        pos = tb["masked_positions"].long()[:, :, None].expand(-1, -1, cfg.vocab_size)
        h = {"hidden states": o.hidden_states[-1], "pooled output": pooled_hf,
             "MLM logits (sparse)": torch.gather(o.prediction_logits, 1, pos),
             "MLM logits (dense)": o.prediction_logits, "NSP logits": o.seq_relationship_logits}
        for k in j:
            rows.append(_fwd_row(ln, f"forward {k}: torch vs HF", h[k].numpy(), t[k].numpy()))
            rows.append(_fwd_row(ln, f"forward {k}: jax vs HF", h[k].numpy(), j[k]))
    return rows


def _hf_labels(b) -> torch.Tensor:
    labels = np.full(b["input_ids"].shape, -100, np.int64)
    rows, cols = np.nonzero(b["masked_weights"] > 0)
    labels[rows, b["masked_positions"][rows, cols]] = b["masked_ids"][rows, cols]
    return torch.from_numpy(labels)


def loss_grad_rows(case: Case) -> list[Row]:
    from torchbert.model import pretraining_loss
    ln, cfg, b = case.layer_norm_position, case.model_config, case.batches[0]
    tm = torch_model(cfg, case.init).train()       # dropout rates are 0: training path, no noise
    tb = _tb(b)
    mlm, nsp = tm(tb["input_ids"], tb["token_type_ids"], tb["attention_mask"],
                  tb["masked_positions"])
    loss_t, _ = pretraining_loss(mlm, nsp, tb)
    loss_t.backward()
    g_t = {n: p.grad.numpy() for n, p in tm.named_parameters()}
    _, loss_and_grad = _jax_fns(cfg)
    loss_j, g = loss_and_grad(jax_params(cfg, case.init), b)
    g_j = flax_to_hf(jax.tree_util.tree_map(np.asarray, g), cfg)
    lt, lj = loss_t.item(), float(loss_j)
    rows = [Row(ln, "loss: torch vs jax", abs(lt - lj), abs(lt - lj) / abs(lt),
                f"rel <= {T.LOSS_REL:g}", abs(lt - lj) / abs(lt) <= T.LOSS_REL)]
    if ln == "post":
        hf = _hf_model(cfg, tm)
        with torch.no_grad():
            lh = float(hf(input_ids=tb["input_ids"].long(),
                          token_type_ids=tb["token_type_ids"].long(),
                          attention_mask=tb["attention_mask"].long(), labels=_hf_labels(b),
                          next_sentence_label=tb["next_sentence_label"].long()).loss)
        for name, l in (("torch", lt), ("jax", lj)):
            r = abs(l - lh) / abs(lh)
            rows.append(Row(ln, f"loss: {name} vs HF (its own loss from labels)", abs(l - lh), r,
                            f"rel <= {T.LOSS_REL:g}", r <= T.LOSS_REL))
    rows.append(grad_row(ln, g_t, g_j))
    return rows


def grad_row(ln: str, g_t: dict[str, np.ndarray], g_j: dict[str, np.ndarray]) -> Row:
    """Worst per-tensor ||g_t - g_j|| / ||g_t||; tensors whose true gradient is zero (rounding
    noise in both twins, see thresholds.GRAD_ZERO_FLOOR) must be noise-sized in both."""
    norm = lambda a: float(np.linalg.norm(np.asarray(a, np.float64)))
    floor = T.GRAD_ZERO_FLOOR * math.sqrt(sum(norm(g) ** 2 for g in g_t.values()))
    worst, worst_name, worst_abs, zero, bad_zero = 0.0, "", 0.0, [], []
    for n, gt in g_t.items():
        gt64, gj64 = gt.astype(np.float64), np.asarray(g_j[n], np.float64)
        if norm(gt64) < floor:
            (zero if norm(gj64) < floor else bad_zero).append(n)
            continue
        r = norm(gt64 - gj64) / norm(gt64)
        if r >= worst:
            worst, worst_name, worst_abs = r, n, float(np.max(np.abs(gt64 - gj64)))
    note = f"worst: {worst_name}"
    if zero:
        note += f"; zero in exact arithmetic, noise < {floor:.1e} in both: {len(zero)} tensors " \
                f"({', '.join(sorted({z.split('.')[-2] + '.' + z.split('.')[-1] for z in zero}))})"
    if bad_zero:
        note += f"; ZERO in torch but not in jax: {', '.join(bad_zero)}"
    return Row(ln, f"gradients: torch vs jax, worst of {len(g_t)} tensors", worst_abs, worst,
               f"rel (norm) <= {T.GRAD_REL:g}", worst <= T.GRAD_REL and not bad_zero, note=note)


# ---- optimizer and training, through each twin's own train_step ------------------------------------

def torch_setup(case: Case, train: TrainConfig, config: BertConfig, weights=None):
    from torchbert.train import make_optimizer
    model = torch_model(config, case.init if weights is None else weights).train()
    return model, make_optimizer(model, train)


def torch_steps(case: Case, model, optimizer, train: TrainConfig, start: int, stop: int,
                hook=None) -> list[float]:
    """Steps start+1..stop, exactly as torchbert.train's loop does them."""
    from torchbert.train import train_step
    lr_at = make_schedule(train, model.config.hidden_size)
    losses = []
    for step in range(start + 1, stop + 1):
        torch.manual_seed(step_seed(train.seed, step, 0))    # this step's dropout masks
        m = train_step(model, optimizer, case.batches[step - 1], float(lr_at(step - 1)), train,
                       CPU, 1)
        losses.append(float(m["loss"]))
        if hook:
            hook(step)
    return losses


def jax_setup(case: Case, train: TrainConfig, config: BertConfig):
    from jaxbert.train import create_state, seed_keys
    tx, layout = _jax_layout(config, train)
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


def adamw_rows(case: Case) -> list[Row]:
    ln, cfg, train = case.layer_norm_position, case.model_config, case.train
    model, opt = torch_setup(case, train, cfg)
    decayed_t = {n for g in opt.param_groups if g["weight_decay"] > 0
                 for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    state, layout, key = jax_setup(case, train, cfg)
    from jaxbert.train import decay_mask
    mask = flax_to_hf(decay_mask(jax.device_get(state.params)), cfg)
    decayed_j = {n for n, v in mask.items() if bool(v)}
    bad = sorted(decayed_t ^ decayed_j)
    rows = [Row(ln, "AdamW decay mask: tensors decayed differently", float(len(bad)), 0.0,
                "0 tensors", not bad, note=", ".join(bad[:4]) or
                f"{len(decayed_t)} decayed, {len(mask) - len(decayed_t)} not (biases, LayerNorm)")]
    from torchbert.train import train_step
    lr = float(make_schedule(train, cfg.hidden_size)(0))
    m_t = train_step(model, opt, case.batches[0], lr, train, CPU, 1)
    state, m_j = layout.fn(state, layout.put_batch(case.batches[0]), key)
    gn_t, gn_j = float(m_t["grad_norm"]), float(m_j["grad_norm"])
    r = abs(gn_t - gn_j) / gn_t
    rows.append(Row(ln, "AdamW step: global grad norm (before clipping)", abs(gn_t - gn_j), r,
                    f"rel <= {T.GRAD_REL:g}", r <= T.GRAD_REL,
                    note=f"{gn_t:.3f} vs clip {train.grad_clip}: "
                         f"{'clipped' if gn_t > train.grad_clip else 'not clipped'}"))
    p_j = flax_to_hf(jax.device_get(state.params), cfg)
    worst, worst_name, worst_rel = 0.0, "", 0.0
    for n, p in model.hf_state_dict().items():
        d, rr = _max_abs(p.detach().numpy(), p_j[n])
        if d >= worst:
            worst, worst_name, worst_rel = d, n, rr
    rows.append(Row(ln, f"AdamW step: updated params (lr {lr:.2g})", worst, worst_rel,
                    f"max abs <= {T.ADAMW_STEP_MAX_ABS:g}", worst <= T.ADAMW_STEP_MAX_ABS,
                    note=f"worst: {worst_name}"))
    return rows


def _write_rundir(path: Path, framework: str, case: Case, train: TrainConfig) -> Path:
    """The framework-free files of a RUNDIR (bertcore/run.py) so parity.convert can read it."""
    path.mkdir(parents=True, exist_ok=True)
    info = {"framework": framework, "data": str(case.shards.path.resolve()), "corpus": None}
    (path / "run.json").write_text(json.dumps(info), encoding="utf-8")
    case.config.to_json_file(path / "config.json")
    train.to_json_file(path / "train_config.json")
    case.tokenizer.save(path / "tokenizer")
    return path


def _curve_row(ln, what, ref, other, bar, first_step: int = 1) -> Row:
    ref, other = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    d = np.abs(ref - other)
    r = d / np.abs(ref)
    return Row(ln, what, float(d.max()), float(r.max()), f"rel <= {bar:g} every step",
               bool(r.max() <= bar),
               note=f"{len(ref)} steps; worst at step {first_step + int(np.argmax(r))}")


def training_rows(case: Case, curves: dict, steps: int | None = None) -> list[Row]:
    """N-step curves of both twins, plus resume across frameworks through files on disk.
    N = `steps` (default: the whole schedule, case.train.steps)."""
    from jaxbert.checkpoint import Checkpointer, key_from_list, key_to_list
    from torchbert.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    ln, cfg, train = case.layer_norm_position, case.model_config, case.train
    n = steps or train.steps
    half = n // 2
    work = Path(tempfile.mkdtemp(prefix=f"resume-{ln}-", dir=case.workdir))
    quiet = lambda *_: None

    # torch: N steps straight, checkpoint at N/2 (torchbert's own save_checkpoint)
    model, opt = torch_setup(case, train, cfg)
    t_dir = _write_rundir(work / "torch", "torch", case, train)

    def t_save(step):
        if step == half:
            save_checkpoint(t_dir, step, model, opt, {"step": step,
                                                      "batches": case.batch_states[step]}, keep=1)
    lt = torch_steps(case, model, opt, train, 0, n, t_save)

    # jax: N steps straight, checkpoint at N/2 (jaxbert's own Checkpointer)
    state, layout, key = jax_setup(case, train, cfg)
    j_dir = _write_rundir(work / "jax", "jax", case, train)

    def j_save(step, st):
        if step == half:
            with Checkpointer(j_dir, cfg) as c:
                c.save(step, st, {"step": step, "batches": case.batch_states[step],
                                  "rng": key_to_list(key)})
    state, lj = jax_steps(case, state, layout, key, 0, n, j_save)
    rows = [_curve_row(ln, f"{n}-step loss curve: torch vs jax", lt, lj, T.CURVE_REL)]

    # torch N/2 -> convert -> jax N/2, against torch N
    convert(t_dir, work / "torch-to-jax", "jax", log=quiet)
    from jaxbert.train import create_state
    tx, layout = _jax_layout(cfg, train)
    with Checkpointer(work / "torch-to-jax", cfg) as c:
        st, extra = c.restore(create_state(jax_params(cfg, case.init), tx))
    same_data = _next_batch_equal(case, extra["batches"], half)
    # via host arrays, so the state is placed exactly as a fresh one (no second compilation)
    st = layout.put_state(jax.device_get(st))
    _, l_tj = jax_steps(case, st, layout, key_from_list(extra["rng"]), half, n)
    row = _curve_row(ln, f"resume: torch {half} -> convert -> jax {n - half} vs torch {n}",
                     lt[half:], l_tj, T.RESUME_REL, half + 1)
    rows.append(_with_data_check(row, same_data))

    # jax N/2 -> convert -> torch N/2, against jax N
    convert(j_dir, work / "jax-to-torch", "torch", log=quiet)
    from torchbert.model import BertForPreTraining
    from torchbert.train import make_optimizer
    m2 = BertForPreTraining(cfg).train()
    o2 = make_optimizer(m2, train)
    extra = load_checkpoint(latest_checkpoint(work / "jax-to-torch"), m2, o2)
    same_data = _next_batch_equal(case, extra["batches"], half)
    l_jt = torch_steps(case, m2, o2, train, half, n)
    row = _curve_row(ln, f"resume: jax {half} -> convert -> torch {n - half} vs jax {n}",
                     lj[half:], l_jt, T.RESUME_REL, half + 1)
    rows.append(_with_data_check(row, same_data))
    curves.update(torch=lt, jax=lj, torch_to_jax=l_tj, jax_to_torch=l_jt, half=half)
    return rows


def _next_batch_equal(case: Case, batch_state: dict, step: int) -> bool:
    nxt = next(BatchIterator(case.shards, case.tokenizer, case.train, state=batch_state))
    return all(np.array_equal(nxt[k], case.batches[step][k]) for k in nxt)


def _with_data_check(row: Row, same: bool) -> Row:
    if not same:
        row.passed, row.note = False, "the converted data position gives another next batch"
    else:
        row.note += "; next batch after conversion identical"
    return row


def dropout_rows(case: Case, curves: dict, steps: int | None = None) -> list[Row]:
    """Dropout on: the twins' RNGs differ, so compare mean losses (parity/thresholds.py).
    Needs `curves` from training_rows (the dropout-off curves) of at least as many steps."""
    ln = case.layer_norm_position
    cfg, train = case.with_dropout()
    n = steps or train.steps
    model, opt = torch_setup(case, train, cfg)
    lt = np.asarray(torch_steps(case, model, opt, train, 0, n))
    state, layout, key = jax_setup(case, train, cfg)
    _, lj = jax_steps(case, state, layout, key, 0, n)
    lj = np.asarray(lj)
    d = lt - lj
    n = len(d)
    dc = d - d.mean()
    r1 = float(np.clip((dc[1:] * dc[:-1]).sum() / max((dc * dc).sum(), 1e-30), 0.0, 0.9))
    n_eff = n * (1 - r1) / (1 + r1)
    se = float(d.std(ddof=1) / math.sqrt(n_eff)) if n > 1 else float("inf")
    tol = T.DROPOUT_Z * se
    rows = [Row(ln, f"dropout on: mean loss over {n} steps, torch vs jax", abs(d.mean()),
                abs(d.mean()) / lt.mean(), f"|diff| <= {T.DROPOUT_Z:g} SE = {tol:.3g}",
                abs(d.mean()) <= tol,
                note=f"means {lt.mean():.4f} vs {lj.mean():.4f}; SE {se:.3g} "
                     f"(std {d.std(ddof=1):.3g}, lag-1 autocorr {r1:.2f}, n_eff {n_eff:.0f})")]
    off_t, off_j = np.asarray(curves["torch"][:n]), np.asarray(curves["jax"][:n])
    act = min(float(np.max(np.abs(lt - off_t) / off_t)), float(np.max(np.abs(lj - off_j) / off_j)))
    rows.append(Row(ln, "dropout on: active in both twins (vs own dropout-off curve)", act, act,
                    f"rel > {T.DROPOUT_ACTIVE_REL:g}", act > T.DROPOUT_ACTIVE_REL,
                    note="the smaller of the two twins' worst-step changes"))
    curves.update(torch_dropout=lt.tolist(), jax_dropout=lj.tolist())
    return rows


# ---- the whole report ------------------------------------------------------------------------------

@dataclass
class Report:
    preset: str
    steps: int
    rows: list[Row] = field(default_factory=list)
    curves: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def table(self) -> str:
        head = "| LN | quantity | max abs diff | relative diff | bar | result | note |"
        lines = [head, "|---|---|---|---|---|---|---|"]
        def cell(text: str) -> str:  # a "|" inside a cell would split it
            return str(text).replace("|", "\\|")

        for r in self.rows:
            lines.append(f"| {r.ln} | {cell(r.quantity)} | {r.max_abs:.3g} | {r.rel:.3g} | "
                         f"{cell(r.bar)} | {'pass' if r.passed else '**FAIL**'} | "
                         f"{cell(r.note)} |")
        return "\n".join(lines)


def run_check(preset: str = "tiny", steps: int = 100, positions=("post", "pre"),
              workdir: Path | None = None, seed: int = 0, threads: int | None = None,
              log=print) -> Report:
    """Every row for `preset` and each LayerNorm position. `threads` sets torch's intra-op
    threads for the run (1 is fastest on a busy small machine, where spinning OpenMP threads
    fight other processes), restored afterwards."""
    report = Report(preset, steps)
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="parity-") as tmp, \
                jax.default_device(jax.devices("cpu")[0]):
            work = Path(workdir or tmp)
            for ln in positions:
                case = make_case(preset, ln, work, steps, seed)
                curves: dict = {}
                for part in (forward_rows, loss_grad_rows, adamw_rows,
                             functools.partial(training_rows, curves=curves),
                             functools.partial(dropout_rows, curves=curves)):
                    t = time.perf_counter()
                    rows = part(case)
                    report.rows += rows
                    name = getattr(part, "func", part).__name__
                    log(f"[{preset}/{ln}] {name}: {sum(r.passed for r in rows)}/{len(rows)} "
                        f"pass ({time.perf_counter() - t:.1f}s)")
                report.curves[ln] = curves
    finally:
        torch.set_num_threads(old_threads)
    report.seconds = time.perf_counter() - t0
    return report


def plot(report: Report, png: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lns = list(report.curves)
    fig, axes = plt.subplots(2, len(lns), figsize=(6.5 * len(lns), 7), squeeze=False,
                             sharex=True)
    for col, ln in enumerate(lns):
        c = report.curves[ln]
        steps = np.arange(1, len(c["torch"]) + 1)
        half = c["half"]
        ax = axes[0, col]
        ax.plot(steps, c["torch"], label="torchbert", lw=2.2, color="tab:red")
        ax.plot(steps, c["jax"], label="jaxbert", lw=1.2, ls="--", color="tab:blue")
        ax.plot(steps[half:], c["torch_to_jax"], lw=1, ls=":", color="black",
                label=f"torch {half} -> jax (converted)")
        if "torch_dropout" in c:
            ax.plot(steps, c["torch_dropout"], lw=0.8, alpha=0.5, color="tab:red",
                    label="torchbert, dropout on")
            ax.plot(steps, c["jax_dropout"], lw=0.8, alpha=0.5, color="tab:blue",
                    label="jaxbert, dropout on")
        ax.set_title(f"{report.preset}, {ln}-LN: loss (fp32 CPU, same init and batches)")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax = axes[1, col]
        rel = lambda a, b: np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(a))
        ax.semilogy(steps, np.maximum(rel(c["torch"], c["jax"]), 1e-10), label="torch vs jax")
        ax.semilogy(steps[half:], np.maximum(rel(c["torch"][half:], c["torch_to_jax"]), 1e-10),
                    label="torch vs torch->jax resume")
        ax.semilogy(steps[half:], np.maximum(rel(c["jax"][half:], c["jax_to_torch"]), 1e-10),
                    label="jax vs jax->torch resume")
        ax.axhline(T.CURVE_REL, color="red", ls="--", lw=1, label=f"bar {T.CURVE_REL:g}")
        ax.set_xlabel("step")
        ax.set_ylabel("|relative loss difference| (0 drawn at 1e-10)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)
    return png


def write_report(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    png = plot(report, out / "loss_curves.png")
    fails = [r for r in report.rows if not r.passed]
    md = (f"# twinbert parity report: {report.preset}\n\n"
          f"fp32 CPU; torch {torch.__version__}, jax {jax.__version__}; {report.steps} training "
          f"steps; same torch init (converted with bertcore/hf.py's table) and the same bertcore "
          f"batches in both twins; dropout off except the `dropout on` rows. Bars: "
          f"parity/thresholds.py. HF rows: post-LN only (transformers' BERT is post-LN). "
          f"{len(report.rows) - len(fails)}/{len(report.rows)} rows pass "
          f"({report.seconds:.0f}s).\n\n{report.table()}\n\n![loss curves]({png.name})\n")
    write_text_atomic(out / "report.md", md)
    write_text_atomic(out / "report.json", json.dumps(
        {"preset": report.preset, "steps": report.steps, "passed": report.passed,
         "rows": [asdict(r) for r in report.rows], "curves": report.curves}, indent=1) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m parity.check",
        description="Agreement report of torchbert, jaxbert and transformers' BertForPreTraining "
                    "(fp32 CPU): forward, loss, gradients, one AdamW step, training curves, "
                    "cross-framework resume, dropout statistics. Exit status 1 if a row fails.",
        epilog="Time on a busy 2-core CPU with --threads 1: tiny about 1.5 minutes, mini about 8 "
               "(most of it the 100-step runs: 250 steps per twin and LayerNorm position).")
    p.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model size [tiny]")
    p.add_argument("--steps", type=int, default=100, help="training steps for the curves [100]")
    p.add_argument("--layer-norm-position", default="both", choices=["post", "pre", "both"],
                   help="which variants to check [both]")
    p.add_argument("--seed", type=int, default=0, help="init, data and dropout seed [0]")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads [torch's default; 1 is best on a busy machine]")
    p.add_argument("--out", help="report directory [runs/parity-<preset>]")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2 (the resume rows split the run in halves)")
    return args


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    from jaxbert.train import enable_compilation_cache
    enable_compilation_cache()   # the twins' XLA programs compile once per machine, not per run
    positions = ("post", "pre") if args.layer_norm_position == "both" else \
        (args.layer_norm_position,)
    report = run_check(args.preset, args.steps, positions, seed=args.seed, threads=args.threads,
                       log=lambda s: print(s, file=sys.stderr))
    out = Path(args.out or f"runs/parity-{args.preset}")
    write_report(report, out)
    print(report.table())
    print(f"\n{sum(r.passed for r in report.rows)}/{len(report.rows)} rows pass; report and plot "
          f"in {out}/ (report.md, loss_curves.png)")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
