"""Deterministic extended-XYZ text for labelled frames, readable by `ase.io.read` (≥ 3.23).

Layout of one frame (keys documented in docs/embedded_dataset.md):

    N
    Lattice="9 floats" Properties=species:S:1:pos:R:3:forces:R:3:magmoms:R:1 energy=E
    stress="9 floats" pbc="T T T" group_id=... source_id=... dataset=... task=... ...
    Sym x y z fx fy fz m          (N lines)

`energy`, `forces`, `stress` (3x3) and `magmoms` use ASE's calculator names, so
`ase.io.read` puts them on a SinglePointCalculator (`atoms.get_potential_energy()`,
`get_forces()`, `get_stress(voigt=False)`, `get_magnetic_moments()`). Floats use fixed
formats so that the same numbers always give the same bytes.
"""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
from ase import Atoms

from .teacher import Labels

PROPERTIES = "species:S:1:pos:R:3:forces:R:3:magmoms:R:1"
# Precision: positions/lattice 1e-6 Å; forces 1e-6 eV/Å; energy 1e-6 eV (CHGNet computes in
# float32, ~1e-7 relative); stress 1e-9 eV/Å³ (= 1.6e-7 GPa); magmoms 1e-4 μB.
_LATTICE = "{:.6f}"
_POS = "{:.6f}"
_FORCE = "{:.6f}"
_STRESS = "{:.9f}"
_ENERGY = "{:.6f}"
_MAGMOM = "{:.4f}"

# Info values must survive ASE's key=value parser unchanged as strings: no spaces, quotes
# or '=', and they must contain a letter so they never parse as numbers or booleans.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:/+-]*[A-Za-z][A-Za-z0-9_.:/+-]*$")
_BOOLEAN_WORDS = {"T", "F", "True", "False", "true", "false"}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = {"Lattice", "Properties", "energy", "stress", "pbc"}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_info(info: dict[str, str | float]) -> None:
    for key, value in info.items():
        if not _KEY.match(key) or key in _RESERVED:
            raise ValueError(f"bad extxyz info key {key!r}")
        if isinstance(value, str) and (not _SAFE_VALUE.match(value) or value in _BOOLEAN_WORDS
                                       or _is_number(value)):
            raise ValueError(f"info value {key}={value!r} would not read back as a string")


def _info_value(value: str | float) -> str:
    if isinstance(value, str):
        return value
    return f"{float(value):.3f}"


def _clean(x: np.ndarray) -> np.ndarray:
    """Float64 copy with exact -0.0 turned into 0.0 (a signed zero carries no information;
    writing it as '-0.000000' would make equal arrays differ in text)."""
    out = np.asarray(x, dtype=np.float64).copy()
    out[out == 0.0] = 0.0
    return out


def format_frame(atoms: Atoms, labels: Labels, info: dict[str, str | float]) -> str:
    """The extxyz text of one frame (ends with a newline).

    `info` values: str (validated, see above) or numbers (written with 3 decimals); they
    are written in the given order after the labels.
    """
    _check_info(info)
    n = len(atoms)
    forces = _clean(labels.forces)
    stress = _clean(labels.stress)
    if forces.shape != (n, 3) or stress.shape != (3, 3):
        raise ValueError(f"label shapes {forces.shape}, {stress.shape} do not fit {n} atoms")
    magmoms = (np.zeros(n) if labels.magmoms is None else _clean(labels.magmoms))
    lattice = " ".join(_LATTICE.format(v) for v in _clean(atoms.cell.array).ravel())
    stress_txt = " ".join(_STRESS.format(v) for v in stress.ravel())
    pbc = " ".join("T" if p else "F" for p in atoms.pbc)
    header = [f'Lattice="{lattice}"', f"Properties={PROPERTIES}",
              f"energy={_ENERGY.format(float(labels.energy))}", f'stress="{stress_txt}"',
              f'pbc="{pbc}"']
    header += [f"{k}={_info_value(v)}" for k, v in info.items()]
    lines = [str(n), " ".join(header)]
    positions = _clean(atoms.positions)
    for sym, p, f, m in zip(atoms.get_chemical_symbols(), positions, forces, magmoms):
        lines.append(f"{sym} " + " ".join(_POS.format(v) for v in p) + " "
                     + " ".join(_FORCE.format(v) for v in f) + " " + _MAGMOM.format(m))
    return "\n".join(lines) + "\n"


def gzip_deterministic(src: Path, dst: Path, level: int = 9) -> None:
    """Compress `src` to `dst` with no timestamp and no file name in the gzip header, so the
    bytes depend on the content only."""
    tmp = dst.with_name(dst.name + ".tmp")
    with open(src, "rb") as fin, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level,
                          mtime=0) as gz:
        shutil.copyfileobj(fin, gz, length=1 << 20)
    tmp.replace(dst)
