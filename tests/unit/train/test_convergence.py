"""A 200-step tiny-model run must clearly lower the validation force MAE."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from matris.train.metrics import read_metrics
from matris.train.testing import build_emt_dataset

REPO = Path(__file__).resolve().parents[3]


def _embedded_subset(root: Path, n: int = 256) -> Path:
    """The first ``n`` frames of the shipped embedded extxyz, built as a dataset root."""
    import itertools

    import ase.io

    from matris.datasets import BuildConfig, build_dataset
    from matris.datasets.embedded import embedded_dataset_path

    src = root.parent / "embedded_subset.extxyz"
    frames = list(itertools.islice(ase.io.iread(embedded_dataset_path(), index=":"), n))
    ase.io.write(src, frames, format="extxyz")
    build_dataset(BuildConfig(source="extxyz", inputs=[src], out=root, split=(0.8, 0.2, 0.0),
                              progress=False))
    return root


def _has_embedded() -> bool:
    try:
        from matris.datasets.embedded import embedded_dataset_path

        embedded_dataset_path()
        return True
    except (ImportError, FileNotFoundError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("source", [
    "emt",
    pytest.param("embedded", marks=pytest.mark.skipif(
        not _has_embedded(), reason="datasets/embedded/ptable_chgnet.extxyz.gz not shipped yet")),
])
def test_200_steps_lower_validation_force_mae(tmp_path, source):
    # EMT-labelled alloys (always), and a subset of the shipped embedded data when present.
    if source == "emt":
        root = build_emt_dataset(tmp_path / "emt", n=64, seed=3)
    else:
        root = _embedded_subset(tmp_path / "embedded")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "matris.train.cli", str(REPO / "configs" / "tiny.yaml"),
           f"data.root={root}", f"log.out={out}", "train.steps=200", "log.val_at_start=true",
           "log.val_every=100", "log.progress=false", "checkpoint.every=0",
           "data.val_max_frames=32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-5000:]
    val = read_metrics(out / "metrics.jsonl", "val")
    assert [r["step"] for r in val] == [0, 100, 200]
    before, after = val[0]["forces_mae_mev_a"], val[-1]["forces_mae_mev_a"]
    assert after < 0.6 * before, f"force MAE {before:.1f} -> {after:.1f} meV/Å"
    assert (out / "parity.png").stat().st_size > 10_000
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert (out / "model.pt").is_file()
