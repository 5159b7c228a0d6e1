"""A run's metrics file and its plot: `RUNDIR/metrics.jsonl` (one JSON object per logged step)
read back, summarised and drawn as `RUNDIR/loss.png`. Framework-free; bertcore.run writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a killed run: the rest is rewritten on resume
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


def plot_metrics(metrics_path: Path, png: Path, title: str = "") -> Path | None:
    """Loss (and MLM accuracy) against step; skipped quietly without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    hist = read_metrics(metrics_path)
    if not hist:
        return None
    steps = [m["step"] for m in hist]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    panels = (("loss", ("loss", "mlm_loss", "nsp_loss")),
              ("accuracy", ("mlm_accuracy", "nsp_accuracy")))
    for ax, (ylabel, keys) in zip(axes, panels):
        for key in keys:
            if key in hist[0]:
                ax.plot(steps, [m[key] for m in hist], label=key)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)
    return png
