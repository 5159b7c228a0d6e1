"""A run's metrics file and its plot: `RUNDIR/metrics.jsonl` (one JSON object per logged step)
read back, summarised and drawn as `RUNDIR/loss.png`. Framework-free; bertcore.train.run writes
them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path, bad: list[int] | None = None) -> list[dict[str, Any]]:
    """metrics.jsonl's rows. A line that is not a JSON object (the torn last line of a killed
    run, or a damaged one) is skipped, and its 1-based number appended to `bad` if given."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if line:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
            elif bad is not None:
                bad.append(n)
    return rows


def median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def peak_rss_mb() -> float:
    import resource

    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ema(values: list[float], window: float) -> list[float]:
    """Exponential moving average over about `window` points, bias-corrected (as Adam's moments
    and TensorBoard's smoothing): the first points are not pulled towards 0."""
    beta = 1.0 - 1.0 / max(window, 1.0)
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1.0 - beta) * v
        out.append(avg / (1.0 - beta ** i) if beta > 0 else v)
    return out


def split_rows(hist: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(train rows, eval rows) of metrics.jsonl: eval rows carry "split": "eval"."""
    train = [m for m in hist if m.get("split", "train") == "train"]
    evals = [m for m in hist if m.get("split") == "eval"]
    return train, evals


def learned(hist: list[dict[str, Any]], baseline: dict[str, Any] | None,
            last: int = 5) -> dict[str, Any]:
    """What a run learned, for summary.json: the final MLM loss and accuracy (mean of the last
    `last` logged steps), the unigram baseline they are to beat, the last eval figures."""
    train, evals = split_rows(hist)
    tail = [m for m in train[-last:] if "mlm_loss" in m]
    out: dict[str, Any] = {
        "final_mlm_loss": sum(m["mlm_loss"] for m in tail) / len(tail) if tail else None,
        "final_mlm_accuracy_mean": (sum(m.get("mlm_accuracy", 0.0) for m in tail) / len(tail)
                                    if tail else None),
        "unigram_entropy": baseline.get("entropy") if baseline else None,
        "unigram_top_share": baseline.get("top_share") if baseline else None,
        "unigram_top_token": baseline.get("top_token") if baseline else None,
        "context_free_loss": baseline.get("context_free_loss") if baseline else None,
        "context_free_accuracy": baseline.get("context_free_accuracy") if baseline else None,
        "eval": None,
    }
    # ELECTRA: the discriminator's figures too (the MLM ones are its generator's)
    disc = [m for m in tail if "disc_accuracy" in m]
    for k in DISC_KEYS if disc else ():
        out[f"final_{k}"] = sum(m.get(k, 0.0) for m in disc) / len(disc)
    if evals:
        out["eval"] = {k: evals[-1][k] for k in ("step", "mlm_loss", "mlm_accuracy",
                                                 "perplexity", "nsp_loss", "nsp_accuracy",
                                                 *DISC_KEYS)
                       if k in evals[-1]}
    return out


DISC_KEYS = ("disc_loss", "disc_accuracy", "disc_precision", "disc_recall", "replaced")


# The fill-mask example of the end-of-run lines: the blank can only be filled from its context.
FILL_MASK_EXAMPLE = "the function returns a [MASK] of the values ."


def learned_lines(summary: dict[str, Any], framework: str, rundir: str | Path,
                  arch: str = "bert") -> list[str]:
    """The lines a run prints when it ends: what it learned against the unigram baseline (a
    model that ignores context), and the commands to try next (`arch`: the run's model)."""
    loss, acc = summary.get("final_mlm_loss"), summary.get("final_mlm_accuracy_mean")
    if loss is None:
        return []
    h, share = summary.get("unigram_entropy"), summary.get("unigram_top_share")
    cf, cf_acc = summary.get("context_free_loss"), summary.get("context_free_accuracy")
    electra = arch == "electra"
    text = f"learned: {'generator ' if electra else ''}MLM loss {loss:.2f}"
    if h is not None:
        text += f" (word frequencies alone: {h:.2f}"
        text += f"; blind to context: {cf:.2f})" if cf is not None else ")"
    text += f", accuracy {100 * acc:.1f}%"
    if share is not None:
        text += f" (always {summary.get('unigram_top_token') or 'the commonest token'!r}: " \
                f"{100 * share:.1f}%"
        text += f"; blind to context: {100 * cf_acc:.1f}%)" if cf_acc is not None else ")"
    if cf is not None and loss < cf:
        text += ": it uses context"
    elif h is not None and loss < h:
        text += (": below word frequencies, but no better yet than a model that copies the 20% of "
                 "predicted slots BERT's masking leaves visible; train longer for context")
    elif h is not None:
        text += ": NOT below word frequencies yet; train longer"
    ev = summary.get("eval")
    if ev:
        text += (f"; held-out (step {ev['step']}): MLM loss {ev['mlm_loss']:.2f}, accuracy "
                 f"{100 * ev['mlm_accuracy']:.1f}%")
    lines = [text]
    if electra and summary.get("final_disc_accuracy") is not None:
        # The discriminator against guessing "original" everywhere, which is right on every
        # token the generator's samples did not change.
        r = summary["final_replaced"]
        lines.append(f"learned: discriminator accuracy {100 * summary['final_disc_accuracy']:.1f}%"
                     f" on every token (all 'original': {100 * (1 - r):.1f}%), precision "
                     f"{100 * summary['final_disc_precision']:.1f}% and recall "
                     f"{100 * summary['final_disc_recall']:.1f}% on the {100 * r:.1f}% replaced")
    other = "torch" if framework == "jax" else "jax"
    nxt = (f"next: python -m {framework}bert.fill_mask {rundir} \"{FILL_MASK_EXAMPLE}\"  |  "
           f"python -m parity.convert {rundir} {rundir}-{other} --to {other}  |  "
           f"python -m parity.check{'' if arch == 'bert' else f' --arch {arch}'}")
    return [*lines, nxt]


def plot_metrics(metrics_path: Path, png: Path, title: str = "",
                 baseline: dict[str, Any] | None = None) -> Path | None:
    """RUNDIR/loss.png, read at a glance: MLM loss and accuracy as smoothed curves over faint raw
    values, the unigram baseline as dashed reference lines, held-out evaluations as points, the
    learning rate in a narrow panel of its own. Skipped quietly without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train, evals = split_rows(read_metrics(metrics_path))
    if not train:
        return None
    steps = [m["step"] for m in train]
    window = max(1.0, len(train) / 10)   # ~a tenth of the run

    def curve(ax, key: str, color: str, label: str, scale: float = 1.0) -> None:
        rows = [m for m in train if key in m]
        if not rows:
            return
        xs, ys = [m["step"] for m in rows], [scale * m[key] for m in rows]
        ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
        sm = ema(ys, window)
        ax.plot(xs, sm, color=color, linewidth=2.0, label=f"{label} ({sm[-1]:.3g})")
        ev = [m for m in evals if key in m]
        if ev:
            ax.plot([m["step"] for m in ev], [scale * m[key] for m in ev], "o", color=color,
                    markeredgecolor="black", markersize=6, label=f"{label}, held-out "
                    f"({scale * ev[-1][key]:.3g})", zorder=3)

    fig, (ax_loss, ax_acc, ax_nsp, ax_lr) = plt.subplots(
        1, 4, figsize=(15, 4), gridspec_kw={"width_ratios": [3, 3, 1.7, 1.7]})
    loss_key = "mlm_loss" if any("mlm_loss" in m for m in train) else "loss"
    curve(ax_loss, loss_key, "tab:blue", "MLM loss" if loss_key == "mlm_loss" else "loss")
    h = baseline.get("entropy") if baseline else None
    if h is not None:
        ax_loss.axhline(h, color="tab:red", linestyle="--", linewidth=1.2,
                        label=f"word frequencies alone ({h:.2f})")
    cf = baseline.get("context_free_loss") if baseline else None
    if cf is not None:
        ax_loss.axhline(cf, color="tab:purple", linestyle=":", linewidth=1.4,
                        label=f"blind to context ({cf:.2f}): beat this")
    # Scale the axis to the smoothed curve: the first steps' ln(vocab) would flatten the rest.
    ys = ema([m[loss_key] for m in train if loss_key in m], window)
    if ys:
        ref = [v for v in (h, cf) if v is not None]
        lo = min(ys + ref + [m[loss_key] for m in evals if loss_key in m])
        hi = max(ys[min(len(ys) - 1, 2):] + ref)
        ax_loss.set_ylim(lo - 0.1 * (hi - lo) - 0.05, hi + 0.15 * (hi - lo) + 0.05)
    ax_loss.set_ylabel("nats")
    ax_loss.set_title("masked-word loss: lower is better", fontsize=10)

    curve(ax_acc, "mlm_accuracy", "tab:blue", "MLM accuracy %", 100.0)
    share = baseline.get("top_share") if baseline else None
    if share is not None:
        tok = baseline.get("top_token") or "commonest token"
        ax_acc.axhline(100 * share, color="tab:red", linestyle="--", linewidth=1.2,
                       label=f"always {tok!r} ({100 * share:.1f})")
    cf_acc = baseline.get("context_free_accuracy") if baseline else None
    if cf_acc is not None:
        ax_acc.axhline(100 * cf_acc, color="tab:purple", linestyle=":", linewidth=1.4,
                       label=f"blind to context ({100 * cf_acc:.1f}): beat this")
    accs = [100 * m["mlm_accuracy"] for m in train + evals if "mlm_accuracy" in m]
    if accs:
        top = max(ema(accs[:len(train)], window) + accs[len(train):] +
                  [100 * v for v in (share, cf_acc) if v is not None])
        ax_acc.set_ylim(0, min(100.0, 1.3 * top + 1))
    ax_acc.set_ylabel("%")
    ax_acc.set_title("masked-word accuracy: higher is better", fontsize=10)

    if any("nsp_accuracy" in m for m in train):
        curve(ax_nsp, "nsp_accuracy", "tab:green", "NSP %", 100.0)
        ax_nsp.axhline(50, color="tab:red", linestyle="--", linewidth=1.0, label="chance (50)")
        ax_nsp.set_ylim(0, 100)
        ax_nsp.legend(fontsize=8, loc="lower right")
    ax_nsp.set_title("next-sentence accuracy", fontsize=10)

    lr = [m for m in train if "learning_rate" in m]
    if lr:
        ax_lr.plot([m["step"] for m in lr], [m["learning_rate"] for m in lr], color="tab:gray")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax_lr.set_title("learning rate", fontsize=10)

    for ax in (ax_loss, ax_acc, ax_nsp, ax_lr):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.set_xlim(0, 1.03 * max(steps[-1], 1))
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)
    return png
