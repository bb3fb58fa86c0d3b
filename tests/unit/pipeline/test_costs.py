"""Cost models: resampling, durations, JSON files, default profiles."""

from __future__ import annotations

import json
import math

import pytest

from matris.train.pipeline.actions import Kind
from matris.train.pipeline.costs import CostModel, load_costs, save_costs, toy_profile, uniform


def test_resample_splits_stages_and_keeps_totals():
    cm = CostModel(stage_times=((1, 2, 3, 4), (5, 6, 7, 8)), mem_a=(1, 3), mem_ap=(2, 2))
    fine = cm.for_stages(4)
    assert fine.stage_times == ((0.5, 1, 1.5, 2),) * 2 + ((2.5, 3, 3.5, 4),) * 2
    assert fine.mem_a == (0.5, 0.5, 1.5, 1.5)
    coarse = cm.for_stages(1)
    assert coarse.stage_times == ((6, 8, 10, 12),)
    odd = cm.for_stages(3)
    assert sum(map(sum, odd.stage_times)) == pytest.approx(36)


def test_resample_keeps_the_fixed_stage_overhead():
    """Only the depth-proportional part is split: a finer cut pays the overhead per stage."""
    cm = CostModel(stage_times=((3, 3, 5, 1),) * 2, stage_overhead=(1, 1, 1, 0))
    fine = cm.for_stages(4)
    assert fine.stage_times == ((2, 2, 3, 0.5),) * 4
    assert sum(t[0] for t in fine.stage_times) == 8  # two more stages, two more overheads
    assert cm.for_stages(1).stage_times == ((5, 5, 9, 2),)
    back = CostModel.from_dict(fine.to_dict())
    assert back.stage_overhead == (1, 1, 1, 0) and back.for_stages(2).stage_times == \
        cm.stage_times


def test_comm_time_alpha_beta():
    cm = uniform(2, alpha=1e-3, beta=1e6, tensor_bytes={"a": 1000, "f_acc": 500})
    assert cm.comm_time(Kind.P2) == pytest.approx(2.5e-3)   # α + (a + f_acc) / β
    assert cm.comm_time(Kind.P4) == pytest.approx(1e-3)     # h̄ size unknown: α only
    assert uniform(2).comm_time(Kind.P1) == 0.0


def test_json_round_trip(tmp_path):
    models = {"eager": toy_profile("eager", 3, alpha=0.1, beta=1e3,
                                   tensor_bytes={"h": 10.0}),
              "lazy": toy_profile("lazy", 3)}
    save_costs(models, tmp_path / "c.json")
    back = load_costs(tmp_path / "c.json")
    assert back["eager"] == models["eager"] and back["lazy"] == models["lazy"]
    assert back["lazy"].lazy_p3 and math.isinf(back["lazy"].beta)
    single = tmp_path / "one.json"
    single.write_text(json.dumps(models["lazy"].to_dict()))
    assert list(load_costs(single)) == ["lazy"]


def test_toy_profiles_are_labelled():
    for v in ("eager", "lazy"):
        assert "NOT measured" in toy_profile(v, 2).label
    assert toy_profile("lazy", 2).w_frac["P3"] == 0.0   # lazy P3 has no weight part
    with pytest.raises(ValueError):
        toy_profile("fast", 2)


@pytest.mark.parametrize("bad", [dict(stage_times=()), dict(stage_times=((1, 2, 3),)),
                                 dict(stage_times=((1, 1, 1, 1),), w_frac={"P3": 1.0}),
                                 dict(stage_times=((1, 1, 1, 1),), mem_a=(1, 2)),
                                 dict(stage_times=((1, 1, 1, 1),), stage_overhead=(1, 1, -1, 0))])
def test_invalid_models(bad):
    with pytest.raises(ValueError):
        CostModel(**bad)
