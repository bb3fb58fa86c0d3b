"""Cost models tied to cuts: the stages the scheduler prices are the stages the runner cuts."""

from __future__ import annotations

import pytest

from matris.config import preset
from matris.cuts import balance
from matris.model import MatRIS
from matris.train.pipeline.costs import CostModel, load_costs, save_costs
from matris.train.pipeline.executor import build_program, stage_cuts


def measured(times, overhead=(0.0, 0.0, 0.0, 0.0), blocks=None) -> CostModel:
    """One measured stage per unit as `matris-train costs` writes it: stage 0 = embedding
    (cut 0), then one block each (the last one with the readout)."""
    n = len(times)
    return CostModel(stage_times=tuple(tuple(map(float, t)) for t in times),
                     stage_overhead=overhead, mem_a=tuple(float(s + 1) for s in range(n)),
                     mem_ap=(1.0,) * n, mem_q3=tuple(10.0 * (s + 1) for s in range(n)),
                     unit_cuts=tuple(range(n - 1)), model_blocks=n - 1)


def test_for_cuts_sums_the_measured_stages_once_per_overhead():
    cm = measured([(2, 2, 2, 2), (3, 3, 9, 3), (4, 4, 12, 4), (5, 5, 15, 5)],
                  overhead=(1, 1, 1, 0))
    two = cm.for_cuts([2])                       # stages {0, 1, 2} and {3}
    assert two.unit_cuts == (2,) and two.num_stages == 2
    # Σ of the three merged stages less two overheads (each stage pays it once).
    assert two.stage_times[0] == (2 + 3 + 4 - 2, 2 + 3 + 4 - 2, 2 + 9 + 12 - 2, 2 + 3 + 4)
    assert two.stage_times[1] == (5, 5, 15, 5)
    assert two.mem_a == (1 + 2 + 3, 4) and two.mem_q3 == (60, 40)
    assert cm.for_cuts(cm.unit_cuts) is cm
    with pytest.raises(ValueError, match="not increasing cuts among the measured"):
        cm.for_cuts([5])
    with pytest.raises(ValueError, match="not increasing cuts"):
        cm.for_cuts([2, 1])


def test_cuts_for_balances_work_and_for_stages_follows_them():
    # A heavy block 1 (stage 2): the 2-stage cut must isolate it from the rest.
    cm = measured([(1, 1, 1, 1), (1, 1, 1, 1), (8, 8, 8, 8), (1, 1, 1, 1), (1, 1, 1, 1)])
    cuts = cm.cuts_for(2)
    assert cuts == [cm.unit_cuts[i] for i in balance(cm.work(), 2)]
    assert cm.for_stages(2) == cm.for_cuts(cuts)
    # Depth share prices each half at 2.5 measured stages (24 + 24: balanced); no cut of
    # whole stages achieves that: the runner's best has 40 + 8.
    assert sorted(sum(t) for t in cm.for_stages(2).stage_times) == [8, 40]
    assert [sum(t) for t in cm.untied().for_stages(2).stage_times] == pytest.approx([24, 24])
    assert cm.for_stages(5) is cm and cm.max_stages == 5
    with pytest.raises(ValueError, match="cannot price 6 stages"):
        cm.for_stages(6)
    untied = cm.untied()
    assert untied.unit_cuts is None and untied.for_stages(10).num_stages == 10


def test_cuts_are_checked_and_survive_json(tmp_path):
    cm = measured([(1, 1, 1, 1)] * 3)
    with pytest.raises(ValueError, match="do not describe 3 stages"):
        CostModel(stage_times=cm.stage_times, unit_cuts=(0,))
    with pytest.raises(ValueError, match="do not describe"):
        CostModel(stage_times=cm.stage_times, unit_cuts=(1, 0))
    with pytest.raises(ValueError, match="do not describe"):
        CostModel(stage_times=cm.stage_times, unit_cuts=(0, 4), model_blocks=2)
    save_costs({"eager": cm}, tmp_path / "c.json")
    back = load_costs(tmp_path / "c.json")["eager"]
    assert back == cm and back.unit_cuts == (0, 1) and back.model_blocks == 2


def test_runner_cuts_where_the_program_was_priced():
    """stage_cuts follows the cost model (not the angle-work estimate), and build_program
    prices explicit cuts from the measured stages."""
    model = MatRIS(preset("tiny", num_blocks=6, width=16))
    # Blocks 0-2 measured three times heavier than 3-5: the angle-work estimate (equal
    # blocks) would cut elsewhere.
    cm = measured([(1, 1, 1, 1)] + [(3, 3, 3, 3)] * 3 + [(1, 1, 1, 1)] * 3)
    assert stage_cuts(model, 2, None, cm) == cm.cuts_for(2) == [2]
    assert model.balanced_cuts(2) != [2]
    assert stage_cuts(model, 2, [3], cm) == [3]                    # explicit cuts win
    prog = build_program("symfold", 2, 4, 6, costs=cm, cuts=[3])   # priced at cut 3
    assert prog.num_stages == 2
    with pytest.raises(ValueError, match="not increasing cuts among the measured"):
        build_program("symfold", 2, 4, 6, costs=cm, cuts=[6])
    # 7 measured stages: a wave at P = 4 needs 8 (the model has 8 units, but a
    # readout-only stage was never measured); wavek then keeps the V.
    with pytest.raises(ValueError, match="hanayo4 with waves=1 places 8 stages but the cost model"):
        build_program("hanayo4", 4, 8, 6, costs=cm)
    assert {c["waves"] for c in build_program("wavek", 4, 8, 6, costs=cm)
            .meta["candidates"]} == {0}
    assert build_program("hanayo4", 3, 6, 6, costs=cm).num_stages == 6
