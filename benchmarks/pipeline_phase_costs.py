"""Measure the four phases per pipeline unit of a model: t1..t4, W shares, the fused-turn
factor, activation bytes |A| / |A'| and boundary tensor bytes; write a CostModel JSON.

    python benchmarks/pipeline_phase_costs.py [--preset 10m] [--repeats 3] [--date D]

One process, one torch thread, float32. The model is cut at every interaction block
(``cuts = [0, 1, ..., L−1]``): stage 0 = embedding, stages 1..L−1 = one block each, the
last stage = the final block + readout (so that the last stage's turn, and the fused
turn, are measured on real work). A realistic micro-batch (a 32-atom fcc Cu–Au cell and a
16-atom diamond Si cell, rattled) runs through the executor's own
phase code (``matris.train.pipeline.phases``) as a one-rank chain, stage by stage:

* run **eager**: P1 0→S−1, P2 S−1→0 (create_graph), P3 0→S−1, P4 S−1→0;
* run **eager + W split**: the same with P3 / P4 split into critical part + W (the
  executor defers the linear maps' weight GEMMs, ``matris.nn.deferred``; ``split_factor``
  = (critical + W) / unsplit, 1 for a free split);
* run **lazy**: P3 = ā only, P4 = the rest (the last stage's lazy P4 *is* the fused
  turn: fused factor = its time / (t3 + t4) of the eager run);
* run **lazy + W4 split**.

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
from pathlib import Path

import numpy as np
import torch

from matris.config import preset
from matris.graph import build_graph
from matris.model import MatRIS
from matris.nn.exchange import LOCAL
from matris.train.config import LossConfig
from matris.train.graph_parallel.testing import labelled_batch
from matris.train.pipeline.actions import Kind
from matris.train.pipeline.costs import CostModel, save_costs
from matris.train.pipeline.executor import stage_parameters
from matris.train.pipeline.phases import FourPhase, Micro, Slot

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


class SavedBytes:
    """Bytes of distinct non-parameter storages saved for backward inside the context."""

    def __init__(self, params, seen: set | None = None):
        self.params = {p.untyped_storage().data_ptr() for p in params}
        self.seen = seen if seen is not None else set()
        self.nbytes = 0

    def pack(self, t):
        st = t.untyped_storage()
        key = st.data_ptr()
        if key not in self.params and key not in self.seen:
            self.seen.add(key)
            self.nbytes += st.nbytes()
        return t.detach()  # not t: a saved output would hold its own grad_fn (a cycle)

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def run_chain(model, stages, batch, loss, *, lazy: bool, split, memory: bool = False):
    """One micro-batch through every stage, phase by phase; {(kind, stage): seconds}."""
    S = len(stages)
    counts = batch.labels.counts()
    _, params = stage_parameters(model, dict(enumerate(stages)))
    ph = FourPhase(dict(enumerate(stages)), S, loss, counts, lazy_p3=lazy,
                   split=frozenset(split), params=params, dtype=torch.float32)
    micro = Micro(batch.graph, batch.labels, LOCAL, None, 1.0, True)
    slots = [Slot(s, 0, micro) for s in range(S)]
    times, mem = {}, {}
    all_params = list(model.parameters())

    def timed(key, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        times[key] = time.perf_counter() - t
        return out

    h = None
    for s in range(S):
        with SavedBytes(all_params) if memory else _null() as sb:
            h = timed((Kind.P1, s), ph.p1, slots[s], h)
        if memory:
            mem[("A", s)], mem[("seen", s)] = sb.nbytes, sb.seen
    msg, boundary = None, {}
    for s in reversed(range(S)):
        a_in, f = (None, None) if msg is None else (msg[:-2], msg[-2:])
        with SavedBytes(all_params, mem.get(("seen", s))) if memory else _null() as sb:
            a_out, sums = timed((Kind.P2, s), ph.p2, slots[s], a_in, f)
        if memory:
            mem[("A'", s)] = sb.nbytes
        msg = None if a_out is None else a_out + sums
        if s == S // 2 and msg is not None:
            boundary = {"a": sum(_nb(t) for t in a_out), "f_acc": sum(_nb(t) for t in sums)}
            boundary["h"] = boundary["hbar"] = sum(_nb(t) for t in slots[s - 1].out) if s else 0
            boundary["abar"], boundary["dl_df"] = boundary["a"], boundary["f_acc"]
    abar, dl = None, None
    for s in range(S):
        abar, dl = timed((Kind.P3, s), ph.p3, slots[s], abar, dl)
        if Kind.P3 in split and not lazy:
            timed((Kind.W3, s), ph.w3, slots[s])
    hbar = None
    for s in reversed(range(S)):
        hbar = timed((Kind.P4, s), ph.p4, slots[s], hbar)
        if Kind.P4 in split:
            timed((Kind.W4, s), ph.w4, slots[s])
    del slots
    return times, {k: v for k, v in mem.items() if k[0] != "seen"}, boundary


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _nb(t) -> int:
    return t.numel() * t.element_size()


RUNS = {"eager": (False, ()), "eager_split": (False, (Kind.P3, Kind.P4)),
        "lazy": (True, ()), "lazy_split": (True, (Kind.P4,)), "whole": (False, ())}
#: "whole": the model as one stage (eager); Σ unit stages − whole = the fixed cost of the
#: extra stages (geometry recompute, leaves, dispatch), see ``stage_overhead``.


def measure(args) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MatRIS(preset(args.preset)).float()
    model.set_reference_energies(np.random.default_rng(0).uniform(-8, -1, 119))
    cfg = model.config
    batch = labelled_batch(structures(cfg), seed=1, dtype=torch.float32)
    stages = model.stages(list(range(cfg.num_blocks)))
    whole = model.stages([])
    loss = LossConfig()
    g = batch.graph
    info = {"preset": args.preset, "atoms": g.n_atoms, "edges": g.n_edges,
            "bonds": g.n_bonds, "angles": g.n_angles, "structures": g.num_structures,
            "stages": [[*st.block_range, st.last] for st in stages]}
    samples: dict[str, dict] = {r: {} for r in RUNS}
    mem, boundary = {}, {}
    order = [r for _ in range(args.repeats) for r in RUNS]
    for i, run in enumerate(order):
        lazy, split = RUNS[run]
        t = time.time()
        times, m, b = run_chain(model, whole if run == "whole" else stages, batch, loss,
                                lazy=lazy, split=split, memory=(i == 0))
        mem.update(m)
        boundary = boundary or b
        for k, v in times.items():
            samples[run].setdefault(f"{k[0].name}:{k[1]}", []).append(v)
        print(f"[{i + 1}/{len(order)}] {run}: {time.time() - t:.1f} s "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    med = {r: {k: statistics.median(v) for k, v in d.items()} for r, d in samples.items()}
    return {"info": info, "median": med, "samples": samples, "boundary": boundary,
            "mem": {f"{k[0]}:{k[1]}": v for k, v in mem.items()}}


def cost_models(res: dict) -> dict[str, CostModel]:
    """The {"eager", "lazy"} bundle from the medians (seconds, bytes)."""
    med, mem = res["median"], res["mem"]
    S = len(res["info"]["stages"])

    def t(run, kind, s):
        return med[run].get(f"{kind}:{s}", 0.0)

    def share(run, phase, w):  # Σ W / Σ (critical + W) and Σ (critical + W) / Σ unsplit
        crit = sum(t(run, phase, s) for s in range(S))
        wt = sum(t(run, w, s) for s in range(S))
        base = sum(t("eager" if run == "eager_split" else "lazy", phase, s) for s in range(S))
        return wt / (crit + wt), (crit + wt) / base

    w3, f3 = share("eager_split", "P3", "W3")
    w4, f4 = share("eager_split", "P4", "W4")
    lw4, lf4 = share("lazy_split", "P4", "W4")
    last = S - 1
    fused = t("lazy", "P4", last) / (t("eager", "P3", last) + t("eager", "P4", last))
    # Fixed per-stage cost: (Σ over the S unit stages − the model as one stage) / (S − 1),
    # per phase (eager runs; applied to both variants: lazy P3 of a single stage has no
    # boundary to differentiate, so the lazy runs cannot separate it).
    overhead = tuple(max(0.0, (sum(t("eager", k, s) for s in range(S)) - t("whole", k, 0))
                         / (S - 1)) if "whole" in med and S > 1 else 0.0
                     for k in ("P1", "P2", "P3", "P4"))
    common = {"mem_a": tuple(float(mem[f"A:{s}"]) for s in range(S)),
              "mem_ap": tuple(float(mem[f"A':{s}"]) for s in range(S)),
              "tensor_bytes": res["boundary"], "fused_factor": fused, "units": "s",
              "stage_overhead": overhead}
    label = (f"{res['info']['preset']} preset, CPU fp32, 1 thread, {MACHINE}, measured "
             f"{res['date']} ({res['info']['atoms']} atoms, {res['info']['angles']} angles "
             "per micro-batch); one entry per unit stage")
    out = {}
    for variant, run, wf, sf in (("eager", "eager", {"P3": w3, "P4": w4},
                                  {"P3": max(1.0, f3), "P4": max(1.0, f4)}),
                                 ("lazy", "lazy", {"P3": 0.0, "P4": lw4},
                                  {"P3": 1.0, "P4": max(1.0, lf4)})):
        times = tuple(tuple(t(run, k, s) for k in ("P1", "P2", "P3", "P4")) for s in range(S))
        out[variant] = CostModel(stage_times=times, label=f"{label} ({variant} P3)",
                                 lazy_p3=variant == "lazy", w_frac=wf, split_factor=sf,
                                 **common)
    res["derived"] = {"w3": w3, "split_factor_P3": f3, "w4": w4, "split_factor_P4": f4,
                      "lazy_w4": lw4, "lazy_split_factor_P4": lf4, "fused_factor": fused,
                      "raw_split_factors": {"P3": f3, "P4": f4, "lazy_P4": lf4},
                      "stage_overhead": overhead}
    return out


def uniform_models(models: dict, num: int = 10) -> dict[str, CostModel]:
    """The whole model's phase totals (and |A|, |A'| totals) spread evenly over ``num``
    stages: the idealised perfectly balanced cut the schedule study assumes."""
    from dataclasses import replace

    out = {}
    for variant, cm in models.items():
        o = cm.stage_overhead  # every stage of the finer cut pays it once
        tot = [(sum(t[k] for t in cm.stage_times) - cm.num_stages * o[k]) / num + o[k]
               for k in range(4)]
        out[variant] = replace(cm, stage_times=(tuple(tot),) * num,
                               mem_a=(sum(cm.mem_a) / num,) * num,
                               mem_ap=(sum(cm.mem_ap) / num,) * num,
                               label=cm.label.replace("one entry per unit stage",
                                                      "whole-model totals spread evenly "
                                                      f"over {num} stages"))
    return out


def write_markdown(res: dict, models: dict, path: Path) -> None:
    info, d = res["info"], res["derived"]
    S = len(info["stages"])
    L = [f"# Pipeline phase costs ({info['preset']} preset), {res['date']}, {MACHINE}", "",
         f"`python benchmarks/pipeline_phase_costs.py {res['argv']}` — one process, 1 torch "
         f"thread, float32; micro-batch: {info['structures']} structures, {info['atoms']} "
         f"atoms, {info['edges']} edges, {info['angles']} angles; medians of "
         f"{res['repeats']} repeats. Load average {res['load'][0]:.1f} → "
         f"{res['load'][1]:.1f} (2 cores shared with other jobs: absolute times carry "
         "±30 %; ratios within one run are steadier).", "",
         "Units: stage 0 = embedding, 1..L−1 = one interaction block, last = final "
         "block + readout. Times in ms; |A|, |A'| in MiB.", "",
         "| stage | t1 | t2 | t3 | t4 | lazy t3 | lazy t4 | c3 + W3 | c4 + W4 | |A| | |A'| |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    e, z = models["eager"], models["lazy"]
    med = res["median"]
    for s in range(S):
        ms = [x * 1e3 for x in e.stage_times[s]] + [x * 1e3 for x in z.stage_times[s][2:]]
        split = [med["eager_split"].get(f"{k}:{s}", 0) * 1e3 for k in ("P3", "W3", "P4", "W4")]
        L.append(f"| {s} | " + " | ".join(f"{x:,.0f}" for x in ms) +
                 f" | {split[0]:,.0f} + {split[1]:,.0f} | {split[2]:,.0f} + {split[3]:,.0f} | "
                 f"{e.mem_a[s] / 2**20:,.1f} | {e.mem_ap[s] / 2**20:,.1f} |")
    blk = range(1, S - 1)

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
          "maps; 1.00 would be a free split)",
          f"- fused turn (last stage, = its lazy P4) / (t3 + t4): {d['fused_factor']:.2f}",
          "- fixed cost per extra stage ((Σ unit stages − the model as one stage) / (S − 1)), "
          "ms for P1..P4: " + ", ".join(f"{x * 1e3:.1f}" for x in
                                        d.get("stage_overhead", (0.0,) * 4))
          + f" (block stage t1 = {1e3 * block_t1:.0f} ms)",
          f"- |A'| / |A| = {sap / sa:.2f} (whole model: |A| {sa / 2**20:,.0f} MiB, |A'| "
          f"{sap / 2**20:,.0f} MiB)",
          "- boundary bytes (block boundary): " + ", ".join(
              f"{k} {v / 2**20:.2f} MiB" for k, v in res["boundary"].items()), "",
          "- whole model (all units): eager t1:t2:t3:t4 = "
          + ":".join(f"{x:.2f}" for x in res["uniform_ratios"]["eager"]) + ", lazy = "
          + ":".join(f"{x:.2f}" for x in res["uniform_ratios"]["lazy"]), "",
          f"Cost files: `{res['costs_file']}` (bundle eager/lazy, seconds and bytes per unit "
          "stage; `CostModel.for_stages` resamples it to any stage count by depth share) and "
          f"`{res['uniform_costs_file']}` (the whole-model totals spread evenly over 10 "
          "stages: a perfectly balanced cut, what the schedule study uses)."]
    path.write_text("\n".join(L) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="10m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--rebuild", help="re-derive the cost files and report from a result "
                    "JSON of an earlier run (no measuring)")
    args = ap.parse_args(argv)
    if args.rebuild:
        res = json.loads(Path(args.rebuild).read_text())
        args.date = res["date"]
    else:
        load0 = os.getloadavg()
        res = measure(args)
        res.update({"date": args.date, "repeats": args.repeats, "load": [load0[0],
                    os.getloadavg()[0]], "argv": " ".join(sys.argv[1:]), "machine": MACHINE,
                    "threads": torch.get_num_threads()})
    models = cost_models(res)
    stem = RESULTS / f"pipeline_phase_costs_{args.date}"
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
