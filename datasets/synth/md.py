"""Short Langevin MD with the teacher as the force field, yielding snapshots.

Snapshots are labelled with the teacher results of the very step at which they are taken
(CHGNet computes energy, forces, stress and magmoms in one call), so sampling costs no extra
evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution


def md_snapshots(atoms: Atoms, calculator: Calculator, rng: np.random.Generator,
                 temperature_K: float, timestep_fs: float, friction_per_fs: float,
                 equilibration: int, stride: int) -> Iterator[tuple[int, Atoms]]:
    """Yield (step, atoms) every `stride` steps after `equilibration` steps, forever.

    The yielded `atoms` is the live MD object with `calculator` attached and its results
    cached for the current positions; copy what you keep. Velocities start from a
    Maxwell-Boltzmann distribution at `temperature_K`; the Langevin thermostat's noise uses
    the same `rng`, so a trajectory is a pure function of its inputs.
    """
    atoms = atoms.copy()
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    dyn = Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature_K,
                   friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    # fixcm=False: the centre of mass may drift (harmless for periodic snapshots); ase >= 3.28
    # deprecates fixcm=True and its FixCom replacement makes CHGNet's converter warn per step.
    dyn.run(equilibration)
    step = equilibration
    while True:
        dyn.run(stride)
        step += stride
        atoms.get_potential_energy()  # make sure results match the current positions
        yield step, atoms
