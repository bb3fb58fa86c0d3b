"""Pipeline schedule study: simulate every schedule over a (P, M) grid.

Subcommands::

    python benchmarks/pipeline_schedules.py simulate [--costs FILE | --measured-costs FILE]
        [--P 4 8 16 32] [--M 8 16 32 64] [--K 0 2] [--alpha A] [--date 2026-11-21]
    python benchmarks/pipeline_schedules.py grids          # the grids of docs/schedules.md
    python benchmarks/pipeline_schedules.py real [--P 2] [--mem-P 4] ...  # mpirun, real compute
    python benchmarks/pipeline_schedules.py emulated [--P 4 8] [--costs FILE] # sleeping compute

``simulate`` writes ``benchmarks/results/pipeline_schedules_<date>.json`` and ``.md``
(plus Gantt PNGs and Perfetto traces for one grid point). Without a cost file it uses the
research note's *toy-model* phase ratios (eager 1:1:7:3, lazy 1:1.2:1.4:7), clearly
labelled as such; ``--measured-costs`` takes the same JSON format (see
``matris.train.pipeline.costs``) measured on the 10M preset.

Time unit: t1 of one stage when the model is cut into P stages (cost files: seconds).
Memory unit: one stage's P1 graph |A| at that cut (total |A| of the model / P).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from matris.train.pipeline.actions import ScheduleError
from matris.train.pipeline.bounds import (
    bubble_lower_bound,
    ceiling,
    lower_bound,
    total_work,
)
from matris.train.pipeline.costs import CostModel, load_costs, toy_profile
from matris.train.pipeline.grid import format_timeline
from matris.train.pipeline.schedules import make_schedule, skeleton
from matris.train.pipeline.simulate import simulate
from matris.train.pipeline.trace import gantt_png, slices_from_sim, write_trace

RESULTS = Path(__file__).resolve().parent / "results"

#: Study rows: label -> (schedule, options, note). "@cap" rows get wavek's K=0 cap.
ROWS = {
    "gpipe4": ("gpipe4", {}, "phase-major"),
    "1f1b4": ("1f1b4", {}, "Megatron-style port, full warm-up (S), best of fixed/cost-aware"),
    "1f1b4+W": ("1f1b4", {"split_w": True}, "same, weight parts deferred (ZB-H1-like)"),
    "1f1b4-classic": ("1f1b4", {"warmup": "classic"}, "Megatron's P−s depth verbatim"),
    "hanayo4": ("hanayo4", {}, "wave placement (1 wave = 2 chunks/rank), paper rule"),
    "hanayo4+W": ("hanayo4", {"split_w": True}, "same + deferred W parts"),
    "hanayo4@cap": ("hanayo4", {}, "limited to wavek's memory: without W, with W, with "
                    "W where its queue fits, or its W order with the overflowing phases "
                    "run whole (the fastest under the cap: W queues cost memory)"),
    "symfold": ("symfold", {}, "V fold, cyclic ZB-V-like order"),
    "symfold+W": ("symfold", {"split_w": True}, "ZBV-4: W parts at the cycle end"),
    "wavek@free": ("wavek", {"mem_cap": math.inf}, "wavek without a memory cap (the "
                   "lower bound's own assumption)"),
}
BASELINES = ("1f1b4", "1f1b4+W", "hanayo4", "hanayo4+W", "hanayo4@cap")


#: Cost files are read once per run (profiles() is asked for every (P, M) point).
_load = functools.lru_cache(maxsize=None)(load_costs)


def profiles(args, P: int) -> dict[str, CostModel]:
    """Cost models at P stages: the file's (resampled) or the labelled toy ratios."""
    path = args.measured_costs or args.costs
    if path:
        models = _load(path)
    else:
        models = {v: toy_profile(v, P) for v in ("eager", "lazy")}
    queues = _load(args.queues_from) if getattr(args, "queues_from", None) else {}
    out = {}
    for name, cm in models.items():
        cm = cm.untied().for_stages(P)  # a scaling study: P may exceed the measured stages
        if name in queues:  # W-queue sizes of another run, relative to its |A|
            q = queues[name]
            cm = replace(cm, **{f: tuple(a * sum(getattr(q, f)) / sum(q.mem_a)
                                         for a in cm.mem_a) for f in ("mem_q3", "mem_q4")},
                         label=f"{cm.label}; W-queue sizes from {args.queues_from}")
        if getattr(args, "ideal_split", False):
            cm = replace(cm, split_factor={"P3": 1.0, "P4": 1.0},
                         label=f"{cm.label} [what-if: ideal W split, split factor 1]")
        if args.alpha is not None:
            cm = replace(cm, alpha=args.alpha * cm.stage_times[0][0])
        out[name] = cm
    return out


def mem_unit(cm: CostModel, P: int) -> float:
    return sum(cm.untied().for_stages(P).mem_a) / P


def run_one(name, P, M, cm, opts) -> tuple:
    t = time.time()
    prog = make_schedule(name, P, M, cm, **opts)
    r = simulate(prog, cm)
    unit = mem_unit(cm, P)
    row = {"makespan": r.makespan, "throughput": M / r.makespan, "bubble": r.bubble,
           "peak_mem": max(r.peak_mem) / unit, "peak_mem_per_rank": [m / unit for m in
                                                                      r.peak_mem],
           "peak_a": r.peak_a, "peak_ap": r.peak_ap, "seconds": time.time() - t}
    if name == "wavek":
        row["chosen"] = prog.meta["chosen"]
        row["mem_cap"] = prog.meta["mem_cap"][0] / unit
    return row, prog, r


def study_point(P: int, M: int, cm: CostModel, Ks) -> dict:
    """All rows at one (P, M) for one cost profile."""
    out: dict[str, dict] = {}
    wk_progs = {}
    for K in Ks:
        row, prog, _ = run_one("wavek", P, M, cm, {"K": K})
        out[f"wavek K={K}"] = row
        wk_progs[K] = prog
    cap0 = wk_progs[Ks[0]].meta["mem_cap"]
    for label, (name, opts, _) in ROWS.items():
        opts = dict(opts)
        if label.endswith("@cap"):
            tries = ((False, "all"), (True, "all"), (True, "fits"), (True, "fitted"))
            rows = []
            for sw, mode in tries:
                try:
                    rows.append(run_one(name, P, M, cm, {**opts, "mem_cap": cap0,
                                                         "split_w": sw, "split_mode": mode})[0])
                except ScheduleError:  # nothing of this kind fits the cap
                    rows.append({"makespan": math.inf})
            unit = mem_unit(cm, P)
            over = [r for r in rows if r["makespan"] < math.inf and
                    r["peak_mem"] * unit > max(cap0) * (1 + 1e-9)]
            if over:
                raise AssertionError(f"{label} broke wavek's cap at P={P}, M={M}")
            out[label] = min(rows, key=lambda r: r["makespan"])
            out[label]["split_w"], out[label]["split_mode"] = tries[rows.index(out[label])]
            continue
        out[label] = run_one(name, P, M, cm, opts)[0]
    # Free-memory bounds of every two-chunk configuration (V or one wave, W split or not),
    # one lower-bound pass each: the best W-split bubble, and the shortest makespan any
    # schedule could reach (no ratio over 1f1b4 beats makespan(1f1b4) / it). The
    # makespan bound covers splitting any subset of the phases (bounds.split_relaxation).
    skels = skeletons(P, M, cm, (0, 1))
    best_lb = min(1.0 - total_work(sk, cm) / (P * lower_bound(sk, cm))
                  for (w, sw), sk in skels.items() if sw)
    makespan_lb_any = makespan_bound(skels, cm)
    makespan_lb_at_cap = makespan_bound(skels, cm, cap0)
    out["wavek@free"]["lb_any"] = best_lb
    # Bounds for wavek's chosen configuration: free memory, and at its own cap.
    for K, prog in wk_progs.items():
        row = out[f"wavek K={K}"]  # the program's own actions (relaxed if partly split)
        row["lb"] = bubble_lower_bound(prog, cm)
        row["lb_mem"] = bubble_lower_bound(prog, cm, prog.meta["mem_cap"])
        row["unsplit"] = len(prog.unsplit)
        row["lb_any"] = best_lb
        row["makespan_lb_any"] = makespan_lb_any
        row["makespan_lb_any_at_cap"] = makespan_lb_at_cap  # within wavek's K=0 cap
    return out


def skeletons(P: int, M: int, cm: CostModel, waves) -> dict:
    """{(waves, split_w): the skeleton program} for every placement in ``waves`` (0: the
    linear V, w: a w-wave zigzag) with and without the W split."""
    return {(w, sw): skeleton("x", P, M, waves=w, split_w=sw, lazy_p3=cm.lazy_p3)
            for w in waves for sw in (False, True)}


def makespan_bound(skels: dict, cm: CostModel, mem_cap=None) -> float:
    """The shortest makespan any schedule on these placements could reach, splitting any
    subset of its phases (``split_relaxation`` for the split skeletons), within
    ``mem_cap`` if given: no ratio over a baseline beats makespan(baseline) / it."""
    # A skeleton whose split phases all run whole, marked so (``unsplit``), is bounded
    # through the split relaxation for every choice of split phases, and its memory
    # windows keep the real W queues of the phases that do split.
    return min(lower_bound(sk.run_whole(sk.split_phases()) if sw else sk, cm,
                           mem_cap=mem_cap)
               for (w, sw), sk in skels.items())


def cmd_simulate(args) -> int:
    date = args.date
    results = {"date": date, "P": args.P, "M": args.M, "K": args.K, "profiles": {},
               "rows": {k: v[2] for k, v in ROWS.items()}, "points": {}}
    t0 = time.time()
    for P in args.P:
        for M in args.M:
            for variant, cm in profiles(args, P).items():
                results["profiles"][variant] = {"label": cm.label, "ratios": [
                    x / cm.stage_times[0][0] for x in cm.stage_times[0]],
                    "w_frac": cm.w_frac, "split_factor": cm.split_factor,
                    "fused_factor": cm.fused_factor, "alpha": cm.alpha, "lazy_p3": cm.lazy_p3}
                if args.measured_costs or args.costs:
                    results["mem_ap_over_a"] = sum(cm.mem_ap) / sum(cm.mem_a)
                    results.setdefault("mem_q_over_a", {})[variant] = [
                        sum(cm.mem_q3) / sum(cm.mem_a), sum(cm.mem_q4) / sum(cm.mem_a)]
                    results["mem_source"] = "from the cost file"
                pt = study_point(P, M, cm, args.K)
                results["points"][f"{variant} P={P} M={M}"] = pt
                wk = pt[f"wavek K={args.K[0]}"]
                print(f"[{time.time() - t0:6.0f}s] {variant:5s} P={P:2d} M={M:2d}  "
                      f"1f1b4 {pt['1f1b4']['bubble']:.3f}  hanayo4 "
                      f"{pt['hanayo4']['bubble']:.3f}  symfold {pt['symfold']['bubble']:.3f}"
                      f"  wavek {wk['bubble']:.3f} (LB {wk['lb']:.3f})  x1f1b4 "
                      f"{pt['1f1b4']['makespan'] / wk['makespan']:.2f}", flush=True)
    if args.comm:
        results["comm"] = comm_sensitivity(args)
    if args.waves2:
        results["waves2"] = four_chunks(args)
    if args.gantt:
        results["artifacts"] = artifacts(args, date)
    stem = RESULTS / f"pipeline_schedules_{date}{args.tag}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(results, indent=1))
    write_markdown(results, Path(f"{stem}.md"), argv=" ".join(sys.argv[1:]))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


def comm_sensitivity(args) -> dict:
    """Bubble under α latency per hand-off (in units of t1), zero bandwidth cost."""
    out = {}
    for P, M in ((8, 8), (16, 16)):
        for a in (0.0, 0.05, 0.2):
            for variant in ("eager", "lazy"):
                cm = replace(toy_profile(variant, P), alpha=a)
                pt = {}
                for label, (name, opts) in {"1f1b4": ("1f1b4", {}),
                                            "hanayo4": ("hanayo4", {}),
                                            "symfold": ("symfold", {}),
                                            "wavek K=0": ("wavek", {"K": 0})}.items():
                    row = run_one(name, P, M, cm, opts)[0]
                    pt[label] = {"bubble": row["bubble"], "makespan": row["makespan"],
                                 "chosen": row.get("chosen")}
                out[f"{variant} P={P} M={M} alpha={a}"] = pt
    return out


def four_chunks(args) -> dict:
    """hanayo4 and wavek with a budget of 4 chunks per rank (waves ≤ 2), smaller grid."""
    out = {}
    for P in (p for p in args.P if p <= 16):
        for M in (m for m in args.M if m <= 32):
            for variant, cm in profiles(args, P).items():
                wk, prog, _ = run_one("wavek", P, M, cm, {"K": 0, "max_waves": 2})
                cap = wk["mem_cap"] * mem_unit(cm, P)
                wk["lb"] = bubble_lower_bound(prog, cm)
                wk["lb_mem"] = bubble_lower_bound(prog, cm, prog.meta["mem_cap"])
                # Any schedule with at most 4 chunks per rank, free memory.
                wk["makespan_lb_any"] = makespan_bound(skeletons(P, M, cm, (0, 1, 2)), cm)
                pt = {"wavek K=0 (waves<=2)": wk}
                for label, opts in (("hanayo4 w2", {"waves": 2}),
                                    ("hanayo4 w2+W", {"waves": 2, "split_w": True}),
                                    ("hanayo4 w2+W@cap", {"waves": 2, "split_w": True,
                                                          "mem_cap": cap})):
                    pt[label] = run_one("hanayo4", P, M, cm, opts)[0]
                out[f"{variant} P={P} M={M}"] = pt
                print(f"  4 chunks/rank {variant} P={P} M={M}: wavek {wk['bubble']:.3f} "
                      f"hanayo4 w2 {pt['hanayo4 w2']['bubble']:.3f}", flush=True)
    return out


def artifacts(args, date: str) -> list[str]:
    """Gantt PNGs and Perfetto traces at (P, M) = (8, 8), eager profile (the cost file's
    when one is given, else the toy ratios)."""
    P, M = 8, 8
    cm = profiles(args, P)["eager"]
    src = "measured" if (args.measured_costs or args.costs) else "toy"
    files = []
    for label, name, opts in (("1f1b4", "1f1b4", {}), ("hanayo4", "hanayo4", {}),
                              ("symfold", "symfold", {}), ("wavek", "wavek", {"K": 0})):
        prog = make_schedule(name, P, M, cm, **opts)
        r = simulate(prog, cm)
        stem = RESULTS / f"pipeline_schedules_{date}{args.tag}_P{P}M{M}_eager_{label}"
        gantt_png(slices_from_sim(r), f"{stem}.png",
                  title=f"{prog.describe()} — bubble {r.bubble:.1%} ({src} eager costs)")
        write_trace(slices_from_sim(r), f"{stem}.trace.json", program=prog.describe(),
                    source="simulated", costs=cm.label)
        files += [f"{stem.name}.png", f"{stem.name}.trace.json"]
    return files


def write_markdown(results: dict, path: Path, argv: str = "") -> None:
    """The human-readable report next to the JSON."""
    pts, K0 = results["points"], results["K"][0]
    wk = f"wavek K={K0}"
    variants = sorted({k.split()[0] for k in pts})
    grid = [(P, M) for P in results["P"] for M in results["M"]]
    L = [f"# Pipeline schedule study (simulated), {results['date']}", "",
         f"`python benchmarks/pipeline_schedules.py {argv}`", "",
         "Pure simulation (`matris.train.pipeline.simulate`), no hardware timing: the numbers "
         "depend only on the cost profiles below. Definitions of every schedule, with "
         "grids: `docs/schedules.md`.", "", "## Cost profiles", ""]
    for v, prof in results["profiles"].items():
        L.append(f"- **{v}**: {prof['label']}; t1:t2:t3:t4 = "
                 f"{':'.join(f'{x:.3g}' for x in prof['ratios'])} per stage (uniform stages), "
                 f"deferrable weight-gradient share {prof['w_frac']}, split factor "
                 f"{prof.get('split_factor', {'P3': 1.0, 'P4': 1.0})}, fused-turn factor "
                 f"{prof.get('fused_factor', 0.7):.2f}, α = {prof['alpha']:g}.")
    ratio = results.get("mem_ap_over_a", 1.35)
    source = results.get("mem_source", "measured on the toy model")
    queues = "; ".join(f"{v}: |Q3| = {q3:.2f} |A|, |Q4| = {q4:.2f} |A|" for v, (q3, q4)
                       in results.get("mem_q_over_a", {}).items())
    L += ["", "Time unit: t1 of one stage of the P-stage cut. Memory unit: one stage's P1 graph "
          f"|A| at that cut (|A'| = {ratio:.2f} |A|, {source}); a split P3 / P4 also holds "
          "its W queue (the deferred GEMMs' new gradient factors) until its W action ("
          + (queues or "not measured: 0") + "); `peak` is the "
          "largest per-rank peak of live activation sets. Communication is free in the "
          "main tables (idealised, as in the research note); see the sensitivity table.", "",
          "## Issue goals", ""]
    L += _goals(pts, grid, variants, wk, results.get("waves2", {}))
    for v in variants:
        L += ["", f"## wavek (K={K0}) against the baselines: {v} profile", "",
              "Ratio = throughput of wavek / throughput of the baseline, at the same P, M and "
              "cost profile; in brackets the ceiling 1/(1 − baseline bubble) no schedule can "
              "beat. `+W`: the baseline also defers weight-gradient parts (Zero-Bubble "
              "style); `@cap`: limited to wavek's memory, without W, with W, with W where "
              "its queue fits, or fitted (the fastest). "
              "LB: simulator lower bound for "
              "wavek's chosen placement and W split (free memory; for a partial split the "
              "relaxation that covers every choice of split phases); LBmem: the same at "
              "wavek's memory cap. Chosen \"W where it fits\": a P3 / P4 is split only "
              "when its W queue fits under the cap as it starts; \"W fitted\": the fixed "
              "pattern's W order with the phases whose queues overflow the cap run "
              "whole.", "",
              "| P | M | wavek bubble | ×1f1b4 | ×1f1b4+W | ×hanayo4 | ×hanayo4+W | "
              "×hanayo4@cap | LB | Δ | LBmem | Δmem | chosen |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for P, M in grid:
            pt = pts.get(f"{v} P={P} M={M}")
            if not pt:
                continue
            w = pt[wk]
            cells = [f"{P}", f"{M}", f"{w['bubble']:.1%}"]
            for b in BASELINES:
                r = pt[b]["makespan"] / w["makespan"]
                cells.append(f"{r:.2f} ({ceiling(pt[b]['bubble']):.2f})")
            ch = w["chosen"]
            cells += [f"{w['lb']:.1%}", f"{(w['bubble'] - w['lb']) * 100:.1f}",
                      f"{w['lb_mem']:.1%}", f"{(w['bubble'] - w['lb_mem']) * 100:.1f}",
                      f"{'wave' if ch['waves'] else 'V'}, {_w_text(ch)}, {ch['order']}"]
            L.append("| " + " | ".join(cells) + " |")
    for v in variants:
        labels = [k for k in next(iter(pts.values()))]
        L += ["", f"## Bubble / peak memory of every schedule: {v} profile", "",
              "| P | M | " + " | ".join(labels) + " |",
              "|---|---|" + "---|" * len(labels)]
        for P, M in grid:
            pt = pts.get(f"{v} P={P} M={M}")
            if pt:
                L.append(f"| {P} | {M} | " + " | ".join(
                    f"{pt[k]['bubble']:.1%} / {pt[k]['peak_mem']:.1f}" for k in labels) + " |")
    if "eager" in variants and "lazy" in variants:
        L += _lazy_both_ways(pts, grid, wk)
    if "comm" in results:
        L += _comm_table(results["comm"])
    if "waves2" in results:
        L += _waves2_table(results["waves2"], results["points"])
    L += ["", "## Rows", ""] + [f"- `{k}`: {v}" for k, v in results["rows"].items()]
    L += ["- `wavek K=k`: list scheduling over the simulator under the per-rank memory cap "
          "(symfold's peak + k micro-batches' sets); chosen configuration in the JSON."]
    if results.get("artifacts"):
        L += ["", "## Artifacts (P=8, M=8, eager)", ""] + [f"- `{a}`" for a in
                                                          results["artifacts"]]
    path.write_text("\n".join(L) + "\n")


def _w_text(chosen: dict) -> str:
    if not chosen["split_w"]:
        return "no W"
    return {"fits": "W where it fits", "drain": "W in the drain",
            "fitted": "W fitted"}.get(chosen.get("split_mode", "all"), "W")


def _goals(pts, grid, variants, wk, w2) -> list[str]:
    L = ["| goal | profile | result | met |", "|---|---|---|---|"]
    for P, M in ((8, 8), (16, 16)):
        for v in variants:
            pt = pts.get(f"{v} P={P} M={M}")
            if not pt:
                continue
            r = pt["1f1b4"]["makespan"] / pt[wk]["makespan"]
            best = pt["1f1b4"]["makespan"] / pt[wk].get("makespan_lb_any", float("nan"))
            best_cap = pt["1f1b4"]["makespan"] / pt[wk].get("makespan_lb_any_at_cap",
                                                            float("nan"))
            L.append(f"| wavek ≥ 1.4× 1f1b4 at (P,M)=({P},{M}) | {v} | {r:.2f}× (ceiling "
                     f"{ceiling(pt['1f1b4']['bubble']):.2f}×; any schedule with ≤ 2 chunks "
                     f"per rank ≤ {best:.2f}× by the lower bound, ≤ {best_cap:.2f}× within "
                     f"wavek's memory; vs 1f1b4+W "
                     f"{pt['1f1b4+W']['makespan'] / pt[wk]['makespan']:.2f}×) | "
                     f"{'yes' if r >= 1.4 else 'NO'} |")
            four = w2.get(f"{v} P={P} M={M}", {}).get("wavek K=0 (waves<=2)")
            if four is not None:  # the same goal with a budget of 4 chunks per rank
                r4 = pt["1f1b4"]["makespan"] / four["makespan"]
                b4 = pt["1f1b4"]["makespan"] / four.get("makespan_lb_any", float("nan"))
                L.append(f"| … with ≤ 4 chunks per rank (a model of ≥ 4P units) | {v} | "
                         f"{r4:.3f}× (any schedule with ≤ 4 chunks per rank ≤ {b4:.2f}×; "
                         f"wavek chose {four['chosen']['waves']} wave(s), peak "
                         f"{four['peak_mem']:.1f}, symfold's {pt['symfold']['peak_mem']:.1f}"
                         f") | {'yes' if r4 >= 1.4 else 'NO'} |")
    for v in variants:
        far, far_mem, far_free, n = [], [], [], 0
        for P, M in grid:
            pt = pts.get(f"{v} P={P} M={M}")
            if not pt or M < 4 * P:
                continue
            n += 1
            w = pt[wk]
            if w["bubble"] - w["lb"] > 0.05:
                far.append(f"({P},{M}) {(w['bubble'] - w['lb']) * 100:.1f}")
            if w["bubble"] - w["lb_mem"] > 0.05:
                far_mem.append(f"({P},{M}) {(w['bubble'] - w['lb_mem']) * 100:.1f}")
            wf = pt.get("wavek@free", {})
            if "lb_any" in wf and wf["bubble"] - wf["lb_any"] > 0.05:
                far_free.append(f"({P},{M}) {(wf['bubble'] - wf['lb_any']) * 100:.1f}")
        free = "all" if not far else "misses " + ", ".join(far)
        capped = "all" if not far_mem else "misses " + ", ".join(far_mem)
        both_free = "all" if not far_free else "misses " + ", ".join(far_free)
        met = "yes" if not far else (
            "at equal memory assumptions" if not (far_mem or far_free) else "NO")
        L.append(f"| wavek within 5 points of LB where M ≥ 4P ({n} points) | {v} | "
                 f"K=0 wavek vs free-memory LB: {free}; vs the LB at its memory cap: "
                 f"{capped}; uncapped wavek vs the best free-memory LB (any two-chunk "
                 f"placement, W split): {both_free} | {met} |")
    for v in variants:
        worse_rank, worse_max, n = [], [], 0
        for P, M in grid:
            pt = pts.get(f"{v} P={P} M={M}")
            if not pt:
                continue
            n += 1
            s, b = pt["symfold"], pt["1f1b4"]
            if s["peak_mem"] > b["peak_mem"] + 1e-9:
                worse_max.append(f"({P},{M})")
            if any(x > y + 1e-9 for x, y in zip(s["peak_mem_per_rank"], b["peak_mem_per_rank"])):
                worse_rank.append(f"({P},{M})")
        top = "always" if not worse_max else "exceeds at " + ", ".join(worse_max)
        each = "always" if not worse_rank else "exceeds at " + ", ".join(worse_rank)
        L.append(f"| symfold peak memory ≤ 1f1b4's ({n} points) | {v} | largest rank: {top}; "
                 f"rank by rank: {each} | largest rank: {'yes' if not worse_max else 'NO'}; "
                 f"rank by rank: {'yes' if not worse_rank else 'NO'} |")
    return L


def _lazy_both_ways(pts, grid, wk) -> list[str]:
    L = ["", "## Lazy-P3 both ways", "",
         "Throughput in micro-batches per t1 (t1 is the same P1 in both variants), eager "
         "→ lazy. Every schedule can use lazy P3; the last column compares wavek with lazy "
         "P3 against 1f1b4 without it.", "",
         "| P | M | 1f1b4 | hanayo4+W | symfold | wavek | wavek lazy / 1f1b4 eager |",
         "|---|---|---|---|---|---|---|"]
    for P, M in grid:
        e, z = pts.get(f"eager P={P} M={M}"), pts.get(f"lazy P={P} M={M}")
        if not (e and z):
            continue
        cells = [f"{e[k]['throughput']:.4f} → {z[k]['throughput']:.4f}"
                 for k in ("1f1b4", "hanayo4+W", "symfold", wk)]
        L.append(f"| {P} | {M} | " + " | ".join(cells) +
                 f" | {z[wk]['throughput'] / e['1f1b4']['throughput']:.2f}× |")
    return L


def _waves2_table(w2: dict, points: dict) -> list[str]:
    L = ["", "## Four chunks per rank (waves ≤ 2)", "",
         "The main tables give every schedule at most two model chunks per rank (hanayo4 "
         "with 1 wave; wavek's wave candidate). With free communication more chunks always "
         "shrink the bubble, so here hanayo4 uses 2 waves (4 chunks per rank, 4P stages) "
         "and wavek may choose 0, 1 or 2 waves. Mind the model: 4P chunks need at least "
         "4P blocks (the 10M preset has 10 interaction blocks plus embedding and readout, "
         "so even P = 4 with 2 waves is out of reach for it). Time units are those of the "
         "main tables (the same total work re-cut, each stage paying the fixed per-stage "
         "cost), so ×1f1b4 compares with the main tables' 1f1b4 (linear, one chunk per "
         "rank). Bound: makespan(1f1b4) / the lower bound for any schedule with at most 4 "
         "chunks per rank (free memory, any phases split). LB: the bound of wavek's own "
         "program, free memory / at its cap (symfold's peak).", "",
         "| point | wavek bubble / peak (LB; at cap) | ×1f1b4 (bound) | hanayo4 w2 | "
         "hanayo4 w2+W | hanayo4 w2+W@cap | ×hanayo4 w2 (ceiling) | ×hanayo4 w2+W | ×@cap "
         "| wavek waves |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for key, pt in w2.items():
        w = pt["wavek K=0 (waves<=2)"]
        cells = [f"{w['bubble']:.1%} / {w['peak_mem']:.1f}"
                 + (f" ({w['lb']:.1%}; {w['lb_mem']:.1%})" if "lb" in w else "")]
        base = points.get(key, {}).get("1f1b4")
        cells.append("–" if base is None else
                     f"{base['makespan'] / w['makespan']:.3f}"
                     + (f" ({base['makespan'] / w['makespan_lb_any']:.2f})"
                        if "makespan_lb_any" in w else ""))
        cells += [f"{pt[k]['bubble']:.1%} / {pt[k]['peak_mem']:.1f}" for k in
                  ("hanayo4 w2", "hanayo4 w2+W", "hanayo4 w2+W@cap")]
        h = pt["hanayo4 w2"]
        cells.append(f"{h['makespan'] / w['makespan']:.2f} ({ceiling(h['bubble']):.2f})")
        cells += [f"{pt[k]['makespan'] / w['makespan']:.2f}" for k in
                  ("hanayo4 w2+W", "hanayo4 w2+W@cap")]
        cells.append(str(w["chosen"]["waves"]))
        L.append(f"| {key} | " + " | ".join(cells) + " |")
    return L


def _comm_table(comm: dict) -> list[str]:
    L = ["", "## Communication sensitivity", "",
         "Each cross-rank hand-off costs α (in units of t1); bubbles. The wave placement "
         "(hanayo4, wavek when it picks it) crosses ranks twice as often.", "",
         "| point | 1f1b4 | hanayo4 | symfold | wavek K=0 | wavek placement |",
         "|---|---|---|---|---|---|"]
    for key, pt in comm.items():
        ch = pt["wavek K=0"]["chosen"]
        L.append(f"| {key} | " + " | ".join(f"{pt[k]['bubble']:.1%}" for k in
                                            ("1f1b4", "hanayo4", "symfold", "wavek K=0")) +
                 f" | {'wave' if ch['waves'] else 'V'} |")
    return L


def cmd_grids(args) -> int:
    """Print the time-aligned grids used in docs/schedules.md (equal phase costs, W parts
    half of P3/P4). Cells are actions in the text form; ``~`` continues, ``.`` idles."""
    from matris.train.pipeline.costs import uniform

    specs = [("gpipe4", 3, 4, {}), ("1f1b4", 3, 4, {}), ("1f1b4", 3, 4, {"warmup": "classic"}),
             ("symfold", 3, 6, {}), ("symfold", 3, 4, {"split_w": True}),
             ("hanayo4", 2, 3, {}), ("wavek", 3, 4, {}), ("1f1b4", 3, 4, {"phases": 2})]
    for name, P, M, opts in specs:
        prog = make_schedule(name, P, M, **opts)
        r = simulate(prog, uniform(P))
        print(f"{prog.describe()} {opts or ''}: bubble {r.bubble:.3f}, peak P1/P2 graphs "
              f"per rank {r.peak_a} / {r.peak_ap}")
        print("```")
        print(format_timeline(r))
        print("```\n")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sim = sub.add_parser("simulate", help="the simulation study")
    src = sim.add_mutually_exclusive_group()
    src.add_argument("--costs", help="cost JSON (default: labelled toy ratios)")
    src.add_argument("--measured-costs", help="cost JSON measured on the 10M preset")
    sim.add_argument("--P", type=int, nargs="+", default=[4, 8, 16, 32])
    sim.add_argument("--M", type=int, nargs="+", default=[8, 16, 32, 64])
    sim.add_argument("--K", type=int, nargs="+", default=[0, 2],
                     help="wavek slack values; the first is the headline")
    sim.add_argument("--alpha", type=float, default=None,
                     help="per-hand-off latency in units of t1 (default: the file's, or 0)")
    sim.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    sim.add_argument("--tag", default="", help="suffix of the result file names")
    sim.add_argument("--queues-from", help="cost JSON whose W-queue sizes (relative to its "
                     "|A|) replace the main file's (combine timings of one run with queue "
                     "sizes measured later)")
    sim.add_argument("--ideal-split", action="store_true",
                     help="what-if: W split parts sum to the unsplit phase (split factor 1)")
    sim.add_argument("--no-comm", dest="comm", action="store_false",
                     help="skip the communication-latency sensitivity table")
    sim.add_argument("--no-gantt", dest="gantt", action="store_false",
                     help="skip Gantt PNGs and traces")
    sim.add_argument("--no-waves2", dest="waves2", action="store_false",
                     help="skip the 4-chunks-per-rank table (hanayo4 / wavek with 2 waves)")
    sim.set_defaults(func=cmd_simulate)
    grids = sub.add_parser("grids", help="print the grids of docs/schedules.md")
    grids.set_defaults(func=cmd_grids)
    import pipeline_runs

    pipeline_runs.add_parsers(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
