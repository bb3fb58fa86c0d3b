"""Trace files: Perfetto JSON round trip, statistics, Gantt PNG."""

from __future__ import annotations

import json

import pytest

from matris.train.pipeline.costs import uniform
from matris.train.pipeline.lower import lower
from matris.train.pipeline.schedules import make_schedule
from matris.train.pipeline.simulate import simulate
from matris.train.pipeline.trace import (
    gantt_png,
    read_trace,
    slices_from_sim,
    trace_stats,
    write_trace,
)


def test_round_trip_and_stats(tmp_path):
    cm = uniform(3, (1, 1, 3, 2), units="s")
    r = simulate(lower(make_schedule("symfold", 3, 4)), cm)
    path = write_trace(slices_from_sim(r), tmp_path / "t.json", program="symfold")
    data = json.loads(path.read_text())
    names = {e["args"]["name"] for e in data["traceEvents"] if e["name"] == "process_name"}
    assert names == {"rank 0", "rank 1", "rank 2"}
    x = next(e for e in data["traceEvents"] if e.get("name") == "1F1.0")
    assert x["args"] == {"action": "1F1.0", "kind": "F1", "phase": "P1", "stage": 1,
                         "microbatch": 0, "peer": None}
    assert x["tid"] == 0 and data["otherData"]["program"] == "symfold"
    back = read_trace(path)
    assert len(back) == len(r.times)
    stats = trace_stats(back, 3)
    assert stats["bubble"] == pytest.approx(r.bubble)
    assert stats["makespan"] == pytest.approx(r.makespan)


def test_relative_units_map_to_milliseconds():
    r = simulate(make_schedule("gpipe4", 1, 1), uniform(1))   # 4 units
    assert trace_stats(slices_from_sim(r))["makespan"] == pytest.approx(4e-3)


def test_gantt_png(tmp_path):
    r = simulate(make_schedule("hanayo4", 2, 3), uniform(2))
    out = gantt_png(slices_from_sim(r), tmp_path / "g.png", title="hanayo4")
    assert out.stat().st_size > 1000
