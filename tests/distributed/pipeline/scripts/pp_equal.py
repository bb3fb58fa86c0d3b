"""Launched by test_pipeline.py as
``mpirun -n PP·DP·GP pp_equal.py OUT PP DP GP BLOCKS M SCHEDULE[:VARIANT] ...``.

For every schedule (and each of its variants from ``matris.train.pipeline.testing.variants``
unless one is named) it builds ``PipelineRunner`` from a trainer config, runs one step on
this DP replica's M micro-batches (float64, E + F + σ + magmom Huber loss, global counts),
all-reduces the gradients over the stage group (DP × GP) as the trainer does, gathers
every stage's gradients on rank 0 and compares them with the serial double backward of
the union of all replicas' micro-batches, computed in the same job. Also: loss sums,
validation predictions (``evaluate``) and a merged trace of one run. Rank 0 writes
OUT/result.json.
"""

import json
import sys
from pathlib import Path

import torch

from matris.config import preset
from matris.outputs import compute_outputs
from matris.testing import random_model
from matris.train import dist as mdist
from matris.train.config import load_config
from matris.train.graph_parallel.testing import loss_config, relative_error
from matris.train.pipeline.executor import PipelineRunner
from matris.train.pipeline.testing import (
    counts_of,
    microbatches,
    schedule_jobs,
    serial_gradients,
)
from matris.train.pipeline.trace import gantt_png, trace_stats, write_trace

out = Path(sys.argv[1])
PP, DP, GP, BLOCKS, M = (int(x) for x in sys.argv[2:7])
wanted = sys.argv[7:]
env = mdist.init_distributed(device="cpu", timeout_s=120)
topo = mdist.Topology(pp=PP, dp=DP, gp=GP, world_size=env.world_size)
groups = mdist.build_groups(topo, env.rank)
coord = groups.coord
lc = loss_config()
base = ["train.dtype=float64", "train.device=cpu", f"parallel.pp={PP}", f"parallel.dp={DP}",
        f"parallel.gp={GP}", f"parallel.microbatches={M}", f"loss.kind={lc.kind}",
        f"loss.huber_delta={lc.huber_delta}", f"loss.weights.stress={lc.weights.stress}",
        f"loss.weights.magmoms={lc.weights.magmoms}"]

model = random_model(preset("tiny", num_blocks=BLOCKS), seed=3)  # same on every rank
everything = microbatches(DP * M)
mine = everything[coord.dp * M:(coord.dp + 1) * M]
counts = counts_of(everything)
report: dict = {"topology": [PP, DP, GP], "runs": {}}
if env.rank == 0:
    ref, ref_sums = serial_gradients(model, everything, lc)
    report["grad_scale"] = max(float(v.abs().max()) for v in ref.values())

for i, (name, label, overrides) in enumerate(schedule_jobs(wanted)):
    cfg = load_config(None, [*base, *overrides])
    model.zero_grad(set_to_none=True)
    runner = PipelineRunner(cfg, model, groups, torch.device("cpu"))
    result = runner.run(mine, counts)
    mdist.allreduce_gradients(runner.parameters(), groups.stage)
    grads = {n: p.grad.detach().clone() for n, p in runner.named_parameters()
             if p.grad is not None}  # untouched everywhere: None, zero in the reference
    kinds = sorted({s.action.kind.name for s in runner.last_slices})
    gathered = mdist.allgather_object((coord.dp, coord.gp, grads, result.sums, kinds))
    slices = runner.gather_slices() if i == 0 else None
    if env.rank == 0:
        merged = {n: torch.zeros_like(v) for n, v in ref.items()}
        sums: dict = {}
        for dp, gp, g, s, _ in gathered:
            if dp == 0 and gp == 0:
                merged.update(g)
            for k, v in s.items():
                sums[k] = sums.get(k, 0.0) + v
        report["runs"][f"{name}:{label}"] = {
            "program": runner.program.describe(), "err": relative_error(merged, ref),
            "sums_err": relative_error({k: torch.tensor(sums.get(k, 0.0)) for k in ref_sums},
                                       {k: torch.tensor(v) for k, v in ref_sums.items()}),
            "kinds": sorted({k for *_, ks in gathered for k in ks}),
            "chosen": runner.program.meta.get("chosen")}
        print(f"{name}:{label} {runner.program.describe()} "
              f"err {report['runs'][f'{name}:{label}']['err']:.2e}", flush=True)
    if slices is not None:
        stem = out / f"trace_{name}"
        write_trace(slices, f"{stem}.json", program=runner.program.describe(),
                    source="measured")
        gantt_png(slices, f"{stem}.png", title=runner.program.describe())
        report["trace"] = {"file": f"{stem}.json", **trace_stats(slices, PP)}

if GP > 1:  # how much graph parallelism the micro-batches exercise
    cut = sum(int(t.numel()) for b in mine for t in runner.micro(b).exchange.plan.shared)
    report["gp_cut_bonds"] = cut

# Validation predictions through the pipeline (last runner), on one micro-batch.
pred = runner.evaluate(mine[0])
if coord.pp == 0 and coord.gp == 0:
    serial = compute_outputs(model, mine[0].graph, stress=bool(mine[0].labels.stress_mask.any()))
    report["evaluate_err"] = {k: relative_error(pred[k], serial[k]) for k in serial}
    report["evaluate_keys"] = sorted(pred)
else:
    assert pred is None, "only pipeline rank 0 / GP part 0 returns predictions"
gathered = mdist.allgather_object(report.get("evaluate_err"))
if env.rank == 0:
    report["evaluate_err_all"] = [g for g in gathered if g is not None]
    (out / "result.json").write_text(json.dumps(report, indent=1))
mdist.barrier()
mdist.shutdown()
