"""`matris-md` smoke tests: every ensemble writes its files with finite values."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read, write

from matris.md.cli import default_threads, main
from matris.md.observers import MD_COLUMNS, RELAX_COLUMNS

from .conftest import si_cell


@pytest.fixture(scope="module")
def structure(tmp_path_factory):
    path = tmp_path_factory.mktemp("structure") / "POSCAR"
    write(path, si_cell(1), format="vasp")
    return path


def read_csv(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


@pytest.mark.parametrize("ensemble,extra", [
    ("nve", []), ("nvt", ["--thermostat", "nose-hoover"]), ("nvt", []),
    ("npt", ["--pressure", "1.0", "--pdamp", "100"]),
    ("npt", ["--thermostat", "nose-hoover", "--anisotropic", "--traj-format", "traj"])])
def test_md_ensembles(checkpoint, structure, tmp_path, capsys, ensemble, extra):
    out = tmp_path / "run"
    code = main(["--model", str(checkpoint), "--structure", str(structure), "--ensemble",
                 ensemble, "--steps", "12", "--log-every", "4", "--traj-every", "6",
                 "--dtype", "float64", "--out", str(out), "--no-progress",
                 "--temperature", "400", "--threads", "1", *extra])
    assert code == 0, capsys.readouterr().err
    header, values = read_csv(out / "thermo.csv")
    assert tuple(header) == MD_COLUMNS
    assert values.shape == (4, len(MD_COLUMNS))  # steps 0, 4, 8, 12
    assert np.isfinite(values).all()
    np.testing.assert_allclose(values[:, 0], [0, 4, 8, 12])
    np.testing.assert_allclose(values[:, 1], [0, 0.004, 0.008, 0.012])
    assert values[0, 2] == pytest.approx(400.0, rel=1e-6)  # exact initial temperature
    np.testing.assert_allclose(values[:, 5], values[:, 3] + values[:, 4], rtol=1e-10)
    suffix = "traj" if "traj" in extra else "extxyz"
    frames = read(out / f"trajectory.{suffix}", index=":")
    assert len(frames) == 3
    assert np.isfinite(frames[-1].get_forces()).all()
    assert (out / "thermo.png").stat().st_size > 1000
    assert len(read(out / "final.extxyz")) == 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["ensemble"] == ensemble
    assert summary["graph_builds"] >= 1 and summary["threads"] == 1
    # one evaluation per step, plus the start (validation, then stress for the log):
    # the log's stress is requested one step ahead, never recomputed
    assert summary["model_evaluations"] == 12 + 2
    assert ("drift_meV_per_atom_per_ps" in summary) == (ensemble == "nve")
    assert "ns_per_day" in capsys.readouterr().out


def test_relax(checkpoint, tmp_path, capsys):
    src = tmp_path / "in.extxyz"
    write(src, si_cell(1, rattle=0.1))
    out = tmp_path / "relax"
    code = main(["--model", str(checkpoint), "--structure", str(src), "--ensemble", "relax",
                 "--fmax", "0.05", "--steps", "400", "--optimizer", "BFGS", "--dtype", "float64",
                 "--out", str(out), "--no-progress", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    header, values = read_csv(out / "relax.csv")
    assert tuple(header) == RELAX_COLUMNS
    assert np.isfinite(values).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] and summary["final_fmax"] < 0.05
    assert summary["final_Epot_eV"] < summary["initial_Epot_eV"]
    assert values[-1, 2] == pytest.approx(summary["final_fmax"])
    assert (out / "thermo.png").exists()


def test_relax_not_converged_exit_code_cif_fix_cell(checkpoint, tmp_path):
    """A CIF input, positions-only relaxation (--fix-cell) stopped after 2 steps."""
    atoms = si_cell(1, rattle=0.1)
    src = tmp_path / "si.cif"
    write(src, atoms, format="cif")
    code = main(["--model", str(checkpoint), "--structure", str(src), "--ensemble",
                 "relax", "--fmax", "1e-9", "--steps", "2", "--fix-cell", "--out",
                 str(tmp_path / "r"), "--no-progress", "--threads", "1"])
    assert code == 3
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["steps"] == 2 and not summary["converged"] and not summary["relax_cell"]
    np.testing.assert_allclose(read(tmp_path / "r" / "final.extxyz").cell.array,
                               atoms.cell.array, atol=1e-6)


def test_bad_structure_exit_code(checkpoint, tmp_path, capsys):
    atoms = si_cell(1)
    atoms.numbers[0] = 98
    src = tmp_path / "bad.extxyz"
    write(src, atoms)
    code = main(["--model", str(checkpoint), "--structure", str(src), "--out",
                 str(tmp_path / "o"), "--no-progress", "--threads", "1"])
    assert code == 2
    assert "Cf (Z=98)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_model_exit_code(structure, tmp_path, capsys):
    code = main(["--model", str(tmp_path / "nope.pt"), "--structure", str(structure),
                 "--out", str(tmp_path / "o"), "--no-progress", "--threads", "1"])
    assert code == 2
    assert "not found" in capsys.readouterr().err


def test_default_threads_divides_cores_among_local_ranks(monkeypatch):
    monkeypatch.delenv("MPI_LOCALNRANKS", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_LOCAL_SIZE", raising=False)
    cores = default_threads()
    assert cores >= 1
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", str(cores))
    assert default_threads() == 1


def test_console_script_help():
    proc = subprocess.run([sys.executable, "-m", "matris.md.cli", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for flag in ("--ensemble", "--thermostat", "--pressure", "--traj-every", "--threads"):
        assert flag in proc.stdout
