"""Traces: Chrome/Perfetto JSON and a Gantt PNG, shared by the simulator and the executor.

The unit of exchange is :class:`TraceSlice` (one executed action on one rank). The
simulator produces them from a :class:`~.simulate.SimResult` (:func:`slices_from_sim`);
the executor records them from wall-clock timings. Both write the same file with
:func:`write_trace`, so :func:`trace_stats` computes measured and simulated bubbles the
same way.

File format (``chrome://tracing``, https://ui.perfetto.dev)::

    {"traceEvents": [
       {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "rank 2"}},
       {"ph": "X", "name": "2F1.0", "cat": "F1", "pid": 2, "tid": 0,
        "ts": 1200.0, "dur": 350.0,
        "args": {"action": "2F1.0", "kind": "F1", "phase": "P1", "stage": 2,
                 "microbatch": 0, "peer": null}}, ...],
     "displayTimeUnit": "ms",
     "otherData": {"program": "...", "source": "simulated" | "measured", ...}}

One process per rank; thread 0 holds compute actions, thread 1 SEND/RECV/REDUCE.
``ts``/``dur`` are microseconds (cost models in relative units map 1 unit to 1 ms).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .actions import W_OF, Action, Kind, parse_action

#: Microseconds per cost-model time unit.
US_PER_UNIT = {"s": 1e6, "ms": 1e3, "us": 1.0, "rel": 1e3}

COLORS = {Kind.P1: "#4C72B0", Kind.P2: "#DD8452", Kind.P3: "#55A868", Kind.P4: "#C44E52",
          Kind.W3: "#A6D8B0", Kind.W4: "#E8A5A7", Kind.P34: "#8172B3",
          Kind.SEND: "#999999", Kind.RECV: "#CCCCCC", Kind.REDUCE: "#333333"}


@dataclass(frozen=True)
class TraceSlice:
    """One executed action: rank, action, start and end in seconds."""

    device: int
    action: Action
    start: float
    end: float


def phase_name(a: Action) -> str:
    """P1..P4 for compute and comm actions (W3 → P3, P34 → P3+P4), '' for REDUCE."""
    k = a.phase if a.kind.is_comm else a.kind
    if k in W_OF:
        k = W_OF[k]
    if k is Kind.P34:
        return "P3+P4"
    return k.name if k in (Kind.P1, Kind.P2, Kind.P3, Kind.P4) else ""


def slices_from_sim(result) -> list[TraceSlice]:
    """Slices of a :class:`~.simulate.SimResult`, times converted to seconds."""
    scale = US_PER_UNIT.get(result.costs.units, 1e6) * 1e-6
    return sorted((TraceSlice(result.device[a], a, s * scale, e * scale)
                   for a, (s, e) in result.times.items()),
                  key=lambda x: (x.device, x.start, x.end))


def to_chrome(slices: list[TraceSlice], **meta) -> dict:
    """Chrome/Perfetto trace dict (see module docstring)."""
    devices = sorted({s.device for s in slices})
    events: list[dict] = []
    for d in devices:
        events.append({"ph": "M", "name": "process_name", "pid": d,
                       "args": {"name": f"rank {d}"}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": d,
                       "args": {"sort_index": d}})
        for tid, name in ((0, "compute"), (1, "comm")):
            events.append({"ph": "M", "name": "thread_name", "pid": d, "tid": tid,
                           "args": {"name": name}})
    for s in slices:
        a = s.action
        events.append({
            "ph": "X", "name": str(a), "cat": a.kind.value, "pid": s.device,
            "tid": 0 if a.kind.is_compute else 1,
            "ts": s.start * 1e6, "dur": (s.end - s.start) * 1e6,
            "args": {"action": str(a), "kind": a.kind.value, "phase": phase_name(a),
                     "stage": a.stage, "microbatch": a.microbatch, "peer": a.peer}})
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}


def write_trace(slices: list[TraceSlice], path: str | Path, **meta) -> Path:
    """Write a Perfetto JSON trace; ``meta`` lands in ``otherData``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_chrome(slices, **meta)))
    return path


def read_trace(path: str | Path) -> list[TraceSlice]:
    """Slices back from a trace file (simulated or measured)."""
    data = json.loads(Path(path).read_text())
    out = []
    for e in data["traceEvents"]:
        if e.get("ph") != "X":
            continue
        start = e["ts"] * 1e-6
        out.append(TraceSlice(e["pid"], parse_action(e["args"]["action"]), start,
                              start + e["dur"] * 1e-6))
    return out


def trace_stats(slices: list[TraceSlice], num_devices: int | None = None) -> dict:
    """Makespan (first start to last end), busy compute time per rank, bubble fraction."""
    if not slices:
        return {"makespan": 0.0, "busy": [], "bubble": 0.0}
    n = num_devices or (max(s.device for s in slices) + 1)
    t0 = min(s.start for s in slices)
    span = max(s.end for s in slices) - t0
    busy = [0.0] * n
    for s in slices:
        if s.action.kind.is_compute:
            busy[s.device] += s.end - s.start
    bubble = 1.0 - sum(busy) / (n * span) if span > 0 else 0.0
    return {"makespan": span, "busy": busy, "bubble": bubble}


def gantt_png(slices: list[TraceSlice], path: str | Path, title: str = "") -> Path:
    """Gantt chart (one row per rank, one colour per phase) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    compute = [s for s in slices if s.action.kind.is_compute]
    n = max((s.device for s in slices), default=0) + 1
    t0 = min((s.start for s in compute), default=0.0)
    span = max((s.end for s in compute), default=1.0) - t0
    fig, ax = plt.subplots(figsize=(min(24, 6 + len(compute) / (4 * n)), 0.45 * n + 1.4))
    for s in compute:
        x, w = s.start - t0, s.end - s.start
        ax.barh(s.device, w, left=x, height=0.8, color=COLORS[s.action.kind],
                edgecolor="white", linewidth=0.3)
        if w > span / 60:
            ax.text(x + w / 2, s.device, str(s.action.microbatch), ha="center",
                    va="center", fontsize=6, color="white")
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"rank {d}" for d in range(n)])
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    ax.set_xlim(0, span)
    ax.set_title(title, fontsize=9)
    kinds = sorted({s.action.kind for s in compute}, key=lambda k: list(COLORS).index(k))
    # right of the axes: below them the legend collided with the x label on short charts
    ax.legend(handles=[Patch(color=COLORS[k], label=k.name) for k in kinds],
              loc="center left", bbox_to_anchor=(1.005, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
