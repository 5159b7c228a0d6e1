"""Model cards: the README.md of every Hugging Face directory this project writes.

A card is what the Hub shows for a model and what people read before they load one: YAML
metadata between `---` lines (library_name, pipeline_tag, license, tags, datasets, base_model,
model-index; https://huggingface.co/docs/hub/model-cards) and a Markdown body: the architecture
and size, how the model was trained, what it reached on held-out data, and how to load it in
transformers and in both twins.

    pretraining_card   RUNDIR/hf/ (both twins' train, bertcore.train.run) and
                       `parity.convert ... --to hf` of a run or a Hugging Face directory; for
                       ELECTRA, each of hf/discriminator and hf/generator gets its own
    classifier_card    a classify RUNDIR's best/ (bertcore.classify.run) and
                       `parity.convert CLASSIFY_RUNDIR DST --to hf`
    write_model_card   DIR/README.md, atomically

The YAML is written by `front_matter`, a small emitter of dicts, lists and JSON scalars (YAML is
a superset of JSON for scalars, so a string quoted by json.dumps is valid YAML): no YAML library
is needed to write a card. transformers' `from_pretrained` ignores README.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from bertcore.model.config import (BertConfig, ElectraConfig, ModelConfig, ModernBertConfig,
                                   arch_of)
from bertcore.infra.files import write_text_atomic
from bertcore.model.hf import (ELECTRA_ROLES, classifier_param_table, electra_param_table,
                               param_table)

CARD = "README.md"
LICENSE_NOTE = ("placeholder: set the license of your weights and data (e.g. apache-2.0), or "
                "keep `other` and add license_name and license_link")
# A text for the fill-mask examples: the blank can only be filled from its context.
FILL_MASK_TEXT = "the function returns a [MASK] of the values ."
FRAMEWORK_NAMES = {"torch": "torchbert (PyTorch)", "jax": "jaxbert (JAX/Flax)"}


# ---- YAML front matter -------------------------------------------------------------------------

def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value} has no YAML form here; leave it out of the card")
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def _yaml(value: Any, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, v in value.items():
            if isinstance(v, (Mapping, list, tuple)):
                lines.append(f"{pad}{key}:")
                lines += _yaml(v, indent + 1)
            else:
                lines.append(f"{pad}{key}: {_scalar(v)}")
    else:
        for item in value:
            if isinstance(item, (Mapping, list, tuple)):
                inner = _yaml(item, indent + 1)
                inner[0] = f"{pad}- {inner[0][len(pad) + 2:]}"
                lines += inner
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def front_matter(meta: Mapping[str, Any], comments: Mapping[str, str] | None = None) -> str:
    """`meta` (dicts, non-empty lists, scalars) as a YAML block between `---` lines; a top-level
    key of `comments` gets its comment at the end of its line."""
    lines = []
    for line in _yaml(meta, 0):
        key = line.split(":", 1)[0]
        if comments and key in comments and not line.startswith(" "):
            line += f"  # {comments[key]}"
        lines.append(line)
    return "---\n" + "\n".join(lines) + "\n---\n"


# ---- what the cards say --------------------------------------------------------------------------

def parameter_count(config: ModelConfig, num_labels: int | None = None,
                    role: str | None = None) -> int:
    """Parameters of BertForPreTraining(config) (the tied MLM decoder once, as transformers'
    `num_parameters()` counts it), or of BertForSequenceClassification with `num_labels`, or of
    one ELECTRA model (`role` "discriminator" or "generator", its own embeddings included)."""
    table = (param_table(config) if num_labels is None and role is None
             else electra_param_table(config, role) if num_labels is None
             else classifier_param_table(config, num_labels))
    return sum(int(np.prod(p.hf_shape)) for p in table)


def dataset_name(corpus: str | None) -> str | None:
    """The `datasets` entry of a corpus as the user named it: builtin, imdb, a datasets name
    (hf:NAME[:CONFIG] -> NAME) or a file's or folder's name (an aclImdb tree: imdb)."""
    if not corpus:
        return None
    if corpus in ("builtin", "imdb"):
        return corpus
    if corpus.startswith("hf:"):
        return corpus[3:].split(":", 1)[0] or None
    path = Path(corpus)
    if path.name == "aclImdb" or (path / "aclImdb").is_dir():
        return "imdb"
    return path.name or None


def run_corpus(info: Mapping[str, Any]) -> str | None:
    """The corpus a pretraining run read, from its run.json: --corpus, or for a --data run the
    source its prepared directory records (meta.json), when there is one."""
    if info.get("corpus"):
        return str(info["corpus"])
    try:
        meta = json.loads((Path(info["data"]) / "meta.json").read_text(encoding="utf-8"))
    except (KeyError, TypeError, OSError, ValueError):
        return None
    source = meta.get("source") if isinstance(meta, dict) else None
    return str(source) if source else None


def _number(n: float) -> str:
    """1234567 -> "1.23M"."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def _architecture(config: ModelConfig, params: int, num_labels: int | None = None) -> list[str]:
    rows = [("layers", config.num_hidden_layers), ("hidden size", config.hidden_size),
            ("attention heads", config.num_attention_heads),
            ("intermediate size", config.intermediate_size), ("vocabulary", config.vocab_size),
            ("max positions", config.max_position_embeddings)]
    if isinstance(config, ModernBertConfig):
        rows += [("architecture", "ModernBERT (pre-norm, RoPE, GeGLU)"),
                 ("attention", f"global every {config.global_attn_every_n_layers} layers, local "
                               f"({config.local_attention} tokens wide) between"),
                 ("RoPE theta", f"{config.global_rope_theta:g} global, "
                                f"{config.local_rope_theta:g} local"),
                 ("activation", f"GeGLU ({config.hidden_activation})")]
    else:
        rows += [("LayerNorm", f"{config.layer_norm_position}-LN"),
                 ("activation", config.hidden_act)]
    if isinstance(config, ElectraConfig):
        rows.insert(-2, ("embedding size", config.embedding_size))
    if num_labels is not None:
        rows.append(("labels", num_labels))
    rows.append(("parameters", f"{params:,} ({_number(params)})"))
    return ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]


def _pre_ln_note(config: ModelConfig) -> list[str]:
    if not isinstance(config, BertConfig) or config.layer_norm_position != "pre":
        return []
    return ["", "Note: this model is **pre-LN** (`layer_norm_position: pre`). transformers' BERT "
                "classes compute post-LN BERT: they load these weights without complaint but do "
                "not compute this model. Use either twin (below) to run it."]


def _model_index(name: str, task: tuple[str, str], dataset: str, split: str,
                 metrics: Iterable[tuple[str, str, float | None]]) -> list[dict] | None:
    """A `model-index` with one result, or None when no metric has a value."""
    ms = [{"type": t, "value": float(v), "name": label} for t, label, v in metrics
          if v is not None and math.isfinite(v)]
    if not ms:
        return None
    return [{"name": name, "results": [{
        "task": {"type": task[0], "name": task[1]},
        "dataset": {"name": dataset, "type": dataset, "split": split},
        "metrics": ms}]}]


def _meta(pipeline_tag: str | None, framework: str | None, datasets: list[str],
          base_model: str | None, model_index: list[dict] | None, arch: str = "bert"
          ) -> dict[str, Any]:
    tags = [arch, "twinbert"] + ([f"{framework}bert"] if framework else [])
    # None: a model no transformers pipeline runs (ELECTRA's discriminator)
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": pipeline_tag,
                            "license": "other", "tags": tags}
    if pipeline_tag is None:
        del meta["pipeline_tag"]
    if datasets:
        meta["datasets"] = datasets
    if base_model:
        meta["base_model"] = base_model
    if model_index:
        meta["model-index"] = model_index
    return meta


def _head(meta: dict[str, Any], title: str, summary: str) -> list[str]:
    return [front_matter(meta, {"license": LICENSE_NOTE}), f"# {title}", "", summary, "",
            "**License**: the `license: other` above is a placeholder; set the license of the "
            "weights and of the data they were trained on before you publish this model.", ""]


def pretraining_card(hf_dir: str | Path, config: ModelConfig, *,
                     framework: str | None = None, name: str | None = None,
                     train: Mapping[str, Any] | None = None, steps: int | None = None,
                     corpus: str | None = None, data: str | None = None,
                     init_from: str | None = None, learned_line: str | None = None,
                     held_out: Mapping[str, Any] | None = None,
                     train_seconds: float | None = None, source: str | None = None,
                     role: str | None = None) -> str:
    """The card of a BertForPreTraining export at `hf_dir` (ModernBERT: ModernBertForMaskedLM;
    ELECTRA: one of the pair's two models, `role` "discriminator" or "generator", by default
    `hf_dir`'s name: hf/discriminator, hf/generator; `config` is the pair's).

    `train`: the run's TrainConfig as a dict; `steps`: the optimizer steps the weights have
    seen; `corpus` / `data`: what it was trained on (a corpus name or path, the prepared data
    directory); `init_from`: the weights it started from (base_model); `learned_line`: the run's
    `learned:` line; `held_out`: its last eval line (step, mlm_loss, mlm_accuracy, perplexity;
    ELECTRA's also disc_accuracy, disc_precision, disc_recall); `source`: what it was converted
    from, for a card without a run. Unknown parts are left out.
    """
    hf_dir = Path(hf_dir)
    electra = isinstance(config, ElectraConfig)
    base = hf_dir
    if electra:
        role = role or (hf_dir.name if hf_dir.name in ELECTRA_ROLES else "discriminator")
        base = hf_dir.parent if hf_dir.name in ELECTRA_ROLES else hf_dir
    name = name or (base.parent.name if base.name == "hf" else base.name)
    params = parameter_count(config, role=role) if electra else parameter_count(config)
    ds = dataset_name(corpus)
    who = FRAMEWORK_NAMES.get(framework or "", "this project")
    index = None
    if held_out and role == "discriminator":
        index = _model_index(name, ("token-classification", "Replaced Token Detection"),
                             ds or "held-out", "eval",
                             [("accuracy", "held-out detection accuracy",
                               held_out.get("disc_accuracy")),
                              ("precision", "held-out precision on replaced tokens",
                               held_out.get("disc_precision")),
                              ("recall", "held-out recall on replaced tokens",
                               held_out.get("disc_recall"))])
    elif held_out:
        index = _model_index(name, ("fill-mask", "Masked Language Modeling"),
                             ds or "held-out", "eval",
                             [("accuracy", "held-out MLM accuracy", held_out.get("mlm_accuracy")),
                              ("perplexity", "held-out MLM perplexity",
                               held_out.get("perplexity"))])
    meta = _meta(None if role == "discriminator" else "fill-mask", framework, [ds] if ds else [],
                 init_from, index, arch_of(config))
    modern = isinstance(config, ModernBertConfig)
    nsp = not modern and not electra and (not train or train.get("nsp", True))
    if electra:
        what = _electra_what(config, role, who)
    else:
        what = (f"A {'ModernBERT' if modern else 'BERT'} model pretrained with masked language "
                f"modelling{' and next-sentence prediction' if nsp else ''} "
                f"by {who}, one of twinbert's two implementations (PyTorch and JAX/Flax, "
                f"the same model and training on a shared framework-free pipeline). Its weights "
                f"are a Hugging Face "
                f"`{'ModernBertForMaskedLM' if modern else 'BertForPreTraining'}` directory.")
    out = _head(meta, f"{name}: the {role}" if electra else name, what)
    own = config.generator_config() if role == "generator" else config
    out += ["## Architecture", "", *_architecture(own, params), *_pre_ln_note(config), ""]
    out += ["## Training", ""]
    if train:
        b, l = int(train["batch_size"]), int(train["seq_len"])
        rows = []
        if framework:
            rows.append(("twin", who))
        if steps is not None:
            rows.append(("steps", f"{steps:,}"))
            rows.append(("tokens seen", f"{steps * b * l:,} ({_number(steps * b * l)}: "
                                        f"steps x batch x sequence length, padding included)"))
        rows += [("batch size", f"{b} sequences"), ("sequence length", l),
                 ("masking", f"{100 * float(train.get('mask_prob', 0.15)):g}% of tokens, at "
                             f"most {train.get('max_predictions')} a sequence"
                             f"{', whole words' if train.get('whole_word_mask') else ''}"
                             + (_shares(train) if electra else "")),
                 ("objectives", _objectives(train)),
                 ("learning rate", f"{train.get('lr')} ({train.get('schedule')} schedule, "
                                   f"{train.get('warmup_steps')} warmup steps)"),
                 ("optimizer", f"AdamW (betas {train.get('beta1')}, {train.get('beta2')}, eps "
                               f"{train.get('eps')}, weight decay {train.get('weight_decay')}, "
                               f"gradient clipping {train.get('grad_clip')})"),
                 ("seed", train.get("seed"))]
        if corpus or data:
            rows.append(("data", f"`{corpus}`" + (f" (prepared in `{data}`)" if data else "")
                         if corpus else f"`{data}`"))
        if init_from:
            rows.append(("started from", f"`{init_from}`"))
        if train_seconds is not None:
            rows.append(("training time", f"{train_seconds:.1f} s (of the last training "
                                          f"command; a resumed run's earlier parts not counted)"))
        out += ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), ""]
    elif steps is not None:
        out += [f"Trained for {steps:,} steps.", ""]
    if source:
        out += [f"Converted from `{source}`.", ""]
    if not train and not source:
        out += ["How these weights were trained is not recorded.", ""]
    if learned_line or held_out:
        out += ["## Results", ""]
        if learned_line:
            out += ["The run's own summary (`summary.json`, against a model that only knows word "
                    "frequencies):", "", f"> {learned_line}", ""]
        if held_out and role == "discriminator":
            out += [f"Held-out evaluation at step {held_out.get('step')} (the tokens the "
                    f"generator's samples replaced): detection accuracy "
                    f"{held_out.get('disc_accuracy', float('nan')):.4f}, precision "
                    f"{held_out.get('disc_precision', float('nan')):.4f}, recall "
                    f"{held_out.get('disc_recall', float('nan')):.4f}.", ""]
        elif held_out:
            out += [f"Held-out evaluation at step {held_out.get('step')}: MLM loss "
                    f"{held_out.get('mlm_loss', float('nan')):.4f}, perplexity "
                    f"{held_out.get('perplexity', float('nan')):.2f}, MLM accuracy "
                    f"{held_out.get('mlm_accuracy', float('nan')):.4f}.", ""]
    out += (_use_electra(str(hf_dir), role) if electra else
            _use_pretrained(str(hf_dir), modern))
    return "\n".join(out).rstrip() + "\n"


def _objectives(train: Mapping[str, Any]) -> str:
    if train.get("objective") == "electra":
        return (f"replaced-token detection (ELECTRA): generator MLM + "
                f"{float(train.get('disc_weight', 50.0)):g} x discriminator")
    return "MLM + NSP" if train.get("nsp", True) else "MLM"


def _shares(train: Mapping[str, Any]) -> str:
    """What the masked slots become (ELECTRA's 85/0/15 differs from BERT's 80/10/10)."""
    m, r = float(train.get("mask_replace_prob", 0.8)), float(train.get("random_replace_prob", 0.1))
    return f"; of those {100 * m:g}% [MASK], {100 * r:g}% a random token, the rest kept"


def _electra_what(config: ElectraConfig, role: str, who: str) -> str:
    """What one of an ELECTRA pair's exports is, and where the other one is."""
    common = (f"pretrained with replaced-token detection by {who}, one of twinbert's two "
              f"implementations (PyTorch and JAX/Flax, the same model and training on a shared "
              f"framework-free pipeline)")
    if role == "discriminator":
        return (f"The discriminator of an ELECTRA model {common}. For every token it gives one "
                f"logit, positive where it judges the token replaced by the generator's sample. "
                f"It is the encoder ELECTRA keeps: fine-tune it for downstream tasks "
                f"(`ElectraForSequenceClassification`). Its weights are a Hugging Face "
                f"`ElectraForPreTraining` directory; the generator it was trained against is "
                f"`ElectraForMaskedLM` in `../generator`.")
    gen = config.generator_config()
    return (f"The generator of an ELECTRA model {common}: the small masked language model "
            f"({gen.hidden_size} wide, {gen.num_hidden_layers} layers, against the "
            f"discriminator's {config.hidden_size} and {config.num_hidden_layers}) whose samples "
            f"the discriminator learned to detect; it fills masks. It was trained on the "
            f"discriminator's embeddings, which this directory holds a copy of. Its weights are "
            f"a Hugging Face `ElectraForMaskedLM` directory; the discriminator is "
            f"`ElectraForPreTraining` in `../discriminator`.")


def _use_electra(path: str, role: str) -> list[str]:
    """How to load one of an ELECTRA pair's exports, in transformers and in the twins."""
    p = json.dumps(path)
    out = ["## How to use", "",
           f"`{path}` is this directory; after you push it to the Hub, use the repository's "
           f"name instead.", "", "With transformers:", "", "```python"]
    if role == "discriminator":
        out += ["from transformers import AutoTokenizer, ElectraForPreTraining", "",
                f"tokenizer = AutoTokenizer.from_pretrained({p})",
                f"model = ElectraForPreTraining.from_pretrained({p})",
                f"inputs = tokenizer({json.dumps(FILL_MASK_TEXT.replace('[MASK]', 'list'))}, "
                f"return_tensors=\"pt\")",
                "replaced = model(**inputs).logits > 0   # True where a token looks replaced",
                "# fine-tune: ElectraForSequenceClassification.from_pretrained(PATH, num_labels=2)",
                "```", "", "With either twin of this project:", "", "```bash",
                f"python -m torchbert.classify train --init-from {path} --data DATA --out RUNDIR",
                f"python -m jaxbert.classify   train --init-from {path} --data DATA --out RUNDIR",
                "```", "",
                "In Python: `torchbert.electra.ElectraForPreTraining.from_pretrained(PATH)`, "
                "`jaxbert.electra.discriminator_from_pretrained(PATH)` (returns the model and its "
                "params).", ""]
    else:
        out += ["from transformers import ElectraForMaskedLM, pipeline", "",
                f"fill = pipeline(\"fill-mask\", model={p})",
                f"print(fill({json.dumps(FILL_MASK_TEXT)}))",
                f"model = ElectraForMaskedLM.from_pretrained({p})",
                "```", "", "With either twin of this project:", "", "```bash",
                f"python -m torchbert.fill_mask {path} \"{FILL_MASK_TEXT}\"",
                f"python -m jaxbert.fill_mask   {path} \"{FILL_MASK_TEXT}\"",
                "```", "",
                "In Python: `torchbert.electra.ElectraForMaskedLM.from_pretrained(PATH)`, "
                "`jaxbert.electra.generator_from_pretrained(PATH)` (returns the model and its "
                "params).", ""]
    return out


def _use_pretrained(path: str, modern: bool = False) -> list[str]:
    mlm = "ModernBertForMaskedLM" if modern else "BertForMaskedLM"
    return [
        "## How to use", "",
        f"`{path}` is this directory; after you push it to the Hub, use the repository's name "
        f"instead.", "",
        "With transformers:", "",
        "```python",
        f"from transformers import {mlm}, pipeline",
        "",
        f"fill = pipeline(\"fill-mask\", model={json.dumps(path)})",
        f"print(fill({json.dumps(FILL_MASK_TEXT)}))",
        f"model = {mlm}.from_pretrained({json.dumps(path)})"
        + ("" if modern else "  # BertForPreTraining: with the NSP head"),
        "```", "",
        "With either twin of this project:", "",
        "```bash",
        f"python -m torchbert.fill_mask {path} \"{FILL_MASK_TEXT}\"",
        f"python -m jaxbert.fill_mask   {path} \"{FILL_MASK_TEXT}\"",
        f"python -m torchbert.train --init-from {path} --corpus CORPUS --out RUNDIR"
        "   # continue pretraining",
        f"python -m jaxbert.classify train --init-from {path} --data DATA --out RUNDIR"
        "   # fine-tune a classifier",
        "```", "",
        "In Python: `torchbert.arch.from_pretrained(PATH)`, `jaxbert.arch.from_pretrained(PATH)` "
        "(returns the model and its params).", ""]


def classifier_card(hf_dir: str | Path, config: ModelConfig, labels: list[str], *,
                    framework: str | None = None, name: str | None = None,
                    settings: Mapping[str, Any] | None = None,
                    base_model: str | None = None, data: str | None = None,
                    validation: str | None = None, best: Mapping[str, Any] | None = None,
                    steps_per_epoch: int | None = None, train_examples: int | None = None,
                    source: str | None = None) -> str:
    """The card of a BertForSequenceClassification (or ModernBertForSequenceClassification, or
    ElectraForSequenceClassification) export at `hf_dir`.

    `settings`: the run's ClassifyConfig as a dict; `base_model`: the --init-from it was
    fine-tuned from; `data` / `validation`: its training and validation data (None: held out of
    `data`); `best`: the metrics line of the epoch these weights are (epoch, step, train_loss,
    val_loss, val_accuracy, val_f1); `source`: what it was converted from. Unknown parts are left
    out."""
    hf_dir = Path(hf_dir)
    name = name or (hf_dir.parent.name if hf_dir.name == "best" else hf_dir.name)
    params = parameter_count(config, len(labels))
    ds = dataset_name(data)
    index = None
    # One output is a regression (transformers' rule for num_labels=1; a classifier has two or
    # more labels): a score per text, MSE, Pearson and Spearman instead of accuracy.
    regression = len(labels) == 1
    if best:
        index = _model_index(name, ("text-classification", "Text Classification"),
                             dataset_name(validation) or ds or "held-out", "validation",
                             [("pearsonr", "validation Pearson", best.get("val_pearson")),
                              ("spearmanr", "validation Spearman", best.get("val_spearman")),
                              ("mse", "validation MSE", best.get("val_mse"))] if regression else
                             [("accuracy", "validation accuracy", best.get("val_accuracy")),
                              ("f1", f"validation F1 ({labels[-1]})", best.get("val_f1"))])
    meta = _meta("text-classification", framework, [ds] if ds else [], base_model, index,
                 arch_of(config))
    who = FRAMEWORK_NAMES.get(framework or "", "this project")
    if isinstance(config, ModernBertConfig):
        pooled = ("the [CLS] vector" if config.classifier_pooling == "cls" else
                  "the mean of the token vectors")
        head = f"the MLM head's transform (dense, GELU, norm) and a linear layer on {pooled}"
    elif isinstance(config, ElectraConfig):
        head = ("the discriminator's encoder and ELECTRA's head on the [CLS] vector (dense, "
                "GELU, linear)")
    else:
        head = "a linear layer on the pooled [CLS] vector"
    name_of = {"modernbert": "ModernBERT", "electra": "ELECTRA"}.get(arch_of(config), "BERT")
    pairs = settings.get("text_pair_column") if settings else None
    kind = ("sequence regressor (one output, a score: problem_type regression)" if regression
            else f"sequence classifier ({len(labels)} labels: "
                 f"{', '.join(f'`{x}`' for x in labels)})")
    what = (f"{'An' if name_of == 'ELECTRA' else 'A'} {name_of} {kind}"
            f"{' of sentence pairs' if pairs else ''} fine-tuned by {who}, one of twinbert's two "
            f"implementations (PyTorch and JAX/Flax). Its weights are a Hugging Face "
            f"`{_classifier_class(config)}` directory: {head}.")
    out = _head(meta, name, what)
    out += ["## Architecture", "", *_architecture(config, params, len(labels)),
            *_pre_ln_note(config), ""]
    out += ["## Training", ""]
    rows: list[tuple[str, Any]] = []
    if framework:
        rows.append(("twin", who))
    if base_model:
        rows.append(("fine-tuned from", f"`{base_model}`"))
    if data:
        rows.append(("training data", f"`{data}`" + (f" ({train_examples:,} examples)"
                                                     if train_examples else "")))
        rows.append(("validation data", f"`{validation}`" if validation else
                     f"{settings.get('val_fraction') if settings else 'a share'} of the training "
                     f"data, held out"))
    if settings:
        rows += [("epochs", settings.get("epochs")),
                 ("batch size", settings.get("batch_size")),
                 ("max length", f"{settings.get('max_len')} tokens (longer texts truncated)"),
                 ("learning rate", f"{settings.get('lr')} (warmup {settings.get('warmup_ratio')} "
                                   f"of the steps, then linear decay)"),
                 ("optimizer", f"AdamW (weight decay {settings.get('weight_decay')}, gradient "
                               f"clipping {settings.get('grad_clip')})"),
                 ("seed", settings.get("seed"))]
        if pairs:
            rows.append(("texts", f"sentence pairs: `{settings.get('text_column')}`, `{pairs}` "
                                  f"([CLS] A [SEP] B [SEP])"))
    if best:
        rows.append(("these weights", f"epoch {best.get('epoch')}, step {best.get('step')} "
                                      f"(the best validation "
                                      f"{'Pearson correlation' if regression else 'accuracy'} "
                                      f"so far)"))
        if best.get("elapsed") is not None:
            rows.append(("training time", f"{best['elapsed']:.1f} s to that epoch (of the last "
                                          f"training command)"))
    if rows:
        out += ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), ""]
    if source:
        out += [f"Converted from `{source}`.", ""]
    if not rows and not source:
        out += ["How these weights were trained is not recorded.", ""]
    if best:
        scores = (f"Pearson {best.get('val_pearson', float('nan')):.4f}, Spearman "
                  f"{best.get('val_spearman', float('nan')):.4f}" if regression else
                  f"accuracy {best.get('val_accuracy', float('nan')):.4f}")
        out += ["## Results", "",
                f"Validation at epoch {best.get('epoch')}: {scores}"
                + (f", F1 ({labels[-1]}) {best['val_f1']:.4f}" if best.get("val_f1") is not None
                   else "")
                + (f", loss {best['val_loss']:.4f}" if best.get("val_loss") is not None else "")
                + (f"; train loss {best['train_loss']:.4f}" if best.get("train_loss") is not None
                   else "") + ".", "",
                f"Test {'scores' if regression else 'accuracy'}: run `evaluate` (below) on "
                f"your test data.", ""]
    out += _use_classifier(str(hf_dir), labels, config)
    return "\n".join(out).rstrip() + "\n"


def _classifier_class(config: ModelConfig) -> str:
    return {"modernbert": "ModernBertForSequenceClassification",
            "electra": "ElectraForSequenceClassification"}.get(arch_of(config),
                                                               "BertForSequenceClassification")


def _use_classifier(path: str, labels: list[str], config: ModelConfig) -> list[str]:
    cls = _classifier_class(config)
    return [
        "## How to use", "",
        f"`{path}` is this directory; after you push it to the Hub, use the repository's name "
        f"instead.", "",
        "With transformers:", "",
        "```python",
        f"from transformers import {cls}, pipeline",
        "",
        f"classify = pipeline(\"text-classification\", model={json.dumps(path)})",
        "print(classify(\"a wonderful film\"))",
        f"model = {cls}.from_pretrained({json.dumps(path)})",
        "```", "",
        "With either twin of this project:", "",
        "```bash",
        f"python -m torchbert.classify predict {path} \"a wonderful film\"",
        f"python -m jaxbert.classify   predict {path} \"a wonderful film\"",
        f"python -m torchbert.classify evaluate {path} --data DATA   # "
        f"{'Pearson, Spearman, MSE' if len(labels) == 1 else 'accuracy'} on labelled data",
        "```", ""]


def write_model_card(hf_dir: str | Path, text: str) -> Path:
    """HF_DIR/README.md, written atomically."""
    path = Path(hf_dir) / CARD
    write_text_atomic(path, text)
    return path
