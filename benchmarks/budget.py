"""A budgeted pretrain-then-fine-tune benchmark: what a wall-clock budget of pretraining buys
downstream, for each twin and for the Hugging Face peer (Cramming's question at this scale).

    python -m benchmarks.budget --budget SECONDS [--preset mini|tiny] [--contenders ...]
                                [--peer-times 1,3] [--pretrain-only] [--reuse]
                                [--corpus real|builtin] [--out DIR] [--quick]

The protocol:
1. One WordPiece tokenizer trained on the pretraining text (`bertcore.data.tokenizer train`), shards
   and the held-out shards prepared once (`bertcore.data prepare`): every contender reads the
   same batches and is evaluated on the same fixed held-out batches.
2. Each contender pretrains from scratch for the same wall-clock budget, with the same model
   size, masking, sequence length and learning-rate recipe. The twins run their CLIs with
   `--time-budget`; a short calibration run first measures each one's start-up (imports, data,
   the first, compiling step: reported, not counted; it also fills jax's compilation cache) and
   its step time, from which the budget-aware schedule's length is set (linear decay to zero
   over the steps that fit the budget). The peer, transformers' BertForPreTraining, is trained
   here in a plain PyTorch loop (AdamW without decay on biases and LayerNorm, clipping, the same
   schedule) on the same batches, in a subprocess of its own like the twins. The clock of every
   contender is its training loop's wall time, held-out evaluations included.
3. Each pretrained encoder (its Hugging Face export) is fine-tuned on both tasks by one and the
   same code, `torchbert.classify train --init-from`, for each seed, and scored on the test split
   (`predict`: accuracy and macro-F1). Baselines: the same model from random initialisation, and
   a bag-of-words logistic regression (numpy).
4. OUT/results.json, OUT/results.md (the table) and OUT/budget.png (held-out MLM loss against
   wall time; downstream accuracy bars).

Each finished stage is recorded in OUT/work/stages.json as it ends; `--reuse` keeps the stages a
previous run finished with the same settings, so the hours of the full protocol can be spent in
sittings (`--pretrain-only` first, then the fine-tuning).

`--contenders ...,jaxbert-modernbert` (or torchbert-modernbert) adds that twin training
ModernBERT (`--arch modernbert`, MLM only, as published) at the same preset size, masking,
sequence length, learning-rate recipe and budget: the two architectures compared downstream.

`--contenders jaxbert-electra,torchbert-electra,hf-electra` is ELECTRA (replaced-token
detection) at the same preset size, masking rate, sequence length, learning-rate recipe and
budget: the twins with `--arch electra` (ELECTRA's own masking shares, 85/0/15, and
discriminator weight 50, the CLIs' defaults) and, as the peer, transformers' ElectraForMaskedLM
(the generator) + ElectraForPreTraining (the discriminator) sharing their embeddings, trained by
the same plain loop as hf-torch on the same batches (benchmarks.contenders.hf_electra_forward:
replacements sampled from the generator's softmax, loss = MLM + 50 x BCE). The held-out columns
of these rows are the generator's MLM loss and accuracy (a model a quarter as wide: not
comparable with BERT's) and the discriminator's accuracy, precision and recall on replaced
tokens; what is fine-tuned is the discriminator (RUNDIR/hf/discriminator), and the random-init
baseline of these rows is an ELECTRA discriminator of the same size (`random-init-electra`).

The recipe search (issue 26's step 5, BENCHMARKS.md): `--contenders jaxbert-nonsp,jaxbert-preln,
...` are jaxbert's BERT with some of its existing training options changed (`RECIPE_TRIALS`),
everything else as the plain `jaxbert` row, so each row answers "what does this option buy at
this budget".

`--quick` runs all of it on the built-in corpus and small synthetic labelled data (seconds of
pretraining, one seed): a test that the harness works, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.contenders import parse_contenders
from benchmarks.realtext import find_links_args, prepare as prepare_real
from bertcore.infra.errors import UserError, cli_entry
from bertcore.infra.files import write_text_atomic

# The twins' runs: the module and the flags that make the contender. The "-modernbert" rows are
# the same twin training ModernBERT (`--arch modernbert`, MLM only, as published) at the same
# preset size, masking and budget: the two architectures compared downstream. They are not in the
# default set (the default is the twins against the BERT peer); name them in --contenders.
TWINS = {"torchbert": ("torchbert.train", []), "jaxbert": ("jaxbert.train", []),
         "torchbert-modernbert": ("torchbert.train", ["--arch", "modernbert"]),
         "jaxbert-modernbert": ("jaxbert.train", ["--arch", "modernbert"]),
         # ELECTRA: its masking shares (85/0/15) and discriminator weight (50) are the CLIs'
         # defaults for --arch electra; the encoder fine-tuned is RUNDIR/hf/discriminator.
         "torchbert-electra": ("torchbert.train", ["--arch", "electra"]),
         "jaxbert-electra": ("jaxbert.train", ["--arch", "electra"])}
# The recipe search: jaxbert (the faster twin: more steps per budget to spend on a recipe) with
# some of its existing options changed; the flags come after the shared ones and win.
RECIPE_TRIALS = {
    "jaxbert-nonsp": ["--no-nsp"],                                  # MLM only
    "jaxbert-preln": ["--no-nsp", "--layer-norm-position", "pre"],  # + pre-LN (Cramming)
    "jaxbert-preln-lr2e-3": ["--no-nsp", "--layer-norm-position", "pre", "--lr", "2e-3"],
    # + no dropout (Cramming's choice for a short budget; jaxbert's attention then goes through
    # jax.nn.dot_product_attention, which costs a training step 2-8% at this shape on a CPU:
    # benchmarks.attention, BENCHMARKS.md)
    "jaxbert-preln-nodrop": ["--no-nsp", "--layer-norm-position", "pre", "--no-dropout"],
}
TWINS.update({name: ("jaxbert.train", flags) for name, flags in RECIPE_TRIALS.items()})
# The peers, trained here in a plain PyTorch loop (peer_worker), and their architectures.
PEERS = {"hf-torch": "bert", "hf-electra": "electra"}
CONTENDERS = ("torchbert", "jaxbert", "hf-torch")
ALL_CONTENDERS = CONTENDERS + ("torchbert-modernbert", "jaxbert-modernbert", *RECIPE_TRIALS,
                               "torchbert-electra", "jaxbert-electra", "hf-electra")
TASKS = ("bbc", "tweets")
# random-init is BERT's (run when a contender that is not ELECTRA is named), random-init-electra
# an ELECTRA discriminator's (when an ELECTRA contender is).
BASELINES = ("random-init", "bow-logreg")
ELECTRA_BASELINE = "random-init-electra"


def is_electra(name: str) -> bool:
    """Whether contender (or baseline) `name` is an ELECTRA row."""
    return "electra" in name


# ---- settings -----------------------------------------------------------------------------------

def settings(args) -> dict[str, Any]:
    """Every number of the protocol, in one place (results.json records them)."""
    if args.quick:
        return dict(preset=args.preset or "tiny", vocab_size=2048, batch_size=16, seq_len=64,
                    max_predictions=10, lr=1e-3, eval_every=5, eval_batches=2, seeds=[0],
                    ft_epochs=3, ft_lr=1e-3, ft_batch=16, ft_train=10**9,
                    max_len={"bbc": 64, "tweets": 32}, calibration_steps=4)
    return dict(preset=args.preset or "mini", vocab_size=8192, batch_size=32, seq_len=128,
                max_predictions=20, lr=1e-3, eval_every=args.eval_every, eval_batches=8,
                seeds=list(range(args.seeds)), ft_epochs=3, ft_lr=2e-4, ft_batch=32,
                ft_train=args.ft_train, max_len={"bbc": 256, "tweets": 64},
                calibration_steps=6)


def pretrain_flags(s: dict, data: Path, eval_data: Path, steps: int) -> list[str]:
    """The flags every twin's run shares: size, masking, sequence length, LR recipe, eval."""
    warmup = max(1, min(200, steps // 10))
    return ["--preset", s["preset"], "--data", str(data), "--eval-data", str(eval_data),
            "--eval-every", str(s["eval_every"]), "--eval-batches", str(s["eval_batches"]),
            "--log-every", str(s["eval_every"]), "--checkpoint-every", str(10**9),
            "--batch-size", str(s["batch_size"]), "--seq-len", str(s["seq_len"]),
            "--max-predictions", str(s["max_predictions"]), "--lr", str(s["lr"]),
            "--schedule", "linear", "--warmup-steps", str(warmup), "--steps", str(steps),
            "--seed", "0", "--no-progress", "--overwrite"]


def warmup_linear(step: int, peak: float, warmup: int, total: int) -> float:
    """The twins' schedule (bertcore.train.schedule.warmup_linear), for the peer's loop."""
    factor = (step + 1.0) / max(warmup, 1) if step < warmup else \
        (total - step) / max(total - warmup, 1)
    return peak * min(max(factor, 0.0), 1.0)


def _run(cmd: list[str], log_path: Path, env: dict | None = None) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"{' '.join(cmd[2:4])} failed (exit {proc.returncode}): {tail[0]} "
                        f"(full log: {log_path})")


def _py(module: str, *argv: str) -> list[str]:
    return [sys.executable, "-m", module, *argv]


# ---- data -------------------------------------------------------------------------------------

SYNTHETIC = {
    "bbc": {"code": "function return value argument list", "file": "file path directory read write",
            "net": "socket connection server request client", "math": "number integer float sum"},
    "tweets": {"negative": "error fails broken wrong bad", "neutral": "the a this that which",
               "positive": "works good correct fast simple"},
}


def synthetic_task(task: str, n: int, seed: int) -> list[dict]:
    """Labelled texts whose label shows in a few cue words among common ones: --quick's tasks."""
    rng = np.random.default_rng(seed)
    common = "the of to and is in it for that with as on be by this an are".split()
    labels = sorted(SYNTHETIC[task])
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = list(rng.choice(common, 12)) + list(rng.choice(SYNTHETIC[task][label].split(), 3))
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + " .", "label": label})
    return rows


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def prepare_data(args, s: dict, work: Path) -> dict[str, Any]:
    """Tokenizer, shards, held-out shards and the task files; their times."""
    t0 = time.perf_counter()
    tasks: dict[str, dict[str, Path]] = {}
    if args.corpus == "real":
        root = prepare_real(pip_args=find_links_args(args.find_links),
                            log=lambda m: print(f"  {m}", file=sys.stderr))
        corpus, heldout = root / "pretrain" / "train.txt", root / "pretrain" / "heldout.txt"
        for task in TASKS:
            d = root / "tasks" / task
            rows = read_jsonl(d / "train.jsonl")
            if len(rows) > s["ft_train"]:     # one seeded subset, shared by every encoder
                keep = np.sort(np.random.default_rng(0).permutation(len(rows))[:s["ft_train"]])
                rows = [rows[i] for i in keep]
            write_jsonl(work / "tasks" / task / "train.jsonl", rows)
            tasks[task] = {"train": work / "tasks" / task / "train.jsonl",
                           "validation": d / "validation.jsonl", "test": d / "test.jsonl"}
    else:
        corpus, heldout = "builtin", None
        for k, task in enumerate(TASKS):
            rows = synthetic_task(task, 240, seed=k)
            tasks[task] = {}
            for name, part in (("train", rows[:160]), ("validation", rows[160:200]),
                               ("test", rows[200:])):
                tasks[task][name] = work / "tasks" / task / f"{name}.jsonl"
                write_jsonl(tasks[task][name], part)
    fetch_seconds = time.perf_counter() - t0
    tok, data = work / "tokenizer", work / "data"
    t0 = time.perf_counter()
    _run(_py("bertcore.tokenizer", "train", "--corpus", str(corpus), "--vocab-size",
             str(s["vocab_size"]), "--out", str(tok), "--overwrite"), work / "tokenizer.log")
    tok_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    common = ["--tokenizer", str(tok), "--no-progress", "--overwrite"]
    if heldout is None:
        _run(_py("bertcore.data", "prepare", "--corpus", str(corpus), "--out", str(data),
                 "--eval-fraction", "0.01", *common), work / "prepare.log")
        eval_data = data / "eval"
    else:
        eval_data = work / "eval"
        _run(_py("bertcore.data", "prepare", "--corpus", str(corpus), "--out", str(data),
                 *common), work / "prepare.log")
        _run(_py("bertcore.data", "prepare", "--corpus", str(heldout), "--out", str(eval_data),
                 *common), work / "prepare-eval.log")
    return {"tokenizer": tok, "data": data, "eval_data": eval_data, "tasks": tasks,
            "seconds": {"fetch_and_normalise": fetch_seconds, "tokenizer": tok_seconds,
                        "prepare": time.perf_counter() - t0}}


# ---- pretraining: the twins ---------------------------------------------------------------------

def read_rows(rundir: Path) -> tuple[list[dict], list[dict]]:
    """(training log rows, eval rows) of a run's metrics.jsonl."""
    rows = read_jsonl(rundir / "metrics.jsonl") if (rundir / "metrics.jsonl").is_file() else []
    return ([r for r in rows if r.get("split") != "eval"],
            [r for r in rows if r.get("split") == "eval"])


def watch(cmd: list[str], rundir: Path, log_path: Path) -> dict[str, float]:
    """Run a twin's training CLI; return its wall time and the seconds from spawn until its
    training loop started (the first metrics line's time less its `elapsed`)."""
    # An earlier run's metrics.jsonl there would be read as this one's first line before the
    # CLI's --overwrite removes it (a start-up time from another process, even negative).
    shutil.rmtree(rundir, ignore_errors=True)
    t_spawn = time.time()
    loop_start = None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if loop_start is None:
                logged, _ = read_rows(rundir) if (rundir / "metrics.jsonl").is_file() else ([], [])
                if logged:
                    loop_start = time.time() - logged[0]["elapsed"]
            time.sleep(0.1)
    if proc.returncode not in (0, 75):
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"{cmd[2]} failed (exit {proc.returncode}): {tail[0]} (log: {log_path})")
    return {"wall_seconds": time.time() - t_spawn,
            "startup_seconds": (loop_start - t_spawn) if loop_start else float("nan")}


def cli_budget(seconds: float) -> float:
    """The --time-budget that leaves `seconds` for start-up plus training: the twins' stopper
    keeps back min(120, max(10, 5%)) of a budget for the end of the run
    (bertcore.train.stopping)."""
    total = seconds
    for _ in range(50):
        total = seconds + min(120.0, max(10.0, 0.05 * total))
    return total


def pretrain_twin(name: str, s: dict, d: dict, budget: float, runs: Path,
                  threads: int | None) -> dict[str, Any]:
    module, arch = TWINS[name]
    extra = arch + (["--threads", str(threads)] if threads and module == "torchbert.train"
                    else [])
    # Calibration: start-up, the first (compiling) step, the step time.
    cal_dir = runs / f"{name}-calibration"
    n = s["calibration_steps"]
    cal_flags = pretrain_flags(s, d["data"], d["eval_data"], n)
    cal_flags[cal_flags.index("--log-every") + 1] = "1"
    cal = watch(_py(module, *cal_flags, *extra, "--out", str(cal_dir)), cal_dir,
                runs / f"{name}-calibration.log")
    logged, _ = read_rows(cal_dir)
    summary = json.loads((cal_dir / "summary.json").read_text())
    # jaxbert reports its first (compiling) step; torchbert compiles nothing, its first step
    # is an ordinary one and counts as training.
    first = summary.get("first_step_seconds") or 0.0
    steady = np.diff([r["elapsed"] for r in logged[1:]])
    step_seconds = float(np.median(steady)) if len(steady) else float(logged[-1]["elapsed"])
    steps = max(10, int(budget / step_seconds))
    startup = cal["startup_seconds"] if math.isfinite(cal["startup_seconds"]) else 10.0
    rundir = runs / name
    flags = pretrain_flags(s, d["data"], d["eval_data"], steps)
    # ELECTRA's export is two models: the discriminator is the encoder to fine-tune.
    encoder = rundir / "hf" / "discriminator" if is_electra(name) else rundir / "hf"
    if summary.get("first_step_seconds") is not None:
        # The schedule's length is part of jax's compiled program: one step with the main
        # run's flags compiles it into the cache (its time is the compile time reported).
        warm_dir = runs / f"{name}-compile"
        watch(_py(module, *flags, *extra, "--stop-after", "1", "--out", str(warm_dir)),
              warm_dir, runs / f"{name}-compile.log")
        first = json.loads((warm_dir / "summary.json").read_text()).get("first_step_seconds") \
            or first
    # The budget counts from process start: start-up and the first step (jax compiles there,
    # from the cache the calibration filled when it can) are added, then excluded from the
    # reported training time, as the peer's loop clock excludes its set-up.
    cmd = _py(module, *flags, *extra,
              "--time-budget", f"{cli_budget(budget + startup + first):.0f}s",
              "--out", str(rundir))
    main = watch(cmd, rundir, runs / f"{name}.log")
    logged, evals = read_rows(rundir)
    first_main = json.loads((rundir / "summary.json").read_text()).get("first_step_seconds") or 0.0
    out = {"contender": name, "command": " ".join(cmd[2:]), "scheduled_steps": steps,
           "calibration": {"startup_seconds": startup, "first_step_seconds": first,
                           "step_seconds": step_seconds},
           "compile_seconds": first if summary.get("first_step_seconds") else None,
           "first_step_seconds": first_main, **main, "encoder": str(encoder)}
    out.update(curve_figures(logged, evals, s, offset=first_main))
    if budget >= 60 and out["steps"] >= steps and out["train_seconds"] < 0.9 * budget:
        # The schedule's length comes from the calibration's step time: a calibration slowed
        # by other work on the machine schedules too few steps, and the run ends early with a
        # worse encoder than the budget buys. Say so instead of publishing it. (Not for the
        # seconds-long budgets of --quick, where a few steps' timing is too noisy to judge.)
        raise UserError(f"{name} finished its {steps} scheduled steps in "
                        f"{out['train_seconds']:.0f} s of a {budget:.0f} s budget: its calibration "
                        f"({step_seconds:.2f} s/step) was slowed, was the machine busy? Run it "
                        f"again on a quiet machine")
    return out


def curve_figures(logged: list[dict], evals: list[dict], s: dict,
                  offset: float = 0.0) -> dict[str, Any]:
    """Steps, training seconds, tokens/s and the held-out curve (wall time of each eval: the
    `elapsed` of the training line logged at the same step, less `offset`: the first step)."""
    at = {r["step"]: r["elapsed"] - offset for r in logged}
    steps = logged[-1]["step"] if logged else 0
    seconds = logged[-1]["elapsed"] - offset if logged else float("nan")
    curve = [{"step": e["step"], "seconds": at.get(e["step"], float("nan")),
              "mlm_loss": e["mlm_loss"], "mlm_accuracy": e.get("mlm_accuracy", float("nan")),
              **{k: e[k] for k in DETECTION if k in e}}
             for e in evals]
    last = curve[-1] if curve else {"mlm_loss": float("nan"), "mlm_accuracy": float("nan")}
    # The held-out loss at the budget itself: the last evaluation within it (a twin's run may
    # end a little past the budget when its start-up was faster than calibrated).
    within = [c for c in curve if c["seconds"] <= s["budget"] * 1.001]
    return {"steps": steps, "train_seconds": seconds,
            "tokens_per_second": steps * s["batch_size"] * s["seq_len"] / seconds
            if seconds and seconds > 0 else float("nan"),
            "heldout_mlm_loss": last["mlm_loss"], "heldout_mlm_accuracy": last["mlm_accuracy"],
            "heldout_mlm_loss_at_budget": within[-1]["mlm_loss"] if within else float("nan"),
            # ELECTRA's rows: the discriminator's held-out figures at the last evaluation
            **{f"heldout_{k}": last[k] for k in DETECTION if k in last},
            "curve": curve}


# An ELECTRA eval row's discriminator figures (bertcore.train.evaluation.detection_rates).
DETECTION = ("disc_loss", "disc_accuracy", "disc_precision", "disc_recall", "replaced")


# ---- pretraining: the peer, in a plain loop -----------------------------------------------------

def peer_worker(cfg: dict) -> None:
    """In a subprocess: train transformers.BertForPreTraining (cfg["arch"] "electra": the
    ElectraForMaskedLM + ElectraForPreTraining pair) for cfg["budget"] seconds of loop time on
    the twins' batches (or, with budget 0, only write its random initialisation), log
    metrics.jsonl as the twins do, and export the model as a Hugging Face directory (hf/;
    ELECTRA: hf/discriminator and hf/generator, as the twins' runs)."""
    import torch
    import transformers

    from benchmarks.contenders import (electra_rates, hf_electra_forward, hf_electra_pair,
                                       hf_electra_parameters, hf_inputs)
    from bertcore.model.config import BertConfig, ElectraConfig, TrainConfig
    from bertcore.data.batches import BatchIterator
    from bertcore.data.shards import Shards
    from bertcore.data.tokenizer import load_tokenizer
    from bertcore.train.evaluation import eval_batches

    t_setup = time.perf_counter()
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    out = Path(cfg["out"])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok = load_tokenizer(cfg["tokenizer"])
    torch.manual_seed(cfg.get("seed", 0))
    electra = cfg.get("arch") == "electra"
    if electra:
        # As `--arch electra` builds it: the preset, the tokenizer's padding id, the generator
        # a quarter as wide; the two models share their embeddings (hf_electra_pair).
        gen, disc = hf_electra_pair(ElectraConfig.from_preset(
            cfg["preset"], vocab_size=tok.vocab_size, pad_token_id=tok.pad_id))
        models = {"discriminator": disc, "generator": gen}
        named = [(n, p) for n, p in torch.nn.ModuleDict(models).named_parameters()]
        sample_rng = torch.Generator().manual_seed(cfg.get("seed", 0))
    else:
        mcfg = {k: v for k, v in BertConfig.from_preset(cfg["preset"], vocab_size=tok.vocab_size)
                .to_dict().items() if k != "layer_norm_position"}
        model = transformers.BertForPreTraining(transformers.BertConfig(**mcfg))
        models = {"": model}
        named = list(model.named_parameters())
    if cfg["budget"] > 0:
        # ELECTRA's batches as its train CLI draws them: no NSP, 85/0/15, a seed per slot.
        tcfg = TrainConfig(batch_size=cfg["batch_size"], seq_len=cfg["seq_len"],
                           max_predictions=cfg["max_predictions"], lr=cfg["lr"],
                           warmup_steps=cfg["warmup"], steps=cfg["steps"], seed=0,
                           **(dict(objective="electra", nsp=False, mask_replace_prob=0.85,
                                   random_replace_prob=0.0) if electra else {}))
        batches = BatchIterator(Shards(cfg["data"], tok), tok, tcfg)
        held = eval_batches(Shards(cfg["eval_data"], tok), tok, tcfg, cfg["eval_batches"])
        # named_parameters lists a shared tensor once (ELECTRA's embeddings)
        decay = [p for n, p in named if not n.endswith("bias") and "LayerNorm" not in n]
        rest = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
        params = decay + rest
        if electra:
            assert len(params) == len(hf_electra_parameters(gen, disc))

            def loss_of(b):
                return hf_electra_forward(gen, disc, b, sample_rng)[0]

            def evaluate():
                return _electra_eval(torch, gen, disc, held, electra_rates, hf_electra_forward)
        else:
            def loss_of(b):
                return model(**hf_inputs(b)).loss

            def evaluate():
                return _peer_eval(torch, model, held)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                 {"params": rest, "weight_decay": 0.0}],
                                lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-6)
        metrics = open(out / "metrics.jsonl", "w")
        print(json.dumps({"setup_seconds": time.perf_counter() - t_setup}), flush=True)
        t0 = time.perf_counter()
        step = 0
        while step < cfg["steps"] and time.perf_counter() - t0 < cfg["budget"]:
            b = next(batches)
            for group in opt.param_groups:
                group["lr"] = warmup_linear(step, cfg["lr"], cfg["warmup"], cfg["steps"])
            for m in models.values():
                m.train()
            loss = loss_of(b)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if cfg.get("log_every") and step % cfg["eval_every"]:
                metrics.write(json.dumps({"step": step, "loss": float(loss),
                                          "elapsed": time.perf_counter() - t0}) + "\n")
            if step % cfg["eval_every"] == 0:
                row = {"step": step, "loss": float(loss), "elapsed": time.perf_counter() - t0}
                metrics.write(json.dumps(row) + "\n")
                metrics.write(json.dumps({"step": step, **evaluate()}) + "\n")
                metrics.flush()
        if step % cfg["eval_every"]:
            if not cfg.get("log_every"):
                metrics.write(json.dumps({"step": step, "loss": float(loss),
                                          "elapsed": time.perf_counter() - t0}) + "\n")
            metrics.write(json.dumps({"step": step, **evaluate()}) + "\n")
        metrics.close()
    for role, m in models.items():
        m.save_pretrained(out / "hf" / role, safe_serialization=True)
        for f in Path(cfg["tokenizer"]).iterdir():
            if f.is_file():
                shutil.copy(f, out / "hf" / role / f.name)


def _electra_eval(torch, gen, disc, held: list[dict], rates, forward) -> dict:
    """The ELECTRA pair's held-out figures on the fixed eval batches, named as the twins' eval
    rows name them: the generator's MLM loss and accuracy, the discriminator's loss, accuracy,
    precision and recall, the share of real tokens replaced. The samples come from a generator
    seeded the same at every evaluation, so evaluations differ only by the models."""
    gen.eval(), disc.eval()
    rng = torch.Generator().manual_seed(1234)
    totals: dict[str, float] = {}
    with torch.no_grad():
        for b in held:
            for k, v in forward(gen, disc, b, rng)[1].items():
                totals[k] = totals.get(k, 0.0) + v
    return {"split": "eval", **rates(totals)}


def _peer_eval(torch, model, held: list[dict]) -> dict:
    """Held-out MLM loss and accuracy over all real predictions of the fixed eval batches."""
    model.eval()
    total, correct, count = 0.0, 0.0, 0.0
    with torch.no_grad():
        for b in held:
            out = model(input_ids=torch.from_numpy(b["input_ids"]).long(),
                        token_type_ids=torch.from_numpy(b["token_type_ids"]).long(),
                        attention_mask=torch.from_numpy(b["attention_mask"]).long())
            rows = torch.arange(b["input_ids"].shape[0])[:, None]
            logits = out.prediction_logits[rows, torch.from_numpy(b["masked_positions"]).long()]
            target = torch.from_numpy(b["masked_ids"]).long()
            w = torch.from_numpy(b["masked_weights"]).float()
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target,
                                                   reduction="none")
            total += float((ce * w).sum())
            correct += float(((logits.argmax(-1) == target).float() * w).sum())
            count += float(w.sum())
    return {"split": "eval", "mlm_loss": total / max(count, 1.0),
            "mlm_accuracy": correct / max(count, 1.0)}


def run_peer(s: dict, d: dict, budget: float, out: Path, threads: int | None,
             steps: int | None = None, seed: int = 0, arch: str = "bert") -> dict[str, Any]:
    """The peer of `arch` (PEERS) (or, with budget 0, the random-init encoder) in its own
    subprocess."""
    if steps is None:       # its schedule's length: the steps its calibration says fit
        cal = run_peer(s, d, -1, out.parent / f"{out.name}-calibration", threads, steps=0,
                       arch=arch)
        steps = max(10, int(budget / cal["step_seconds"]))
    cfg = {"out": str(out), "tokenizer": str(d["tokenizer"]), "data": str(d["data"]),
           "eval_data": str(d["eval_data"]), "preset": s["preset"], "budget": budget,
           "batch_size": s["batch_size"], "seq_len": s["seq_len"], "seed": seed,
           "max_predictions": s["max_predictions"], "lr": s["lr"], "threads": threads,
           "warmup": max(1, min(200, max(steps, 1) // 10)), "steps": max(steps, 1),
           "eval_every": s["eval_every"], "eval_batches": s["eval_batches"], "arch": arch}
    if budget < 0:
        # Calibration: a few steps, one per log line, and no evaluation between them (as the
        # twins' calibration runs none), so the step time is the step's alone; one held-out
        # batch at the end.
        cfg.update(budget=1e9, steps=s["calibration_steps"], eval_every=10**9, eval_batches=1,
                   log_every=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg_path = out.parent / f"{out.name}.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    t0 = time.time()
    _run(_py("benchmarks.budget", "--peer-worker", str(cfg_path)), out.parent / f"{out.name}.log")
    wall = time.time() - t0
    log = (out.parent / f"{out.name}.log").read_text()
    setup = [json.loads(ln)["setup_seconds"] for ln in log.splitlines() if "setup_seconds" in ln]
    # ELECTRA's encoder to fine-tune is its discriminator.
    encoder = out / "hf" / ("discriminator" if arch == "electra" else "")
    if budget == 0:
        return {"encoder": str(encoder)}
    logged, evals = read_rows(out)
    if budget < 0:
        el = [r["elapsed"] for r in logged]
        return {"step_seconds": float(np.median(np.diff(el[1:]))) if len(el) > 2 else el[-1]}
    return {"contender": {v: k for k, v in PEERS.items()}[arch],
            "command": f"(in-process loop) {json.dumps(cfg)}",
            "scheduled_steps": steps, "wall_seconds": wall,
            "startup_seconds": setup[0] if setup else float("nan"),
            "encoder": str(encoder),
            **curve_figures(logged, evals, {**s, "budget": budget})}   # at its own budget


# ---- fine-tuning and the baselines --------------------------------------------------------------

def macro_f1(y: Sequence[str], p: Sequence[str]) -> float:
    f1s = []
    for label in sorted(set(y)):
        tp = sum(1 for a, b in zip(y, p) if a == label and b == label)
        fp = sum(1 for a, b in zip(y, p) if a != label and b == label)
        fn = sum(1 for a, b in zip(y, p) if a == label and b != label)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s))


def scores(y: Sequence[str], p: Sequence[str]) -> dict[str, float]:
    return {"accuracy": float(np.mean([a == b for a, b in zip(y, p)])), "macro_f1": macro_f1(y, p)}


def fine_tune(encoder: str, task: str, files: dict[str, Path], seed: int, s: dict,
              out: Path) -> dict[str, float]:
    """`torchbert.classify train --init-from ENCODER`, then `predict` on the test split."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(_py("torchbert.classify", "train", "--init-from", encoder, "--data",
             str(files["train"]), "--validation", str(files["validation"]), "--max-len",
             str(s["max_len"][task]), "--batch-size", str(s["ft_batch"]), "--epochs",
             str(s["ft_epochs"]), "--lr", str(s["ft_lr"]), "--seed", str(seed), "--out", str(out),
             "--overwrite", "--no-progress"), out.parent / f"{out.name}-train.log")
    proc = subprocess.run(_py("torchbert.classify", "predict", str(out), "--file",
                              str(files["test"]), "--json"), capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        raise UserError(f"predict on {out} failed: {last}")
    predicted = [r["label"] for r in json.loads(proc.stdout)]
    return scores([r["label"] for r in read_jsonl(files["test"])], predicted)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def bow_logreg(files: dict[str, Path], max_words: int = 20000, iters: int = 300,
               l2: float = 1e-4) -> dict[str, float]:
    """Multinomial logistic regression on log(1 + word counts) of the training file's most
    frequent words: full-batch gradient descent with Adam in numpy; the L2 weight picked on the
    validation split."""
    train, val, test = (read_jsonl(files[k]) for k in ("train", "validation", "test"))
    counts: dict[str, int] = {}
    for r in train:
        for w in words(r["text"]):
            counts[w] = counts.get(w, 0) + 1
    vocab = {w: i for i, w in enumerate(sorted(counts, key=lambda w: (-counts[w], w))[:max_words])}
    labels = sorted({r["label"] for r in train})

    def featurise(rows):
        x = np.zeros((len(rows), len(vocab)), np.float32)
        for i, r in enumerate(rows):
            for w in words(r["text"]):
                if w in vocab:
                    x[i, vocab[w]] += 1
        return np.log1p(x)

    xs = [featurise(r) for r in (train, val, test)]
    ys = [np.array([labels.index(r["label"]) if r["label"] in labels else -1 for r in rows])
          for rows in (train, val, test)]
    best = None
    for reg in (l2, l2 * 10, l2 * 100):
        w = _fit_logreg(xs[0], ys[0], len(labels), reg, iters)
        acc = float(np.mean(_predict(xs[1], w) == ys[1]))
        if best is None or acc > best[0]:
            best = (acc, w)
    pred = _predict(xs[2], best[1])
    return scores([r["label"] for r in test], [labels[i] for i in pred])


def _predict(x: np.ndarray, w: tuple) -> np.ndarray:
    return (x @ w[0] + w[1]).argmax(-1)


def _fit_logreg(x: np.ndarray, y: np.ndarray, k: int, l2: float, iters: int) -> tuple:
    W, b = np.zeros((x.shape[1], k), np.float32), np.zeros(k, np.float32)
    onehot = np.eye(k, dtype=np.float32)[y]
    m = [np.zeros_like(W), np.zeros_like(b)]
    v = [np.zeros_like(W), np.zeros_like(b)]
    for t in range(1, iters + 1):
        z = x @ W + b
        z -= z.max(-1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(-1, keepdims=True)
        g = (p - onehot) / len(x)
        grads = [x.T @ g + l2 * W, g.sum(0)]
        for i, (param, grad) in enumerate(zip((W, b), grads)):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad * grad
            param -= 0.05 * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
    return W, b


# ---- the report ---------------------------------------------------------------------------------

def summarise(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "n": len(a), "values": [float(v) for v in a]}


def _pm(x: dict | None, scale: float = 100.0) -> str:
    if not x:
        return "-"
    return f"{scale * x['mean']:.1f} ± {scale * x['std']:.1f}" if x["n"] > 1 else \
        f"{scale * x['mean']:.1f}"


def table(results: dict) -> str:
    """The results as a markdown table. With an ELECTRA row, its held-out MLM figures are its
    generator's (marked "gen."), and three columns more hold its discriminator's held-out
    accuracy, precision and recall on replaced tokens."""
    electra = any(is_electra(r["name"]) for r in results["rows"])
    lines = ["| contender | steps | tokens/s | train s | start-up s | compile s | "
             "held-out MLM loss (at budget) | MLM acc % | "
             + ("disc acc % | disc precision % | disc recall % | " if electra else "")
             + "BBC acc % | tweet acc % | tweet macro-F1 % |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
             + (" ---: | ---: | ---: |" if electra else "")]
    for row in results["rows"]:
        p, d = row.get("pretrain") or {}, row["downstream"]

        def num(key: str, fmt: str) -> str:
            v = p.get(key)
            return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "-"
        gen = "gen. " if is_electra(row["name"]) and p else ""
        lines.append(f"| {row['name']} | {num('steps', 'd')} | {num('tokens_per_second', '.0f')} "
                     f"| {num('train_seconds', '.1f')} | {num('startup_seconds', '.1f')} "
                     f"| {num('compile_seconds', '.1f')} "
                     f"| {gen}{num('heldout_mlm_loss', '.3f')} "
                     f"({num('heldout_mlm_loss_at_budget', '.3f')}) "
                     f"| {_pct(p.get('heldout_mlm_accuracy'))} "
                     + "".join(f"| {_pct(p.get('heldout_' + k))} " for k in (
                         ("disc_accuracy", "disc_precision", "disc_recall") if electra else ()))
                     + f"| {_pm(d.get('bbc', {}).get('accuracy'))} "
                     f"| {_pm(d.get('tweets', {}).get('accuracy'))} "
                     f"| {_pm(d.get('tweets', {}).get('macro_f1'))} |")
    return "\n".join(lines) + "\n"


def _pct(v) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in results["rows"]:
        curve = (row.get("pretrain") or {}).get("curve")
        if curve:
            a.plot([c["seconds"] for c in curve], [c["mlm_loss"] for c in curve], marker=".",
                   label=row["name"])
    a.set_xlabel("training wall time (s)")
    a.set_ylabel("held-out MLM loss")
    a.set_title(f"pretraining, budget {results['budget_seconds']:.0f} s")
    a.legend()
    tuned = [r for r in results["rows"] if r["downstream"]]
    if not tuned:                    # --pretrain-only: the curves alone
        b.set_axis_off()
        b.text(0.5, 0.5, "no fine-tuning (--pretrain-only)", ha="center", va="center")
    names = [r["name"] for r in tuned]
    x = np.arange(len(names))
    for k, task in enumerate(TASKS if tuned else ()):
        acc = [r["downstream"][task]["accuracy"] for r in tuned]
        b.bar(x + (k - 0.5) * 0.38, [100 * v["mean"] for v in acc], 0.38,
              yerr=[100 * v["std"] for v in acc], capsize=3, label=task)
    if tuned:
        b.set_xticks(x, names, rotation=20)
        b.set_ylabel("test accuracy (%)")
        b.set_title("fine-tuned (mean ± std over seeds)")
        b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- stages -------------------------------------------------------------------------------------

class Stages:
    """Each finished stage's result (a contender's pretraining, one fine-tuning run) in
    OUT/work/stages.json, written as it finishes, with the settings it ran with. With `reuse`,
    a stage recorded under the same settings is taken from there instead of run again, so a
    benchmark of hours can be run in sittings (`--reuse`), and one that was stopped keeps
    what it finished. Without it, every stage runs again and replaces its record. A stage's
    settings are only those that decide it: a pretraining stage is kept when the fine-tuning
    settings (or --seeds) change, and a fine-tuning run of seed 0 when --seeds grows."""

    def __init__(self, work: Path, reuse: bool):
        self.path = work / "stages.json"
        self.reuse = reuse
        try:
            self.done = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except ValueError:
            self.done = {}

    @staticmethod
    def _key(settings: dict) -> str:
        return json.dumps(settings, sort_keys=True, default=str)

    def get(self, name: str, settings: dict) -> Any:
        entry = self.done.get(name)
        if self.reuse and entry and entry.get("settings") == self._key(settings):
            return entry["result"]
        return None

    def put(self, name: str, settings: dict, result: Any) -> Any:
        self.done[name] = {"settings": self._key(settings), "result": result}
        write_text_atomic(self.path, json.dumps(self.done, indent=1, default=str) + "\n")
        return result


FINE_TUNING = ("seeds", "ft_epochs", "ft_lr", "ft_batch", "ft_train", "max_len")


# ---- main ---------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.budget", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, help="pretraining seconds per contender "
                                                "(default: 900; 8 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="the whole harness on the built-in corpus and synthetic labels, fast")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help=f"comma-separated, of {', '.join(ALL_CONTENDERS)} (default: "
                        f"{', '.join(CONTENDERS)})")
    p.add_argument("--preset", choices=("tiny", "mini"), help="model size (default: mini; "
                                                              "tiny with --quick)")
    p.add_argument("--corpus", choices=("real", "builtin"),
                   help="real: benchmarks.realtext's text and tasks (default); builtin: the "
                        "built-in corpus and synthetic tasks (the default with --quick)")
    p.add_argument("--find-links", metavar="DIR",
                   help="take the pinned archives from this folder instead of the registry")
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds [3]")
    p.add_argument("--ft-train", type=int, default=2000,
                   help="training examples per task for fine-tuning, a fixed seeded subset "
                        "(the bag-of-words baseline uses the same) [2000]")
    p.add_argument("--eval-every", type=int, default=50, help="steps between held-out "
                                                              "evaluations [50]")
    p.add_argument("--peer-times", default="1", metavar="K[,K...]",
                   help="pretrain the peer for these multiples of --budget, each a row of its "
                        "own (hf-torch, hf-torch x3, ...): the twins' loss at the budget against "
                        "the peer's at three times it is --peer-times 1,3 [1]")
    p.add_argument("--pretrain-only", action="store_true",
                   help="stop after pretraining: the table's held-out columns, no fine-tuning "
                        "(a later --reuse run adds it)")
    p.add_argument("--reuse", action="store_true",
                   help="keep the stages (a contender's pretraining, one fine-tuning run) that a "
                        "previous run into the same --out finished with the same settings, and "
                        "run only the rest: a long benchmark in several sittings")
    p.add_argument("--threads", type=int, help="torch CPU threads (torchbert and the peer)")
    p.add_argument("--out", default="runs/budget", help="results folder [runs/budget]")
    p.add_argument("--peer-worker", help=argparse.SUPPRESS)
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.peer_worker:
        peer_worker(json.loads(Path(args.peer_worker).read_text()))
        return 0
    # arch=None: each row names its own architecture (its peer's is PEERS')
    names = parse_contenders(args.contenders, ALL_CONTENDERS, arch=None)
    args.corpus = args.corpus or ("builtin" if args.quick else "real")
    budget = args.budget if args.budget is not None else (8.0 if args.quick else 900.0)
    if budget <= 0:
        raise UserError(f"--budget {budget} must be positive")
    try:
        peer_times = sorted({float(k) for k in args.peer_times.split(",") if k.strip()})
    except ValueError:
        peer_times = []
    if not peer_times or min(peer_times) <= 0:
        raise UserError(f"--peer-times {args.peer_times!r} must be positive multiples of "
                        f"--budget, comma-separated (e.g. 1,3)")
    s = settings(args)
    s["budget"] = budget
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    say(f"data ({args.corpus}) ...")
    d = prepare_data(args, s, work)
    say(f"  {json.dumps({k: round(v, 1) for k, v in d['seconds'].items()})}")
    stage = Stages(work, args.reuse)
    # What decides a pretraining stage, and (with the encoder's own) a fine-tuning run.
    pre_key = {k: v for k, v in s.items() if k not in FINE_TUNING}
    pre_key.update(corpus=args.corpus, threads=args.threads)
    ft_key = {k: v for k, v in s.items() if k != "seeds"}
    ft_key.update(corpus=args.corpus)
    pre: dict[str, dict] = {}
    runs = work / "runs"
    for name in names:
        for k in (peer_times if name == "hf-torch" else [1.0]):
            row = name if k == 1 else f"{name} x{k:g}"
            seconds = budget * k
            done = stage.get(f"pretrain {row}", {**pre_key, "budget": seconds})
            if done:
                say(f"pretraining {row}: kept from the earlier run ({done['steps']} steps)")
                pre[row] = done
                continue
            say(f"pretraining {row} for {seconds:.0f} s ...")
            if name in PEERS:
                result = run_peer(s, d, seconds, runs / row.replace(" ", ""), args.threads,
                                  arch=PEERS[name])
                result["contender"] = row
            else:
                result = pretrain_twin(name, s, d, seconds, runs, args.threads)
            pre[row] = stage.put(f"pretrain {row}", {**pre_key, "budget": seconds}, result)
            say(f"  {pre[row]['steps']} steps in {pre[row]['train_seconds']:.1f} s, held-out MLM "
                f"loss {pre[row]['heldout_mlm_loss']:.3f}")
    rows = []
    if args.pretrain_only:
        rows = [{"name": n, "pretrain": p, "downstream": {}} for n, p in pre.items()]
    else:
        encoders = {n: p["encoder"] for n, p in pre.items()}
        # Each architecture's own random initialisation, for the architectures named.
        for base, arch, wanted in (("random-init", "bert", not all(map(is_electra, names))),
                                   (ELECTRA_BASELINE, "electra", any(map(is_electra, names)))):
            if wanted:
                encoders[base] = run_peer(s, d, 0, runs / base, args.threads, steps=0,
                                          arch=arch)["encoder"]
        for name, enc in encoders.items():
            down = {}
            for task in TASKS:
                per_seed = []
                for seed in s["seeds"]:
                    key = f"finetune {name} {task} {seed}"
                    # The encoder's own pretraining record decides it too (a new pretraining
                    # run is a new encoder).
                    decided = {**ft_key, "encoder": (pre.get(name) or {}).get("steps"),
                               "encoder_loss": (pre.get(name) or {}).get("heldout_mlm_loss")}
                    done = stage.get(key, decided)
                    if done is None:
                        say(f"fine-tuning {name} on {task}, seed {seed} ...")
                        done = stage.put(key, decided, fine_tune(
                            enc, task, d["tasks"][task], seed, s,
                            work / "finetune" / name.replace(" ", "") / task / f"seed{seed}"))
                    per_seed.append(done)
                down[task] = {k: summarise([r[k] for r in per_seed])
                              for k in ("accuracy", "macro_f1")}
                say(f"  {task}: accuracy {_pm(down[task]['accuracy'])}")
            rows.append({"name": name, "pretrain": pre.get(name), "downstream": down})
    if not args.pretrain_only:
        bow = {task: {k: summarise([v]) for k, v in bow_logreg(d["tasks"][task]).items()}
               for task in TASKS}
        rows.append({"name": "bow-logreg", "pretrain": None, "downstream": bow})
    results = {"budget_seconds": budget, "quick": args.quick, "corpus": args.corpus,
               "command": "python -m benchmarks.budget " + " ".join(
                   argv if argv is not None else sys.argv[1:]),
               "settings": s, "data_seconds": d["seconds"], "rows": rows,
               "python": sys.version.split()[0], "cpus": os.cpu_count()}
    write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    md = (f"Budget {budget:.0f} s of pretraining per contender, preset {s['preset']}, corpus "
          f"{args.corpus}; fine-tuning: {len(s['seeds'])} seed(s), mean ± std. Command: "
          f"`{results['command']}`; data preparation (s): "
          f"{json.dumps({k: round(v, 1) for k, v in d['seconds'].items()})}\n\n" + table(results))
    write_text_atomic(out / "results.md", md)
    plot(results, out / "budget.png")
    print(md)
    print(f"results in {out}/results.json, results.md, budget.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
