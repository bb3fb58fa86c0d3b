"""The synth extxyz writer: ASE reads labels and provenance back; bytes are deterministic."""

from __future__ import annotations

import gzip

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from matris.datasets.synth.extxyz import format_frame, gzip_deterministic
from matris.datasets.synth.generate import sidecar_path
from matris.datasets.synth.teacher import Labels


def _frame():
    atoms = bulk("NaCl", "rocksalt", a=5.6).repeat((2, 1, 1))
    rng = np.random.default_rng(1)
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    n = len(atoms)
    forces = rng.normal(0, 1, (n, 3))
    stress = rng.normal(0, 0.01, (3, 3))
    stress = 0.5 * (stress + stress.T)
    labels = Labels(energy=-13.123456789, forces=forces, stress=stress,
                    magmoms=np.abs(rng.normal(0, 0.1, n)))
    info = {"group_id": "bin:NaCl:rocksalt", "source_id": "bin:NaCl:rocksalt/s000",
            "dataset": "matris-ptable-chgnet", "task": "chgnet-0.3.0-distill",
            "teacher": "chgnet-0.4.2", "teacher_model": "chgnet-0.3.0", "family": "binary",
            "prototype": "rocksalt", "sampling": "md", "temperature_K": 1210.0}
    return atoms, labels, info


def test_round_trip_through_ase(tmp_path):
    atoms, labels, info = _frame()
    path = tmp_path / "one.extxyz"
    path.write_text(format_frame(atoms, labels, info) * 2)
    frames = ase.io.read(path, index=":")
    assert len(frames) == 2
    back = frames[1]
    np.testing.assert_array_equal(back.numbers, atoms.numbers)
    np.testing.assert_allclose(back.positions, atoms.positions, atol=5e-7)
    np.testing.assert_allclose(back.cell.array, atoms.cell.array, atol=5e-7)
    assert back.get_potential_energy() == pytest.approx(labels.energy, abs=5e-7)
    np.testing.assert_allclose(back.get_forces(), labels.forces, atol=5e-7)
    np.testing.assert_allclose(back.get_stress(voigt=False), labels.stress, atol=5e-10)
    np.testing.assert_allclose(back.get_magnetic_moments(), labels.magmoms, atol=5e-5)
    for key, value in info.items():
        assert back.info[key] == value, key
        assert isinstance(back.info[key], type(value)), key


def test_values_that_would_not_read_back_are_refused():
    atoms, labels, info = _frame()
    for bad in ("F", "T", "12", "1e5", "a b", 'x"y', "k=v"):
        with pytest.raises(ValueError):
            format_frame(atoms, labels, {**info, "group_id": bad})
    with pytest.raises(ValueError):
        format_frame(atoms, labels, {**info, "energy": "x"})
    with pytest.raises(ValueError):
        format_frame(atoms, Labels(labels.energy, labels.forces[:-1], labels.stress, None), info)


def test_text_and_gzip_are_byte_deterministic(tmp_path):
    atoms, labels, info = _frame()
    text = format_frame(atoms, labels, info)
    assert text == format_frame(atoms.copy(), labels, dict(info))
    src = tmp_path / "a.extxyz"
    src.write_text(text)
    out1, out2 = tmp_path / "x" / "one.extxyz.gz", tmp_path / "two.extxyz.gz"
    out1.parent.mkdir()
    gzip_deterministic(src, out1)
    gzip_deterministic(src, out2)
    raw = out1.read_bytes()
    assert raw == out2.read_bytes()  # no file name, no timestamp in the header
    assert raw[4:8] == b"\x00\x00\x00\x00"  # MTIME field
    assert gzip.decompress(raw).decode() == text


def test_sidecar_name():
    from pathlib import Path

    assert sidecar_path(Path("d/ptable_chgnet.extxyz.gz")) == Path("d/ptable_chgnet.json")
    assert sidecar_path(Path("x.xyz")) == Path("x.json")
