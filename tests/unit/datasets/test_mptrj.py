"""MPtrj source: unit conversions against hand-computed values, streaming JSON parser."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from matris.datasets import BuildConfig, ShardedDataset, SourceOptions, build_dataset
from matris.datasets.sources.jsonstream import JSONStreamError, iter_object_members
from matris.datasets.sources.mptrj import kbar_to_ase_stress, record_to_frame


def _record(rng, n=2, e_raw=-10.0, e_corr=-11.5, stress=None):
    from pymatgen.core import Lattice, Structure

    species = ["Fe", "O", "Li", "Si"][:n]
    s = Structure(Lattice.cubic(4.0), species, rng.random((n, 3)),
                  site_properties={"magmom": list(rng.normal(size=n))})
    return {"structure": s.as_dict(), "uncorrected_total_energy": e_raw,
            "corrected_total_energy": e_corr, "energy_per_atom": e_corr / n,
            "force": rng.normal(size=(n, 3)).tolist(),
            "stress": stress if stress is not None else rng.normal(size=(3, 3)).tolist(),
            "magmom": list(rng.normal(size=n)), "bandgap": 0.0}


def test_stress_conversion_hand_computed():
    # 10 kBar = 1 GPa of VASP (compressive-positive) stress. 1 eV/Å³ = 160.21766208 GPa,
    # so σ_ASE = -1/160.21766208 = -0.006241509125883258 eV/Å³ (computed by hand).
    s = kbar_to_ase_stress([[10, 0, 0], [0, -20, 0], [0, 0, 0.5]])
    assert s[0, 0] == pytest.approx(-0.006241509125883258, rel=1e-12)
    assert s[1, 1] == pytest.approx(+0.012483018251766516, rel=1e-12)
    assert s[2, 2] == pytest.approx(-0.0003120754562941629, rel=1e-12)
    assert s[0, 1] == 0.0


def test_record_energy_and_labels(rng):
    rec = _record(rng, e_raw=-10.0, e_corr=-11.5, stress=[[10, 0, 0], [0, 10, 0], [0, 0, 10]])
    f = record_to_frame(rec)
    assert f["energy"] == -10.0 and f["energy_correction"] == pytest.approx(-1.5)
    assert f["stress"][0, 0] == pytest.approx(-0.006241509125883258, rel=1e-12)
    np.testing.assert_array_equal(f["forces"], rec["force"])
    np.testing.assert_array_equal(f["magmoms"], rec["magmom"])
    np.testing.assert_array_equal(f["numbers"], [26, 8])
    np.testing.assert_allclose(f["positions"], [s["xyz"] for s in rec["structure"]["sites"]])
    g = record_to_frame(rec, energy_mode="corrected")
    assert g["energy"] == -11.5 and g["energy_correction"] == pytest.approx(-1.5)


def test_disordered_site_rejected(rng):
    from matris.datasets.schema import FrameError

    rec = _record(rng)
    rec["structure"]["sites"][0]["species"].append({"element": "Mn", "occu": 0.5})
    with pytest.raises(FrameError, match="site 0 is disordered"):
        record_to_frame(rec)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_stream_parser_matches_json_load(chunk):
    obj = {"mp-1": {"a": [1, 2.5, {"x": "br{ace}\"q"}], "b": None},
           "mp-\u00e9\"2": {"c": "]]}}", "d": [[], {}]}, "mp-3": [], "mp-4": 7}
    text = json.dumps(obj, indent=1)
    got = {k: json.loads(v) for k, v, _ in iter_object_members(io.StringIO(text), chunk)}
    assert got == obj


@pytest.mark.parametrize("text, msg", [
    ('{"a": {"b": 1}, "c": {"d": [1, 2', "truncated input inside a value"),
    ('{"a": 1 "b": 2}', "expected ',' or '}'"),
    ("[1, 2]", "expected '{'"),
    ("", "empty input"),
    ('{"a": "unterminated', "truncated string"),
])
def test_stream_parser_errors(text, msg):
    with pytest.raises(JSONStreamError, match=msg):
        list(iter_object_members(io.StringIO(text), 4))


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_build_mptrj(tmp_path, rng):
    obj = {f"mp-{m}": {f"{m}-0-{k}": _record(rng, n=1 + (m + k) % 4) for k in range(3)}
           for m in range(4)}
    path = _write(tmp_path / "MPtrj.json", obj)
    root = tmp_path / "ds"
    build_dataset(BuildConfig(source="mptrj", inputs=[path], out=root, progress=False,
                              split=(0.5, 0.25, 0.25), seed=1))
    ds = ShardedDataset(root)
    assert len(ds) == 12
    for i in range(12):
        f = ds[i]
        mp, fid = f["group_id"], f["source_id"]
        rec = obj[mp][fid]
        assert f["energy"] == rec["uncorrected_total_energy"]
        np.testing.assert_array_equal(f["stress"], kbar_to_ase_stress(rec["stress"]))
        assert f["dataset"] == "mptrj" and f["task"] == "PBE/PBE+U"
    groups = []
    for name in ("train", "val", "test"):
        part = ShardedDataset(root, name)
        groups.append({part[i]["group_id"] for i in range(len(part))})
    assert sum(len(g) for g in groups) == 4, "every mp_id in exactly one split"
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_mptrj_malformed_member_skipped_truncated_file_reported(tmp_path, rng):
    good = json.dumps({"0-0-0": _record(rng)})
    text = '{"mp-1": ' + good + ', "mp-2": {"x": [1, 2,, 3]}, "mp-3": ' + good + "}"
    path = tmp_path / "bad.json"
    path.write_text(text)
    trunc = tmp_path / "trunc.json"
    trunc.write_text(text[: len(text) - 40])
    root = tmp_path / "ds"
    m = build_dataset(BuildConfig(source="mptrj", inputs=[path, trunc], out=root,
                                  progress=False))
    # bad.json: mp-1 and mp-3 kept, mp-2 rejected; trunc.json: mp-1 kept, then truncation.
    assert m["n_frames"] == 3
    reasons = [(r["file"].split("/")[-1], r["reason"]) for r in m["rejects"]["listed"]]
    assert any(f == "bad.json" and "mp_id mp-2: malformed JSON" in r for f, r in reasons)
    assert any(f == "trunc.json" and "truncated" in r for f, r in reasons)
    assert m["rejects"]["count"] == 3  # mp-2 in both files + the truncation


def test_mptrj_gz_and_options(tmp_path, rng):
    import gzip

    obj = {"mp-9": {"9-0-0": _record(rng, e_raw=-3.0, e_corr=-4.0)}}
    path = tmp_path / "m.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump(obj, fh)
    root = tmp_path / "ds"
    build_dataset(BuildConfig(source="mptrj", inputs=[path], out=root, progress=False,
                              options=SourceOptions(mptrj_energy="corrected", task="PBE")))
    f = ShardedDataset(root)[0]
    assert f["energy"] == -4.0 and f["energy_correction"] == -1.0 and f["task"] == "PBE"
