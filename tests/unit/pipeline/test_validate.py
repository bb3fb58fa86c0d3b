"""The validator rejects hand-broken programs: one test per dependency kind.

Most programs put two stages on one rank (placement (0, 0)), so every dependency is a
same-rank order constraint and the failing edge is unambiguous.
"""

from __future__ import annotations

import pytest

from matris.train.pipeline.actions import Kind, ScheduleError, parse_actions
from matris.train.pipeline.lower import lower
from matris.train.pipeline.program import Program
from matris.train.pipeline.schedules import make_schedule
from matris.train.pipeline.validate import find_problems, validate

GOOD_1RANK = "0F1.0 1F1.0 1F2.0 0F2.0 0F3.0 1F3.0 1F4.0 0F4.0"


def one_rank(text: str, **kw) -> Program:
    return Program("hand", 1, 1, (0, 0), (tuple(parse_actions(text)),), **kw)


def two_ranks(r0: str, r1: str, M: int = 1, **kw) -> Program:
    return Program("hand", 2, M, (0, 1), (tuple(parse_actions(r0)), tuple(parse_actions(r1))),
                   **kw)


def rejected(prog: Program, rule: str, culprit: str) -> None:
    """``validate`` raises, names the rule and marks the culprit in the grid."""
    rules = {p.rule for p in find_problems(prog)}
    assert rule in rules, rules
    with pytest.raises(ScheduleError) as err:
        validate(prog)
    assert f"<<{culprit}>>" in str(err.value)


def test_good_program_passes():
    validate(one_rank(GOOD_1RANK))


def test_p1_chain():
    rejected(one_rank("1F1.0 0F1.0 1F2.0 0F2.0 0F3.0 1F3.0 1F4.0 0F4.0"), "P1 chain", "1F1.0")


def test_turn_p1_p2_at_last_stage():
    rejected(one_rank("0F1.0 1F2.0 1F1.0 0F2.0 0F3.0 1F3.0 1F4.0 0F4.0"), "turn P1→P2",
             "1F2.0")


def test_p2_chain():
    rejected(one_rank("0F1.0 1F1.0 0F2.0 1F2.0 0F3.0 1F3.0 1F4.0 0F4.0"), "P2 chain", "0F2.0")


def test_turn_p2_p3_at_stage_0():
    rejected(one_rank("0F1.0 1F1.0 1F2.0 0F3.0 0F2.0 1F3.0 1F4.0 0F4.0"), "turn P2→P3",
             "0F3.0")


def test_p3_chain():
    rejected(one_rank("0F1.0 1F1.0 1F2.0 0F2.0 1F3.0 0F3.0 1F4.0 0F4.0"), "P3 chain", "1F3.0")


def test_p3_before_p4_same_stage():
    prog = two_ranks("0F1.0 0F2.0 0F4.0 0F3.0", "1F1.0 1F2.0 1F3.0 1F4.0")
    rejected(prog, "P3→P4 same stage", "0F4.0")


def test_turn_p3_p4_at_last_stage():
    prog = two_ranks("0F1.0 0F2.0 0F3.0 0F4.0", "1F1.0 1F2.0 1F4.0 1F3.0")
    rejected(prog, "turn P3→P4", "1F4.0")


def test_p2_after_p1_same_stage():
    prog = two_ranks("0F2.0 0F1.0 0F3.0 0F4.0", "1F1.0 1F2.0 1F3.0 1F4.0")
    rejected(prog, "P1→P2 same stage", "0F2.0")


def test_p4_chain():
    rejected(one_rank("0F1.0 1F1.0 1F2.0 0F2.0 0F3.0 1F3.0 0F4.0 1F4.0"), "P4 chain", "0F4.0")


def test_w_after_its_phase():
    text = "0F1.0 1F1.0 1F2.0 0F2.0 0W3.0 0F3.0 1F3.0 1W3.0 1F4.0 1W4.0 0F4.0 0W4.0"
    rejected(one_rank(text, split_w=frozenset({Kind.P3, Kind.P4})), "W after P3", "0W3.0")


def test_fused_turn_needs_its_inputs():
    prog = one_rank("0F1.0 1F1.0 1F2.0 0F2.0 1F34.0 0F3.0 0F4.0", fused_turn=True)
    rejected(prog, "P3 chain", "1F34.0")


def test_missing_action():
    probs = find_problems(one_rank("0F1.0 1F1.0 1F2.0 0F2.0 0F3.0 1F3.0 1F4.0"))
    assert [p.rule for p in probs] == ["exactly once"]
    assert "0F4.0 is missing" in probs[0].message


def test_duplicate_action():
    rejected(one_rank(GOOD_1RANK + " 0F4.0"), "exactly once", "0F4.0")


@pytest.mark.parametrize("stray", ["0W3.0", "0F1.1", "2F1.0", "1F34.0"])
def test_stray_action(stray):
    rejected(one_rank(GOOD_1RANK + " " + stray), "exactly once", stray)


def test_placement():
    prog = two_ranks("0F1.0 1F1.0 0F2.0 0F3.0 0F4.0", "1F2.0 1F3.0 1F4.0")
    rejected(prog, "placement", "1F1.0")


def _lowered_text() -> tuple[str, str]:
    low = lower(make_schedule("gpipe4", 2, 1))
    return tuple(" ".join(map(str, o)) for o in low.orders)


def test_lowered_program_passes():
    r0, r1 = _lowered_text()
    validate(two_ranks(r0, r1))


def test_missing_recv():
    r0, r1 = _lowered_text()
    rejected(two_ranks(r0, r1.replace("1F1.0<0 ", "")), "send/recv", "1F1.0")


def test_recv_after_its_consumer():
    r0, r1 = _lowered_text()
    prog = two_ranks(r0, r1.replace("1F1.0<0 1F1.0", "1F1.0 1F1.0<0"))
    rejected(prog, "send/recv", "1F1.0")


def test_send_to_wrong_peer():
    r0, r1 = _lowered_text()
    rejected(two_ranks(r0.replace("0F1.0>1", "0F1.0>0"), r1), "send/recv", "0F1.0>0")


def test_send_before_its_producer():
    r0, r1 = _lowered_text()
    prog = two_ranks(r0.replace("0F1.0 0F1.0>1", "0F1.0>1 0F1.0"), r1)
    rejected(prog, "send/recv", "0F1.0>1")


def test_cross_rank_deadlock():
    prog = two_ranks("0F1.0 0F2.0 0F3.0 0F4.0 0F1.1 0F2.1 0F3.1 0F4.1",
                     "1F1.1 1F2.1 1F3.1 1F4.1 1F1.0 1F2.0 1F3.0 1F4.0", M=2)
    probs = find_problems(prog)
    assert {p.rule for p in probs} == {"P1 chain", "P2 chain"}
    assert all("deadlock" in p.message for p in probs)
    with pytest.raises(ScheduleError, match="deadlock"):
        validate(prog)
