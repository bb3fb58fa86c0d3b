"""Text grids of a Program: step × device (order view) and time × device (timeline view).

The order view is what an error message shows (the failing action is marked ``<<…>>``);
the timeline view, built from a simulation, is what docs/schedules.md prints.
"""

from __future__ import annotations

from .program import Program


def format_grid(prog: Program, mark: dict[tuple[int, int], str] | None = None,
                max_steps: int | None = None) -> str:
    """Step-indexed grid: row = position in a rank's list, column = rank.

    ``mark`` maps (device, step) to a short note; those cells are wrapped in ``<<…>>``
    and the notes listed under the grid.
    """
    mark = mark or {}
    cols = []
    for d, order in enumerate(prog.orders):
        cells = []
        for i, a in enumerate(order):
            text = str(a)
            cells.append(f"<<{text}>>" if (d, i) in mark else text)
        cols.append(cells)
    nsteps = max((len(c) for c in cols), default=0)
    shown = nsteps if max_steps is None else min(nsteps, max_steps)
    if mark and max_steps is not None:  # always show the marked rows
        shown = max(shown, max(i for _, i in mark) + 1)
    width = max([len(c) for col in cols for c in col] + [6])
    lines = ["step  " + " ".join(f"r{d}".ljust(width) for d in range(len(cols)))]
    for i in range(shown):
        row = [(col[i] if i < len(col) else "").ljust(width) for col in cols]
        lines.append(f"{i:4d}  " + " ".join(row).rstrip())
    if shown < nsteps:
        lines.append(f"      ... {nsteps - shown} more steps")
    for (d, i), note in sorted(mark.items()):
        lines.append(f"  rank {d} step {i} ({prog.orders[d][i]}): {note}")
    return "\n".join(lines)


def format_timeline(result, slot: float | None = None, label=None) -> str:
    """Time-aligned grid from a :class:`~.simulate.SimResult`: one row per device, one
    column per time slot of length ``slot`` (default: the shortest compute action).

    A cell shows the action starting in that slot (``label(action)``, default its text
    form), ``~`` while it continues, ``.`` when the device idles.
    """
    label = label or str
    spans = [(a, s, e) for a, (s, e) in result.times.items() if a.kind.is_compute]
    if slot is None:
        slot = min((e - s for _, s, e in spans if e > s), default=1.0)
    nslots = round(result.makespan / slot)
    width = max([len(label(a)) for a, _, _ in spans] + [1])
    rows = [["." * 1 for _ in range(nslots)] for _ in range(result.program.num_devices)]
    for a, s, e in spans:
        d = result.device[a]
        i0, i1 = round(s / slot), round(e / slot)
        for i in range(i0, max(i1, i0 + 1)):
            if i < nslots:
                rows[d][i] = label(a) if i == i0 else "~"
    out = []
    for d, row in enumerate(rows):
        out.append(f"d{d:<2d}| " + " ".join(c.ljust(width) for c in row).rstrip())
    return "\n".join(out)

