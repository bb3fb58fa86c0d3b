"""VASP source: every ionic step of a vasprun.xml, labels converted by ASE.

No real VASP output ships with the project, so the file is generated here with the
elements ASE's vasprun parser reads (atominfo, initialpos, kpoints, per-step structure,
forces, stress in kBar, energies); values are chosen so each conversion is checkable.
"""

from __future__ import annotations

import numpy as np
import pytest

from matris.datasets import BuildConfig, ShardedDataset, build_dataset


def _v(rows):
    return "".join(f"<v>{' '.join(f'{x:.10f}' for x in r)}</v>" for r in rows)


def write_vasprun(path, steps, species=("Si", "Si"), a=5.43):
    basis = np.eye(3) * a
    atoms = "".join(f"<rc><c>{s}</c><c>1</c></rc>" for s in species)
    calcs = []
    for frac, forces, stress_kbar, e_fr, e_0 in steps:
        calcs.append(
            "<calculation>"
            f"<scstep><energy><i name=\"e_fr_energy\">{e_fr}</i>"
            f"<i name=\"e_0_energy\">{e_0}</i></energy></scstep>"
            "<structure><crystal><varray name=\"basis\">" + _v(basis) + "</varray></crystal>"
            "<varray name=\"positions\">" + _v(frac) + "</varray></structure>"
            "<varray name=\"forces\">" + _v(forces) + "</varray>"
            "<varray name=\"stress\">" + _v(stress_kbar) + "</varray>"
            f"<energy><i name=\"e_fr_energy\">{e_fr}</i><i name=\"e_wo_entrp\">{e_0}</i>"
            f"<i name=\"e_0_energy\">{e_0}</i></energy>"
            "</calculation>")
    text = (
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<modeling>"
        "<kpoints><varray name=\"kpointlist\"><v>0 0 0</v></varray>"
        "<varray name=\"weights\"><v>1</v></varray></kpoints>"
        "<atominfo><array name=\"atoms\"><set>" + atoms + "</set></array></atominfo>"
        "<structure name=\"initialpos\"><crystal><varray name=\"basis\">" + _v(basis)
        + "</varray></crystal><varray name=\"positions\">" + _v(steps[0][0])
        + "</varray></structure>" + "".join(calcs) + "</modeling>\n")
    path.write_text(text)
    return path


def test_vasprun_all_ionic_steps(tmp_path):
    rng = np.random.default_rng(5)
    steps = []
    for k in range(3):
        frac = np.array([[0, 0, 0], [0.25, 0.25, 0.25 + 0.01 * k]])
        forces = rng.normal(0, 0.1, (2, 3))
        stress = np.diag([10.0 * (k + 1), -5.0, 0.0])  # kBar, VASP sign
        steps.append((frac, forces, stress, -10.0 - k, -10.1 - k))
    path = write_vasprun(tmp_path / "vasprun.xml", steps)
    root = tmp_path / "ds"
    build_dataset(BuildConfig(source="vasp", inputs=[tmp_path], out=root, progress=False))
    ds = ShardedDataset(root)
    assert len(ds) == 3
    for k, f in enumerate(ds):
        frac, forces, _stress, _e_fr, e_0 = steps[k]
        assert f["energy"] == pytest.approx(e_0)  # ASE's `energy` is the σ→0 value
        np.testing.assert_allclose(f["forces"], forces, atol=1e-9)
        np.testing.assert_allclose(f["positions"], frac @ (np.eye(3) * 5.43), atol=1e-9)
        # 10 kBar compressive (VASP +) = -1 GPa ASE = -1/160.21766208 eV/Å³.
        assert f["stress"][0, 0] == pytest.approx(-(k + 1) / 160.21766208, rel=1e-9)
        assert f["stress"][1, 1] == pytest.approx(0.5 / 160.21766208, rel=1e-9)
        assert f["group_id"] == str(path), "all steps of one run share a group"
        assert f["source_id"] == f"vasprun.xml:{k}"


def test_vasp_free_energy_key(tmp_path):
    from matris.datasets import SourceOptions

    steps = [(np.array([[0, 0, 0], [0.25, 0.25, 0.25]]), np.zeros((2, 3)), np.zeros((3, 3)),
              -7.0, -7.2)]
    path = write_vasprun(tmp_path / "vasprun.xml", steps)
    root = tmp_path / "ds"
    build_dataset(BuildConfig(source="vasp", inputs=[path], out=root, progress=False,
                              options=SourceOptions(energy_key="free_energy")))
    assert ShardedDataset(root)[0]["energy"] == pytest.approx(-7.0)
