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
EMBEDDED = REPO / "datasets" / "embedded"


@pytest.mark.slow
def test_200_steps_lower_validation_force_mae(tmp_path):
    # The embedded example data when it has been built, else EMT-labelled alloys.
    root = EMBEDDED if (EMBEDDED / "manifest.yaml").is_file() else build_emt_dataset(
        tmp_path / "emt", n=64, seed=3)
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
