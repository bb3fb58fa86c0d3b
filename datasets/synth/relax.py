"""Isotropic volume scan: bring a radius-estimated parent to the teacher's equilibrium size.

The lattice constants from ionic/covalent radii are off by up to ~15%; an energy scan over a
linear scale factor (a parabola through the three lowest points of a grid) is cheap on the
small primitive cells and makes the strained/rattled frames sample around the teacher's own
minimum rather than under GPa of pressure.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms

from .prototypes import scale_isotropic

#: Linear scale grid around 1; when the minimum is at an edge the grid is extended one step
#: at a time in that direction, within [MIN_FACTOR, MAX_FACTOR] (radii guesses are within
#: ~±25%; molecular solids, which the teacher does not bind, are never scanned).
GRID = tuple(float(x) for x in np.round(np.linspace(0.88, 1.12, 9), 6))
STEP = 0.03
MIN_FACTOR, MAX_FACTOR = 0.6, 1.5


def volume_scan(atoms: Atoms, energy: Callable[[Atoms], float]) -> tuple[Atoms, float]:
    """Return (rescaled copy at the energy minimum, chosen linear factor).

    `energy(atoms)` gives the total energy in eV. The result is deterministic for a
    deterministic `energy`.
    """
    def safe_energy(f: float) -> float:
        # A failed evaluation (e.g. atoms beyond the teacher's cutoff at large scale) counts
        # as +inf so the scan moves away from it.
        try:
            return float(energy(scale_isotropic(atoms, f)))
        except Exception:
            return float("inf")

    factors = list(GRID)
    energies = [safe_energy(f) for f in factors]
    if not np.isfinite(energies).any():
        raise RuntimeError(f"teacher failed on every volume of {atoms.get_chemical_formula()}")
    while True:
        k = int(np.argmin(energies))
        if k == 0 and factors[0] - STEP >= MIN_FACTOR:
            factors.insert(0, round(factors[0] - STEP, 6))
            energies.insert(0, safe_energy(factors[0]))
        elif k == len(factors) - 1 and factors[-1] + STEP <= MAX_FACTOR:
            factors.append(round(factors[-1] + STEP, 6))
            energies.append(safe_energy(factors[-1]))
        else:
            break
    k = int(np.clip(k, 1, len(factors) - 2))
    x, y = factors[k - 1:k + 2], energies[k - 1:k + 2]
    curvature = y[0] - 2.0 * y[1] + y[2]
    best = factors[int(np.argmin(energies))]
    if np.isfinite(curvature) and curvature > 0:
        # vertex of the parabola through three equally spaced points, kept inside them
        step = x[1] - x[0]
        best = float(np.clip(x[1] + 0.5 * step * (y[0] - y[2]) / curvature, x[0], x[2]))
    return scale_isotropic(atoms, best), float(best)
