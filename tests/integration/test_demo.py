"""The main job, shortened: every stage of `make demo` (build → mpirun PP=2 × DP=2 wavek
training → export → held-out test evaluation → NVT MD → summary) with few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.mpi
def test_shortened_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "matris.train.demo", "--out", str(out), "--steps", "4",
           "--md-steps", "6", "log.every=2", "log.val_every=4", "data.val_max_frames=8",
           "checkpoint.every=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())

    # the dataset stage built the whole embedded set, with leak-free splits
    from matris.datasets import ShardedDataset

    data = out / "data"
    splits = {s: ShardedDataset(data, split=s) for s in ("train", "val", "test")}
    assert summary["dataset"]["frames"] == sum(len(d) for d in splits.values()) > 5000
    assert summary["dataset"]["elements"] >= 70

    def groups(ds):
        return {str(ds[i]["group_id"]) for i in range(len(ds))}

    assert groups(splits["test"]).isdisjoint(groups(splits["train"]))

    # training ran 4 steps on 4 ranks through the pipeline, with a measured trace
    train = summary["training"]
    assert train["steps"] == 4 and train["median_frames_per_s"] > 0
    assert train["pipeline_program"].startswith("wavek")
    assert 0.0 <= train["pipeline_bubble_measured"] < 1.0
    for name in ("metrics.jsonl", "config.yaml", "learning_curve.png"):
        assert (out / "train" / name).is_file(), name
    assert list((out / "train").glob("pipeline_trace_step*.png"))

    # the test MAE comes from every frame of the held-out test split
    test = summary["test"]
    assert test["n_frames"] == len(splits["test"])
    assert all(np.isfinite(test[k]) for k in ("energy_mae_mev_atom", "forces_mae_mev_a"))
    evaluated = json.loads((out / "eval" / "eval_test.json").read_text())
    assert evaluated["split"] == "test" and (out / "eval" / "parity_test.png").is_file()

    # MD of a test-split structure with the exported checkpoint
    md = summary["md"]
    assert md["ensemble"] == "nvt" and md["steps"] == 6 and md["ms_per_step"] > 0
    assert (out / "md" / "thermo.png").is_file() and (out / "model.pt").is_file()
    assert "demo summary" in (out / "summary.md").read_text()
