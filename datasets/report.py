"""``matris-data inspect``: a text report of a dataset root (manifest + index arrays only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from . import layout

_BAR = 40


def _period_group(z: int) -> tuple[int, int]:
    """(row, column) of element Z in an 18-column table; f-block on rows 8 and 9."""
    if z <= 2:
        return 0, 0 if z == 1 else 17
    starts = [(3, 1), (11, 2), (19, 3), (37, 4), (55, 5), (87, 6)]
    start, row = next((s, r) for s, r in reversed(starts) if z >= s)
    k = z - start
    if row <= 2:  # periods 2-3: s-block then p-block
        return row, k if k < 2 else k + 10
    if row <= 4:
        return row, k
    # periods 6-7: La..Yb / Ac..No go to the f-block rows
    if 2 <= k < 16:
        return row + 2, k + 1
    return row, k if k < 2 else k - 14


def periodic_table(present: dict[int, int]) -> str:
    """Element symbols laid out as a periodic table; absent elements shown as '·'."""
    grid = [["    "] * 18 for _ in range(9)]
    for z in range(1, 119):
        r, c = _period_group(z)
        grid[r][c] = f"{chemical_symbols[z]:<3} " if z in present else " ·  "
    lines = ["".join(row).rstrip() for row in grid]
    return "\n".join([*lines[:7], "", *lines[7:]])


def text_histogram(values: np.ndarray, bins: int = 10, fmt: str = "{:10.4g}") -> str:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "  (no values)"
    counts, edges = np.histogram(values, bins=bins)
    peak = max(int(counts.max()), 1)
    out = []
    for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
        bar = "#" * round(_BAR * c / peak)
        out.append(f"  [{fmt.format(lo)}, {fmt.format(hi)}) {int(c):>9d} {bar}")
    return "\n".join(out)


def inspect_dataset(root: str | Path) -> str:
    """Return the inspection report of the dataset at ``root``."""
    root = Path(root)
    m = layout.read_manifest(root)
    index = root / layout.INDEX
    natoms = np.load(index / "natoms.int32.npy", allow_pickle=False)
    epa = np.load(index / "energy_per_atom.float64.npy", allow_pickle=False)
    fmax = np.load(index / "fmax.float32.npy", allow_pickle=False).astype(np.float64)
    n = m["n_frames"]
    nbytes = sum(s["bytes"] for s in m["shards"])
    lines = [
        f"dataset   {root}",
        f"format    {m['format']} v{m['format_version']}, schema v{m['schema_version']}, "
        f"compression {m.get('compression', 'none')}, created {m.get('created', '?')}",
        f"frames    {n}   atoms {m['n_atoms']}   shards {len(m['shards'])} "
        f"({nbytes / 2**20:.1f} MiB, {nbytes / max(n, 1):.0f} B/frame)",
        f"source    {m['source']['kind']}: "
        + ", ".join(i["path"] for i in m["source"]["inputs"][:4])
        + (f" (+{len(m['source']['inputs']) - 4} more)" if len(m["source"]["inputs"]) > 4
           else ""),
    ]
    sp = m.get("splits", {})
    lines.append(f"splits    by {sp.get('by')} ({sp.get('n_groups')} groups, seed "
                 f"{sp.get('seed')}): "
                 + "  ".join(f"{k} {v}" for k, v in sp.get("counts", {}).items()))
    lines.append("labels    " + "  ".join(
        f"{k} {v} ({100 * v / max(n, 1):.0f}%)" for k, v in m["labels"].items()))
    rj = m.get("rejects", {})
    lines.append(f"rejected  {rj.get('count', 0)} item(s)")
    for r in rj.get("listed", [])[:5]:
        lines.append(f"  {r['file']}: frame {r['frame']}: {r['reason']}")
    els = m.get("elements", {})
    lines += ["", f"elements  {len(els)} present", periodic_table({e['Z']: 1
                                                                 for e in els.values()}), ""]
    lines.append(f"  {'Z':>3} {'el':<3} {'atoms':>10} {'frames':>9} {'E_ref eV/atom':>14}")
    ref = (m.get("reference_energies") or {}).get("per_element", {})
    for sym, e in sorted(els.items(), key=lambda kv: kv[1]["Z"]):
        mu = f"{ref[sym]:14.5f}" if sym in ref else f"{'-':>14}"
        lines.append(f"  {e['Z']:>3} {sym:<3} {e['atoms']:>10} {e['frames']:>9} {mu}")
    rs = m.get("reference_energies", {})
    if rs.get("n_frames"):
        lines.append(f"  reference-energy fit on {rs['n_frames']} frames, "
                     f"RMSE {rs['rmse_eV']:.4g} eV/frame")
    lines += ["", f"natoms    min {natoms.min()}  max {natoms.max()}  mean {natoms.mean():.1f}"
              f"  median {np.median(natoms):.0f}", text_histogram(natoms.astype(float),
                                                                  fmt="{:7.1f}")]
    fin = epa[np.isfinite(epa)]
    if fin.size:
        lines += ["", f"energy    eV/atom: min {fin.min():.4f}  max {fin.max():.4f}  "
                  f"mean {fin.mean():.4f}", text_histogram(epa)]
    ff = fmax[np.isfinite(fmax)]
    if ff.size:
        lines += ["", f"forces    max |F| per frame, eV/Å: min {ff.min():.4f}  max {ff.max():.4f}"
                  f"  mean {ff.mean():.4f}", text_histogram(fmax)]
    st = m.get("stress") or {}
    if st:
        lines += ["", f"stress    eV/Å³ components: min {st['min']:.5g}  max {st['max']:.5g}"
                  f"  ({st['min'] * 160.21766208:.4g} .. {st['max'] * 160.21766208:.4g} GPa)"]
    return "\n".join(lines)
