"""The four-phase pipeline executor under mpirun (gloo, CPU, float64).

Every schedule (gpipe4, 1f1b4, hanayo4, symfold, wavek) with its variants (eager / lazy
P3, fused turn, W split) on P = 1, 2, 4 pipeline ranks, PP = 2 × DP = 2 and PP = 2 × GP =
2: the parameter gradients of the E + F + σ + magmom loss over several micro-batches of
different structures equal the serial double backward (relative error < 1e-10), and so do
the loss sums and the validation predictions. One mpirun job loops over all schedules of
a topology. Also: emulated compute at P = 4 against the simulator, the CLI training loop
with PP = 2 (= the serial run; stop + resume = straight; export), a failing rank aborts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from matris.train.graph_parallel.testing import relative_error
from matris.train.testing import build_emt_dataset

SCRIPTS = Path(__file__).parent / "scripts"
REPO = Path(__file__).resolve().parents[3]
TOL = 1e-10
ALL = ["gpipe4", "1f1b4", "hanayo4", "symfold", "wavek"]
pytestmark = pytest.mark.mpi


def _run(mpirun, tmp_path, pp, dp, gp, blocks, M, schedules, timeout=400) -> dict:
    mpirun(pp * dp * gp, ["-W", "ignore::FutureWarning", str(SCRIPTS / "pp_equal.py"),
                          str(tmp_path), str(pp), str(dp), str(gp), str(blocks), str(M),
                          *schedules], timeout=timeout)
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["grad_scale"] > 1e-3, "gradients must not be trivially zero"
    assert report["runs"], "nothing ran"
    for key, r in report["runs"].items():
        assert r["err"] < TOL, f"{key} {r['program']}: gradient relative error {r['err']:.2e}"
        assert r["sums_err"] < TOL, f"{key}: loss sums differ ({r['sums_err']:.2e})"
    for errs in report["evaluate_err_all"]:
        assert set(errs) >= {"energy", "forces", "magmoms"}
        for k, e in errs.items():
            assert e < TOL, f"evaluate {k}: {e:.2e}"
    return report


def _variants_ran(report: dict) -> None:
    """The runs exercised what they claim: lazy / fused / W kinds appear where set."""
    for key, r in report["runs"].items():
        if "fused" in key:
            assert "P34" in r["kinds"], key
        if "+W" in key and "S=1," not in r["program"]:  # one fused stage has no W part
            assert {"W3", "W4"} & set(r["kinds"]), key
        if "lazy" in key:
            assert "W3" not in r["kinds"], key
        if "W-part" in key:
            assert "unsplit" in r["program"], key


@pytest.mark.slow
def test_p1_every_schedule(mpirun, tmp_path):
    """One rank (hanayo4 / wavek still place 2 stages on it: local hand-offs)."""
    report = _run(mpirun, tmp_path, 1, 1, 1, 2, 3, ALL)
    _variants_ran(report)
    assert report["runs"]["hanayo4:eager"]["program"].startswith("hanayo4 (P=1, S=2")


@pytest.mark.slow
def test_p2_every_schedule(mpirun, tmp_path):
    report = _run(mpirun, tmp_path, 2, 1, 1, 2, 3, ALL)
    _variants_ran(report)
    assert len(report["runs"]) == 16
    assert report["trace"]["makespan"] > 0 and (tmp_path / "trace_gpipe4.png").is_file()


@pytest.mark.slow
def test_p4_every_schedule(mpirun, tmp_path):
    """Four ranks, a 6-block model (8 units: hanayo4's 8 stages fit)."""
    report = _run(mpirun, tmp_path, 4, 1, 1, 6, 4, ALL, timeout=600)
    _variants_ran(report)
    assert "S=8" in report["runs"]["hanayo4:eager"]["program"]


@pytest.mark.slow
def test_p2_four_chunks_per_rank(mpirun, tmp_path):
    """Two waves on a 6-block model (8 units): each rank hosts four stages and the
    micro-batch path crosses the ranks 7 times per sweep (hanayo4 with 2 waves, wavek
    placed on 2 waves, and wavek searching 0-2 waves with the built-in profile)."""
    report = _run(mpirun, tmp_path, 2, 1, 1, 6, 4, [
        'hanayo4:{"waves": 2}', 'hanayo4:{"waves": 2, "split_w": true, "lazy_p3": true}',
        'wavek:{"waves": 2}', 'wavek:{"waves": 2, "lazy_p3": true, "fused_turn": true}',
        'wavek:{"max_waves": 2}'])
    assert len(report["runs"]) == 5
    for key, r in report["runs"].items():
        if '"waves": 2' in key:
            assert "S=8" in r["program"], (key, r["program"])
    assert "P34" in report["runs"]['wavek:{"waves": 2, "lazy_p3": true, "fused_turn": true}'][
        "kinds"]


@pytest.mark.slow
def test_pp2_dp2(mpirun, tmp_path):
    """Each DP replica has its own micro-batches; counts are global; gradients are
    all-reduced over the stage group as in the trainer."""
    report = _run(mpirun, tmp_path, 2, 2, 1, 2, 2, ALL)
    assert len(report["runs"]) == 16


@pytest.mark.slow
def test_pp2_gp2(mpirun, tmp_path):
    """Each rank holds a graph part of every micro-batch (cut bonds, halos)."""
    report = _run(mpirun, tmp_path, 2, 1, 2, 2, 3, ALL)
    assert len(report["runs"]) == 16
    assert report["gp_cut_bonds"] > 0, "the partition cut no bond: GP not exercised"


@pytest.mark.slow
def test_emulated_p4_makespan_matches_simulator(mpirun, tmp_path):
    """symfold, 1f1b4 lazy, and wavek, which splits W for some phases only here."""
    mpirun(4, [str(SCRIPTS / "pp_emulate.py"), str(tmp_path), "4", "25", "1", "-",
               "symfold", "1f1b4:lazy", "wavek"], timeout=300)
    report = json.loads((tmp_path / "emulated.json").read_text())
    assert "unsplit" in report["runs"]["wavek"]["program"]
    for key, r in report["runs"].items():
        assert 0.9 < r["ratio"] < 1.1, f"{key}: measured {r['measured_s']:.3f} s vs " \
                                       f"simulated {r['simulated_s']:.3f} s"


def _cli(root, out, pp, *extra):
    return ["-m", "matris.train.cli", str(REPO / "configs" / "tiny.yaml"), f"data.root={root}",
            f"log.out={out}", f"parallel.pp={pp}", "parallel.microbatches=2",
            "parallel.schedule=symfold", "train.dtype=float64", "train.steps=4",
            "train.max_atoms=16", "log.val_every=2", "log.every=1", "log.progress=false",
            "log.plots=false", "checkpoint.every=2", "data.val_max_frames=4", *extra]


@pytest.mark.slow
def test_pp2_training_run_equals_serial_and_resumes(mpirun, tmp_path):
    """The whole loop (4 AdamW steps, validation, checkpoints, export) with PP = 2 ends at
    the serial run's parameters; stop at step 2 + resume = straight; the export merges
    the two stages into one loadable model."""
    from matris.checkpoint import load_checkpoint
    from matris.train.checkpointing import list_checkpoints, load_part
    from matris.train.metrics import read_metrics

    root = build_emt_dataset(tmp_path / "emt" / "ds", n=16, seed=6)
    mpirun(1, _cli(root, tmp_path / "serial", 1))
    mpirun(2, _cli(root, tmp_path / "pp2", 2))
    mpirun(2, _cli(root, tmp_path / "resumed", 2, "train.stop_at=2"))
    mpirun(2, [*_cli(root, tmp_path / "resumed", 2), "--resume"])

    def final(run, ranks):
        step, path = list_checkpoints(tmp_path / run / "checkpoints")[-1]
        assert step == 4
        parts = [load_part(path / f"rank{r:05d}.pt") for r in range(ranks)]
        merged = {}
        for p in parts:
            assert not set(merged) & set(p["model"]), "a parameter on two stages"
            merged.update(p["model"])
        return merged, parts

    serial, _ = final("serial", 1)
    pp, parts = final("pp2", 2)
    _, rparts = final("resumed", 2)
    assert set(pp) == set(serial), "the stages together hold every trained parameter"
    err = relative_error(pp, serial)
    assert err < 1e-9, f"final parameters: relative error {err:.2e}"
    for a, b in zip(parts, rparts, strict=True):  # bitwise: weights, EMA, Adam moments
        for name in a["model"]:
            assert torch.equal(a["model"][name], b["model"][name]), f"resume: {name}"
            assert torch.equal(a["ema"]["shadow"][name], b["ema"]["shadow"][name]), name
        for i, st in a["optimizer"]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)
    for kind in ("train", "val"):
        ref = read_metrics(tmp_path / "serial" / "metrics.jsonl", kind)
        got = read_metrics(tmp_path / "pp2" / "metrics.jsonl", kind)
        assert len(ref) == len(got) > 0, kind
        for a, b in zip(ref, got, strict=True):
            for k in [k for k in a if k.startswith("loss") or "_mae_" in k]:
                assert b[k] == pytest.approx(a[k], rel=1e-9, abs=1e-12), (kind, a["step"], k)
    from matris.train.pipeline.trace import read_trace

    trace = read_trace(tmp_path / "pp2" / "pipeline_trace_step2.json")  # measured, merged
    assert {s.device for s in trace} == {0, 1} and (tmp_path / "pp2" /
                                                   "pipeline_trace_step2.png").is_file()
    exported = load_checkpoint(tmp_path / "pp2" / "model.pt")
    ref_model = load_checkpoint(tmp_path / "serial" / "model.pt")
    for (n, a), (_, b) in zip(exported.state_dict().items(), ref_model.state_dict().items(),
                              strict=True):
        assert float((a - b).abs().max()) <= 1e-9 * max(1.0, float(b.abs().max())), n


def test_failing_rank_aborts_the_pipeline(mpirun):
    start = time.monotonic()
    proc = mpirun(2, [str(SCRIPTS / "pp_raise.py")], timeout=110, check=False)
    assert proc.returncode != 0
    assert "[rank 1] RuntimeError: injected failure in P2" in proc.stderr
    assert "UNREACHABLE" not in proc.stdout
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_pp2_dp2_gp2_three_dimensional(mpirun, tmp_path):
    """All three axes at once (8 ranks): each DP replica's micro-batches are split into
    graph parts, and each part flows through the 2-stage pipeline (wavek and symfold)."""
    report = _run(mpirun, tmp_path, 2, 2, 2, 2, 2, ["wavek", "symfold"], timeout=600)
    assert len(report["runs"]) >= 2
    assert report["gp_cut_bonds"] > 0, "the partition cut no bond: GP not exercised"
