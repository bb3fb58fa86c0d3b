"""``matris-train costs``: a cost bundle measured on the config's own model and data, which
the trainer's ``parallel.costs`` accepts and wavek schedules with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matris.train.cli import main
from matris.train.costs_cli import pick_frames
from matris.train.pipeline.costs import load_costs
from matris.train.pipeline.executor import build_program
from matris.train.testing import build_emt_dataset

TINY = str(Path(__file__).resolve().parents[3] / "configs" / "tiny.yaml")


def test_pick_frames_spreads_and_respects_the_atom_cap():
    natoms = np.array([10, 30, 5, 5, 40, 8, 8, 8])
    picked = pick_frames(natoms, max_atoms=30, max_frames=3)
    assert picked == sorted(picked) and len(picked) == 3
    assert sum(natoms[picked]) <= 30
    assert pick_frames(np.array([100]), max_atoms=10, max_frames=4) == [0]  # one at least
    with pytest.raises(ValueError, match="empty"):
        pick_frames(np.array([], dtype=int), 10, 2)


def test_costs_command_writes_a_bundle_wavek_uses(tmp_path, capsys):
    root = build_emt_dataset(tmp_path / "ds", n=12, seed=3)
    out = tmp_path / "costs.json"
    # train.device=auto (the default) resolves as the launcher does (CPU here).
    assert main(["costs", TINY, f"data.root={root}", "model.overrides.num_blocks=4",
                 "train.dtype=float64", "train.max_atoms=40", "train.device=auto",
                 "--out", str(out), "--repeats", "1", "--frames", "3"]) == 0
    assert "parallel.costs=" in capsys.readouterr().out
    models = load_costs(out)
    assert set(models) == {"eager", "lazy"} and models["lazy"].lazy_p3
    eager = models["eager"]
    assert eager.num_stages == 6                 # embedding, 4 single blocks, readout
    assert all(t[0] > 0 and t[2] > 0 for t in eager.stage_times[1:])
    assert 0 < eager.w_frac["P3"] < 1 and eager.split_factor["P3"] >= 1
    assert min(eager.mem_a) > 0 and len(eager.stage_overhead) == 4
    # The W queues of the block stages hold new gradient factors (eager: both orders;
    # lazy: P3 is never split).
    lazy = models["lazy"]
    assert min(eager.mem_q3[1:5]) > 0 and min(eager.mem_q4[1:5]) > 0
    assert max(lazy.mem_q3) == 0 and min(lazy.mem_q4[1:5]) > 0
    # The file records the measured cuts, so its stage costs are those of real cuts.
    assert eager.unit_cuts == (0, 1, 2, 3, 4) and eager.model_blocks == 4
    # The readout alone is a small stage; the fused turn is measured on the whole model.
    assert sum(eager.stage_times[5]) < 0.5 * sum(eager.stage_times[4])
    assert 0 < eager.fused_factor < 2
    # Every unit measured: a wave on all 6 (P = 3) is priced, readout stage alone included.
    assert build_program("hanayo4", 3, 6, 4, costs=eager).num_stages == 6
    # With a measured file wavek weighs the wave placement too (6 measured stages ≥ 2P);
    # with the built-in profile it keeps the linear V. It searches the W split with a file
    # tied to cuts (its memory sizes are the runner's stages), not with depth-share costs
    # unless asked (search_w).
    measured = build_program("wavek", 2, 4, 4, costs=eager).meta["candidates"]
    default = build_program("wavek", 2, 4, 4, search_w=True).meta["candidates"]
    untied = build_program("wavek", 2, 4, 4, costs=eager.untied()).meta["candidates"]
    searched = build_program("wavek", 2, 4, 4, costs=eager.untied(),
                             search_w=True).meta["candidates"]
    assert {c["waves"] for c in measured} == {0, 1} and {c["waves"] for c in default} == {0}
    assert {c["split_w"] for c in searched} == {c["split_w"] for c in measured} == {False, True}
    assert {c["split_w"] for c in untied} == {c["split_w"] for c in default} == {False}
    with pytest.raises(ValueError, match="measured on a model with 4 interaction blocks"):
        build_program("wavek", 2, 4, 6, costs=eager)
    assert main(["costs", TINY, f"data.root={root}", "--out", str(out), "--repeats", "0"]) == 2


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU refusal")
def test_costs_command_refuses_bf16_without_a_gpu(tmp_path, capsys):
    out = tmp_path / "costs.json"
    assert main(["costs", TINY, f"data.root={tmp_path}", "train.device=auto",
                 "train.dtype=bf16", "--out", str(out)]) == 2
    assert "bf16 autocast needs a CUDA device" in capsys.readouterr().err
    assert not out.exists()
