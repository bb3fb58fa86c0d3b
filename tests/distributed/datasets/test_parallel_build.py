"""`mpirun -n 2 matris-data build` produces the same frames as a serial build; a failing
rank aborts the job instead of hanging."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from matris.datasets import BuildConfig, ShardedDataset, build_dataset
from matris.datasets.layout import MANIFEST
from matris.datasets.schema import frames_equal
from matris.datasets.verify import verify_dataset

pytestmark = pytest.mark.mpi
CLI = ["-m", "matris.datasets.cli"]


def _write_xyz_files(tmp_path, n_files=4, per_file=15, seed=0):
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n_files):
        images = []
        for i in range(per_file):
            n = int(rng.integers(2, 8))
            cell = np.eye(3) * 8.0
            grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)
            a = Atoms(numbers=rng.integers(1, 90, n), cell=cell, pbc=True,
                      positions=(grid[:n] * 4.0 + rng.normal(0, 0.1, (n, 3))))
            a.calc = SinglePointCalculator(a, energy=float(rng.normal(-3 * n)),
                                           forces=rng.normal(size=(n, 3)),
                                           stress=rng.normal(0, 0.01, 6))
            a.info["mp_id"] = f"mp-{k}-{i // 3}"
            images.append(a)
        path = tmp_path / f"part{k}.xyz"
        ase.io.write(path, images, format="extxyz")
        paths.append(str(path))
    return paths


def _mptrj(tmp_path, n_mp=6, seed=1):
    rng = np.random.default_rng(seed)
    obj = {}
    for m in range(n_mp):
        frames = {}
        for k in range(3):
            frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5]]) + rng.normal(0, 0.01, (2, 3))
            lat = np.eye(3) * 4.2
            frames[f"{m}-0-{k}"] = {
                "structure": {"lattice": {"matrix": lat.tolist()},
                              "sites": [{"species": [{"element": el, "occu": 1}],
                                         "xyz": (f @ lat).tolist(), "abc": f.tolist()}
                                        for el, f in zip(("Mg", "O"), frac)]},
                "uncorrected_total_energy": float(rng.normal(-12)),
                "corrected_total_energy": float(rng.normal(-13)),
                "force": rng.normal(size=(2, 3)).tolist(),
                "stress": rng.normal(size=(3, 3)).tolist(), "magmom": None}
        obj[f"mp-{m}"] = frames
    path = tmp_path / "mptrj.json"
    path.write_text(json.dumps(obj))
    return str(path)


def test_mpirun_multi_file_matches_serial(tmp_path, mpirun):
    inputs = _write_xyz_files(tmp_path)
    serial = tmp_path / "serial"
    build_dataset(BuildConfig(source="extxyz", inputs=inputs, out=serial, progress=False))
    par = tmp_path / "par"
    mpirun(2, [*CLI, "build", "--source", "extxyz", *inputs, "--out", str(par)])
    a, b = ShardedDataset(serial), ShardedDataset(par)
    assert len(b.manifest["shards"]) == 2 and b.manifest["source"]["ranks"] == 2
    assert len(a) == len(b) == 60
    # Contiguous file blocks per rank: the manifest order equals the serial order.
    for i in range(len(a)):
        assert frames_equal(a[i], b[i]), f"frame {i} differs"
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(ShardedDataset(serial, name).indices,
                                      ShardedDataset(par, name).indices)
    # The composition fit is under-determined here (60 frames, ~50 elements), so compare
    # what it predicts; per-element values may differ by summation order (~1e-7).
    pred_a = [a.reference_energies[a[i]["numbers"]].sum() for i in range(len(a))]
    pred_b = [b.reference_energies[b[i]["numbers"]].sum() for i in range(len(b))]
    np.testing.assert_allclose(pred_a, pred_b, atol=1e-5)
    for key in ("labels", "elements", "natoms", "n_atoms"):
        assert a.manifest[key] == b.manifest[key]
    assert verify_dataset(par, progress=False) == []


def test_mpirun_single_file_strided_matches_serial(tmp_path, mpirun):
    path = _mptrj(tmp_path)
    serial = tmp_path / "serial"
    build_dataset(BuildConfig(source="mptrj", inputs=[path], out=serial, progress=False))
    par = tmp_path / "par"
    mpirun(2, [*CLI, "build", "--source", "mptrj", path, "--out", str(par), "--shards", "4"])
    a, b = ShardedDataset(serial), ShardedDataset(par)
    assert len(b.manifest["shards"]) == 4
    by_id = {a[i]["source_id"]: a[i] for i in range(len(a))}
    assert len(b) == len(by_id) == 18
    for i in range(len(b)):
        assert frames_equal(b[i], by_id[b[i]["source_id"]])
    for name in ("train", "val", "test"):  # same groups per split, whatever the order
        ga = {a[int(i)]["group_id"] for i in ShardedDataset(serial, name).indices}
        gb = {b[int(i)]["group_id"] for i in ShardedDataset(par, name).indices}
        assert ga == gb


def test_failing_rank_aborts_job(tmp_path, mpirun):
    inputs = _write_xyz_files(tmp_path, n_files=2, per_file=4)
    # Corrupt the second file (rank 1's slice) with an atom at Z = 0 ("X").
    bad = Path(inputs[1])
    text = bad.read_text().splitlines()
    text[2] = "X" + text[2][2:]
    bad.write_text("\n".join(text) + "\n")
    out = tmp_path / "par"
    proc = mpirun(2, [*CLI, "build", "--source", "extxyz", *inputs, "--out", str(out),
                      "--strict"], check=False, timeout=120)
    assert proc.returncode != 0
    assert "unknown atomic number 0" in proc.stderr
    assert not (out / MANIFEST).exists()
