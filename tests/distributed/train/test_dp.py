"""Data parallelism under mpirun: exact gradients, and a DP=2 run that stops and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from matris.train.testing import build_emt_dataset

SCRIPTS = Path(__file__).parent / "scripts"
pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def emt_root(tmp_path_factory):
    return build_emt_dataset(tmp_path_factory.mktemp("emt") / "ds", n=40, seed=5)


def test_dp2_gradients_equal_serial_on_union(mpirun, emt_root, tmp_path):
    mpirun(2, [str(SCRIPTS / "dp_grads.py"), str(emt_root), str(tmp_path)], timeout=240)
    saved = torch.load(tmp_path / "grads.pt", weights_only=True)
    dp, serial = saved["dp"], saved["serial"]
    # The two ranks' label sets differ (one stress, one energy, one force label missing):
    # 3 + 5 frames, energy labels on 7 of them, stress on 7.
    assert saved["counts"]["energy"] == 7 and saved["counts"]["stress"] == 63
    assert set(dp) == set(serial)
    num = sum(float((dp[k] - serial[k]).square().sum()) for k in dp) ** 0.5
    den = sum(float(serial[k].square().sum()) for k in dp) ** 0.5
    assert den > 0
    assert num / den < 1e-10, f"relative gradient difference {num / den:.3e}"
    for k in dp:  # and per tensor, so a small tensor cannot hide in the global norm
        scale = float(serial[k].abs().max())
        assert float((dp[k] - serial[k]).abs().max()) <= 1e-10 * max(scale, 1e-30) + 1e-300, k


REPO = Path(__file__).resolve().parents[3]
TINY = str(REPO / "configs" / "tiny.yaml")


def _args(root, out, *extra):
    return ["-m", "matris.train.cli", TINY, f"data.root={root}", f"log.out={out}",
            "parallel.dp=2", "train.dtype=float64", "train.steps=6", "train.max_atoms=24",
            "log.val_every=3", "log.every=1", "log.progress=false", "log.plots=false",
            "checkpoint.every=0", "data.val_max_frames=8", *extra]


@pytest.mark.slow
def test_dp2_cli_run_stop_and_resume_is_exact(mpirun, emt_root, tmp_path):
    from matris.train.checkpointing import list_checkpoints, load_part

    straight, split = tmp_path / "straight", tmp_path / "split"
    mpirun(2, _args(emt_root, straight))
    mpirun(2, _args(emt_root, split, "train.stop_at=3"))
    proc = mpirun(2, _args(emt_root, split, "--resume"))
    assert "at step 3" in proc.stdout
    parts = {}
    for run in (straight, split):
        step, path = list_checkpoints(run / "checkpoints")[-1]
        assert step == 6
        parts[run] = [load_part(path / f"rank{r:05d}.pt") for r in range(2)]
    a0, a1 = parts[straight]
    b0, b1 = parts[split]
    assert a0["coord"] == [0, 0, 0] and a1["coord"] == [1, 0, 0]
    for name, value in a0["model"].items():
        assert torch.equal(value, a1["model"][name]), f"DP replicas diverged: {name}"
        assert torch.equal(value, b0["model"][name]) and torch.equal(value, b1["model"][name])
    assert (straight / "model.pt").is_file() and (split / "model.pt").is_file()


def test_parallel_degrees_must_match_ranks(mpirun, emt_root, tmp_path):
    proc = mpirun(2, ["-m", "matris.train.cli", TINY, f"data.root={emt_root}",
                      f"log.out={tmp_path}", "parallel.dp=3"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("parallel.pp × parallel.dp × parallel.gp = 1 × 3 × 1 = 3") == 1
    assert "2 ranks" in proc.stderr
