"""Where a real run's compute went: per-action durations of one schedule against a
reference schedule that runs the same actions whole, from a ``real`` run's raw JSON.

    python benchmarks/pipeline_real_actions.py results/pipeline_real_DATE.raw.json
        [--schedule wavek] [--reference hanayo4]

Per (kind, stage, micro-batch) the median over the run's repeats. For every P3 / P4 of
``--schedule``: its duration (critical part + its W when split) over the reference's
whole duration of the same action, reported separately for split and whole actions; and
the total compute per kind of every schedule (summed over ranks, median over repeats).
Both schedules must place the same stages (same stage count). Writes
``<raw stem>.actions.md`` next to the raw file.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

COMPUTE = re.compile(r"^(\d+)(F1|F2|F3|F4|W3|W4|P34)\.(\d+)$")


def per_action(runs: list[dict]) -> dict[tuple[str, int, int], float]:
    """{(kind, stage, micro-batch): median seconds over the repeats}."""
    samples = defaultdict(list)
    for run in runs:
        for name, _rank, start, end in run["slices"]:
            m = COMPUTE.match(name)
            if m:
                samples[(m.group(2), int(m.group(1)), int(m.group(3)))].append(end - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def per_kind(runs: list[dict]) -> dict[str, float]:
    """{kind: median over repeats of the step's summed seconds in that kind}."""
    totals = defaultdict(list)
    for run in runs:
        acc = defaultdict(float)
        for name, _rank, start, end in run["slices"]:
            m = COMPUTE.match(name)
            if m:
                acc[m.group(2)] += end - start
        for k, v in acc.items():
            totals[k].append(v)
    return {k: statistics.median(v) for k, v in sorted(totals.items())}


def compare(sched: dict, ref: dict) -> dict[str, list[float]]:
    """Ratios to the reference's whole action: {"F3 split", "F3 whole", "F4 …"}."""
    out = defaultdict(list)
    for (kind, s, m), t in sched.items():
        if kind not in ("F3", "F4") or (kind, s, m) not in ref:
            continue
        w = sched.get(("W" + kind[1], s, m))
        key = f"{kind} {'split' if w is not None else 'whole'}"
        out[key].append((t + (w or 0.0)) / ref[(kind, s, m)])
    return dict(sorted(out.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("--schedule", default="wavek")
    ap.add_argument("--reference", default="hanayo4")
    args = ap.parse_args(argv)
    raw = json.loads(Path(args.raw).read_text())["raw"]
    ratios = compare(per_action(raw[args.schedule]), per_action(raw[args.reference]))
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    L = [f"# Per-action compute of `{args.schedule}` against `{args.reference}`", "",
         f"`python benchmarks/pipeline_real_actions.py {argv_text}`",
         "", "Duration of each P3 / P4 action (critical part + its W when split) over the "
         "reference's duration of the same (stage, micro-batch), medians over the run's "
         "repeats.", "", "| actions | n | mean ratio | min | max |", "|---|---:|---:|---:|---:|"]
    for key, r in ratios.items():
        L.append(f"| {key} | {len(r)} | {statistics.mean(r):.3f} | {min(r):.2f} | "
                 f"{max(r):.2f} |")
    L += ["", "Compute per step and kind, s (summed over ranks, median over repeats):", "",
          "| schedule | " + " | ".join(("F1", "F2", "F3", "F4", "W3", "W4")) + " | Σ |",
          "|---|" + "---:|" * 7]
    for name, runs in raw.items():
        k = per_kind(runs)
        L.append(f"| {name} | " + " | ".join(f"{k.get(x, 0.0):.2f}" for x in
                                            ("F1", "F2", "F3", "F4", "W3", "W4"))
                 + f" | {sum(k.values()):.2f} |")
    out = Path(args.raw.removesuffix(".raw.json") + ".actions.md")
    out.write_text("\n".join(L) + "\n")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
