"""matris-train end to end (subprocesses): exact resume, export, config errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matris.train.checkpointing import list_checkpoints, load_part
from matris.train.metrics import read_metrics
from matris.train.testing import build_emt_dataset

REPO = Path(__file__).resolve().parents[3]
TINY = str(REPO / "configs" / "tiny.yaml")


def train(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "matris.train.cli", *args], capture_output=True,
                          text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def emt_root(tmp_path_factory):
    return build_emt_dataset(tmp_path_factory.mktemp("emt") / "ds", n=40, seed=1)


def _common(root, out):
    return [TINY, f"data.root={root}", f"log.out={out}", "train.dtype=float64", "train.steps=10",
            "parallel.microbatches=2", "train.max_atoms=24", "optim.warmup_steps=3",
            "log.val_every=0", "log.every=2", "log.progress=false", "log.plots=false",
            "checkpoint.every=4", "data.val_max_frames=8"]


def _final_part(run: Path) -> dict:
    step, path = list_checkpoints(run / "checkpoints")[-1]
    assert step == 10
    return load_part(path / "rank00000.pt")


@pytest.mark.slow
def test_resume_is_bitwise_identical(emt_root, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(*_common(emt_root, straight))
    first = train(*_common(emt_root, split), "train.stop_at=5", "data.num_workers=1")
    assert "stopped at step 5" in first.stdout
    assert not (split / "model.pt").exists()
    second = train(*_common(emt_root, split), "--resume")
    assert "at step 5" in second.stdout
    a, b = _final_part(straight), _final_part(split)
    mid = load_part(list_checkpoints(split / "checkpoints")[0][1] / "rank00000.pt")
    for name, value in a["model"].items():
        assert value.dtype == torch.float64
        assert torch.equal(value, b["model"][name]), name
        assert torch.equal(a["ema"]["shadow"][name], b["ema"]["shadow"][name]), name
    # ... and training did move the weights after the resume point.
    assert any(not torch.equal(v, a["model"][k]) for k, v in mid["model"].items())
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert a["sampler"] == b["sampler"]
    # The metrics log of the split run has each step once, with the straight run's losses.
    la = {r["step"]: r["loss"] for r in read_metrics(straight / "metrics.jsonl", "train")}
    steps_b = [r["step"] for r in read_metrics(split / "metrics.jsonl", "train")]
    assert len(steps_b) == len(set(steps_b))
    lb = {r["step"]: r["loss"] for r in read_metrics(split / "metrics.jsonl", "train")}
    assert all(lb[k] == la[k] for k in la) and set(la) <= set(lb)
    # The exported inference checkpoint holds the EMA weights; `matris-train export` of
    # the run directory writes the same weights again.
    from matris.checkpoint import load_checkpoint

    model = load_checkpoint(split / "model.pt")
    assert model.checkpoint_extra["step"] == 10 and model.checkpoint_extra["ema"] is True
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), b["ema"]["shadow"][name]), name
    proc = train("export", str(split), "--out", str(tmp_path / "again.pt"))
    assert "exported" in proc.stdout
    again = load_checkpoint(tmp_path / "again.pt")
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(("override", "key"), [("optim.lr=-1", "optim.lr"),
                                                ("parallel.schedule=zb", "parallel.schedule"),
                                                ("train.max_atom=3", "train.max_atom")])
def test_bad_config_exits_2_naming_the_key(override, key):
    proc = train(TINY, override, check=False)
    assert proc.returncode == 2
    assert key in proc.stderr and "Traceback" not in proc.stderr


def test_missing_dataset_is_reported(tmp_path):
    proc = train(TINY, f"data.root={tmp_path / 'none'}", f"log.out={tmp_path}", check=False)
    assert proc.returncode == 2
    assert "data.root" in proc.stderr and "manifest.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_split_is_reported(emt_root, tmp_path):
    proc = train(TINY, f"data.root={emt_root}", "data.val_split=valid", f"log.out={tmp_path}",
                 check=False)
    assert proc.returncode == 2
    assert "data.val_split='valid'" in proc.stderr, proc.stderr
