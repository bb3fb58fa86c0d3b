"""The CUDA paths, for a machine with a GPU (skipped elsewhere).

Run them with ``.venv/bin/python -m pytest -q tests/gpu`` on a GPU machine (``make
gpu-check`` runs them and measures the GPU phase costs). ``MATRIS_TEST_DEVICE=cpu`` runs
the same test bodies on the CPU (the bf16 test excepted), which checks the tests
themselves where no GPU is at hand.

* the serial double backward on the device equals the CPU's (float64);
* the pipeline's four-phase compute on the device (every rank in this process) equals
  the serial CPU gradients, for several schedules;
* a bf16-autocast step is finite, keeps fp32 master weights and stays near fp32;
* the phase-cost measurement runs on the device (times wait for the device);
* ``matris-train`` trains a few steps on one GPU in bf16, single process.

NCCL needs one GPU per rank: the mpirun tests with ``train.device=cuda`` need two GPUs
(``test_two_rank_pipeline_over_nccl``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matris.config import preset
from matris.testing import random_model
from matris.train.config import LossConfig
from matris.train.graph_parallel.testing import loss_config, relative_error
from matris.train.pipeline.measure import cost_models, measure_runs
from matris.train.pipeline.testing import (
    counts_of,
    grads,
    in_process_step,
    make_program,
    microbatches,
    serial_gradients,
)
from matris.train.step import LocalRunner

DEVICE = torch.device(os.environ.get("MATRIS_TEST_DEVICE", "cuda"))
REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")
# float64 on a GPU: atomic scatter-adds sum in another order than the CPU.
TOL = 1e-9

pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(),
    reason="no CUDA device (MATRIS_TEST_DEVICE=cpu runs these tests' bodies on the CPU)")


def on_device(batches, dtype):
    return [b.to(DEVICE, dtype) for b in batches]


def cpu(tensors: dict) -> dict:
    return {k: v.detach().cpu() for k, v in tensors.items()}


@pytest.fixture(scope="module")
def reference():
    """(model, loss, 3 micro-batches, serial CPU float64 gradients and loss sums)."""
    model = random_model(preset("tiny", num_blocks=2), seed=3)
    loss = loss_config()
    batches = microbatches(3)
    ref, ref_sums = serial_gradients(model, batches, loss)
    assert max(float(v.abs().max()) for v in ref.values()) > 1e-3
    return model, loss, batches, ref, ref_sums


def test_serial_double_backward_on_device_equals_cpu(reference):
    model, loss, batches, ref, ref_sums = reference
    dev = copy.deepcopy(model).to(DEVICE)
    dev.zero_grad(set_to_none=True)
    result = LocalRunner(dev, loss, DEVICE, "float64").run(
        on_device(batches, torch.float64), counts_of(batches))
    assert relative_error(cpu(grads(dev)), ref) < TOL
    for k, v in ref_sums.items():
        assert math.isclose(result.sums[k], v, rel_tol=TOL), k


@pytest.mark.parametrize("name,options", [
    ("gpipe4", {}), ("symfold", {"split_w": True}), ("symfold", {"lazy_p3": True}),
    ("wavek", {"lazy_p3": True}), ("hanayo4", {"split_w": True})])
def test_pipeline_phases_on_device_equal_serial_cpu(reference, name, options):
    model, loss, batches, ref, _ = reference
    dev = copy.deepcopy(model).to(DEVICE)
    prog = make_program(name, 2, len(batches), dev.num_blocks, options)
    g, _, walkers = in_process_step(dev, prog, on_device(batches, torch.float64), loss)
    assert relative_error(cpu(g), ref) < TOL
    assert all(s.end >= s.start for w in walkers for s in w.slices)


@pytest.mark.skipif(DEVICE.type != "cuda", reason="bf16 autocast is CUDA only")
def test_bf16_autocast_step_is_finite_and_near_fp32(reference):
    model, loss, batches, _, _ = reference
    runs = {}
    for mode in ("float32", "bf16"):
        dev = copy.deepcopy(model).float().to(DEVICE)
        dev.zero_grad(set_to_none=True)
        result = LocalRunner(dev, loss, DEVICE, mode).run(
            on_device(batches, torch.float32), counts_of(batches))
        assert all(p.dtype == torch.float32 for p in dev.parameters())  # master weights
        g = cpu(grads(dev))
        assert all(torch.isfinite(v).all() for v in g.values()), mode
        runs[mode] = (result.sums, g)
    (s32, g32), (s16, g16) = runs["float32"], runs["bf16"]
    for k, v in s32.items():
        assert math.isfinite(s16[k]) and abs(s16[k] - v) <= 0.1 * abs(v) + 1e-6, (k, s16[k], v)
    # bf16 keeps ~3 significant digits: gradients agree loosely, but they agree.
    assert relative_error(g16, g32) < 0.2


def test_phase_costs_measure_on_device():
    model = random_model(preset("tiny", num_blocks=2), seed=1).float().to(DEVICE)
    batch = microbatches(1, dtype=torch.float32)[0].to(DEVICE, torch.float32)
    res = measure_runs(model, batch, LossConfig(), repeats=1, log=None)
    eager = cost_models(res, f"tiny on {DEVICE}")["eager"]
    assert eager.num_stages == 4  # embedding, 2 blocks, readout
    assert all(t[0] > 0 and t[2] > 0 for t in eager.stage_times[1:3])
    assert min(eager.mem_a) > 0 and res["boundary"]["h"] > 0


def test_trainer_trains_on_one_device(tmp_path):
    from matris.train.testing import build_emt_dataset

    root = build_emt_dataset(tmp_path / "ds", n=24, seed=1)
    out = tmp_path / "run"
    dtype = "bf16" if DEVICE.type == "cuda" else "float32"
    proc = subprocess.run(
        [sys.executable, "-m", "matris.train.cli", TINY, f"data.root={root}",
         f"log.out={out}", f"train.device={DEVICE.type}", f"train.dtype={dtype}",
         "train.steps=4", "train.max_atoms=24", "optim.warmup_steps=1", "log.val_every=0",
         "log.every=1", "log.progress=false", "log.plots=false", "checkpoint.every=4",
         "data.val_max_frames=4"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("kind") == "train"]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert (out / "model.pt").exists()


@pytest.mark.skipif(DEVICE.type != "cuda" or torch.cuda.device_count() < 2,
                    reason="NCCL needs one GPU per rank: two GPUs")
def test_two_rank_pipeline_over_nccl(tmp_path):
    from matris.train.testing import build_emt_dataset

    root = build_emt_dataset(tmp_path / "ds", n=24, seed=1)
    out = tmp_path / "run"
    mpirun = Path(sys.executable).parent / "mpirun"
    proc = subprocess.run(
        [str(mpirun), "-n", "2", sys.executable, "-m", "matris.train.cli", TINY,
         f"data.root={root}", f"log.out={out}", "train.device=cuda", "train.dtype=bf16",
         "parallel.pp=2", "parallel.microbatches=2", "parallel.schedule=wavek",
         "train.steps=3", "train.max_atoms=24", "log.val_every=0", "log.every=1",
         "log.progress=false", "log.plots=false", "checkpoint.every=3",
         "data.val_max_frames=4"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "pipeline_trace_step2.json").exists()
