"""The contenders of the training benchmarks and the machinery that times them, shared by
benchmarks.train_speed, benchmarks.gpu, benchmarks.scaling and benchmarks.profile.

- The workload: `make_batches` (the same bertcore batches for every contender), `model_config`,
  `train_config`; `args.arch` ("bert" unless set, "modernbert" or "electra") picks the
  architecture.
- One step function per contender (`SETUPS`: torchbert, jaxbert, hf-torch, hf-flax,
  hf-modernbert, hf-electra) and `prepare`, which sets one up and runs its untimed warm-up steps.
  The twins build every architecture; each peer is one architecture's (`ARCH_CONTENDERS`).
- ELECTRA's peer as transformers' two models (`hf_electra_pair`, `hf_electra_forward`), also
  trained by benchmarks.budget's plain loop.
- In a worker subprocess: `worker` times one contender alone; `serve` times one step per line
  read from stdin, for `measure`.
- In the parent: `run_worker` times one contender alone in its own subprocess; `measure` times
  several, each in its own subprocess, their timed steps interleaved.
- Checking flags: `parse_presets`, `parse_contenders` (which leaves out, with the reason, a
  peer the installed packages cannot run or that is another architecture's: `missing`);
  `versions` for a report's header.

A worker subprocess is `python -m MODULE *ARGV --worker NAME [--serve]`: MODULE is the benchmark
whose command line takes ARGV (benchmarks.train_speed unless named) and calls `worker` or `serve`
with its parsed flags, the `args` the functions here read.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Iterable

import numpy as np

CONTENDERS = ("torchbert", "jaxbert", "hf-torch", "hf-flax", "hf-modernbert", "hf-electra")
# Each architecture's contenders, by default: the twins and transformers' models of it. hf-flax
# stays in ModernBERT's list so the table's reader is told why it has no Flax peer (`missing`).
ARCH_CONTENDERS = {"bert": ("torchbert", "jaxbert", "hf-torch", "hf-flax"),
                   "modernbert": ("torchbert", "jaxbert", "hf-modernbert", "hf-flax"),
                   "electra": ("torchbert", "jaxbert", "hf-electra")}
# Each peer's architecture (a peer trains one).
PEER_ARCH = {"hf-torch": "bert", "hf-flax": "bert", "hf-modernbert": "modernbert",
             "hf-electra": "electra"}
MODERNBERT_TRANSFORMERS = (4, 48)   # the first transformers release with ModernBertForMaskedLM


def arch(args) -> str:
    """The benchmarked architecture: "bert" unless the benchmark's flags say "modernbert" or
    "electra"."""
    return getattr(args, "arch", None) or "bert"


def hf_inputs(b: dict[str, np.ndarray]) -> dict:
    """A bertcore batch as transformers' BertForPreTraining takes it (CPU tensors): MLM labels at
    the masked slots and -100 everywhere else, the way its users' collators feed it."""
    import torch

    ids = torch.from_numpy(b["input_ids"]).long()
    labels = torch.full_like(ids, -100)
    rows = torch.arange(ids.shape[0])[:, None].expand_as(torch.from_numpy(b["masked_ids"]))
    pos = torch.from_numpy(b["masked_positions"]).long()
    w = torch.from_numpy(b["masked_weights"]) > 0
    labels[rows[w], pos[w]] = torch.from_numpy(b["masked_ids"]).long()[w]
    return {"input_ids": ids, "labels": labels,
            **{k: torch.from_numpy(b[k]).long()       # no NSP labels in MLM-only batches
               for k in ("token_type_ids", "attention_mask", "next_sentence_label") if k in b}}


def make_batches(args) -> tuple[list[dict[str, np.ndarray]], Any]:
    """The benchmark's batches (identical for every contender) and the data's tokenizer
    (bertcore WordPiece: its vocab_size and special ids). ModernBERT's are single segments
    without NSP labels, as its training runs draw them; ELECTRA's too, masked 85/0/15 and with
    a sample seed per slot, as `--arch electra` draws them."""
    from bertcore.model.config import TrainConfig
    from bertcore.data.batches import BatchIterator
    from bertcore.train.cli import train_parser
    from bertcore.data.cache import resolve_data

    ns = train_parser("bench", "").parse_args(["--corpus", args.corpus])
    tok, shards = resolve_data(ns, progress=False)
    cfg = TrainConfig(batch_size=args.batch_size, seq_len=args.seq_len,
                      max_predictions=args.max_predictions, seed=0, nsp=arch(args) == "bert",
                      **objective_fields(args))
    it = BatchIterator(shards, tok, cfg)
    return [next(it) for _ in range(args.warmup + args.steps)], tok


def objective_fields(args) -> dict:
    """TrainConfig's objective and masking shares for `args.arch`: ELECTRA's as its train CLI
    sets them (replaced-token detection, 85% [MASK] / 15% kept), the defaults otherwise."""
    if arch(args) != "electra":
        return {}
    return {"objective": "electra", "mask_replace_prob": 0.85, "random_replace_prob": 0.0}


def model_config(args, tok):
    """The config every contender trains: `args.arch`'s `args.preset` for the data's tokenizer
    `tok` (its size and, for ModernBERT, the special ids its config names)."""
    from bertcore.model.config import BertConfig, ElectraConfig, ModernBertConfig, special_ids

    # The batches' ids come from the built-in corpus's tokenizer (8192 entries); the model's
    # vocabulary is --vocab-size (BERT's 30522 by default), which is what the cost depends on.
    vocab_size = max(tok.vocab_size, args.vocab_size)
    if arch(args) == "electra":
        # As `--arch electra` makes it: the preset (embedding size 128 below base), the
        # generator a quarter as wide, the tokenizer's padding id.
        return ElectraConfig.from_preset(args.preset, vocab_size=vocab_size,
                                         max_position_embeddings=max(512, args.seq_len),
                                         pad_token_id=tok.pad_id)
    if arch(args) == "modernbert":
        # As the twins' train CLIs make it: the preset, the tokenizer's specials, and the
        # published dropout (none).
        return ModernBertConfig.from_preset(
            args.preset, vocab_size=vocab_size, max_position_embeddings=max(512, args.seq_len),
            **special_ids(tok))
    return BertConfig.from_preset(args.preset, vocab_size=vocab_size,
                                  max_position_embeddings=max(512, args.seq_len))


def train_config(args):
    from bertcore.model.config import TrainConfig

    return TrainConfig(batch_size=args.batch_size, seq_len=args.seq_len,
                       max_predictions=args.max_predictions, lr=1e-4, warmup_steps=10,
                       steps=10_000, nsp=arch(args) == "bert", **objective_fields(args))


# ---- one step function per contender (each returns a callable(batch) that blocks) -----------
# `args.device` ("cpu" unless set: "cuda" from benchmarks.gpu, bf16 autocast for the torch ones)
# and `args.dtype` ("float32" unless set: the jax compute dtype) default to the CPU benchmarks.

def setup_torchbert(args, tok) -> Callable:
    import torch

    from torchbert.arch import pretraining_model
    from torchbert.optim import make_optimizer
    from torchbert.step import train_step

    cfg = train_config(args)
    device = torch.device(getattr(args, "device", "cpu"))  # train_step autocasts bf16 on cuda
    torch.manual_seed(0)
    model = pretraining_model(model_config(args, tok)).to(device)
    opt = make_optimizer(model, cfg)
    model.train()
    return lambda b: float(train_step(model, opt, b, 1e-4, cfg, device, 1)["loss"])


def _hf_torch_step(model, device, inputs: tuple[str, ...] | None = None) -> Callable:
    """A transformers model's training step as the HF Trainer runs it: its own loss from the
    labels, torch.optim.AdamW, clip_grad_norm_(1.0) (bf16 autocast on CUDA). `inputs`: the
    batch keys the model takes (default: all of hf_inputs')."""
    import torch

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step(b):
        with autocast:
            out = model(**{k: v.to(device) for k, v in hf_inputs(b).items()
                           if inputs is None or k in inputs})
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss)

    return step


def setup_hf_torch(args, tok) -> Callable:
    import torch
    import transformers

    c = model_config(args, tok)
    device = torch.device(getattr(args, "device", "cpu"))
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(**{
        k: v for k, v in c.to_dict().items() if k != "layer_norm_position"})).to(device)
    return _hf_torch_step(model, device)


def setup_jaxbert(args, tok, mcfg=None) -> Callable:
    """`mcfg`: the model config, if not `model_config(args, tok)` (benchmarks.attention: dropout
    off)."""
    import functools

    import jax

    from jaxbert.arch import init_params, pretraining_model
    from jaxbert.cpu import apply_cpu_settings
    from jaxbert.optim import make_optimizer
    from jaxbert.parallel import Layout
    from jaxbert.runtime import compute_dtype, enable_compilation_cache
    from jaxbert.step import create_state, train_step

    apply_cpu_settings()            # as jaxbert's entry points do, before the backend starts
    enable_compilation_cache()
    cfg = train_config(args)
    mcfg = mcfg if mcfg is not None else model_config(args, tok)
    tx = make_optimizer(cfg, mcfg.hidden_size)
    model = pretraining_model(mcfg, dtype=compute_dtype(getattr(args, "dtype", "float32")))
    layout = Layout("single", cfg, functools.partial(train_step, model=model, tx=tx, cfg=cfg))
    box = [create_state(init_params(mcfg, jax.random.PRNGKey(0)), tx)]
    key = jax.random.PRNGKey(1)

    def step(b):
        box[0], m = layout.fn(box[0], layout.put_batch(b), key)
        return float(m["loss"])

    # The compiled program's text (benchmarks.profile names XLA's instructions with it).
    step.hlo_text = lambda b: layout.fn.lower(box[0], layout.put_batch(b), key).compile().as_text()
    return step


def setup_hf_flax(args, tok) -> Callable:
    import jax
    import jax.numpy as jnp
    import optax
    import transformers

    from jaxbert.runtime import compute_dtype

    c = model_config(args, tok)
    model = transformers.FlaxBertForPreTraining(transformers.BertConfig(**{
        k: v for k, v in c.to_dict().items() if k != "layer_norm_position"}), seed=0,
        dtype=compute_dtype(getattr(args, "dtype", "float32")))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, weight_decay=0.01))
    params = model.params
    opt_state = tx.init(params)

    def loss_fn(params, b, key):
        out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], params=params,
                    dropout_rng=key, train=True)
        logits = out.prediction_logits                                   # (B, L, V): dense
        rows = jnp.arange(logits.shape[0])[:, None]
        picked = logits[rows, b["masked_positions"]]
        ce = optax.softmax_cross_entropy_with_integer_labels(picked, b["masked_ids"])
        w = b["masked_weights"]
        mlm = (ce * w).sum() / jnp.maximum(w.sum(), 1.0)
        nsp = optax.softmax_cross_entropy_with_integer_labels(
            out.seq_relationship_logits, b["next_sentence_label"]).mean()
        return mlm + nsp

    @jax.jit
    def train_step(params, opt_state, b, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, b, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    box = [params, opt_state, jax.random.PRNGKey(1)]

    def step(b):
        box[2], sub = jax.random.split(box[2])
        box[0], box[1], loss = train_step(box[0], box[1], b, sub)
        return float(loss)

    return step


def setup_hf_modernbert(args, tok) -> Callable:
    """transformers.ModernBertForMaskedLM as a user gets it: the default attention (SDPA on a
    CPU) and the default dense MLM head over all L positions with labels -100 elsewhere
    (`sparse_prediction=True` with --peer-sparse-prediction: the head only at the labelled
    positions, as the twins' sparse head), torch.optim.AdamW, clip_grad_norm_(1.0)."""
    import torch
    import transformers

    c = model_config(args, tok)
    device = torch.device(getattr(args, "device", "cpu"))
    torch.manual_seed(0)
    model = transformers.ModernBertForMaskedLM(transformers.ModernBertConfig.from_dict(
        {**c.to_dict(), "sparse_prediction": getattr(args, "peer_sparse_prediction", False)})
    ).to(device)
    # ModernBERT takes no token types and has no NSP head.
    return _hf_torch_step(model, device, ("input_ids", "attention_mask", "labels"))


def hf_electra_pair(c, device=None):
    """transformers' ELECTRA pair for our ElectraConfig `c`: (ElectraForMaskedLM, the generator
    of c.generator_config(); ElectraForPreTraining, the discriminator), built from the
    config.json each of a run's hf/ directories holds. As the paper (and google-research/electra)
    trains them, the generator has no embeddings of its own: its `electra.embeddings` module is
    the discriminator's, and its tied decoder weight that module's word embeddings."""
    import transformers

    def build(cls, cfg, role):
        return cls(transformers.ElectraConfig.from_dict(cfg.to_dict(role)))

    disc = build(transformers.ElectraForPreTraining, c, "discriminator")
    gen = build(transformers.ElectraForMaskedLM, c.generator_config(), "generator")
    gen.electra.embeddings = disc.electra.embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    if device is not None:
        gen.to(device), disc.to(device)
    return gen, disc


def hf_electra_parameters(gen, disc) -> list:
    """Both models' parameters, each once (the shared embeddings are in both)."""
    seen, out = set(), []
    for p in [*disc.parameters(), *gen.parameters()]:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def hf_electra_forward(gen, disc, b: dict[str, np.ndarray], rng=None, disc_weight: float = 50.0,
                       device=None) -> tuple[Any, dict[str, float]]:
    """ELECTRA's pretraining loss on a bertcore batch with transformers' models, as a plain
    PyTorch user writes it: the generator's own MLM loss (`labels`, -100 off the masked slots;
    its dense head over all L positions), one token per masked slot sampled from its softmax
    without gradient (`torch.multinomial`, `rng` a torch.Generator), the corrupted sequence
    labelled replaced where the sample differs from the original, the discriminator's own loss
    (binary cross-entropy over the real tokens); loss = MLM + disc_weight x BCE. Returns (loss,
    sums for held-out metrics: mlm_loss_sum, mlm_correct, predictions, disc_loss_sum,
    disc_correct, disc_tp, disc_predicted, replaced, tokens)."""
    import torch

    inputs = {k: v.to(device) if device is not None else v for k, v in hf_inputs(b).items()}
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    g = gen(input_ids=ids, attention_mask=mask, token_type_ids=inputs["token_type_ids"],
            labels=inputs["labels"])
    pos = torch.as_tensor(b["masked_positions"], device=ids.device).long()          # (B, P)
    target = torch.as_tensor(b["masked_ids"], device=ids.device).long()
    live = torch.as_tensor(b["masked_weights"], device=ids.device) > 0
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(pos)
    with torch.no_grad():
        logits = g.logits[rows, pos].float()                                        # (B, P, V)
        probs = torch.softmax(logits, -1).reshape(-1, logits.shape[-1])
        sampled = torch.multinomial(probs, 1, generator=rng).reshape(pos.shape)
        corrupted, original = ids.clone(), ids.clone()
        corrupted[rows[live], pos[live]] = sampled[live]
        original[rows[live], pos[live]] = target[live]
        replaced = (corrupted != original) & (mask > 0)
    d = disc(input_ids=corrupted, attention_mask=mask, token_type_ids=inputs["token_type_ids"],
             labels=replaced.long())
    loss = g.loss + disc_weight * d.loss
    with torch.no_grad():
        real = mask > 0
        pred = d.logits > 0
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            d.logits.float(), replaced.float(), reduction="none")
        sums = {"mlm_loss_sum": float(ce[live].sum()),
                "mlm_correct": float((logits.argmax(-1) == target)[live].sum()),
                "predictions": float(live.sum()), "disc_loss_sum": float(bce[real].sum()),
                "disc_correct": float((pred == replaced)[real].sum()),
                "disc_tp": float((pred & replaced)[real].sum()),
                "disc_predicted": float(pred[real].sum()), "replaced": float(replaced.sum()),
                "tokens": float(real.sum())}
    return loss, sums


def electra_rates(s: dict[str, float]) -> dict[str, float]:
    """hf_electra_forward's sums (added up over batches) as the twins' held-out row names
    them (bertcore.train.evaluation.detection_rates)."""
    n = max(s["predictions"], 1.0)
    t = max(s["tokens"], 1.0)
    return {"mlm_loss": s["mlm_loss_sum"] / n, "mlm_accuracy": s["mlm_correct"] / n,
            "disc_loss": s["disc_loss_sum"] / t, "disc_accuracy": s["disc_correct"] / t,
            "disc_precision": s["disc_tp"] / s["disc_predicted"] if s["disc_predicted"] else 0.0,
            "disc_recall": s["disc_tp"] / s["replaced"] if s["replaced"] else 0.0,
            "replaced": s["replaced"] / t}


def setup_hf_electra(args, tok) -> Callable:
    """transformers' ElectraForMaskedLM + ElectraForPreTraining sharing their embeddings
    (`hf_electra_pair`), trained on ELECTRA's loss (`hf_electra_forward`: dense MLM head,
    multinomial sample, MLM + 50 x BCE), torch.optim.AdamW, clip_grad_norm_(1.0)."""
    import torch

    device = torch.device(getattr(args, "device", "cpu"))
    torch.manual_seed(0)
    gen, disc = hf_electra_pair(model_config(args, tok), device)
    gen.train(), disc.train()
    params = hf_electra_parameters(gen, disc)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    rng = torch.Generator(device=device).manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(b):
        with autocast:
            loss, _ = hf_electra_forward(gen, disc, b, rng, device=device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step


SETUPS = {"torchbert": setup_torchbert, "jaxbert": setup_jaxbert, "hf-torch": setup_hf_torch,
          "hf-flax": setup_hf_flax, "hf-modernbert": setup_hf_modernbert,
          "hf-electra": setup_hf_electra}


def prepare(args) -> tuple[list, Callable, dict[str, Any]]:
    """A contender's batches and step function, after the untimed warm-up steps."""
    if args.worker in ("torchbert", "jaxbert") or getattr(args, "malloc_for_peers", False):
        # The twins' allocator settings (the peers only with --malloc-for-peers), first, as the
        # twins' CLIs apply them: threads started before (the tokenizer's, drawing the batches)
        # keep arenas of their own that XLA's threads could be handed. Every setup runs here.
        from bertcore.infra.malloc import keep_freed_memory

        keep_freed_memory()
    batches, tok = make_batches(args)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step = SETUPS[args.worker](args, tok)
    t0, loss0 = time.perf_counter(), float("nan")
    for b in batches[:args.warmup]:
        loss0 = step(b)
    return batches, step, {"warmup_seconds": time.perf_counter() - t0, "first_loss": loss0,
                           "data_rss_mb": rss_before / 1024}


def _figures(args, times: list[float], loss: float, warm: dict[str, Any]) -> dict[str, Any]:
    med = float(np.median(times))
    return {"contender": args.worker, "tokens_per_second": args.batch_size * args.seq_len / med,
            "ms_per_step": med * 1e3, **warm, "last_loss": loss,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _run(args, indices: Iterable[int], on_ready: Callable[[], None] = lambda: None,
         on_step: Callable[[float], None] = lambda seconds: None) -> dict[str, Any]:
    """Prepare one contender, then time the step on each timed batch index of `indices`: its
    figures, or {"error": ...} when it ran out of memory."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        batches, step, warm = prepare(args)
        on_ready()
        times, loss = [], warm["first_loss"]
        for i in indices:
            t0 = time.perf_counter()
            loss = step(batches[args.warmup + i])  # float(...) blocks until the step is done
            times.append(time.perf_counter() - t0)
            on_step(times[-1])
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and "memory" not in str(e).lower():
            raise
        return {"error": f"out of memory at batch {args.batch_size} x seq-len {args.seq_len} "
                         f"({args.preset}); lower --batch-size or --seq-len"}
    return _figures(args, times, loss, warm)


def worker(args) -> dict[str, Any]:
    """Run in a subprocess: time one contender alone, return its figures."""
    return _run(args, range(args.steps))


def serve(args) -> None:
    """Run in a subprocess: the worker side of `measure`. Prepare (warm up), say so, then time
    one step per line read from stdin ("I" = timed batch I) until "done", then the figures.
    Every reply is one JSON line on stdout."""
    def say(obj):
        print(json.dumps(obj), flush=True)

    def commands():
        for line in sys.stdin:
            if line.strip() == "done":
                return
            yield int(line)

    say(_run(args, commands(), on_ready=lambda: say({"ready": True}),
             on_step=lambda seconds: say({"seconds": seconds})))


def run_worker(name: str, argv: list[str], module: str = "benchmarks.train_speed") -> dict:
    """Time one contender alone in its own subprocess, `python -m MODULE *ARGV --worker NAME`:
    its figures, or {"contender": NAME, "error": the worker's last stderr line} when it
    failed."""
    proc = subprocess.run([sys.executable, "-m", module, *argv, "--worker", name],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"contender": name, "error": _failure(proc.returncode, proc.stderr)}
    return {"contender": name, **json.loads(lines[-1])}


def _failure(returncode: int | None, stderr: str) -> str:
    if returncode == -9 and not stderr.strip():
        return "killed (SIGKILL, most likely the kernel's out-of-memory killer)"
    return (stderr.strip().splitlines() or ["(no output)"])[-1]


class _Served:
    """One contender's `serve` subprocess; stderr goes to a temp file (a pipe could fill up)."""

    def __init__(self, name: str, argv: list[str], module: str):
        import tempfile

        self.name, self.err = name, tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *argv, "--worker", name, "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.error: str | None = None

    def ask(self, line: str | None) -> dict | None:
        """Send a line (None: just read), return the next JSON reply; None and .error set when
        the worker failed."""
        try:
            if line is not None:
                self.proc.stdin.write(line + "\n")
                self.proc.stdin.flush()
            for out in self.proc.stdout:
                if out.startswith("{"):
                    reply = json.loads(out)
                    if "error" in reply:
                        self.error = reply["error"]
                        return None
                    return reply
        except BrokenPipeError:
            pass
        self.proc.wait()
        self.err.seek(0)
        self.error = _failure(self.proc.returncode, self.err.read())
        return None


def measure(names: list[str], argv: list[str], steps: int,
            module: str = "benchmarks.train_speed") -> list[dict]:
    """Time the contenders interleaved: each is prepared (compiled, warmed up) in its own
    subprocess, one after another, then the timed steps go round robin, one step of each in
    turn. A slow spell of the machine (other load, CPU frequency) then hits every contender
    alike instead of whichever ran during it, so the ratios of one run hold. All contenders'
    processes live at once: their memory adds up (each one's peak RSS is still its own)."""
    workers = []
    for name in names:
        w = _Served(name, argv, module)
        w.ask(None)                        # wait until it is ready (or failed)
        print(f"  {name}: {w.error or 'ready'}", file=sys.stderr)
        workers.append(w)
    for i in range(steps):
        for w in workers:
            if w.error is None:
                w.ask(str(i))
                # A worker's threads keep spinning briefly after its step (XLA's pool most of
                # all); let them settle before the next contender's timed step starts.
                time.sleep(0.15)
    results = []
    for w in workers:
        final = w.ask("done") if w.error is None else None
        w.proc.wait()
        w.err.close()
        results.append({"contender": w.name, **final} if final else
                       {"contender": w.name, "error": w.error})
    return results


def parse_presets(text: str) -> list[str]:
    """Comma-separated preset names, each checked (UserError naming the choices)."""
    from bertcore.model.config import BertConfig

    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        BertConfig.from_preset(name)  # raises "unknown preset ...; choose one of ..."
    return names


def missing(name: str, arch: str = "bert") -> str | None:
    """Why contender `name` cannot run in this environment for architecture `arch` (None: any;
    benchmarks.budget's rows each name their own), or None.
    Each HF peer is one architecture's; they need transformers, hf-flax its 4.x line
    (transformers 5 ships no Flax models) and hf-modernbert 4.48 or later. Asked of the
    installed distribution's metadata, so nothing heavy is imported to find out."""
    from importlib.metadata import PackageNotFoundError, version

    if not name.startswith("hf-"):
        return None
    if arch == "modernbert" and name == "hf-flax":
        return "transformers has no Flax ModernBERT (its ModernBERT is PyTorch only)"
    if arch == "modernbert" and name == "hf-torch":
        return "hf-torch is BERT's peer; ModernBERT's is hf-modernbert"
    if arch == "bert" and name == "hf-modernbert":
        return "hf-modernbert is ModernBERT's peer; pass --arch modernbert"
    if arch is not None and arch != PEER_ARCH[name] and "electra" in (arch, PEER_ARCH[name]):
        return ("hf-electra is ELECTRA's peer; pass --arch electra" if name == "hf-electra" else
                f"{name} is {PEER_ARCH[name]}'s peer; ELECTRA's is hf-electra")
    try:
        installed = version("transformers")
    except PackageNotFoundError:
        return "transformers is not installed (pip install -e '.[dev]')"
    if name == "hf-flax" and int(installed.split(".")[0]) >= 5:
        return (f"transformers {installed} ships no Flax models (FlaxBertForPreTraining ended "
                f"with 4.x); to run this peer, use an environment with pip install -e '.[hf4]'")
    if name == "hf-modernbert" and tuple(
            int(p) for p in installed.split(".")[:2] if p.isdigit()) < MODERNBERT_TRANSFORMERS:
        return (f"transformers {installed} has no ModernBERT (added in 4.48); pip install "
                f"'transformers>=4.48'")
    return None


def parse_contenders(text: str, allowed: tuple[str, ...] = CONTENDERS,
                     arch: str = "bert") -> list[str]:
    """Comma-separated contender names, each checked (UserError naming the choices). A peer
    that cannot run here, or is another architecture's than `arch` (`missing`), is left out
    with one line saying why on stderr; a selection that leaves nothing to run is an error."""
    from bertcore.infra.errors import UserError

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise UserError(f"unknown contender(s) {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(allowed)}")
    runnable = []
    for n in names:
        why = missing(n, arch)
        if why:
            print(f"skipping {n}: {why}", file=sys.stderr)
        else:
            runnable.append(n)
    if not runnable:
        raise UserError(f"none of {', '.join(names)} can run here (see the lines above)")
    return runnable


def versions() -> str:
    out = [f"python {platform.python_version()}"]
    for mod in ("torch", "jax", "flax", "optax", "transformers"):
        try:
            out.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    return ", ".join(out)
