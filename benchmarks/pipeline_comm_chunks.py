"""Does four chunks per rank survive communication? wavek with up to 1 or 2 waves against
1f1b4 when every cross-rank hand-off costs a latency α (simulated).

    python benchmarks/pipeline_comm_chunks.py --measured-costs FILE [--alpha 0 0.01 0.05 0.2]
        [--points 8x8 16x16] [--tag _f]

A wave of four chunks per rank crosses ranks about twice as often per micro-batch as a
two-chunk wave and four times as often as the linear V, so the study's four-chunk
figures (free communication) shrink as α grows. α is in units of t1 of one stage of the
P-stage cut (the main study's time unit); the boundary tensors' bytes are not charged
(an MLIP micro-batch's boundary tensors are a few hundred kB: bandwidth time is below
the latency on NVLink / InfiniBand). wavek plans with the same α (its list scheduler
and simulator charge every hand-off), at symfold's memory (K = 0).

Writes ``benchmarks/results/pipeline_comm_chunks_<date><tag>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from pipeline_schedules import profiles, run_one

RESULTS = Path(__file__).resolve().parent / "results"

#: label → (schedule, options). 1f1b4 is the issue's baseline; hanayo4 w2 the paper's
#: own four-chunk schedule.
ROWS = {
    "1f1b4": ("1f1b4", {}),
    "hanayo4 w2": ("hanayo4", {"waves": 2}),
    "wavek ≤2 chunks": ("wavek", {"K": 0, "max_waves": 1}),
    "wavek ≤4 chunks": ("wavek", {"K": 0, "max_waves": 2}),
}


def run(args) -> dict:
    out = {"alpha": args.alphas, "points": {}, "profiles": {}}
    for point in args.points:
        P, M = map(int, point.split("x"))
        for variant, cm0 in profiles(args, P).items():
            out["profiles"][variant] = cm0.label
            for a in args.alphas:
                cm = replace(cm0, alpha=a * cm0.stage_times[0][0])
                rows = {}
                for label, (name, opts) in ROWS.items():
                    row = run_one(name, P, M, cm, opts)[0]
                    rows[label] = {k: row[k] for k in ("makespan", "bubble", "peak_mem")}
                    if "chosen" in row:
                        rows[label]["waves"] = row["chosen"]["waves"]
                out["points"][f"{variant} P={P} M={M} alpha={a}"] = rows
                base = rows["1f1b4"]["makespan"]
                print(f"{variant} P={P} M={M} α={a}: " + "  ".join(
                    f"{k} ×{base / r['makespan']:.3f}" for k, r in rows.items()), flush=True)
    return out


def markdown(res: dict, argv: str) -> str:
    L = ["# Four chunks per rank under communication latency (simulated)", "",
         f"`python benchmarks/pipeline_comm_chunks.py {argv}`", "",
         "Pure simulation; every cross-rank hand-off costs α (units of t1 of one stage of "
         "the P-stage cut; boundary bytes not charged). Throughput ratio over 1f1b4 at the "
         "same α (1f1b4 pays α too), wavek at symfold's memory. Profiles: "
         + "; ".join(f"**{k}**: {v}" for k, v in res["profiles"].items()) + ".", "",
         "| point | α | 1f1b4 bubble | ×1f1b4: hanayo4 w2 | wavek ≤ 2 chunks | "
         "wavek ≤ 4 chunks (waves chosen) |",
         "|---|---|---|---|---|---|"]
    for key, rows in res["points"].items():
        point, alpha = key.rsplit(" alpha=", 1)
        base = rows["1f1b4"]["makespan"]
        w4 = rows["wavek ≤4 chunks"]
        L.append(f"| {point} | {alpha} | {rows['1f1b4']['bubble']:.1%} | "
                 f"{base / rows['hanayo4 w2']['makespan']:.3f} | "
                 f"{base / rows['wavek ≤2 chunks']['makespan']:.3f} | "
                 f"{base / w4['makespan']:.3f} ({w4.get('waves')}) |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measured-costs", required=True)
    ap.add_argument("--alpha", dest="alphas", type=float, nargs="+",
                    default=[0.0, 0.01, 0.05, 0.2])
    ap.add_argument("--points", nargs="+", default=["8x8", "16x16"])
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    # profiles() reads these study options; α is applied per run below.
    args.costs, args.queues_from, args.ideal_split, args.alpha = None, None, False, None
    res = run(args)
    stem = RESULTS / f"pipeline_comm_chunks_{args.date}{args.tag}"
    Path(f"{stem}.json").write_text(json.dumps(res, indent=1))
    Path(f"{stem}.md").write_text(markdown(res, " ".join(sys.argv[1:] if argv is None
                                                           else argv)))
    print(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
