"""train.max_edges under mpirun: DP ranks share the edge count and train on capped batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from matris.train.testing import build_emt_dataset

REPO = Path(__file__).resolve().parents[3]
TINY = str(REPO / "configs" / "tiny.yaml")
pytestmark = pytest.mark.mpi


def test_dp2_run_with_max_edges_counts_once_and_trains(mpirun, tmp_path):
    from matris.train.checkpointing import list_checkpoints, load_part
    from matris.train.edge_counts import cache_path, count_edges

    root = build_emt_dataset(tmp_path / "ds", n=32, seed=6)
    out = tmp_path / "run"
    proc = mpirun(2, ["-m", "matris.train.cli", TINY, f"data.root={root}", f"log.out={out}",
                      "parallel.dp=2", "train.dtype=float64", "train.steps=3",
                      "train.max_atoms=64", "train.max_edges=800", "log.every=1",
                      "log.val_every=0", "log.progress=false", "log.plots=false",
                      "checkpoint.every=0", "data.val_max_frames=8"], timeout=240)
    assert proc.stdout.count("counting graph edges") == 1  # rank 0 reports the shared count
    from matris.config import preset
    from matris.datasets import ShardedDataset

    ds, cutoff = ShardedDataset(root), preset("tiny").cutoff  # configs/tiny.yaml's model
    want = count_edges(ds, cutoff, np.arange(len(ds)))
    assert np.array_equal(np.load(cache_path(root, cutoff)), want)
    step, path = list_checkpoints(out / "checkpoints")[-1]
    assert step == 3
    a, b = (load_part(path / f"rank{r:05d}.pt") for r in range(2))
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), f"DP replicas diverged: {name}"
