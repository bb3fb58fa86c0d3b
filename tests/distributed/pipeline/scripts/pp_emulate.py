"""Launched as ``mpirun -n P pp_emulate.py OUT M MS_PER_T1 REPEATS COSTS|- SCHEDULE[:opts] ...``.

Emulated compute (``matris.train.pipeline.emulate``): every compute action sleeps for its
cost (the cost model scaled so that the mean stage's t1 lasts MS_PER_T1 milliseconds),
hand-offs are real gloo messages of the model's byte sizes. For each schedule: the
measured makespan (median of REPEATS runs, each after a barrier; first start to last end
over all ranks, CLOCK_MONOTONIC is shared by the processes of a node) next to the
simulator's for the same Program and costs. Rank 0 writes OUT/emulated.json and a merged
trace + Gantt of the first run of each schedule.

COSTS: a cost JSON (``pipeline_phase_costs.py``) or ``-`` for the executor's default.
``SCHEDULE:lazy`` uses the lazy-P3 profile.
"""

import json
import os
import statistics
import sys
from pathlib import Path

from matris.train import dist as mdist
from matris.train.dist.p2p import PeerLinks
from matris.train.pipeline.costs import load_costs
from matris.train.pipeline.emulate import measure
from matris.train.pipeline.executor import build_program, default_costs
from matris.train.pipeline.simulate import simulate
from matris.train.pipeline.trace import gantt_png, trace_stats, write_trace

out = Path(sys.argv[1])
M, ms_per_t1, repeats = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
cost_file, wanted = sys.argv[5], sys.argv[6:]
env = mdist.init_distributed(device="cpu", timeout_s=300)
P, rank = env.world_size, env.rank
links = PeerLinks(list(range(P)))
report = {"P": P, "M": M, "ms_per_t1": ms_per_t1, "repeats": repeats,
          "loadavg_start": os.getloadavg(), "runs": {}}
for item in wanted:
    name, _, variant = item.partition(":")
    lazy = variant == "lazy"
    costs = (load_costs(cost_file)["lazy" if lazy else "eager"].untied() if cost_file != "-"
             else default_costs(P, lazy))
    # 20 blocks: the chunk budget never limits (the study's assumption); costs per stage
    # are the cost model's resampled shares.
    prog = build_program(name, P, M, 20, lazy_p3=lazy, costs=costs, search_w=True)
    cm = costs.for_stages(prog.num_stages)
    lin = costs.for_stages(P)  # the time unit: t1 of a stage of the P-stage cut
    unit = ms_per_t1 * 1e-3 / (sum(t[0] for t in lin.stage_times) / P)
    sim = simulate(prog, cm)
    spans, first = measure(prog, cm, rank, links, unit, repeats)
    if rank == 0:
        key = f"{name}{':lazy' if lazy else ''}"
        measured = statistics.median(spans)
        stats = trace_stats(first, P)
        report["runs"][key] = {
            "program": prog.describe(), "simulated_s": sim.makespan * unit,
            "measured_s": measured, "spans": spans, "ratio": measured / (sim.makespan * unit),
            "simulated_bubble": sim.bubble, "measured_bubble": stats["bubble"]}
        stem = out / f"emulated_P{P}_{key.replace(':', '_')}"
        write_trace(first, f"{stem}.trace.json", program=prog.describe(), source="emulated")
        gantt_png(first, f"{stem}.png", title=f"{prog.describe()} emulated: makespan "
                  f"{measured:.2f} s (simulated {sim.makespan * unit:.2f} s)")
        print(f"{key}: measured {measured:.3f} s, simulated {sim.makespan * unit:.3f} s, "
              f"ratio {measured / (sim.makespan * unit):.3f}", flush=True)
if rank == 0:
    report["loadavg_end"] = os.getloadavg()
    (out / "emulated.json").write_text(json.dumps(report, indent=1))
mdist.barrier()
mdist.shutdown()
