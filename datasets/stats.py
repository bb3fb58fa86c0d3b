"""Per-rank statistics gathered while building, and their merge on rank 0.

Per frame (kept in global order, go to ``index/``): natoms, energy per atom (NaN when the
frame has no energy), max |force| (NaN when no forces), group_id (for splits).
Per rank (summed on merge): atoms and frames per element, label counts, stress range, and
the normal equations CᵀC, Cᵀy, yᵀy of the composition fit E ≈ Σ_Z n_Z μ_Z
(C = element counts per frame, y = total energy), so the reference energies need no
second pass over the data.
"""

from __future__ import annotations

import numpy as np

from .schema import LABELS, MAX_Z

NZ = MAX_Z + 1  # index by atomic number; row/col 0 unused


class ShardStats:
    """Per-frame arrays of one shard."""

    def __init__(self):
        self.natoms: list[int] = []
        self.energy_per_atom: list[float] = []
        self.fmax: list[float] = []
        self.groups: list[str] = []


class RankStats:
    """Everything one rank learns about the frames it wrote."""

    def __init__(self):
        self.shards: dict[int, ShardStats] = {}
        self.element_atoms = np.zeros(NZ, np.int64)
        self.element_frames = np.zeros(NZ, np.int64)
        self.labels = dict.fromkeys(LABELS, 0)
        self.stress_min = np.inf
        self.stress_max = -np.inf
        self.ctc = np.zeros((NZ, NZ), np.float64)
        self.cty = np.zeros(NZ, np.float64)
        self.yty = 0.0
        self.n_fit = 0

    def add(self, shard_id: int, frame: dict) -> None:
        s = self.shards.setdefault(shard_id, ShardStats())
        numbers = frame["numbers"]
        n = len(numbers)
        counts = np.bincount(numbers, minlength=NZ).astype(np.float64)
        self.element_atoms += counts.astype(np.int64)
        self.element_frames += counts > 0
        for key in LABELS:
            if key in frame:
                self.labels[key] += 1
        s.natoms.append(n)
        s.groups.append(frame.get("group_id", frame.get("source_id", "")))
        if "energy" in frame:
            e = float(frame["energy"])
            s.energy_per_atom.append(e / n)
            nz = np.flatnonzero(counts)
            self.ctc[np.ix_(nz, nz)] += np.outer(counts[nz], counts[nz])
            self.cty[nz] += counts[nz] * e
            self.yty += e * e
            self.n_fit += 1
        else:
            s.energy_per_atom.append(np.nan)
        if "forces" in frame:
            s.fmax.append(float(np.sqrt((frame["forces"] ** 2).sum(axis=1)).max()))
        else:
            s.fmax.append(np.nan)
        if "stress" in frame:
            self.stress_min = min(self.stress_min, float(frame["stress"].min()))
            self.stress_max = max(self.stress_max, float(frame["stress"].max()))

    def merge(self, other: RankStats) -> None:
        """Add another rank's totals (per-shard arrays are handled by the builder)."""
        self.element_atoms += other.element_atoms
        self.element_frames += other.element_frames
        for k, v in other.labels.items():
            self.labels[k] = self.labels.get(k, 0) + v
        self.stress_min = min(self.stress_min, other.stress_min)
        self.stress_max = max(self.stress_max, other.stress_max)
        self.ctc += other.ctc
        self.cty += other.cty
        self.yty += other.yty
        self.n_fit += other.n_fit


def fit_reference_energies(ctc: np.ndarray, cty: np.ndarray, yty: float, n: int,
                           ridge: float = 1e-8) -> tuple[np.ndarray, float]:
    """Solve min ‖C μ − y‖² (+ tiny ridge) for μ (eV/atom per element), from normal eqs.

    Elements absent from the data get 0. ``ridge`` is relative to the mean diagonal so
    collinear compositions (e.g. only SiO2) give the stable, near-min-norm solution.
    Returns (μ of length 119, RMSE of the fit in eV per frame).
    """
    mu = np.zeros(NZ, np.float64)
    present = np.flatnonzero(np.diag(ctc) > 0)
    if n == 0 or present.size == 0:
        return mu, float("nan")
    a = ctc[np.ix_(present, present)]
    b = cty[present]
    lam = ridge * float(np.trace(a)) / present.size
    sol, *_ = np.linalg.lstsq(a + lam * np.eye(present.size), b, rcond=None)
    mu[present] = sol
    sse = yty - 2.0 * float(sol @ b) + float(sol @ a @ sol)
    return mu, float(np.sqrt(max(sse, 0.0) / n))
