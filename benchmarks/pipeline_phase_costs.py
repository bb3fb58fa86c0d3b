"""Measure the four phases per pipeline unit of a model: t1..t4, W shares, the fused-turn
factor, activation bytes |A| / |A'| and boundary tensor bytes; write a CostModel JSON.

    python benchmarks/pipeline_phase_costs.py [--preset 10m] [--repeats 3] [--date D]
        [--device cpu|cuda|auto] [--dtype fp32|bf16] [--tag T]

One process, one torch thread, float32 (``--dtype bf16``: the trainer's bf16 autocast,
CUDA only; on a GPU every action is timed after waiting for the device). The model is
cut at every unit (``cuts = [0, 1, ..., L]``): stage 0 = embedding, stages 1..L = one
block each, stage L + 1 = the readout alone (so that a cost file prices every stage
count up to L + 2; runs before 2026-11-22 had the final block and the readout in one
stage). A realistic micro-batch (a 32-atom fcc Cu–Au cell and a 16-atom diamond Si
cell, rattled) runs through the executor's own phase code
(``matris.train.pipeline.phases``) as a one-rank chain, stage by stage:

* run **eager**: P1 0→S−1, P2 S−1→0 (create_graph), P3 0→S−1, P4 S−1→0;
* run **eager + W split**: the same with P3 / P4 split into critical part + W (the
  executor defers the linear maps' weight GEMMs, ``matris.nn.deferred``; ``split_factor``
  = (critical + W) / unsplit, 1 for a free split);
* run **lazy**: P3 = ā only, P4 = the rest;
* the same two split runs with every W **late**: after the step's last critical action,
  as a schedule that splits runs it (deferred into a bubble, its saved factors out of
  cache); the cost files price splits with these (``measure.RUNS``);
* run **lazy + W4 split**;
* the whole model as one stage, eager (Σ unit stages − it = the fixed per-stage cost)
  and lazy (a last stage's lazy P4 *is* the fused turn: fused factor = its time / the
  t3 + t4 the cost model prices that stage at, i.e. the unit stages' sum; the
  readout-alone stage is too small to measure it).

Each run is repeated; per-action times are medians. |A| (|A'|) = bytes of the distinct
tensors saved for backward during P1 (P2) of a stage, parameters excluded (torch's
``saved_tensors_hooks``; P2 tensors already counted in A are not counted again).
Boundary bytes: the h / a / ā / h̄ features (atom, bond, angle rows × width) and the
force/virial sums f_acc / dl_df of a block boundary.

Output: ``benchmarks/results/pipeline_phase_costs_<date>.json`` (a ``costs.py`` bundle
{"eager", "lazy"}: one entry per unit stage, seconds and bytes) and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from matris.config import preset
from matris.graph import build_graph
from matris.model import MatRIS
from matris.train.config import LossConfig
from matris.train.cpu_allocator import tune_cpu_allocator
from matris.train.dist.launch import pick_device
from matris.train.graph_parallel.testing import labelled_batch
from matris.train.pipeline.costs import CostModel, save_costs
from matris.train.pipeline.measure import cost_models, measure_runs
from matris.train.step import autocast_context

RESULTS = Path(__file__).resolve().parent / "results"

MACHINE = "2-vCPU CPU VM"


def structures(cfg, seed: int = 0) -> list:
    """A 32-atom fcc Cu–Au cell (a = 3.8 Å) and a 16-atom diamond Si cell (a = 5.43 Å),
    rattled by 0.05 Å."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    a = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((2, 2, 2))
    a.numbers = rng.choice([29, 79], size=len(a))
    b = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    out = []
    for at in (a, b):
        at.positions += rng.normal(0, 0.05, at.positions.shape)
        out.append(build_graph(at.numbers, at.positions, at.cell.array, at.pbc, cfg.cutoff,
                               cfg.three_body_cutoff))
    return out


def measure(args) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = pick_device(args.device)
    if args.dtype == "bf16" and device.type != "cuda":
        raise SystemExit("--dtype bf16 (autocast, as the trainer's train.dtype=bf16) needs "
                         f"a CUDA device; --device {args.device} gave {device}")
    model = MatRIS(preset(args.preset)).float()
    model.set_reference_energies(np.random.default_rng(0).uniform(-8, -1, 119))
    model.to(device)
    batch = labelled_batch(structures(model.config), seed=1,
                           dtype=torch.float32).to(device, torch.float32)
    # The trainer's own autocast (fp32 master weights, bf16 compute on CUDA; fp32: none).
    autocast = partial(autocast_context, device,
                       "bf16" if args.dtype == "bf16" else "float32")
    res = measure_runs(model, batch, LossConfig(), args.repeats,
                       log=lambda line: print(line, flush=True), autocast=autocast)
    res["info"]["preset"] = args.preset
    res["info"]["device"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                             else "CPU")
    res["info"]["precision"] = "bf16 autocast" if args.dtype == "bf16" else "fp32"
    return res


def machine_of(res: dict) -> str:
    """The machine a result was measured on (runs before 2026-11-23: this CPU VM)."""
    dev = res["info"].get("device", "CPU")
    return MACHINE if dev == "CPU" else dev


def label_of(res: dict) -> str:
    info = res["info"]
    dev, precision = info.get("device", "CPU"), info.get("precision", "fp32")
    where = f"CPU {precision}, 1 thread, {MACHINE}" if dev == "CPU" else f"{dev}, {precision}"
    return (f"{info['preset']} preset, {where}, measured {res['date']} ({info['atoms']} "
            f"atoms, {info['angles']} angles per micro-batch); one entry per unit stage")


def uniform_models(models: dict, num: int = 10) -> dict[str, CostModel]:
    """The whole model's phase totals (and |A|, |A'| totals) spread evenly over ``num``
    stages: the idealised perfectly balanced cut the schedule study assumes."""
    from dataclasses import replace

    out = {}
    for variant, cm in models.items():
        o = cm.stage_overhead  # every stage of the finer cut pays it once
        tot = [(sum(t[k] for t in cm.stage_times) - cm.num_stages * o[k]) / num + o[k]
               for k in range(4)]
        out[variant] = replace(cm.untied(), stage_times=(tuple(tot),) * num,
                               **{f: (sum(getattr(cm, f)) / num,) * num for f in
                                  ("mem_a", "mem_ap", "mem_q3", "mem_q4")},
                               label=cm.label.replace("one entry per unit stage",
                                                      "whole-model totals spread evenly "
                                                      f"over {num} stages"))
    return out


def block_stages(stages: list) -> list[int]:
    """Indices of the measured stages that hold exactly one interaction block and no
    readout (``stages``: [first block, stop block, last] per stage)."""
    return [s for s, (a, b, last) in enumerate(stages) if b - a == 1 and not last]


def unit_text(stages: list) -> str:
    a, b, _ = stages[-1]
    if a == b:
        return "stage 0 = embedding, 1..L = one interaction block, last = the readout alone"
    return "stage 0 = embedding, 1..L−1 = one interaction block, last = final block + readout"


def write_markdown(res: dict, models: dict, path: Path) -> None:
    info, d = res["info"], res["derived"]
    S = len(info["stages"])
    L = [f"# Pipeline phase costs ({info['preset']} preset), {res['date']}, "
         f"{machine_of(res)}", "",
         f"`python benchmarks/pipeline_phase_costs.py {res['argv']}` — one process, 1 torch "
         f"thread, {info.get('precision', 'fp32')} on {info.get('device', 'CPU')}; "
         f"micro-batch: {info['structures']} structures, {info['atoms']} "
         f"atoms, {info['edges']} edges, {info['angles']} angles; medians of "
         f"{res['repeats']} repeats; on a GPU every action is timed after waiting for "
         "the device (`train/pipeline/clock.py`). Host load average "
         f"{res['load'][0]:.1f} → {res['load'][1]:.1f} (on the 2-core VM, cores shared "
         "with other jobs: absolute times carry ±30 %; ratios within one run are "
         "steadier). glibc mmap and heap trimming off "
         f"(`train/cpu_allocator.py`): {'yes' if res.get('malloc_tuned') else 'no'}.", "",
         *([f"Pooled from {len(res['pooled_from'])} runs: "
            + ", ".join(f"`{Path(p).name}`" for p in res["pooled_from"])
            + " (their samples together; medians over all of them).", ""]
           if res.get("pooled_from") else []),
         f"Units: {unit_text(info['stages'])}. Times in ms; |A|, |A'| and the W queues' "
         "extra bytes |Q3|, |Q4| "
         "(eager split; lazy split |Q4| in the last column) in MiB. c + W: a split "
         "phase's critical part + its W, "
         + ("W run late (after the step's last critical action)." if d.get("w_late") else
            "W run right after its critical part."), "",
         "| stage | t1 | t2 | t3 | t4 | lazy t3 | lazy t4 | c3 + W3 | c4 + W4 | |A| | |A'| "
         "| |Q3| | |Q4| | lazy |Q4| |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    e, z = models["eager"], models["lazy"]
    med = res["median"]
    split_run = "eager_split_late" if d.get("w_late") else "eager_split"
    for s in range(S):
        ms = [x * 1e3 for x in e.stage_times[s]] + [x * 1e3 for x in z.stage_times[s][2:]]
        split = [med[split_run].get(f"{k}:{s}", 0) * 1e3 for k in ("P3", "W3", "P4", "W4")]
        L.append(f"| {s} | " + " | ".join(f"{x:,.0f}" for x in ms) +
                 f" | {split[0]:,.0f} + {split[1]:,.0f} | {split[2]:,.0f} + {split[3]:,.0f} | "
                 + " | ".join(f"{x / 2**20:,.1f}" for x in (e.mem_a[s], e.mem_ap[s],
                                                          e.mem_q3[s], e.mem_q4[s],
                                                          z.mem_q4[s])) + " |")
    blk = block_stages(info["stages"])

    def ratio(cm):
        tot = [sum(cm.stage_times[s][k] for s in blk) for k in range(4)]
        return ":".join(f"{x / tot[0]:.2f}" for x in tot)

    sa, sap = sum(e.mem_a), sum(e.mem_ap)
    block_t1 = statistics.median(e.stage_times[s][0] for s in blk)
    L += ["", "## Derived (block stages)", "",
          f"- eager t1:t2:t3:t4 = {ratio(e)}; lazy = {ratio(z)}",
          f"- W share of P3 (eager) {d['w3']:.2f}, of P4 {d['w4']:.2f} (lazy P4 "
          f"{d['lazy_w4']:.2f}); split factor (critical + W) / unsplit: P3 "
          f"{d['split_factor_P3']:.2f}, P4 {d['split_factor_P4']:.2f}, lazy P4 "
          f"{d['lazy_split_factor_P4']:.2f} (W = the deferred weight GEMMs of the linear "
          "maps; 1.00 would be a free split)" + (
              "; W run late, as a splitting schedule runs it (the cost files price these)."
              " With each W right after its critical part: P3 {P3:.2f}, P4 {P4:.2f}, lazy "
              "P4 {lazy_P4:.2f}".format(**d["split_factors_w_right_after"])
              if d.get("w_late") else ""),
          f"- fused turn (a last stage's lazy P4) / (t3 + t4): {d['fused_factor']:.2f} "
          + ("(the whole model as one stage)" if "whole_lazy" in med else
             "(measured on the final block + readout stage)"),
          "- fixed cost per extra stage ((Σ unit stages − the model as one stage) / (S − 1)), "
          "ms for P1..P4: " + ", ".join(f"{x * 1e3:.1f}" for x in
                                        d.get("stage_overhead", (0.0,) * 4))
          + f" (block stage t1 = {1e3 * block_t1:.0f} ms)",
          f"- |A'| / |A| = {sap / sa:.2f} (whole model: |A| {sa / 2**20:,.0f} MiB, |A'| "
          f"{sap / 2**20:,.0f} MiB)",
          f"- W queues (bytes a split phase keeps from its critical part to its W action "
          f"beyond A and A'): |Q3| / |A| = {sum(e.mem_q3) / sa:.2f}, |Q4| / |A| = "
          f"{sum(e.mem_q4) / sa:.2f} (eager), lazy |Q4| / |A| = {sum(z.mem_q4) / sa:.2f}",
          "- boundary bytes (block boundary): " + ", ".join(
              f"{k} {v / 2**20:.2f} MiB" for k, v in res["boundary"].items()), "",
          "- whole model (all units): eager t1:t2:t3:t4 = "
          + ":".join(f"{x:.2f}" for x in res["uniform_ratios"]["eager"]) + ", lazy = "
          + ":".join(f"{x:.2f}" for x in res["uniform_ratios"]["lazy"]), "",
          f"Cost files: `{res['costs_file']}` (bundle eager/lazy, seconds and bytes per unit "
          "stage, with the measured cuts: `CostModel.for_stages` merges whole measured stages for "
          "any stage count up to theirs, and the pipeline runner cuts the model there) and "
          f"`{res['uniform_costs_file']}` (the whole-model totals spread evenly over 10 "
          "stages: a perfectly balanced cut, what the schedule study uses)."]
    path.write_text("\n".join(L) + "\n")


#: Fields of a result's "info" that must agree for its samples to be pooled with another's.
POOL_KEYS = ("preset", "atoms", "edges", "bonds", "angles", "structures", "stages",
             "precision", "device")


def pool_results(paths: list) -> dict:
    """One result from the result JSONs at ``paths``: their per-action samples concatenated
    and re-medianed (one file's run-to-run spread, e.g. a split factor moving 0.98–1.10
    between files, narrows). Bytes (|A|, queues, boundary) are the first file's: they do
    not depend on timing. Refuses files of different models, micro-batches or runs."""
    results = [json.loads(Path(p).read_text()) for p in paths]
    first = results[0]
    for path, res in zip(paths[1:], results[1:]):
        for key in POOL_KEYS:
            if res["info"].get(key) != first["info"].get(key):
                raise SystemExit(f"{path}: info[{key!r}] = {res['info'].get(key)!r}, but "
                                 f"{paths[0]} has {first['info'].get(key)!r}: not poolable")
        if set(res["samples"]) != set(first["samples"]):
            raise SystemExit(f"{path}: runs {sorted(res['samples'])} differ from "
                             f"{paths[0]}'s {sorted(first['samples'])}: not poolable")
    samples = {run: {key: [x for res in results for x in res["samples"][run].get(key, [])]
                     for key in first["samples"][run]} for run in first["samples"]}
    pooled = {k: first[k] for k in ("info", "boundary", "mem", "machine", "threads",
                                    "malloc_tuned") if k in first}
    pooled.update({"samples": samples,
                   "median": {run: {k: statistics.median(v) for k, v in d.items()}
                              for run, d in samples.items()},
                   "repeats": sum(res["repeats"] for res in results),
                   "load": [min(r["load"][0] for r in results),
                            max(r["load"][1] for r in results)],
                   "pooled_from": [str(p) for p in paths]})
    return pooled


def dated(date: str, tag: str) -> str:
    """The result name: ``date``, then ``-tag`` (a leading '-' of ``tag`` not doubled)."""
    return f"{date}-{tag.lstrip('-')}" if tag else date


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="10m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"),
                    help="bf16: the trainer's autocast (CUDA only), fp32 master weights")
    ap.add_argument("--tag", default="", help="appended to the date in the file names "
                    "after a '-' (--tag gpu-fp32: pipeline_phase_costs_DATE-gpu-fp32.*)")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--rebuild", nargs="+", metavar="JSON",
                    help="re-derive the cost files and report from the result JSON of an "
                    "earlier run (no measuring); with several, pool their samples (medians "
                    "over every repeat of every run) into DATE[-TAG] (--tag default: pooled)")
    args = ap.parse_args(argv)
    # As the trainer does: without it the whole-model run's P3 (which sets the fixed
    # per-stage cost) was up to 1.7x slower than its blocks (train/cpu_allocator.py).
    tuned = tune_cpu_allocator()
    if args.rebuild and len(args.rebuild) > 1:
        res = pool_results(args.rebuild)
        res.update({"date": dated(args.date, args.tag or "pooled"),
                    "argv": " ".join(sys.argv[1:] if argv is None else argv)})
    elif args.rebuild:
        res = json.loads(Path(args.rebuild[0]).read_text())
    else:
        load0 = os.getloadavg()
        res = measure(args)
        res.update({"date": dated(args.date, args.tag), "repeats": args.repeats, "load": [load0[0],
                    os.getloadavg()[0]], "argv": " ".join(sys.argv[1:]),
                    "machine": machine_of(res),
                    "threads": torch.get_num_threads(), "malloc_tuned": tuned})
    models = cost_models(res, label_of(res))
    stem = RESULTS / f"pipeline_phase_costs_{res['date']}"  # --tag included
    res["costs_file"] = f"benchmarks/results/{stem.name}.costs.json"
    res["uniform_costs_file"] = f"benchmarks/results/{stem.name}_uniform.costs.json"
    save_costs(models, f"{stem}.costs.json")
    uni = uniform_models(models)
    save_costs(uni, f"{stem}_uniform.costs.json")
    res["uniform_ratios"] = {v: [x / cm.stage_times[0][0] for x in cm.stage_times[0]]
                             for v, cm in uni.items()}
    res["median"] = {r: dict(v) for r, v in res["median"].items()}
    Path(f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    write_markdown(res, models, Path(f"{stem}.md"))
    print(Path(f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
