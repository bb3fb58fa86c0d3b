"""PNG of a thermo log (MD: T, P, energies, volume vs time; relax: E, fmax vs step)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_thermo(columns: dict[str, np.ndarray], path: str | Path, title: str = "",
                n_atoms: int | None = None) -> Path:
    """Write a 3×2 panel figure of an MD log (`columns` as in `observers.MD_COLUMNS`;
    the total-energy deviation is per atom when `n_atoms` is given) or a 1×2 figure of
    a relaxation log (`RELAX_COLUMNS`). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if "time_ps" in columns:
        t = columns["time_ps"]
        fig, ax = plt.subplots(3, 2, figsize=(9, 8), sharex=True)
        etot = columns["Etot_eV"]
        scale, unit = (1000.0 / n_atoms, "meV/atom") if n_atoms else (1.0, "eV")
        panels = [(columns["T_K"], "T (K)"), (columns["P_GPa"], "P (GPa)"),
                  (columns["Epot_eV"], "Epot (eV)"), (columns["volume_A3"], "volume (Å³)"),
                  ((etot - etot[0]) * scale if etot.size else etot, f"Etot − Etot(0) ({unit})"),
                  (columns["Ekin_eV"], "Ekin (eV)")]
        for a, (y, label) in zip(ax.ravel(), panels):
            a.plot(t, y, lw=1)
            a.set_ylabel(label)
        for a in ax[-1]:
            a.set_xlabel("time (ps)")
    else:
        step = columns["step"]
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
        ax[0].plot(step, columns["Epot_eV"], lw=1)
        ax[0].set_ylabel("Epot (eV)")
        fmax = np.clip(columns["fmax_eV_A"], 1e-12, None)
        ax[1].semilogy(step, fmax, lw=1)
        ax[1].set_ylabel("fmax (eV/Å)")
        for a in ax:
            a.set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
