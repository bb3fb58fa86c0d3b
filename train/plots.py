"""End-of-run figures: parity plots (energy/atom, force components, stress) and the
learning curve. matplotlib with the Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import read_metrics

_PANELS = (("energy", "energy per atom (eV/atom)"), ("forces", "force components (eV/Å)"),
           ("stress", "stress components (GPa)"), ("magmoms", "magnetic moments (μB)"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def parity_plot(pairs: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path | None:
    """One panel per term with data: prediction vs label, the y = x line and the MAE.

    ``pairs[term]`` is an (n, 2) array of (prediction, label). Returns the PNG path, or
    ``None`` when there is nothing to plot.
    """
    panels = [(t, label) for t, label in _PANELS if t in pairs and len(pairs[t])]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    for ax, (term, label) in zip(axes[0], panels):
        pred, ref = pairs[term][:, 0], pairs[term][:, 1]
        lo, hi = float(min(pred.min(), ref.min())), float(max(pred.max(), ref.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5, edgecolors="none")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(f"label: {label}")
        ax.set_ylabel("prediction")
        ax.set_title(f"MAE {np.abs(pred - ref).mean():.4g}  (n={len(ref)})", fontsize=9)
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve(metrics_path: str | Path, path: str | Path) -> Path | None:
    """Training loss and validation MAEs against the step (log scale)."""
    train = read_metrics(metrics_path, "train")
    val = read_metrics(metrics_path, "val")
    if not train and not val:
        return None
    plt = _pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        steps = [r["step"] for r in train]
        ax0.plot(steps, [r["loss"] for r in train], label="total")
        for key in sorted(k for k in train[0] if k.startswith("loss_")):
            ax0.plot(steps, [r.get(key, np.nan) for r in train], label=key[5:], lw=1)
        ax0.set_yscale("log")
        ax0.set_xlabel("step")
        ax0.set_ylabel("training loss")
        ax0.legend(fontsize=8)
    for key, label in (("energy_mae_mev_atom", "energy MAE (meV/atom)"),
                       ("forces_mae_mev_a", "force MAE (meV/Å)"),
                       ("stress_mae_gpa", "stress MAE (GPa)")):
        pts = [(r["step"], r[key]) for r in val if key in r]
        if pts:
            ax1.plot(*zip(*pts), marker="o", ms=3, label=label)
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("validation MAE")
    if ax1.lines:
        ax1.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
