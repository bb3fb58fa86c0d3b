"""Every bad-input case: skipped with file/frame/reason, counted in the manifest; --strict
makes it fatal; empty input is an error; nothing half-built is left behind."""

from __future__ import annotations

import numpy as np
import pytest

from matris.datasets import BuildConfig, BuildError, ShardedDataset, build_dataset
from matris.datasets.layout import MANIFEST
from matris.datasets.schema import FrameError, normalize_frame
from matris.datasets.validate import check_frame


def _good(rng, make_frame):
    return make_frame(rng, 4, labels=("energy", "forces", "stress"))


def _zero_z(f):
    f["numbers"][1] = 0


def _unknown_z(f):
    f["numbers"] = f["numbers"].astype(np.int64)
    f["numbers"][2] = 119


def _nan_pos(f):
    f["positions"][0, 1] = np.nan


def _inf_energy(f):
    f["energy"] = np.inf


def _nan_forces(f):
    f["forces"][3, 2] = np.nan


def _forces_shape(f):
    f["forces"] = f["forces"][:3]


def _singular(f):
    f["cell"][2] = f["cell"][0] + f["cell"][1]


def _close_atoms(f):
    f["positions"][1] = f["positions"][0] + [0.05, 0, 0]


def _close_image(f):
    # Atom 1 sits 0.03 Å from atom 0's periodic image across the cell boundary.
    f["cell"] = np.eye(3) * 6.0
    f["positions"][0] = [0.01, 3.0, 3.0]
    f["positions"][1] = [5.99 - 0.01, 3.0, 3.0]


CASES = {
    "zero atomic number": (_zero_z, "unknown atomic number 0 at atom 1"),
    "unknown atomic number": (_unknown_z, "unknown atomic number 119 at atom 2"),
    "NaN position": (_nan_pos, "positions contains NaN or inf"),
    "inf energy": (_inf_energy, "energy contains NaN or inf"),
    "NaN force": (_nan_forces, "forces contains NaN or inf"),
    "forces shape": (_forces_shape, r"forces has shape \(3, 3\), expected \(4, 3\)"),
    "singular cell": (_singular, "singular cell with pbc"),
    "close atoms": (_close_atoms, r"atoms 0 and 1 are 0\.0500 Å apart"),
    "close periodic image": (_close_image, r"atoms (0 and 1|1 and 0) are 0\.0300 Å apart"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_frame_checks(rng, make_frame, case):
    mutate, msg = CASES[case]
    f = _good(rng, make_frame)
    check_frame(normalize_frame(f))  # the unmutated frame passes
    mutate(f)
    with pytest.raises(FrameError, match=msg):
        check_frame(normalize_frame(f))


def test_singular_cell_without_pbc_is_fine(rng, make_frame):
    f = make_frame(rng, 3, pbc=False)
    check_frame(normalize_frame(f))
    f2 = _good(rng, make_frame)
    f2["pbc"] = np.array([True, True, False])
    f2["cell"][2] = 0.0  # slab: the non-periodic vector may be zero
    check_frame(normalize_frame(f2))


def _mptrj_with(rng, bad):
    """MPtrj-style JSON with one good and one bad record per case (MPtrj carries raw
    arrays straight into the schema, so every case can be injected)."""
    from pymatgen.core import Lattice, Structure

    def rec(pos_shift=0.0):
        s = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        return {"structure": s.as_dict(), "uncorrected_total_energy": -6.0,
                "corrected_total_energy": -6.0, "force": [[0, 0, 0.1], [0, 0, -0.1]],
                "stress": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "magmom": None}

    good, b = rec(), rec()
    bad(b)
    return {"mp-1": {"1-0-0": good, "1-0-1": b}}


MPTRJ_CASES = {
    "nan force": (lambda r: r["force"][0].__setitem__(0, float("nan")), "forces contains NaN"),
    "bad force shape": (lambda r: r.__setitem__("force", [[0, 0, 0]]), "forces has shape"),
    "zero Z": (lambda r: r["structure"]["sites"][0]["species"][0].__setitem__("element", "X"),
               "unknown atomic number 0 at atom 0"),
    "close atoms": (lambda r: r["structure"]["sites"][1].__setitem__("xyz", [0.01, 0, 0]),
                    "Å apart"),
    "singular cell": (lambda r: r["structure"]["lattice"].__setitem__(
        "matrix", [[5, 0, 0], [0, 5, 0], [5, 5, 0]]), "singular cell"),
}


@pytest.mark.parametrize("case", list(MPTRJ_CASES))
def test_build_skips_and_reports(tmp_path, rng, case):
    import json

    bad, msg = MPTRJ_CASES[case]
    path = tmp_path / "in.json"
    # json.dumps writes NaN as a bare NaN token, which Python's json reads back.
    path.write_text(json.dumps(_mptrj_with(rng, bad)))
    root = tmp_path / "ds"
    m = build_dataset(BuildConfig(source="mptrj", inputs=[path], out=root, progress=False))
    assert m["n_frames"] == 1 and m["rejects"]["count"] == 1
    (r,) = m["rejects"]["listed"]
    assert r["file"] == str(path) and r["frame"] == 1 and msg in r["reason"]
    assert len(ShardedDataset(root)) == 1

    strict = tmp_path / "strict"
    with pytest.raises(BuildError, match=rf"--strict.*in\.json: frame 1: .*{msg[:10]}"):
        build_dataset(BuildConfig(source="mptrj", inputs=[path], out=strict, progress=False,
                                  strict=True))
    assert not (strict / MANIFEST).exists()
    leftovers = list((strict / "shards").glob("*")) if (strict / "shards").exists() else []
    assert leftovers == [], "a failed build must not leave (partial) shards"


def test_truncated_and_malformed_extxyz(tmp_path, rng, make_frame, write_extxyz):
    frames = [make_frame(rng, 3) for _ in range(4)]
    good = write_extxyz(tmp_path / "good.xyz", frames)
    text = good.read_text().splitlines(keepends=True)
    trunc = tmp_path / "trunc.xyz"
    trunc.write_text("".join(text[: 5 * 2 + 3]))  # two full frames (5 lines each) + 3 lines
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not\nan xyz file\n")
    root = tmp_path / "ds"
    m = build_dataset(BuildConfig(source="extxyz", inputs=[good, trunc, garbage], out=root,
                                  progress=False))
    assert m["n_frames"] == 4 + 2
    rej = {r["file"].split("/")[-1]: r for r in m["rejects"]["listed"]}
    assert rej["trunc.xyz"]["frame"] == 2 and "unreadable" in rej["trunc.xyz"]["reason"]
    assert rej["garbage.xyz"]["frame"] == 0
    assert m["rejects"]["count"] == 2


def test_empty_input(tmp_path):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    root = tmp_path / "ds"
    with pytest.raises(BuildError, match="empty input: no valid frames"):
        build_dataset(BuildConfig(source="extxyz", inputs=[empty], out=root, progress=False))
    assert not (root / MANIFEST).exists()
    d = tmp_path / "nothing"
    d.mkdir()
    with pytest.raises(FileNotFoundError, match="no extxyz files"):
        build_dataset(BuildConfig(source="extxyz", inputs=[d], out=root, progress=False))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset(BuildConfig(source="extxyz", inputs=[tmp_path / "nope.xyz"], out=root,
                                  progress=False))
