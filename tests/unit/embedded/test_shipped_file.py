"""The shipped embedded dataset: parses, covers the periodic table, labels are physical.

Reads the whole file once (~6,000 frames with ase.io.iread after decompressing into memory,
~5-15 s), hence `slow`.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import ase.io
import numpy as np
import pytest

from matris.datasets.embedded import (
    decompressed_path,
    embedded_dataset_path,
    embedded_metadata,
    iter_embedded_atoms,
)

pytestmark = pytest.mark.slow

INFO_KEYS = ("group_id", "source_id", "dataset", "task", "teacher", "teacher_model", "family",
             "prototype", "sampling")


def force_sum_tolerance(forces: np.ndarray) -> float:
    """Allowed |Σ_i F_i| (eV/Å) for a conservative model's forces as stored in the file.

    Each component is rounded to 1e-6 (error ≤ N·5e-7 in the sum) and CHGNet's float32
    autograd adds ~1e-7 relative error per term (≤ 1.2e-7·Σ|F|); a factor ~2 margin on top.
    The largest residual observed in the shipped file is ~1e-5 eV/Å, far below any physical
    net force (a non-conservative or broken label would give O(0.1–1) eV/Å).
    """
    n = len(forces)
    return 2 * (n * 5e-7 + 1.2e-7 * np.abs(forces).sum()) + 1e-5


@pytest.fixture(scope="module")
def summary():
    """One pass over the file: per-frame scalars and any violation found."""
    rows, problems = [], []
    elements: Counter = Counter()
    for index, atoms in enumerate(iter_embedded_atoms()):
        calc = atoms.calc
        assert calc is not None, f"frame {index} has no labels"
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress(voigt=False)
        magmoms = atoms.get_magnetic_moments()
        missing = [k for k in INFO_KEYS if not isinstance(atoms.info.get(k), str)]
        if missing:
            problems.append((index, f"info keys missing or not strings: {missing}"))
        if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(stress).all()
                and np.isfinite(magmoms).all()):
            problems.append((index, "non-finite label"))
        net = float(np.linalg.norm(forces.sum(axis=0)))
        if net > force_sum_tolerance(forces):
            problems.append((index, f"force sum {net:.2e} eV/Å"))
        fmax = float(np.linalg.norm(forces, axis=1).max())
        if fmax > 50.0:
            problems.append((index, f"|F| = {fmax:.1f} eV/Å > 50"))
        if not np.allclose(stress, stress.T, atol=1e-9):
            problems.append((index, "stress not symmetric"))
        elements.update(set(atoms.get_chemical_symbols()))
        rows.append({"n": len(atoms), "e": energy / len(atoms), "net": net, "fmax": fmax,
                     "group": atoms.info.get("group_id"), "source": atoms.info.get("source_id"),
                     "sampling": atoms.info.get("sampling"), "pbc": bool(atoms.pbc.all()),
                     "task": atoms.info.get("task")})
    return {"rows": rows, "problems": problems, "elements": elements}


def test_file_parses_and_is_big_enough(summary):
    assert len(summary["rows"]) >= 5000
    assert all(r["pbc"] for r in summary["rows"])
    natoms = [r["n"] for r in summary["rows"]]
    assert min(natoms) >= 8 and max(natoms) <= 64


def test_covers_at_least_70_elements(summary):
    elements = summary["elements"]
    assert len(elements) >= 70
    well_covered = [s for s, count in elements.items() if count >= 30]
    assert len(well_covered) >= 70, sorted(elements.items(), key=lambda kv: kv[1])[:10]


def test_labels_are_physical(summary):
    assert not summary["problems"], summary["problems"][:10]
    # and the checks above did see real forces (not an all-zero file)
    assert max(r["fmax"] for r in summary["rows"]) > 1.0
    assert all(-20.0 < r["e"] < 5.0 for r in summary["rows"])  # eV/atom


def test_provenance_and_split_keys(summary):
    rows = summary["rows"]
    sources = [r["source"] for r in rows]
    assert len(set(sources)) == len(sources), "source_id must be unique per frame"
    groups = Counter(r["group"] for r in rows)
    assert len(groups) >= 300  # many parents -> leak-free splits have room
    for r in rows:
        assert r["source"].startswith(r["group"] + "/")
    assert {r["task"] for r in rows} == {embedded_metadata()["task"]}
    assert {r["sampling"] for r in rows} == {"static", "md"}


def test_sidecar_matches_file(summary):
    meta = embedded_metadata()
    path = embedded_dataset_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"]
    assert meta["stats"]["frames"] == len(summary["rows"])
    assert set(meta["stats"]["element_frames"]) == set(summary["elements"])
    assert "NOT DFT" in meta["description"]
    assert meta["teacher"]["name"] == "chgnet"
    assert path.stat().st_size <= 25 * 1024 * 1024


def test_decompressed_copy_reads_the_same(tmp_path):
    plain = decompressed_path(tmp_path)
    assert plain.name == "ptable_chgnet.extxyz"
    assert decompressed_path(tmp_path) == plain  # reused
    first = next(ase.io.iread(plain, index="0", format="extxyz"))
    ref = next(iter_embedded_atoms())
    assert first.info["source_id"] == ref.info["source_id"]
    assert first.get_potential_energy() == ref.get_potential_energy()
