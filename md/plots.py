"""PNG of a thermo log (MD: T, energies, pressure, volume vs time; relax: E, fmax)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_thermo(columns: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Write a 2×2 panel figure of an MD log (`columns` as in `observers.MD_COLUMNS`) or
    a 1×2 figure of a relaxation log (`RELAX_COLUMNS`). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if "time_ps" in columns:
        t = columns["time_ps"]
        fig, ax = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
        ax[0, 0].plot(t, columns["T_K"], lw=1)
        ax[0, 0].set_ylabel("T (K)")
        ax[0, 1].plot(t, columns["Epot_eV"], lw=1, label="Epot")
        ax[0, 1].plot(t, columns["Etot_eV"], lw=1, label="Etot")
        ax[0, 1].set_ylabel("energy (eV)")
        ax[0, 1].legend(loc="best", fontsize=8)
        ax[1, 0].plot(t, columns["P_GPa"], lw=1)
        ax[1, 0].set_ylabel("P (GPa)")
        ax[1, 1].plot(t, columns["volume_A3"], lw=1)
        ax[1, 1].set_ylabel("volume (Å³)")
        for a in ax[1]:
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
