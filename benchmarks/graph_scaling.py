"""Graph-building time vs atom count (cell lists must scale linearly).

Builds the 6 Å / 4.5 Å graph (edges, bonds and angles) of rattled Si diamond
supercells from ~1k to 64k atoms, reports the median of repeats, time per atom and the
log-log slope (1.0 = linear), and writes JSON + markdown to benchmarks/results/.

    python benchmarks/graph_scaling.py [--max-atoms 64000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from matris.graph import build_graph
from matris.graph.neighbors import neighbor_pairs

RESULTS = Path(__file__).resolve().parent / "results"
DATE = "2026-11-21"
MACHINE = "2-vCPU CPU VM, 1 torch thread"


def si_supercell(n: int, seed: int = 0):
    """Rattled (0.05 Å) diamond Si, n×n×n conventional cells (8·n³ atoms)."""
    a = 5.43
    basis = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0], [.25, .25, .25],
                      [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]])
    grid = np.array([[i, j, k] for i in range(n) for j in range(n) for k in range(n)])
    frac = (grid[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    pos = frac * a + np.random.default_rng(seed).normal(scale=0.05, size=frac.shape)
    return np.full(len(pos), 14), pos, np.eye(3) * a * n, np.ones(3, bool)


def measure(n: int, repeats: int) -> dict:
    numbers, pos, cell, pbc = si_supercell(n)
    t_nl, t_full, c_full = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        neighbor_pairs(pos, cell, pbc, 6.0)
        t1 = time.perf_counter()
        c1 = time.process_time()
        g = build_graph(numbers, pos, cell, pbc, 6.0, 4.5)
        c_full.append(time.process_time() - c1)
        t_full.append(time.perf_counter() - t1)
        t_nl.append(t1 - t0)
    n_atoms = len(numbers)
    return {"atoms": n_atoms, "edges": g.n_edges, "angles": g.n_angles,
            "neighbour_search_s": statistics.median(t_nl),
            "full_graph_s": statistics.median(t_full),
            "full_graph_cpu_s": statistics.median(c_full),
            "full_us_per_atom": 1e6 * statistics.median(t_full) / n_atoms,
            "full_cpu_us_per_atom": 1e6 * statistics.median(c_full) / n_atoms}


def slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-atoms", type=int, default=64000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = [n for n in (5, 8, 10, 13, 16, 20) if 8 * n**3 <= args.max_atoms]
    load_before = os.getloadavg()
    rows = []
    for n in sizes:
        rows.append(measure(n, args.repeats))
        r = rows[-1]
        print(f"{r['atoms']:>7} atoms  {r['edges']:>9} edges  {r['angles']:>10} angles  "
              f"search {r['neighbour_search_s']:.3f} s  full {r['full_graph_s']:.3f} s  "
              f"(cpu {r['full_cpu_us_per_atom']:.1f} µs/atom)", flush=True)
    atoms = [r["atoms"] for r in rows]
    result = {
        "date": DATE, "machine": MACHINE, "python": platform.python_version(),
        "cutoffs": [6.0, 4.5], "repeats": args.repeats, "statistic": "median",
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "rows": rows,
        "loglog_slope_neighbour_search": slope(atoms, [r["neighbour_search_s"] for r in rows]),
        "loglog_slope_full_graph": slope(atoms, [r["full_graph_s"] for r in rows]),
        "loglog_slope_full_graph_cpu": slope(atoms, [r["full_graph_cpu_s"] for r in rows]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"graph_scaling_{DATE}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Graph building scaling ({DATE}, {MACHINE})", "",
             "Rattled Si diamond supercells, cutoffs 6 Å (edges) / 4.5 Å (angles), numpy "
             f"cell lists, median of {args.repeats}. Load average before/after: "
             f"{load_before[0]:.2f} / {result['loadavg_after'][0]:.2f} (shared 2-core VM).", "",
             "Wall time suffers from other jobs on the two cores; process CPU time less so.", "",
             "| atoms | edges | angles | neighbour search (s) | full graph (s) | full graph "
             "CPU (s) | CPU µs/atom |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['atoms']:,} | {r['edges']:,} | {r['angles']:,} | "
                     f"{r['neighbour_search_s']:.3f} | {r['full_graph_s']:.3f} | "
                     f"{r['full_graph_cpu_s']:.3f} | {r['full_cpu_us_per_atom']:.1f} |")
    lines += ["", f"Log-log slope of time vs atoms: neighbour search "
              f"{result['loglog_slope_neighbour_search']:.3f}, full graph "
              f"{result['loglog_slope_full_graph']:.3f} (wall), "
              f"{result['loglog_slope_full_graph_cpu']:.3f} (CPU) (1.0 = linear).", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines[-2:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
