"""Lowering inserts exactly the cross-device hand-offs, in executable positions."""

from __future__ import annotations

import pytest

from matris.train.pipeline.actions import Kind, ScheduleError
from matris.train.pipeline.deps import predecessors
from matris.train.pipeline.lower import comm_volume, lower, unlower
from matris.train.pipeline.schedules import make_schedule
from matris.train.pipeline.validate import validate


def test_linear_counts_and_positions():
    P, M = 3, 4
    prog = make_schedule("symfold", P, M)
    low = validate(lower(prog))
    assert comm_volume(low) == {k: (P - 1) * M for k in ("P1", "P2", "P3", "P4")}
    for order in low.orders:
        for i, a in enumerate(order):
            if a.kind is Kind.SEND:      # right after its producer
                assert order[i - 1] == low.resolve(a.phase, a.stage, a.microbatch)
                assert a.peer == low.device_of(a.stage + (1 if a.phase in (Kind.P1, Kind.P3)
                                                          else -1))
            if a.kind is Kind.RECV:      # right before its consumer (or another RECV)
                nxt = next(b for b in order[i + 1:] if b.kind.is_compute)
                assert (nxt.stage, nxt.microbatch) == (a.stage, a.microbatch)
                assert any(dep.phase is a.phase for dep in predecessors(low, nxt))


def test_wave_zigzag_turns_stay_local():
    prog = make_schedule("hanayo4", 2, 2)           # stages 0..3 on ranks 0,1,1,0
    low = lower(prog)
    sends = [a for o in low.orders for a in o if a.kind is Kind.SEND]
    # Boundaries 0|1 and 2|3 cross ranks, 1|2 does not: 2 per sweep and micro-batch.
    assert len(sends) == 2 * 4 * 2
    assert not any({a.stage, a.stage + (1 if a.phase in (Kind.P1, Kind.P3) else -1)}
                   == {1, 2} for a in sends)


def test_fused_turn_sends_from_p34():
    low = validate(lower(make_schedule("gpipe4", 2, 1, fused_turn=True)))
    assert "1F34.0 1F4.0>0" in low.to_text()


def test_reduce_follows_each_stage_last_compute():
    low = lower(make_schedule("hanayo4", 2, 3), reduce_grad=True)
    for d, order in enumerate(low.orders):
        for s in low.stages_of(d):
            idx = [i for i, a in enumerate(order) if a.stage == s and a.kind.is_compute]
            red = [i for i, a in enumerate(order) if a.kind is Kind.REDUCE and a.stage == s]
            assert len(red) == 1 and red[0] > max(idx)


def test_unlower_and_double_lowering():
    prog = make_schedule("1f1b4", 3, 3)
    low = lower(prog)
    assert unlower(low).orders == prog.orders
    with pytest.raises(ScheduleError, match="already lowered"):
        lower(low)
