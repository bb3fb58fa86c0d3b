"""matris-data CLI: build / inspect / verify / export (in-process and as a console script)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from matris.datasets import ShardedDataset
from matris.datasets.cli import main


@pytest.fixture
def xyz(tmp_path, rng, make_frame, write_extxyz):
    frames = [make_frame(rng, int(rng.integers(2, 6)), group=f"m{i // 2}",
                         labels=("energy", "forces", "stress")) for i in range(20)]
    return write_extxyz(tmp_path / "in.xyz", frames), frames


def test_build_inspect_verify_export(tmp_path, xyz, capsys):
    path, frames = xyz
    out = tmp_path / "ds"
    assert main(["build", "--source", "extxyz", str(path), "--out", str(out), "--shards", "2",
                 "--split", "0.8,0.1,0.1", "--seed", "4", "--no-progress"]) == 0
    assert "built" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "frames    20" in text and "splits    by group_id" in text
    symbols = {__import__("ase").data.chemical_symbols[int(z)]
               for f in frames for z in f["numbers"]}
    for sym in symbols:
        assert f" {sym} " in text or f"{sym}  " in text
    assert "natoms    min" in text and "forces    max |F|" in text
    assert main(["verify", str(out), "--no-progress"]) == 0
    assert "verify: OK, 20 frames" in capsys.readouterr().out
    assert main(["export", str(out), "--to", "extxyz", "--out", str(tmp_path / "e.xyz"),
                 "--no-progress"]) == 0
    assert main(["export", str(out), "--to", "aselmdb", "--out", str(tmp_path / "e.aselmdb"),
                 "--split", "train", "--no-progress"]) == 0
    capsys.readouterr()
    # Rebuild from both exports: same frames back.
    assert main(["build", "--source", "extxyz", str(tmp_path / "e.xyz"), "--out",
                 str(tmp_path / "re"), "--no-progress"]) == 0
    a, b = ShardedDataset(out), ShardedDataset(tmp_path / "re")
    assert len(a) == len(b)
    for i in range(len(a)):
        np.testing.assert_allclose(a[i]["positions"], b[i]["positions"], atol=1e-7)
        np.testing.assert_allclose(a[i]["stress"], b[i]["stress"], atol=1e-12)
        assert a[i]["group_id"] == b[i]["group_id"]
    assert main(["build", "--source", "aselmdb", str(tmp_path / "e.aselmdb"), "--out",
                 str(tmp_path / "re2"), "--no-progress"]) == 0
    assert len(ShardedDataset(tmp_path / "re2")) == len(ShardedDataset(out, "train"))


def test_verify_fails_on_corruption(tmp_path, xyz, capsys):
    path, _ = xyz
    out = tmp_path / "ds"
    main(["build", "--source", "extxyz", str(path), "--out", str(out), "--no-progress"])
    shard = out / "shards" / "shard-00000.lmdb"
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 3] ^= 0xFF
    shard.write_bytes(bytes(blob))
    assert main(["verify", str(out), "--no-progress"]) == 1
    assert "FAIL shard shards/shard-00000.lmdb: sha256 mismatch" in capsys.readouterr().out


def test_errors_are_reported_not_raised(tmp_path, xyz, capsys):
    path, _ = xyz
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "manifest.yaml not found" in capsys.readouterr().err
    out = tmp_path / "ds"
    main(["build", "--source", "extxyz", str(path), "--out", str(out), "--no-progress"])
    assert main(["build", "--source", "extxyz", str(path), "--out", str(out),
                 "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["build", "--source", "extxyz", str(path), "--out", str(tmp_path / "x"),
                 "--split", "0.5,0.6", "--no-progress"]) == 2


def test_console_script(tmp_path, xyz):
    exe = shutil.which("matris-data", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("matris-data console script not installed in this venv")
    path, _ = xyz
    out = tmp_path / "ds"
    proc = subprocess.run([exe, "build", "--source", "extxyz", str(path), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([exe, "verify", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "verify: OK" in proc.stdout
