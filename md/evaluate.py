"""Shared evaluation path of the calculator and the batch API: ASE Atoms → validated
arrays → (batched) graph → model outputs → ASE-convention result dicts."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

from matris.graph import AtomGraph
from matris.md.validate import MatrisInputError, check_elements, check_geometry
from matris.outputs import compute_outputs

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def atoms_arrays(atoms: Atoms, max_z: int, known: np.ndarray, unseen: str) -> Arrays:
    """Validated (numbers (N,) int64, positions (N, 3) f8 Å, cell (3, 3) f8, pbc (3,))."""
    if not isinstance(atoms, Atoms):
        raise TypeError(f"expected an ase.Atoms, got {type(atoms).__name__}")
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    check_geometry(positions, cell, pbc)
    check_elements(numbers, max_z, known, unseen)
    return numbers, positions, cell, pbc


def run_model(runner, graph: AtomGraph, stress: bool, magmoms: bool,
              checkpoint: bool | None = None) -> dict[str, np.ndarray]:
    """Energy (B,), atom_energies (N,), forces (N, 3), stress (B, 3, 3) when asked,
    magmoms (N,) when asked and available; float64 numpy arrays, ASE units.
    `checkpoint` is passed to `compute_outputs` (None: the model's default)."""
    kwargs = {} if checkpoint is None else {"checkpoint": checkpoint}
    out = compute_outputs(runner, graph, forces=True, stress=stress, magmoms=magmoms,
                          atom_energies=True, **kwargs)
    res = {k: v.detach().to("cpu", torch.float64).numpy() for k, v in out.items()}
    bad = [k for k in ("energy", "forces") if not np.isfinite(res[k]).all()]
    if bad:
        raise MatrisInputError(
            f"the model returned non-finite {' and '.join(bad)}; the structure is probably "
            f"unphysical (e.g. overlapping atoms or an exploded MD run)")
    return res


def split_results(res: dict[str, np.ndarray], num_atoms: list[int], periodic: list[bool]
                  ) -> list[dict]:
    """Per-structure ASE result dicts from batched outputs.

    Each dict has energy and free_energy (float, eV), energies (N,) eV, forces (N, 3)
    eV/Å, stress (6,) Voigt xx yy zz yz xz xy in eV/Å³ (ASE sign; only for 3D-periodic
    structures) and magmoms (N,) μB when the model has the head.
    """
    out = []
    start = 0
    for b, (n, full) in enumerate(zip(num_atoms, periodic)):
        rows = slice(start, start + n)
        energy = float(res["energy"][b])
        one = {"energy": energy, "free_energy": energy,
               "energies": res["atom_energies"][rows].copy(),
               "forces": res["forces"][rows].copy()}
        if full and "stress" in res:
            one["stress"] = full_3x3_to_voigt_6_stress(res["stress"][b])
        if "magmoms" in res:
            one["magmoms"] = res["magmoms"][rows].copy()
        out.append(one)
        start += n
    return out
