"""Graph parallelism under mpirun (gloo, CPU, float64): GP = 2 and 4 equal the serial
model (outputs, validation predictions and the gradients of the full E + F + σ loss
through the double backward), DP = 2 × GP = 2 through the trainer's step, and a failing
rank aborts the job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from matris.train.graph_parallel.testing import CASES, relative_error
from matris.train.testing import build_emt_dataset

SCRIPTS = Path(__file__).parent / "scripts"
TOL = 1e-10
pytestmark = pytest.mark.mpi


def _check(report: dict, G: int) -> None:
    assert set(report) == set(CASES)
    for case, r in report.items():
        for key, err in r["errors"].items():
            assert err < TOL, f"G={G} {case} {key}: relative error {err:.2e}"
        assert r["grad_scale"] > 1e-3, "gradients must not be trivially zero"
        assert r["replicas_identical"], f"{case}: totals differ between ranks"
        assert r["cut_bonds"] > 0, f"{case}: the partition cut no bond (nothing tested)"
        assert len(r["parts"]) == G
    assert report["tiny"]["empty_part"] == (G == 4), "3 atoms in 4 parts: one part is empty"
    assert {"stress"} <= set(report["triclinic"]["errors"]), "stress compared on cells"


@pytest.mark.parametrize("G,method", [(2, "p2p"), (4, "alltoall")])
def test_gp_equals_serial(mpirun, tmp_path, G, method):
    mpirun(G, [str(SCRIPTS / "gp_equal.py"), str(tmp_path), method], timeout=300)
    _check(json.loads((tmp_path / "result.json").read_text()), G)


def test_dp2_gp2_trainer_gradients_equal_serial(mpirun, tmp_path):
    root = build_emt_dataset(tmp_path / "emt" / "ds", n=8, seed=5)
    mpirun(4, [str(SCRIPTS / "gp_trainer.py"), str(root), str(tmp_path)], timeout=300)
    saved = torch.load(tmp_path / "grads.pt", weights_only=True)
    assert saved["identical"], "every rank must hold the same all-reduced gradient"
    assert saved["counts"]["stress"] == 9 * 5 and saved["counts"]["energy"] == 5
    assert max(float(v.abs().max()) for v in saved["serial"].values()) > 1e-3
    err = relative_error(saved["gp"], saved["serial"])
    assert err < TOL, f"DP×GP gradients: relative error {err:.2e}"
    assert relative_error(saved["sums"], saved["serial_sums"]) < TOL


def test_failing_rank_aborts_the_group(mpirun):
    start = time.monotonic()
    proc = mpirun(2, [str(SCRIPTS / "gp_raise.py")], timeout=110, check=False)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "[rank 1] RuntimeError: injected failure in the bond exchange" in proc.stderr
    assert "UNREACHABLE" not in proc.stdout
    assert elapsed < 60, f"abort took {elapsed:.0f} s"
