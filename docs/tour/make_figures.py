"""Draw the tour's pictures from the code (tests/test_docs.py runs this into a temp dir).

    python docs/tour/make_figures.py [--out docs/tour/img]

masking.png         one drawn example before and after masking (bertcore.data.batches)
attention_mask.png  the boolean key mask of one batch, broadcast to (L, L) per row
lr_schedules.png    the four schedules of bertcore.train.schedule
data_parallel.png   where gradients are reduced: torch DDP, jax pmap, jax sharded jit
modernbert_masks.png  ModernBERT's global and local (sliding-window) attention masks, and which
                    layers use which (bertcore.model.attention.window_mask, ModernBertConfig)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import tour  # noqa: E402
from bertcore.model.attention import window_mask  # noqa: E402
from bertcore.model.config import ModernBertConfig, TrainConfig  # noqa: E402
from bertcore.train.schedule import make_schedule  # noqa: E402

COLORS = {"mask": "#d62728", "random": "#ff7f0e", "same": "#2ca02c", "plain": "#f0f0f0",
          "special": "#c6dbef", "pad": "#ffffff"}


def masking(batch, tok, out: Path) -> None:
    row = 0
    ids, n = batch["input_ids"][row], int(batch["attention_mask"][row].sum())
    w = batch["masked_weights"][row] > 0
    original = ids.copy()
    original[batch["masked_positions"][row][w]] = batch["masked_ids"][row][w]
    kind = {}
    for p in batch["masked_positions"][row][w]:
        kind[int(p)] = ("mask" if ids[p] == tok.mask_id else
                        "same" if ids[p] == original[p] else "random")
    per_line = 16
    lines = (n + per_line - 1) // per_line
    fig, ax = plt.subplots(figsize=(13, 1.5 + 1.5 * lines))
    for i in range(n):
        x, y = i % per_line, -(i // per_line) * 2.4
        for dy, seq, label in ((0, original, "original"), (-1, ids, "model input")):
            t = tok.id_to_token(int(seq[i]))
            c = COLORS[kind[i]] if (i in kind and dy == -1) else (
                COLORS["special"] if t in ("[CLS]", "[SEP]") else COLORS["plain"])
            ax.add_patch(FancyBboxPatch((x + 0.05, y + dy + 0.1), 0.9, 0.8,
                                        boxstyle="round,pad=0.02", fc=c, ec="#555555"))
            ax.text(x + 0.5, y + dy + 0.5, t, ha="center", va="center", fontsize=8,
                    color="white" if (i in kind and dy == -1 and kind[i] != "same") else "black")
            if i % per_line == 0:
                ax.text(-0.2, y + dy + 0.5, label, ha="right", va="center", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, fc=COLORS[k]) for k in ("mask", "random", "same")]
    ax.legend(handles, ["predicted: [MASK] (80%)", "predicted: random token (10%)",
                        "predicted: unchanged (10%)"], loc="upper center",
              bbox_to_anchor=(0.5, 1.02 + 0.12 / lines), ncol=3, fontsize=9, frameon=False)
    ax.set_xlim(-2.2, per_line)
    ax.set_ylim(-(lines - 1) * 2.4 - 1.2, 1.3)
    ax.axis("off")
    ax.set_title(f"One training example (NSP label {batch['next_sentence_label'][row]}): "
                 f"{int(w.sum())} of {n} tokens predicted", fontsize=10, pad=28)
    fig.savefig(out / "masking.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def attention_mask(batch, out: Path) -> None:
    am = batch["attention_mask"]
    B, L = am.shape
    fig, axes = plt.subplots(1, B, figsize=(3 * B, 3.5))
    cmap = matplotlib.colors.ListedColormap(["#ffffff", "#c7e9c0", "#238b45"])
    for b, ax in enumerate(axes):
        key_mask = am[b].astype(bool)[None, None, :]          # (1, 1, L) as in the twins
        allowed = np.broadcast_to(key_mask, (1, L, L))[0]      # (L, L): the same for every query
        real_query = am[b].astype(bool)[:, None]
        ax.imshow(np.where(allowed, np.where(real_query, 2, 1), 0), cmap=cmap, vmin=0, vmax=2,
                  interpolation="nearest")
        ax.set_title(f"row {b}: {int(am[b].sum())} real tokens of {L}", fontsize=9)
        ax.set_xlabel("key position")
        if b == 0:
            ax.set_ylabel("query position")
    fig.suptitle("attention_mask.bool()[:, None, None, :], broadcast over queries: dark = attends, "
                 "white = padded key (weight exactly 0), light = a padded query's row (unused)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "attention_mask.png", dpi=100)
    plt.close(fig)


def lr_schedules(out: Path) -> None:
    steps = np.arange(1000)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name in ("linear", "cosine", "constant", "noam"):
        cfg = TrainConfig(schedule=name, lr=1e-3, warmup_steps=100, steps=1000)
        lr = make_schedule(cfg, 128)(steps)
        label = name
        if name == "noam":   # its peak is lr * hidden^-0.5 * warmup^-0.5: rescaled to compare
            lr = lr / lr.max() * 1e-3
            label = "noam (rescaled to the same peak)"
        ax.plot(steps, lr, label=label)
    ax.axvline(100, color="grey", lw=0.8, ls=":")
    ax.text(105, 1.02e-3, "end of warmup", fontsize=8, color="grey")
    ax.set_xlabel("update (0-based)")
    ax.set_ylabel("learning rate")
    ax.set_title("bertcore.train.schedule: --lr 1e-3 --warmup-steps 100 --steps 1000", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "lr_schedules.png", dpi=100)
    plt.close(fig)


def _box(ax, x, y, w, h, text, fc="#f0f0f0", fs=8):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=fc, ec="#444444"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fs)


def _arrow(ax, a, b, color="#444444"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=10, color=color))


def data_parallel(out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    red = "#f4cccc"
    titles = ("torch DDP: K processes", "jax --parallel pmap: one process",
              "jax --parallel sharded: one jit over a Mesh")
    for ax, title in zip(axes, titles):
        ax.set_xlim(0, 10)
        ax.set_ylim(0, 10)
        ax.axis("off")
        ax.set_title(title, fontsize=10)
        _box(ax, 1, 8.6, 8, 0.9, "global batch of step s (bertcore, same on every rank)",
             "#c6dbef")
    # DDP
    ax = axes[0]
    for i, (x, rows) in enumerate(zip((0.6, 5.4), ("[0, B/2)", "[B/2, B)"))):
        _box(ax, x, 6.6, 4, 1.0, f"rank {i}: rows {rows}\nits own process + model")
        _arrow(ax, (x + 2, 8.6), (x + 2, 7.6))
        _box(ax, x, 4.6, 4, 1.2, "forward, loss * world,\nloss.backward()")
        _arrow(ax, (x + 2, 6.6), (x + 2, 5.8))
        _box(ax, x, 1.0, 4, 1.0, "optimizer.step()\n(same update on each rank)")
    _box(ax, 0.6, 2.7, 8.8, 1.2, "DDP hooks all-reduce (average) the .grad buckets\nDURING "
         "backward: the reduction is in torch's C++ reducer", red)
    for x in (2.6, 7.4):
        _arrow(ax, (x, 4.6), (x, 3.9))
        _arrow(ax, (x, 2.7), (x, 2.0))
    # pmap
    ax = axes[1]
    _box(ax, 1, 7.0, 8, 0.9, "put_batch: reshape rows to [devices, A, rows/devices]")
    _arrow(ax, (5, 8.6), (5, 7.9))
    for i, x in enumerate((0.6, 5.4)):
        _box(ax, x, 4.6, 4, 1.6, f"device {i}: train_step on its rows\n(state replicated)\n"
             "value_and_grad")
        _arrow(ax, (x + 2, 7.0), (x + 2, 6.2))
        _box(ax, x, 1.0, 4, 1.0, "optax update\n(same on each device)")
    _box(ax, 0.6, 2.7, 8.8, 1.2, "jax.lax.psum(grads, 'data') INSIDE train_step:\n"
         "an explicit line of our code", red)
    for x in (2.6, 7.4):
        _arrow(ax, (x, 4.6), (x, 3.9))
        _arrow(ax, (x, 2.7), (x, 2.0))
    # sharded
    ax = axes[2]
    _box(ax, 1, 7.0, 8, 0.9, "one global array, NamedSharding(mesh, P(None, 'data'))")
    _arrow(ax, (5, 8.6), (5, 7.9))
    _box(ax, 0.6, 4.6, 8.8, 1.6, "jax.jit(train_step): the same code as on one device;\n"
         "each device computes its shard's part of the gradient")
    _arrow(ax, (5, 7.0), (5, 6.2))
    _box(ax, 0.6, 2.7, 8.8, 1.2, "XLA's partitioner INSERTS the all-reduce,\n"
         "because the output state is replicated (out_shardings)", red)
    _arrow(ax, (5, 4.6), (5, 3.9))
    _box(ax, 0.6, 1.0, 8.8, 1.0, "optax update on the replicated state")
    _arrow(ax, (5, 2.7), (5, 2.0))
    fig.suptitle("Data parallelism: where the gradients are reduced (red)", fontsize=12)
    fig.tight_layout()
    fig.savefig(out / "data_parallel.png", dpi=90)
    plt.close(fig)


def modernbert_masks(out: Path) -> None:
    """The two masks ModernBertModel builds per forward, for one row with padding at its end,
    drawn as attention_mask.png draws BERT's; below, the published base's pattern of layers."""
    L, real, window = 48, 40, 16
    base = ModernBertConfig.from_preset("base")
    keys = np.arange(L) < real                                   # the row's attention_mask
    masks = {"global": np.broadcast_to(keys[None, :], (L, L)),
             "local": keys[None, :] & window_mask(L, window)}
    fig = plt.figure(figsize=(10, 6.6))
    grid = fig.add_gridspec(2, 2, height_ratios=[5, 1.1], hspace=0.45, top=0.85)
    cmap = matplotlib.colors.ListedColormap(["#ffffff", "#c7e9c0", "#238b45"])
    titles = {"global": f"global layers (0, n, 2n, ...): every real key\n"
                        f"RoPE theta {base.global_rope_theta:,.0f}",
              "local": f"local layers: keys with |i - j| <= {window // 2} (local_attention "
                       f"{window})\nRoPE theta {base.local_rope_theta:,.0f}"}
    for col, (kind, allowed) in enumerate(masks.items()):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(np.where(allowed, np.where(keys[:, None], 2, 1), 0), cmap=cmap, vmin=0, vmax=2,
                  interpolation="nearest")
        ax.set_title(titles[kind], fontsize=9)
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
    ax = fig.add_subplot(grid[1, :])
    for i in range(base.num_hidden_layers):
        g = base.is_global(i)
        ax.add_patch(FancyBboxPatch((i + 0.08, 0.1), 0.84, 0.8, boxstyle="round,pad=0.02",
                                    fc="#238b45" if g else "#c7e9c0", ec="#444444"))
        ax.text(i + 0.5, 0.5, "G" if g else "L", ha="center", va="center", fontsize=8,
                color="white" if g else "black")
    ax.set_xlim(0, base.num_hidden_layers)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title(f"the published base: {base.num_hidden_layers} layers, global (G) every "
                 f"{base.global_attn_every_n_layers}, local (L) with a {base.local_attention}-token "
                 f"window between", fontsize=9)
    fig.suptitle(f"ModernBERT's two boolean masks for a row of {real} real tokens of {L}: dark = "
                 f"attends, white = excluded (a padded key or outside the window),\nlight = a "
                 f"padded query's row (unused)", fontsize=9)
    fig.savefig(out / "modernbert_masks.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(HERE / "img"), help="folder for the PNGs [docs/tour/img]")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)                       # tour.batches writes its data in the cwd
        try:
            it, tok, _ = tour.batches(batch_size=4, seq_len=32, max_predictions=5)
            batch = next(it)
            # short sequences (google-research/bert draws them with short_seq_prob) show padding
            padded = next(tour.batches(batch_size=8, seq_len=64, max_predictions=5,
                                       short_seq_prob=1.0)[0])
            padded = {k: v[:4] for k, v in padded.items()}
        finally:
            os.chdir(cwd)
    masking(batch, tok, out)
    attention_mask(padded, out)
    lr_schedules(out)
    data_parallel(out)
    modernbert_masks(out)
    for f in sorted(out.glob("*.png")):
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
