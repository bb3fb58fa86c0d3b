"""MatRIS-MoE through the pipeline executor under mpirun (gloo, CPU, float64).

PP = 2: every schedule and variant; PP = 2 × DP = 2: replicas route to different experts
(the gradient all-reduce zero-fills untouched experts). Gradients of E + F + σ + magmom
loss plus the balance loss (weight > 0, added per stage by the trainer recipe of
docs/moe.md) equal the serial ones to 1e-10.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
TOL = 1e-10
ALL = ["gpipe4", "1f1b4", "hanayo4", "symfold", "wavek"]
pytestmark = pytest.mark.mpi


def _run(mpirun, tmp_path, pp, dp, M, schedules, w_aux=0.05, timeout=500) -> dict:
    mpirun(pp * dp, ["-W", "ignore::FutureWarning", str(SCRIPTS / "moe_pp_equal.py"),
                     str(tmp_path), str(pp), str(dp), str(M), str(w_aux), *schedules],
           timeout=timeout)
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["expert_grad_scale"] > 1e-4, "expert gradients must not be trivially zero"
    assert report["runs"], "nothing ran"
    for key, r in report["runs"].items():
        assert r["err"] < TOL, f"{key} {r['program']}: gradient relative error {r['err']:.2e}"
    return report


@pytest.mark.slow
def test_moe_pp2_every_schedule(mpirun, tmp_path):
    report = _run(mpirun, tmp_path, 2, 1, 3, ALL)
    assert len(report["runs"]) == 16


@pytest.mark.slow
def test_moe_pp2_dp2(mpirun, tmp_path):
    report = _run(mpirun, tmp_path, 2, 2, 2, ["symfold:eager", "wavek:lazy"])
    # Some experts got no gradient on some rank before the all-reduce (sparse routing).
    touched = report["runs"]["symfold:eager"]["touched"]
    assert any(t < n for t, n in touched)


CONFIG = Path(__file__).resolve().parents[3] / "configs" / "tiny-moe.yaml"


@pytest.fixture(scope="module")
def emt_root(tmp_path_factory):
    from matris.train.testing import build_emt_dataset

    return build_emt_dataset(tmp_path_factory.mktemp("emt") / "ds", n=16, seed=6)


@pytest.mark.slow
def test_trainer_cli_trains_moe_from_yaml_pp2_dp2(mpirun, emt_root, tmp_path):
    """`matris-train configs/tiny-moe.yaml` on 4 ranks (PP = 2 × DP = 2): steps with the
    balance term, the step's mean aux logged, an exported MoE inference checkpoint."""
    from matris.checkpoint import load_checkpoint
    from matris.nn.moe import moe_layers
    from matris.train.metrics import read_metrics

    mpirun(4, ["-W", "ignore::FutureWarning", "-m", "matris.train.cli", str(CONFIG),
               f"data.root={emt_root}", f"log.out={tmp_path}", "parallel.pp=2",
               "parallel.dp=2", "parallel.microbatches=2", "loss.weights.moe_balance=0.05",
               "train.steps=2", "train.max_atoms=12", "log.every=1", "log.progress=false",
               "log.plots=false", "log.tensorboard=false", "checkpoint.every=0",
               "data.val_split=null"], timeout=400)
    rows = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["moe_balance"] > 0 and r["loss"] > 0 for r in rows)
    model = load_checkpoint(tmp_path / "model.pt")
    assert model.config.moe_config.num_experts == 4 and len(moe_layers(model)) == 12
