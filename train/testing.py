"""Small labelled datasets for the trainer's tests and smoke runs (no network, no teacher).

Frames are random fcc alloys of Cu, Ag, Au, Ni, Pd, Pt and Al (the elements ASE's EMT
potential covers), rattled and strained, labelled with EMT energies, forces and stresses,
and written through the real dataset builder (``matris.datasets.build_dataset``), so the
trainer reads them exactly as it reads any ``ShardedDataset``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EMT_ELEMENTS = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al")


def emt_frames(n: int, seed: int = 0, max_repeat: int = 2):
    """``n`` ASE ``Atoms`` with EMT single-point results (energy, forces, stress).

    Cells: the 4-atom conventional fcc cell repeated 1–``max_repeat`` times along x,
    lattice constant from Vegard's rule, ±3 % random strain, 0.1 Å rattle.
    """
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.data import atomic_numbers, reference_states

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        species = rng.choice(EMT_ELEMENTS, size=k, replace=False)
        a = float(np.mean([reference_states[atomic_numbers[s]]["a"] for s in species]))
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((int(rng.integers(1, max_repeat + 1)),
                                                           1, 1))
        atoms.symbols = rng.choice(species, size=len(atoms))
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell.array @ (strain + strain.T) / 2, scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                   "stress": atoms.get_stress()}
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["group_id"] = f"emt-{seed}-{i}"
        out.append(atoms)
    return out


def build_emt_dataset(root: str | Path, n: int = 64, seed: int = 0,
                      split: tuple[float, float, float] = (0.75, 0.25, 0.0),
                      max_repeat: int = 2) -> Path:
    """Write ``n`` EMT frames as a dataset root with train/val(/test) splits; returns it."""
    import ase.io

    from matris.datasets import BuildConfig, build_dataset

    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    src = root.parent / f"{root.name}.emt.extxyz"
    ase.io.write(src, emt_frames(n, seed, max_repeat), format="extxyz")
    build_dataset(BuildConfig(source="extxyz", inputs=[src], out=root, split=split,
                              progress=False))
    return root
