"""Does four chunks per rank survive communication? wavek with up to 1 or 2 waves against
1f1b4 when every cross-rank hand-off costs time (simulated).

    python benchmarks/pipeline_comm_chunks.py --measured-costs FILE [--alpha 0 0.01 0.05 0.2]
        [--link results/pipeline_link_DATE.json] [--points 8x8 16x16] [--tag _f]

A wave of four chunks per rank crosses ranks about twice as often per micro-batch as a
two-chunk wave and four times as often as the linear V, so the study's four-chunk
figures (free communication) shrink as hand-offs cost more. Two kinds of setting:

* ``--alpha a``: every hand-off costs a·t1, t1 of one stage of the P-stage cut (the main
  study's time unit), whatever its bytes: a sweep over the unknown link of a machine;
* ``--link FILE``: the link measured by ``pipeline_link.py`` (hand-off latency α_h in s,
  bandwidth β in bytes/s) with the cost file's boundary bytes (``tensor_bytes``; the
  10M micro-batch's boundary is 9.5 MB, its angle features dominate), for cost files in
  seconds.

wavek plans with the same link (its list scheduler and simulator charge every hand-off),
at symfold's memory (K = 0). The table's "hand-off / t1" is one P1 hand-off over t1.

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

from matris.train.pipeline.actions import Kind

RESULTS = Path(__file__).resolve().parent / "results"

#: label → (schedule, options). 1f1b4 is the issue's baseline; hanayo4 w2 the paper's
#: own four-chunk schedule.
ROWS = {
    "1f1b4": ("1f1b4", {}),
    "hanayo4 w2": ("hanayo4", {"waves": 2}),
    "wavek ≤2 chunks": ("wavek", {"K": 0, "max_waves": 1}),
    "wavek ≤4 chunks": ("wavek", {"K": 0, "max_waves": 2}),
}


def settings(args, cm0, fit: dict | None) -> list[tuple[str, object]]:
    """(label, cost model) per communication setting of ``args`` for the profile ``cm0``;
    ``fit``: the ``--link`` file's fitted link."""
    out = [(str(a), replace(cm0, alpha=a * cm0.stage_times[0][0])) for a in args.alphas]
    if fit is not None:
        if cm0.units != "s":
            raise ValueError(f"--link needs a cost file in seconds; {cm0.label!r} is in "
                             f"{cm0.units!r}")
        out.append((f"link {Path(args.link).stem}",
                    replace(cm0, alpha=fit["alpha_handoff_s"], beta=fit["beta_Bps"])))
    return out


def run(args) -> dict:
    out = {"alpha": args.alphas, "link": args.link, "points": {}, "profiles": {}}
    fit = json.loads(Path(args.link).read_text())["fit"] if args.link else None
    for point in args.points:
        P, M = map(int, point.split("x"))
        for variant, cm0 in profiles(args, P).items():
            out["profiles"][variant] = cm0.label
            for setting, cm in settings(args, cm0, fit):
                rows = {}
                for label, (name, opts) in ROWS.items():
                    row = run_one(name, P, M, cm, opts)[0]
                    rows[label] = {k: row[k] for k in ("makespan", "bubble", "peak_mem")}
                    if "chosen" in row:
                        rows[label]["waves"] = row["chosen"]["waves"]
                rows["handoff_over_t1"] = cm.comm_time(Kind.P1) / cm.stage_times[0][0]
                out["points"][f"{variant} P={P} M={M} alpha={setting}"] = rows
                base = rows["1f1b4"]["makespan"]
                print(f"{variant} P={P} M={M} {setting}: " + "  ".join(
                    f"{k} ×{base / r['makespan']:.3f}" for k, r in rows.items()
                    if isinstance(r, dict)), flush=True)
    return out


def markdown(res: dict, argv: str) -> str:
    L = ["# Four chunks per rank under communication latency (simulated)", "",
         f"`python benchmarks/pipeline_comm_chunks.py {argv}`", "",
         "Pure simulation. Setting a number: every cross-rank hand-off costs α = that "
         "many t1 of one stage of the P-stage cut (boundary bytes not charged); `link …`: "
         "the α–β link measured by `pipeline_link.py` with the profile's boundary bytes. "
         "Throughput ratio over 1f1b4 in the same setting (1f1b4 pays the same hand-offs), "
         "wavek at symfold's memory. Profiles: "
         + "; ".join(f"**{k}**: {v}" for k, v in res["profiles"].items()) + ".", "",
         "| point | setting | hand-off / t1 | 1f1b4 bubble | ×1f1b4: hanayo4 w2 | "
         "wavek ≤ 2 chunks | wavek ≤ 4 chunks (waves chosen) |",
         "|---|---|---|---|---|---|---|"]
    for key, rows in res["points"].items():
        point, alpha = key.rsplit(" alpha=", 1)
        base = rows["1f1b4"]["makespan"]
        w4 = rows["wavek ≤4 chunks"]
        L.append(f"| {point} | {alpha} | {rows.get('handoff_over_t1', float('nan')):.3f} | "
                 f"{rows['1f1b4']['bubble']:.1%} | "
                 f"{base / rows['hanayo4 w2']['makespan']:.3f} | "
                 f"{base / rows['wavek ≤2 chunks']['makespan']:.3f} | "
                 f"{base / w4['makespan']:.3f} ({w4.get('waves')}) |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measured-costs", required=True)
    ap.add_argument("--alpha", dest="alphas", type=float, nargs="*",
                    default=[0.0, 0.01, 0.05, 0.2])
    ap.add_argument("--link", help="a pipeline_link.py JSON: charge its measured α–β link")
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
