"""The executor's plumbing without compute: tags, routing, deadlock / misuse errors,
the emulated engine, program building from the config options."""

from __future__ import annotations

import math

import pytest
import torch

from matris.config import preset
from matris.model import MatRIS
from matris.train.pipeline.actions import Action, Kind, ScheduleError
from matris.train.pipeline.costs import uniform
from matris.train.pipeline.emulate import SleepEngine
from matris.train.pipeline.executor import build_program, stage_cuts, stage_parameters
from matris.train.pipeline.lower import lower
from matris.train.pipeline.runtime import Walker, handoff_tag, run_in_process
from matris.train.pipeline.schedules import make_schedule
from matris.train.pipeline.simulate import simulate


def test_tags_are_unique_per_handoff():
    prog = lower(make_schedule("hanayo4", 3, 5))
    seen = {}
    for order in prog.orders:
        for a in order:
            if a.kind is Kind.SEND:
                tag = handoff_tag(prog, a.phase, a.stage, a.microbatch)
                assert tag not in seen, (a, seen.get(tag))
                seen[tag] = a
    assert len(seen) == sum(a.kind is Kind.SEND for o in prog.orders for a in o)


class Echo:
    """Engine stand-in: records the order and passes a token along each sweep."""

    def __init__(self):
        self.ran = []

    def run(self, a, msg):
        self.ran.append(a)
        return [torch.tensor([a.stage])]


@pytest.mark.parametrize("name", ["gpipe4", "1f1b4", "hanayo4", "symfold", "wavek"])
def test_every_lowered_program_runs_without_deadlock(name):
    prog = lower(make_schedule(name, 3, 4))
    engines = [Echo() for _ in range(3)]
    walkers = run_in_process(prog, engines)
    ran = {a for e in engines for a in e.ran}
    assert ran == set(prog.expected_actions())
    for w, order in zip(walkers, prog.orders, strict=True):
        assert [s.action for s in w.slices] == list(order)  # in program order
        assert all(s.end >= s.start for s in w.slices)


def test_deadlocked_program_is_reported():
    prog = lower(make_schedule("gpipe4", 2, 1))
    order0 = list(prog.orders[0])
    send = next(i for i, a in enumerate(order0) if a.kind is Kind.SEND)
    recv = next(i for i, a in enumerate(order0) if a.kind is Kind.RECV)
    order0.insert(recv + 1, order0.pop(send))  # rank 0 now waits before it sends
    broken = prog.with_orders([order0, prog.orders[1]])
    with pytest.raises(ScheduleError, match="deadlock"):
        run_in_process(broken, [Echo(), Echo()])


def test_walker_needs_lowered_program_and_inputs():
    prog = make_schedule("symfold", 2, 2)
    with pytest.raises(ScheduleError, match="lowered"):
        Walker(prog, 0, Echo(), None)
    low = lower(prog)
    no_recv = low.with_orders([low.orders[0], [a for a in low.orders[1]
                                               if a.kind is not Kind.RECV]])
    w = Walker(no_recv, 1, Echo(), None)
    with pytest.raises(ScheduleError, match="no input"):
        w.step()


def test_sleep_engine_times_and_messages():
    cm = uniform(2, (1.0, 2.0, 3.0, 4.0), tensor_bytes={"h": 100, "a": 40, "f_acc": 8})
    prog = lower(make_schedule("symfold", 2, 2, cm))
    eng = SleepEngine(prog, cm, seconds_per_unit=0.002)
    msg = eng.run(Action(Kind.P2, 1, 0), None)
    assert msg[0].numel() == 48 and msg[0].dtype == torch.uint8
    walkers = run_in_process(prog, [SleepEngine(prog, cm, 0.01) for _ in range(2)])
    busy = sum(s.end - s.start for w in walkers for s in w.slices if s.action.kind.is_compute)
    # run in one process the ranks are serial: total busy time = Σ durations
    expect = sum(cm.duration(prog, a) for a in prog.expected_actions()) * 0.01
    assert busy == pytest.approx(expect, rel=0.3, abs=0.02)


def test_build_program_options_and_chunk_budget():
    prog = build_program("symfold", 2, 3, 2, options={"fused_turn": True, "split_w": True})
    assert prog.fused_turn and prog.split_w and prog.lowered
    assert build_program("wavek", 3, 3, 2).meta["chosen"]["waves"] == 0  # 6 stages > 4 units
    with pytest.raises(ValueError, match="hanayo4 with waves=1 places 6 stages"):
        build_program("hanayo4", 3, 3, 2)
    # Four chunks per rank (2 waves) need 4P units: 8 at P = 2, i.e. 6 blocks.
    with pytest.raises(ValueError, match=r"hanayo4 with waves=2 places 8 stages .* 6 units"):
        build_program("hanayo4", 2, 3, 4, options={"waves": 2})
    with pytest.raises(ValueError, match="wavek with max_waves=2 places 8 stages"):
        build_program("wavek", 2, 3, 4, options={"max_waves": 2})
    assert build_program("hanayo4", 2, 3, 6, options={"waves": 2}).num_stages == 8
    four = build_program("wavek", 2, 3, 6, options={"waves": 2})
    assert four.num_stages == 8 and four.meta["chosen"]["waves"] == 2
    with pytest.raises(ValueError, match="model units"):
        build_program("symfold", 5, 3, 2)
    with pytest.raises(ValueError, match="unknown schedule"):
        build_program("zb", 2, 2, 2)
    with pytest.raises(TypeError):
        build_program("symfold", 2, 2, 2, options={"fused": True})
    assert math.isfinite(simulate(prog, uniform(2)).makespan)


def test_stage_cuts_and_parameters_partition_the_model():
    model = MatRIS(preset("tiny", num_blocks=3))
    with pytest.raises(ValueError, match="stage_cuts gives 2 stages"):
        stage_cuts(model, 4, [1])
    cuts = stage_cuts(model, 4)
    stages = model.stages(cuts)
    seen = set()
    for r in range(2):
        mine = {s: stages[s] for s in (r, 3 - r)}  # a wave placement on 2 ranks
        named, per_stage = stage_parameters(model, mine)
        names = {n for n, _ in named}
        assert not names & seen
        seen |= names
        assert sum(len(v) for v in per_stage.values()) == len(named)
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}
