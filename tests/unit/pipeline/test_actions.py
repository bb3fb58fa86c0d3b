"""Action vocabulary, text form, Program metadata and placements."""

from __future__ import annotations

import pytest

from matris.train.pipeline.actions import (
    DIRECTION,
    FOUR_PHASES,
    Action,
    Kind,
    ScheduleError,
    parse_action,
    parse_actions,
)
from matris.train.pipeline.program import Program, from_text, linear_placement, wave_placement
from matris.train.pipeline.schedules import make_schedule


@pytest.mark.parametrize("text, action", [
    ("2F1.0", Action(Kind.P1, 2, 0)),
    ("0F4.13", Action(Kind.P4, 0, 13)),
    ("2W3.5", Action(Kind.W3, 2, 5)),
    ("7F34.3", Action(Kind.P34, 7, 3)),
    ("2F1.0>3", Action(Kind.SEND, 2, 0, Kind.P1, 3)),
    ("3F1.0<2", Action(Kind.RECV, 3, 0, Kind.P1, 2)),
    ("2GR", Action(Kind.REDUCE, 2, -1)),
])
def test_text_round_trip(text, action):
    assert parse_action(text) == action
    assert str(action) == text


@pytest.mark.parametrize("bad", ["", "F1.0", "2X1.0", "2F1", "2W3.1>2", "2GR.1", "2F5.0"])
def test_parse_rejects(bad):
    with pytest.raises(ScheduleError):
        parse_action(bad)


def test_parse_actions_skips_bubbles():
    assert parse_actions("0F1.0 . 0F1.1 -") == [Action(Kind.P1, 0, 0), Action(Kind.P1, 0, 1)]


def test_directions_alternate():
    assert [DIRECTION[k] for k in FOUR_PHASES] == [1, -1, 1, -1]


def test_comm_action_names_its_compute():
    send = parse_action("2F2.4>1")
    assert send.compute_key == Action(Kind.P2, 2, 4)


def test_placements():
    assert linear_placement(3) == (0, 1, 2)
    # Hanayo zigzag: down and back up, twice.
    assert wave_placement(3, 2) == (0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0)
    with pytest.raises(ValueError):
        wave_placement(3, 0)


def test_program_expected_actions_follow_flags():
    prog = Program("x", 2, 1, (0, 1), ((), ()), split_w=frozenset({Kind.P3, Kind.P4}),
                   fused_turn=True)
    kinds = {(a.kind, a.stage) for a in prog.expected_actions()}
    assert (Kind.P34, 1) in kinds and (Kind.P3, 1) not in kinds
    assert (Kind.W3, 0) in kinds and (Kind.W4, 0) in kinds and (Kind.W4, 1) not in kinds
    lazy = Program("x", 1, 1, (0,), ((),), lazy_p3=True, split_w=frozenset({Kind.P3}))
    assert Kind.W3 not in {a.kind for a in lazy.expected_actions()}  # lazy P3 has no W


def test_program_rejects_bad_metadata():
    with pytest.raises(ScheduleError):
        Program("x", 2, 1, (0, 1), ((),))           # one list for two ranks
    with pytest.raises(ScheduleError):
        Program("x", 2, 1, (0, 2), ((), ()))        # rank 2 does not exist
    with pytest.raises(ScheduleError):
        Program("x", 1, 1, (0,), ((),), phases=(Kind.P1, Kind.P4), lazy_p3=True)


def test_program_text_round_trip():
    prog = make_schedule("symfold", 3, 4)
    back = from_text(prog.to_text(), name=prog.name, num_microbatches=4,
                     placement=prog.placement)
    assert back.orders == prog.orders


def test_unknown_schedule_name():
    with pytest.raises(ValueError, match="wavek"):
        make_schedule("zb-h2", 2, 2)
