"""The agreement report: its rows, the markdown table, the loss-curve plot and the files on disk.

write_report writes report.md (the table), report.json (rows and curves) and loss_curves.png.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jax
import numpy as np
import torch

from bertcore.infra.files import write_text_atomic

from . import thresholds as T


@dataclass
class Row:
    """One compared quantity at one LayerNorm position: its difference, its bar, pass or fail."""
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


@dataclass
class Report:
    """Every row of one run of the check, the loss curves per LayerNorm position, the time."""
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

    def bars(self) -> str:
        """Each bar of parity/thresholds.py the rows name (their `bar` starts with it): its
        value, how many rows it bounds and the worst value measured against it (the largest;
        for DROPOUT_ACTIVE_REL, a lower bound, the smallest). DROPOUT_Z's rows have a tolerance
        of their own, in their `bar` cell."""
        found: dict[str, list[float]] = {}
        for r in self.rows:
            name = r.bar.partition(":")[0]
            if name.isupper() and hasattr(T, name) and name != "DROPOUT_Z":
                measured = r.max_abs if name.endswith("MAX_ABS") else r.rel
                found.setdefault(name, []).append(measured)
        lines = ["| bar | value | rows | worst measured |", "|---|---|---|---|"]
        for name, measured in found.items():
            worst = min(measured) if name == "DROPOUT_ACTIVE_REL" else max(measured)
            lines.append(f"| `{name}` | {getattr(T, name):g} | {len(measured)} | {worst:.3g} |")
        return "\n".join(lines)


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
        name = {"modernbert": "ModernBERT", "electra": "ELECTRA"}.get(ln, f"{ln}-LN")
        ax.set_title(f"{report.preset}, {name}: loss (fp32 CPU, same init and batches)")
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
          f"steps; same torch init (converted with bertcore/model/hf.py's table) and the same "
          f"bertcore batches in both twins; dropout off except the `dropout on` rows. Bars: "
          f"parity/thresholds.py. HF rows: post-LN BERT (transformers' BERT is post-LN), "
          f"ModernBERT (transformers' ModernBertForMaskedLM) and ELECTRA (ElectraForPreTraining "
          f"and ElectraForMaskedLM loaded from each twin's export). "
          f"{len(report.rows) - len(fails)}/{len(report.rows)} rows pass "
          f"({report.seconds:.0f}s).\n\n{report.table()}\n\n"
          f"Each bar (parity/thresholds.py, docs/parity.md says what it bounds) against the worst "
          f"value measured:\n\n{report.bars()}\n\n![loss curves]({png.name})\n")
    write_text_atomic(out / "report.md", md)
    write_text_atomic(out / "report.json", json.dumps(
        {"preset": report.preset, "steps": report.steps, "passed": report.passed,
         "rows": [asdict(r) for r in report.rows], "curves": report.curves}, indent=1) + "\n")
