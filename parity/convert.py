"""One table of parameter names and layouts: Hugging Face / torchbert <-> jaxbert (Flax).

Both twins use Hugging Face's parameter names (`bert.encoder.layer.3.attention.self.query.weight`
in torch, `bert/encoder/layer/3/attention/self/query/kernel` in Flax), so conversion is only the
frameworks' conventions, and all of them live in `TABLE` and `KINDS` below:

- Dense:     torch `weight` [out, in]  <->  Flax `kernel` [in, out]   (transpose)
- LayerNorm: torch `weight`            <->  Flax `scale`
- Embedding: torch `weight`            <->  Flax `embedding`
- the MLM decoder is tied to the word embeddings: `cls.predictions.decoder.weight` is the same
  matrix as `bert.embeddings.word_embeddings.weight` (and `cls.predictions.decoder.bias` the same
  vector as `cls.predictions.bias`), so neither is a separate Flax parameter.

`hf_to_flax` and `flax_to_hf` both call the single `_convert`, walking the same rules with the
source and destination sides swapped; a transpose is its own inverse, so a round trip is
bit-exact. Any pytree shaped like the params converts the same way: AdamW's first and second
moments (optax `mu`/`nu`, torch `exp_avg`/`exp_avg_sq`) map with exactly these rules.

The rest of the module uses the table to convert whole checkpoints (`convert`, and the command
line `python -m parity.convert SRC DST --to torch|jax|hf`): every reader (torchbert checkpoint,
jaxbert checkpoint, Hugging Face directory) produces one framework-free `TrainingState` (HF
names, torch layout, numpy) and every writer consumes it, so the params and both AdamW moments of
every direction pass through the same two functions, `hf_to_flax` and `flax_to_hf`.

This module is framework-free at import time (numpy only): it must import neither torch nor jax
at module level. Readers and writers import the twin they need when called, and reuse its own
checkpoint code (torchbert.checkpoint, jaxbert.checkpoint), so formats cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from bertcore.config import BertConfig, TrainConfig
from bertcore.errors import UserError, atomic_path, cli_entry
from bertcore.hf import read_safetensors, safetensors_files
from bertcore.run import read_metrics, trained_model_config

# ---- the table -------------------------------------------------------------------------------
# (module name in Hugging Face's BertForPreTraining, kind). "{i}" is a layer index. The Flax path
# is the same name split at the dots; the kind says how its leaves are named and laid out.
TABLE: tuple[tuple[str, str], ...] = (
    ("bert.embeddings.word_embeddings", "embed"),
    ("bert.embeddings.position_embeddings", "embed"),
    ("bert.embeddings.token_type_embeddings", "embed"),
    ("bert.embeddings.LayerNorm", "layernorm"),
    ("bert.encoder.layer.{i}.attention.self.query", "dense"),
    ("bert.encoder.layer.{i}.attention.self.key", "dense"),
    ("bert.encoder.layer.{i}.attention.self.value", "dense"),
    ("bert.encoder.layer.{i}.attention.output.dense", "dense"),
    ("bert.encoder.layer.{i}.attention.output.LayerNorm", "layernorm"),
    ("bert.encoder.layer.{i}.intermediate.dense", "dense"),
    ("bert.encoder.layer.{i}.output.dense", "dense"),
    ("bert.encoder.layer.{i}.output.LayerNorm", "layernorm"),
    ("bert.encoder.LayerNorm", "layernorm"),  # layer_norm_position="pre" only
    ("bert.pooler.dense", "dense"),
    ("cls.predictions.transform.dense", "dense"),
    ("cls.predictions.transform.LayerNorm", "layernorm"),
    ("cls.predictions", "bias"),  # the decoder's bias, a bare vector
    ("cls.seq_relationship", "dense"),
)

# kind -> ((torch leaf, Flax leaf, transpose), ...)
KINDS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "dense": (("weight", "kernel", True), ("bias", "bias", False)),
    "layernorm": (("weight", "scale", False), ("bias", "bias", False)),
    "embed": (("weight", "embedding", False),),
    "bias": (("bias", "bias", False),),
}

# Names a Hugging Face file may hold that are not parameters of their own.
TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
BUFFERS = ("bert.embeddings.position_ids",)  # saved by older transformers versions
# Heads a save may lack (BertModel.save_pretrained has no `cls.`; BertForMaskedLM no pooler).
HEAD_PREFIXES = ("cls.", "bert.pooler.")


@dataclass(frozen=True)
class Param:
    hf_name: str                 # "bert.encoder.layer.0.attention.self.query.weight"
    flax_path: tuple[str, ...]   # ("bert", "encoder", "layer", "0", "attention", "self", ...)
    transpose: bool              # Dense kernel: torch [out, in] is Flax [in, out]
    hf_shape: tuple[int, ...] | None = None


def _rule_regexes() -> list[tuple[re.Pattern, re.Pattern, str, str, bool]]:
    """Each (module, leaf) rule as a regex over HF names and one over Flax paths ("/"-joined)."""
    rules = []
    for module, kind in TABLE:
        for hf_leaf, flax_leaf, transpose in KINDS[kind]:
            hf = re.escape(f"{module}.{hf_leaf}").replace(re.escape("{i}"), r"(\d+)")
            fx = re.escape("/".join(module.split(".") + [flax_leaf])).replace(
                re.escape("{i}"), r"(\d+)")
            rules.append((re.compile(hf + "$"), re.compile(fx + "$"), module, flax_leaf,
                          transpose))
    return rules


_RULES = _rule_regexes()


def _shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """HF (torch) shape of every module's weight, by module template; biases are [out]."""
    H, I, V = config.hidden_size, config.intermediate_size, config.vocab_size
    return {
        "bert.embeddings.word_embeddings": (V, H),
        "bert.embeddings.position_embeddings": (config.max_position_embeddings, H),
        "bert.embeddings.token_type_embeddings": (config.type_vocab_size, H),
        "bert.encoder.layer.{i}.intermediate.dense": (I, H),
        "bert.encoder.layer.{i}.output.dense": (H, I),
        "cls.predictions": (V,),
        "cls.seq_relationship": (2, H),
    }


def param_table(config: BertConfig) -> list[Param]:
    """Every parameter of `BertForPreTraining(config)`, in model order, with its HF shape."""
    H = config.hidden_size
    shapes = _shapes(config)
    out = []
    for module, kind in TABLE:
        if module == "bert.encoder.LayerNorm" and config.layer_norm_position != "pre":
            continue
        layers = range(config.num_hidden_layers) if "{i}" in module else [None]
        for i in layers:
            name = module.replace("{i}", str(i))
            for hf_leaf, flax_leaf, transpose in KINDS[kind]:
                w = shapes.get(module, (H, H) if kind == "dense" else (H,))
                shape = w if hf_leaf == "weight" or kind == "bias" else (w[0],)
                out.append(Param(f"{name}.{hf_leaf}", tuple(name.split(".")) + (flax_leaf,),
                                 transpose, shape))
    return out


def hf_names(config: BertConfig) -> list[str]:
    return [p.hf_name for p in param_table(config)]


def _lookup(key: str, to_flax: bool) -> tuple[str, bool] | None:
    """Map one name across, using the rule that matches it: (destination name, transpose)."""
    for hf_re, flax_re, module, flax_leaf, transpose in _RULES:
        m = (hf_re if to_flax else flax_re).match(key)
        if m is None:
            continue
        name = module
        for idx in m.groups():
            name = name.replace("{i}", idx, 1)
        if to_flax:
            return "/".join(name.split(".") + [flax_leaf]), transpose
        hf_leaf = next(h for h, f, _ in KINDS[dict(TABLE)[module]] if f == flax_leaf)
        return f"{name}.{hf_leaf}", transpose
    return None


def _convert(flat: Mapping[str, Any], to_flax: bool) -> tuple[dict[str, np.ndarray], list[str]]:
    """The one conversion: rename each leaf by the table and transpose Dense kernels.

    Keys are HF dotted names (to_flax) or "/"-joined Flax paths (not to_flax). Returns the
    converted leaves and the keys no rule matched.
    """
    out, unknown = {}, []
    for key, value in flat.items():
        hit = _lookup(key, to_flax)
        if hit is None:
            unknown.append(key)
            continue
        name, transpose = hit
        a = np.asarray(value)
        out[name] = np.ascontiguousarray(a.T) if transpose else a
    return out, unknown


def normalize_hf_names(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Bring a HF state dict to canonical names: add the `bert.` prefix that BertModel saves lack,
    rename TF-era `gamma`/`beta`, drop buffers, and check tied copies equal what they tie to."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        name = key if key.startswith(("bert.", "cls.")) else f"bert.{key}"
        name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
        if name in BUFFERS:
            continue
        out[name] = np.asarray(value)
    for copy, source in TIED.items():
        if copy in out:
            tied = out.pop(copy)
            if source in out and not np.array_equal(tied, out[source]):
                raise UserError(f"{copy} differs from {source}: this checkpoint's MLM decoder is "
                                f"not tied to its {source.split('.')[-2]}, which this model "
                                f"requires; re-save it with tied weights")
            out.setdefault(source, tied)
    return out


def _fail(what: str, names: Iterable[str], fix: str) -> None:
    names = sorted(names)
    if names:
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise UserError(f"{what}: {shown}; {fix}")


def hf_to_flax(state: Mapping[str, Any], config: BertConfig,
               missing_ok: tuple[str, ...] = ()) -> dict:
    """HF/torch state dict (name -> array) -> nested Flax params dict for `config`.

    Names may lack the `bert.` prefix; tied decoder copies are checked and dropped. Unknown,
    missing (except names starting with a prefix in `missing_ok`) or wrongly shaped parameters
    raise `UserError` listing them. Missing names are simply absent from the result.
    """
    state = normalize_hf_names(state)
    expected = {p.hf_name: p for p in param_table(config)}
    _fail("unexpected parameter names for this config", set(state) - set(expected),
          "check that the checkpoint and config.json belong together")
    _fail("missing parameters", [n for n in set(expected) - set(state)
                                 if not n.startswith(missing_ok)],
          "the checkpoint is incomplete or from another model")
    _fail("parameters with the wrong shape", [
        f"{n} {tuple(a.shape)} (config wants {expected[n].hf_shape})"
        for n, a in state.items() if tuple(a.shape) != expected[n].hf_shape],
        "config.json does not match the weights")
    flat, _ = _convert(state, to_flax=True)
    return unflatten(flat)


def flax_to_hf(params: Mapping[str, Any], config: BertConfig | None = None,
               include_tied: bool = False) -> dict[str, np.ndarray]:
    """Nested Flax params (or AdamW moments shaped like them) -> HF name -> numpy array.

    With `config`, missing parameters are an error too. `include_tied` adds the tied
    `cls.predictions.decoder.{weight,bias}` copies that a strict torch `load_state_dict` wants
    (Hugging Face's own files leave them out).
    """
    flat = flatten(params)
    out, unknown = _convert(flat, to_flax=False)
    _fail("unknown Flax parameter paths", unknown, "is this a jaxbert BertForPreTraining tree?")
    if config is not None:
        _fail("missing parameters", set(hf_names(config)) - set(out),
              "the parameter tree does not match the config")
    if include_tied:
        for copy, source in TIED.items():
            if source in out:
                out[copy] = out[source]
    return out


# ---- nested <-> flat ("/"-joined paths); works on dicts and flax FrozenDicts --------------------

def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, path))
        else:
            out[path] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


# ==== training state: one framework-free form between every reader and every writer ============
#
# Readers turn a torchbert checkpoint, a jaxbert checkpoint or a Hugging Face directory into a
# `TrainingState` (HF names, torch layout, numpy); writers turn it into the other forms. The Flax
# side of every tensor (params *and* AdamW moments) goes through `hf_to_flax` / `flax_to_hf`
# above, so there is no second copy of the name or layout rules anywhere.

@dataclass
class TrainingState:
    """A checkpoint, framework-free. `exp_avg`/`exp_avg_sq` are torch's names for AdamW's first
    and second moments (optax `mu`/`nu`); a parameter that never had a gradient may lack them
    (torch keeps no state for it; optax holds zeros, which is the same thing)."""
    config: BertConfig                  # the model config (RUNDIR/config.json, dropout as set)
    params: dict[str, np.ndarray]       # HF name -> torch-layout array
    step: int = 0                       # optimizer updates done = every step counter there is
    exp_avg: dict[str, np.ndarray] | None = None
    exp_avg_sq: dict[str, np.ndarray] | None = None
    batches: dict[str, Any] | None = None   # bertcore BatchIterator.state(), identical in both
    rng: list[int] | None = None        # jaxbert's dropout key (torch reseeds per step: none)
    notes: list[str] = field(default_factory=list)


@dataclass
class RunFiles:
    """The framework-free files of a RUNDIR (bertcore/run.py): run.json and the two configs."""
    rundir: Path
    info: dict[str, Any]
    config: BertConfig
    train: TrainConfig

    @property
    def framework(self) -> str:
        return self.info["framework"]

    @property
    def trained_config(self) -> BertConfig:
        """The config the twins build the model with, which their checkpoints record."""
        return trained_model_config(self.config, self.train)


FRAMEWORKS = ("torch", "jax")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


# ---- what SRC is ----------------------------------------------------------------------------

def _read_run(rundir: Path) -> RunFiles:
    try:
        info = json.loads((rundir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{rundir}/run.json is unreadable ({e}); is {rundir} a training run?")
    if not isinstance(info, dict) or info.get("framework") not in FRAMEWORKS:
        raise UserError(f"{rundir}/run.json names no framework (torch or jax); it is not a "
                        f"torchbert or jaxbert run directory")
    for f in ("config.json", "train_config.json"):
        if not (rundir / f).is_file():
            raise UserError(f"{rundir} lacks {f}; it is not a complete run directory")
    return RunFiles(rundir, info, BertConfig.from_json_file(rundir / "config.json"),
                    TrainConfig.from_json_file(rundir / "train_config.json"))


def _has_hf_weights(d: Path) -> bool:
    return any((d / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json",
                                          "pytorch_model.bin"))


def detect_source(src: Path, step: int | None) -> tuple[str, Path, int | None]:
    """("torch" | "jax" | "hf", RUNDIR or HF dir, step). SRC may also be one checkpoint directory
    of a run (RUNDIR/checkpoints/step_00000100 or RUNDIR/checkpoints/100)."""
    if not src.exists():
        raise UserError(f"{src} does not exist; pass a torchbert or jaxbert run directory, one "
                        f"of its checkpoints, or a Hugging Face BERT directory")
    if not src.is_dir():
        raise UserError(f"{src} is a file, not a checkpoint: pass a run directory, a checkpoint "
                        f"directory or a Hugging Face BERT directory (config.json + "
                        f"model.safetensors)")
    ckpt_step = None
    if src.parent.name == "checkpoints" and (src.parent.parent / "run.json").is_file():
        m = re.fullmatch(r"step_(\d{8})|(\d+)", src.name)
        if m is None:
            raise UserError(f"{src} is not a checkpoint directory (step_XXXXXXXX or a step "
                            f"number)")
        ckpt_step = int(m.group(1) or m.group(2))
        if step is not None and step != ckpt_step:
            raise UserError(f"--step {step} contradicts the checkpoint {src} (step {ckpt_step})")
        src, step = src.parent.parent, ckpt_step
    if (src / "run.json").is_file():
        return _read_run(src).framework, src, step
    if (src / "config.json").is_file() and _has_hf_weights(src):
        if step is not None:
            raise UserError(f"--step applies to run directories; {src} is a Hugging Face BERT "
                            f"directory with a single set of weights")
        return "hf", src, None
    raise UserError(f"{src} is not a checkpoint: no run.json (torchbert/jaxbert run directory) "
                    f"and no config.json + model.safetensors (Hugging Face BERT directory)")


# ---- readers --------------------------------------------------------------------------------

def read_torch(run: RunFiles, step: int | None = None) -> TrainingState:
    """Everything a torchbert checkpoint holds, loaded and validated by torchbert's own code."""
    import torch

    from torchbert.checkpoint import list_checkpoints, load_checkpoint
    from torchbert.model import BertForPreTraining
    from torchbert.train import make_optimizer

    found = {int(p.name[len("step_"):]): p for p in list_checkpoints(run.rundir)}
    if not found:
        raise UserError(f"{run.rundir} (a torchbert run) has no checkpoint in "
                        f"{run.rundir / 'checkpoints'}")
    if step is not None and step not in found:
        raise UserError(f"{run.rundir} has no checkpoint for step {step}; available: "
                        f"{', '.join(map(str, sorted(found)))}")
    path = found[max(found) if step is None else step]
    model = BertForPreTraining(run.trained_config)
    optimizer = make_optimizer(model, run.train, torch.device("cpu"))
    extra = load_checkpoint(path, model, optimizer)   # checks files, config, names, shapes
    step = int(extra["step"])
    params = {k: v.detach().numpy() for k, v in model.hf_state_dict().items()}
    exp_avg, exp_avg_sq, off = {}, {}, []
    for name, p in model.named_parameters():       # the tied decoder is listed once, as HF
        s = optimizer.state.get(p)
        if not s:
            continue                                 # never had a gradient (e.g. NSP head, --no-nsp)
        if int(s["step"]) != step:
            off.append(f"{name} (step {int(s['step'])})")
        exp_avg[name] = s["exp_avg"].numpy()
        exp_avg_sq[name] = s["exp_avg_sq"].numpy()
    _fail(f"{path}: AdamW step counts differ from the checkpoint's step {step}", off,
          "the optimizer state is not from this run's loop")
    return TrainingState(run.config, params, step, exp_avg, exp_avg_sq, extra.get("batches"))


def _opt_nodes(node: Any) -> list[Any]:
    """The namedtuple states inside an optax state (chain tuples walked, params trees not)."""
    if isinstance(node, tuple):
        inner = [n for c in node for n in _opt_nodes(c)]
        return inner + ([node] if hasattr(node, "_fields") else [])
    return []


def _replace_opt(node: Any, fn: Callable[[Any], Any]) -> Any:
    """Rebuild an optax state with `fn` applied to each namedtuple state (bottom-up)."""
    if isinstance(node, tuple):
        kids = [_replace_opt(c, fn) for c in node]
        return fn(type(node)(*kids)) if hasattr(node, "_fields") else type(node)(kids)
    return node


def _adam_state(opt_state: Any) -> Any:
    adam = [n for n in _opt_nodes(opt_state) if {"count", "mu", "nu"} <= set(n._fields)]
    if len(adam) != 1:
        raise ValueError(f"expected one ScaleByAdamState in the optax state, found {len(adam)}")
    return adam[0]


def _jax_target(config: BertConfig, train: TrainConfig):
    """The abstract TrainState jaxbert.train builds (shapes only; nothing is initialised)."""
    import jax

    from jaxbert.model import init_params
    from jaxbert.train import create_state, make_optimizer

    tx = make_optimizer(train, config.hidden_size)
    return jax.eval_shape(lambda: create_state(init_params(config, jax.random.PRNGKey(0)), tx))


def read_jax(run: RunFiles, step: int | None = None) -> TrainingState:
    """Everything a jaxbert (orbax) checkpoint holds, restored by jaxbert's own Checkpointer."""
    from jaxbert.checkpoint import Checkpointer

    cfg = run.trained_config
    with Checkpointer(run.rundir, cfg) as ckpt:      # checks config, structure, shapes
        state, extra = ckpt.restore(_jax_target(cfg, run.train), step)
    step = int(extra["step"])
    adam = _adam_state(state.opt_state)
    counts = {"TrainState.step": state.step, "ScaleByAdamState.count": adam.count,
              **{f"{type(n).__name__}.count": n.count for n in _opt_nodes(state.opt_state)
                 if "count" in n._fields and n is not adam}}
    _fail(f"{run.rundir}: step counters differ from the checkpoint's step {step}",
          [f"{k}={int(v)}" for k, v in counts.items() if int(v) != step],
          "the checkpoint is inconsistent")
    np_tree = lambda t: {k: np.asarray(v) for k, v in flatten(t).items()}
    return TrainingState(run.config, flax_to_hf(unflatten(np_tree(state.params)), cfg), step,
                         flax_to_hf(unflatten(np_tree(adam.mu)), cfg),
                         flax_to_hf(unflatten(np_tree(adam.nu)), cfg),
                         extra.get("batches"), extra.get("rng"))


def _read_hf_weights(path: Path) -> dict[str, np.ndarray]:
    files = safetensors_files(path)
    if files:
        return read_safetensors(files)
    # A pytorch_model.bin is a pickle: torchbert's reader opens it with weights_only=True.
    from torchbert.model import _read_weights

    state, _ = _read_weights(path)
    return {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def fresh_params(config: BertConfig, names: Iterable[str], seed: int = 0) -> dict[str, np.ndarray]:
    """HF's initialisation (N(0, initializer_range) weights, zero biases, LayerNorm 1/0) for the
    given parameters: heads a BertModel or BertForMaskedLM save does not have."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in param_table(config):
        if p.hf_name in names:
            leaf = p.flax_path[-1]
            out[p.hf_name] = (np.ones(p.hf_shape, np.float32) if leaf == "scale" else
                              np.zeros(p.hf_shape, np.float32) if leaf == "bias" else
                              rng.normal(0.0, config.initializer_range, p.hf_shape)
                              .astype(np.float32))
    return out


def read_hf(path: Path) -> TrainingState:
    """Weights of a Hugging Face BERT directory (BertForPreTraining, BertForMaskedLM or BertModel
    save; with or without the `bert.` prefix; tied decoder copies checked). Missing heads get a
    fresh initialisation."""
    config = BertConfig.from_json_file(path / "config.json")    # checks it is valid JSON
    kind = json.loads((path / "config.json").read_text(encoding="utf-8")).get(
        "position_embedding_type", "absolute")
    if kind != "absolute":
        raise UserError(f"{path}/config.json has position_embedding_type={kind!r}; only "
                        f"'absolute' (original BERT) is supported")
    state = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
             for k, v in normalize_hf_names(_read_hf_weights(path)).items()}
    hf_to_flax(state, config, missing_ok=HEAD_PREFIXES)   # lists unknown/missing/misshaped names
    missing = [n for n in hf_names(config) if n not in state]
    out = TrainingState(config, {**state, **fresh_params(config, missing)})
    if missing:
        modules = sorted({m.rsplit(".", 1)[0] for m in missing})
        out.notes.append(f"note: {path} has no {', '.join(modules)}; initialised fresh "
                         f"(N(0, {config.initializer_range}) weights, seed 0)")
    out.params = {n: out.params[n] for n in hf_names(config)}
    return out


# ---- writers --------------------------------------------------------------------------------

def write_torch_checkpoint(rundir: Path, state: TrainingState, run: RunFiles) -> Path:
    """RUNDIR/checkpoints/step_XXXXXXXX written by torchbert's own save_checkpoint, from a model
    and an AdamW built by torchbert (so groups, hyper-parameters and format are the twin's)."""
    import torch

    from bertcore.schedule import make_schedule
    from torchbert.checkpoint import save_checkpoint
    from torchbert.model import BertForPreTraining
    from torchbert.train import make_optimizer

    model = BertForPreTraining(run.trained_config)
    missing = model.load_hf_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                                        state.params.items()}, source="converted state")
    _fail("missing parameters", missing, "the state is incomplete")
    optimizer = make_optimizer(model, run.train, torch.device("cpu"))
    for name, p in model.named_parameters():
        if name in state.exp_avg:
            # torch keeps a per-parameter step: a float32 tensor, as AdamW itself creates it
            optimizer.state[p] = {"step": torch.tensor(float(state.step), dtype=torch.float32),
                                  "exp_avg": torch.from_numpy(np.array(state.exp_avg[name])),
                                  "exp_avg_sq": torch.from_numpy(np.array(state.exp_avg_sq[name]))}
    lr_at = make_schedule(run.train, run.config.hidden_size)
    for group in optimizer.param_groups:    # what the loop last set (it sets it every step)
        group["lr"] = float(lr_at(state.step - 1)) if state.step > 0 else run.train.lr
    return save_checkpoint(rundir, state.step, model, optimizer,
                           {"step": state.step, "batches": state.batches},
                           keep=run.train.keep_checkpoints)


def jax_dropout_key(seed: int) -> list[int]:
    """The dropout key jaxbert.train derives from the seed (second half of split(PRNGKey(seed)));
    a converted torch run continues with exactly the key a jax run of that seed would use."""
    import jax

    from jaxbert.checkpoint import key_to_list

    _, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    return key_to_list(dropout_key)


def write_jax_checkpoint(rundir: Path, state: TrainingState, run: RunFiles) -> None:
    """RUNDIR/checkpoints/<step> as jaxbert.train saves it: TrainState(step, params, opt_state)
    with optax's Adam mu/nu/count and the schedule count, plus extra {step, batches, rng}."""
    import jax
    import jax.numpy as jnp

    from jaxbert.checkpoint import Checkpointer
    from jaxbert.train import TrainState, make_optimizer

    cfg = run.trained_config
    to_tree = lambda named: jax.tree_util.tree_map(jnp.asarray, hf_to_flax(named, cfg))
    zeros = {n: np.zeros_like(a) for n, a in state.params.items()}
    params = to_tree(state.params)
    mu = to_tree({**zeros, **state.exp_avg})
    nu = to_tree({**zeros, **state.exp_avg_sq})
    count = jnp.asarray(state.step, jnp.int32)

    def fill(node):
        if {"count", "mu", "nu"} <= set(node._fields):
            return node._replace(count=count, mu=mu, nu=nu)
        return node._replace(count=count) if "count" in node._fields else node

    tx = make_optimizer(run.train, cfg.hidden_size)
    opt_state = _replace_opt(tx.init(params), fill)
    ts = TrainState(step=count, params=params, opt_state=opt_state)
    rng = state.rng if state.rng is not None else jax_dropout_key(run.train.seed)
    with Checkpointer(rundir, cfg, keep=run.train.keep_checkpoints) as ckpt:
        ckpt.save(state.step, ts, {"step": state.step, "batches": state.batches, "rng": rng})


def write_hf(out: Path, state: TrainingState, tokenizer: Path | None) -> None:
    """config.json + model.safetensors (HF names, tied decoder stored once, as HF saves it) +
    the tokenizer files: a directory `transformers.BertForPreTraining.from_pretrained` loads."""
    from safetensors.numpy import save_file

    names = hf_names(state.config)
    _fail("missing parameters", set(names) - set(state.params), "the state is incomplete")
    save_file({n: np.ascontiguousarray(state.params[n], dtype=np.float32) for n in names},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    state.config.to_json_file(out / "config.json")
    if tokenizer is not None:
        for f in TOKENIZER_FILES:
            if (tokenizer / f).is_file():
                shutil.copy2(tokenizer / f, out / f)


def write_rundir(out: Path, to: str, state: TrainingState, run: RunFiles, src: Path) -> None:
    """A complete RUNDIR of twin `to` that `python -m {to}bert.train --out DST --resume` continues."""
    info = {**run.info, "framework": to,
            "converted_from": {"path": str(src.resolve()), "framework": run.framework,
                               "step": state.step}}
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    run.config.to_json_file(out / "config.json")
    run.train.to_json_file(out / "train_config.json")
    shutil.copytree(run.rundir / "tokenizer", out / "tokenizer")
    # the curve continues: the metrics lines up to the converted step
    rows = [m for m in read_metrics(run.rundir / "metrics.jsonl") if m["step"] <= state.step]
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in rows),
                                       encoding="utf-8")
    (write_torch_checkpoint if to == "torch" else write_jax_checkpoint)(out, state, run)


# ---- the command ------------------------------------------------------------------------------

def convert(src: str | Path, dst: str | Path, to: str, step: int | None = None,
            overwrite: bool = False, log: Callable[[str], None] = print) -> Path:
    """Convert SRC into DST for `to` ("torch" | "jax" | "hf"); see `python -m parity.convert -h`.

    Everything is read and checked before anything is written; DST appears complete or not at
    all (written into a temporary sibling, renamed into place)."""
    if to not in (*FRAMEWORKS, "hf"):
        raise UserError(f"--to {to!r}: choose torch, jax or hf")
    src, dst = Path(src), Path(dst)
    kind, root, step = detect_source(src, step)
    if any(p.resolve().is_relative_to(dst.resolve()) for p in (src, root)):
        raise UserError(f"DST {dst} is (or holds) the source itself; write to another directory")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not overwrite:
        raise UserError(f"{dst} already exists; pass --overwrite to replace it, or choose "
                        f"another DST")
    run = _read_run(root) if kind in FRAMEWORKS else None
    state = (read_torch(run, step) if kind == "torch" else read_jax(run, step) if kind == "jax"
             else read_hf(root))
    for note in state.notes:
        log(note)
    whole_state = kind in FRAMEWORKS and to in FRAMEWORKS
    with atomic_path(dst, is_dir=True) as tmp:
        if whole_state:
            write_rundir(tmp, to, state, run, root)
        else:
            write_hf(tmp, state, root / "tokenizer" if run else root)
    if whole_state:
        log(f"wrote {dst}: a {to}bert run at step {state.step} (weights, AdamW moments, step "
            f"counts, data position{', dropout key' if to == 'jax' else ''}); continue it with "
            f"python -m {to}bert.train --out {dst} --resume")
        return dst
    what = f"step {state.step} of {root}" if run else str(root)
    log(f"wrote {dst}: Hugging Face BERT weights ({what}), config.json, model.safetensors"
        f"{', tokenizer' if (dst / 'vocab.txt').is_file() else ''}")
    if to in FRAMEWORKS:
        log(f"note: from a Hugging Face directory only weights exist (no optimizer state or data "
            f"position); {to}bert loads {dst} with from_pretrained")
    if state.config.layer_norm_position == "pre":
        log("note: layer_norm_position=pre: transformers' BertForPreTraining computes post-LN "
            "BERT and cannot run these weights; torchbert/jaxbert from_pretrained can")
    return dst


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m parity.convert",
        description="Convert BERT weights or a whole training state between torchbert, jaxbert "
                    "and Hugging Face, with one name/layout table (parity/convert.py).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""SRC is one of
  a torchbert or jaxbert RUNDIR     its latest checkpoint, or --step N
  one checkpoint of a RUNDIR        RUNDIR/checkpoints/step_00000100 (torch), RUNDIR/checkpoints/100 (jax)
  a Hugging Face BERT directory     config.json + model.safetensors (BertForPreTraining,
                                    BertForMaskedLM or BertModel save; missing heads start fresh)

DST is written according to --to:
  --to hf            config.json + model.safetensors + tokenizer files, loadable with
                     transformers.BertForPreTraining.from_pretrained(DST) and BertTokenizerFast
  --to torch | jax   from a RUNDIR: a complete RUNDIR of that twin with the FULL training state
                     (weights, AdamW moments, step counts, data position, RNG) and the metrics so
                     far, so `python -m {torch,jax}bert.train --out DST --resume` continues the run;
                     from a Hugging Face directory: weights only, written as a Hugging Face
                     directory (both twins' from_pretrained load it).

examples:
  python -m parity.convert runs/torchbert-mini runs/jaxbert-mini --to jax
  python -m parity.convert runs/jaxbert-mini --step 200 export/bert-mini --to hf""")
    p.add_argument("src", metavar="SRC", help="run directory, checkpoint or Hugging Face dir")
    p.add_argument("dst", metavar="DST", help="output directory (must not exist, see --overwrite)")
    p.add_argument("--to", required=True, choices=["torch", "jax", "hf"], help="target format")
    p.add_argument("--step", type=int, help="which checkpoint of a RUNDIR (default: the latest)")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    convert(args.src, args.dst, args.to, step=args.step, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
