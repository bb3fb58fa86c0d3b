"""Primitive cells of the crystal prototypes, scaled to a target bond length or volume.

Every builder returns a primitive `ase.Atoms` (periodic in 3D). Builders take the species
in a fixed site order (documented per prototype) and build the cell at unit scale; the
caller then rescales it isotropically with :func:`scale_to_pair_distance` or
:func:`scale_to_volume`, so only the *shape* of each prototype is encoded here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list
from ase.spacegroup import crystal

# Internal coordinates of the ideal or typical structures (fractional).
_WURTZITE_U = 3.0 / 8.0
_RUTILE_U = 0.305       # TiO2: 0.3048
_RUTILE_C_OVER_A = 0.644
_SPINEL_U = 0.2625      # MgAl2O4, origin choice 2
_IDEAL_HCP_C_OVER_A = float(np.sqrt(8.0 / 3.0))


def _cubic(a: float) -> list[float]:
    return [a, a, a, 90.0, 90.0, 90.0]


def _elemental(structure: str) -> Callable[[tuple[str, ...]], Atoms]:
    def build(symbols: tuple[str, ...]) -> Atoms:
        (el,) = symbols
        if structure == "hcp":
            return bulk(el, "hcp", a=1.0, covera=_IDEAL_HCP_C_OVER_A)
        return bulk(el, structure, a=1.0)
    return build


def _rocksalt(s: tuple[str, ...]) -> Atoms:        # (cation, anion)
    return crystal(list(s), [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=225,
                   cellpar=_cubic(1.0), primitive_cell=True)


def _cscl(s: tuple[str, ...]) -> Atoms:            # (A, B)
    return crystal(list(s), [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=221, cellpar=_cubic(1.0))


def _zincblende(s: tuple[str, ...]) -> Atoms:      # (cation, anion)
    return crystal(list(s), [(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=216,
                   cellpar=_cubic(1.0), primitive_cell=True)


def _wurtzite(s: tuple[str, ...]) -> Atoms:        # (cation, anion)
    c = _IDEAL_HCP_C_OVER_A
    return crystal(list(s), [(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, _WURTZITE_U)], spacegroup=186,
                   cellpar=[1.0, 1.0, c, 90.0, 90.0, 120.0])


def _fluorite(s: tuple[str, ...]) -> Atoms:        # (cation A, anion X): AX2
    return crystal(list(s), [(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                   cellpar=_cubic(1.0), primitive_cell=True)


def _antifluorite(s: tuple[str, ...]) -> Atoms:    # (cation A, anion X): A2X
    a, x = s
    return crystal([x, a], [(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                   cellpar=_cubic(1.0), primitive_cell=True)


def _rutile(s: tuple[str, ...]) -> Atoms:          # (cation A, anion X): AX2
    u = _RUTILE_U
    return crystal(list(s), [(0, 0, 0), (u, u, 0)], spacegroup=136,
                   cellpar=[1.0, 1.0, _RUTILE_C_OVER_A, 90.0, 90.0, 90.0])


def _perovskite(s: tuple[str, ...]) -> Atoms:      # (A, B, X): ABX3, cubic Pm-3m
    return crystal(list(s), [(0.5, 0.5, 0.5), (0, 0, 0), (0.5, 0, 0)], spacegroup=221,
                   cellpar=_cubic(1.0))


def _spinel(s: tuple[str, ...]) -> Atoms:          # (A, B, X): AB2X4, Fd-3m
    u = _SPINEL_U
    return crystal(list(s), [(1 / 8, 1 / 8, 1 / 8), (0.5, 0.5, 0.5), (u, u, u)],
                   spacegroup=227, setting=2, cellpar=_cubic(1.0), primitive_cell=True)


#: prototype name -> builder(symbols) -> unit-scale primitive Atoms.
BUILDERS: dict[str, Callable[[tuple[str, ...]], Atoms]] = {
    **{name: _elemental(name) for name in ("fcc", "bcc", "hcp", "diamond", "sc")},
    "rocksalt": _rocksalt, "cscl": _cscl, "zincblende": _zincblende, "wurtzite": _wurtzite,
    "fluorite": _fluorite, "antifluorite": _antifluorite, "rutile": _rutile,
    "perovskite": _perovskite, "spinel": _spinel,
}

#: Atoms per formula unit of each compound prototype (for formula strings).
STOICHIOMETRY: dict[str, tuple[int, ...]] = {
    "rocksalt": (1, 1), "cscl": (1, 1), "zincblende": (1, 1), "wurtzite": (1, 1),
    "fluorite": (1, 2), "antifluorite": (2, 1), "rutile": (1, 2),
    "perovskite": (1, 1, 3), "spinel": (1, 2, 4),
}


def min_pair_distance(atoms: Atoms, a: str, b: str) -> float:
    """Shortest periodic distance (Å) between an atom of species `a` and one of `b`."""
    symbols = np.array(atoms.get_chemical_symbols())
    # Work on a copy at ~10 Å^3/atom (ase's cell-list binning is very slow for unit-scale
    # cells), then undo the factor. The cutoff 2 x (volume per atom)^(1/3) exceeds the
    # nearest-neighbour distance of every prototype here.
    factor = (10.0 * len(atoms) / atoms.get_volume()) ** (1.0 / 3.0)
    work = scale_isotropic(atoms, factor)
    cutoff = 2.0 * 10.0 ** (1.0 / 3.0)
    i, j, d = neighbor_list("ijd", work, cutoff)
    mask = ((symbols[i] == a) & (symbols[j] == b)) & (d > 1e-8)
    if not mask.any():
        raise ValueError(f"no {a}-{b} pair near each other in {atoms.get_chemical_formula()}")
    return float(d[mask].min()) / factor


def scale_isotropic(atoms: Atoms, factor: float) -> Atoms:
    """Copy of `atoms` with the cell and positions scaled by `factor` (linear)."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array * factor, scale_atoms=True)
    return out


def scale_to_pair_distance(atoms: Atoms, a: str, b: str, target: float) -> Atoms:
    """Rescale so that the shortest `a`–`b` distance equals `target` (Å)."""
    return scale_isotropic(atoms, target / min_pair_distance(atoms, a, b))


def scale_to_volume(atoms: Atoms, volume_per_atom: float) -> Atoms:
    """Rescale so that the volume per atom equals `volume_per_atom` (Å³)."""
    current = atoms.get_volume() / len(atoms)
    return scale_isotropic(atoms, (volume_per_atom / current) ** (1.0 / 3.0))


def build_prototype(prototype: str, symbols: tuple[str, ...]) -> Atoms:
    """Unit-scale primitive cell of `prototype` with per-site `symbols`."""
    try:
        builder = BUILDERS[prototype]
    except KeyError:
        raise ValueError(f"unknown prototype {prototype!r}; known: {sorted(BUILDERS)}") from None
    atoms = builder(symbols)
    atoms.pbc = True
    return atoms
