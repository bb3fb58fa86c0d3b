"""Launched by tests/distributed/moe/test_moe_pipeline.py as
``mpirun -n PP·DP moe_pp_equal.py OUT PP DP M W_AUX SCHEDULE[:VARIANT] ...``.

A ``tiny-moe`` model (float64, random weights, same on every rank) is trained for one
step through ``PipelineRunner`` (the real executor over gloo point-to-point links) for
every schedule / variant named; then, as the trainer does, each rank adds the balance
loss of its stages (``matris.train.moe.BalanceLoss``: ``Stage.moe_aux_loss``, from
chemistry alone) for its DP replica's micro-batches with weight W_AUX / (number of
micro-batches of the step), and the gradients are all-reduced over the stage group
(DP). Rank 0 compares every stage's gradients with the serial double backward of all
micro-batches plus the serial forward's aux loss, and writes OUT/result.json.
"""

import json
import sys
from pathlib import Path

import torch

from matris.config import preset
from matris.testing import random_model
from matris.train import dist as mdist
from matris.train.config import load_config
from matris.train.graph_parallel.testing import loss_config, relative_error
from matris.train.moe import BalanceLoss
from matris.train.pipeline.executor import PipelineRunner
from matris.train.pipeline.testing import (
    counts_of,
    grads,
    microbatches,
    schedule_jobs,
    serial_gradients,
)

out = Path(sys.argv[1])
PP, DP, M = (int(x) for x in sys.argv[2:5])
W_AUX = float(sys.argv[5])
wanted = sys.argv[6:]
env = mdist.init_distributed(device="cpu", timeout_s=120)
groups = mdist.build_groups(mdist.Topology(pp=PP, dp=DP, gp=1, world_size=env.world_size),
                            env.rank)
coord = groups.coord
lc = loss_config()
base = ["train.dtype=float64", "train.device=cpu", f"parallel.pp={PP}", f"parallel.dp={DP}",
        f"parallel.microbatches={M}", f"loss.kind={lc.kind}",
        f"loss.huber_delta={lc.huber_delta}", f"loss.weights.stress={lc.weights.stress}",
        f"loss.weights.magmoms={lc.weights.magmoms}"]

model = random_model(preset("tiny-moe", num_blocks=2), seed=3)
everything = microbatches(DP * M)
mine = everything[coord.dp * M:(coord.dp + 1) * M]
counts = counts_of(everything)
report: dict = {"topology": [PP, DP], "runs": {}}
if env.rank == 0:
    ref, _ = serial_gradients(model, everything, lc)
    model.zero_grad(set_to_none=True)
    for b in everything:
        (W_AUX / len(everything) * model(b.graph).aux_loss).backward()
    aux = grads(model)
    ref = {k: ref[k] + aux[k] for k in ref}
    report["grad_scale"] = max(float(v.abs().max()) for v in ref.values())
    report["expert_grad_scale"] = max(float(v.abs().max()) for k, v in ref.items()
                                      if ".experts." in k)

for name, label, overrides in schedule_jobs(wanted):
    cfg = load_config(None, [*base, *overrides])
    model.zero_grad(set_to_none=True)
    runner = PipelineRunner(cfg, model, groups, torch.device("cpu"))
    runner.run(mine, counts)
    # The trainer's balance term (matris.train.moe.BalanceLoss, as Trainer calls it).
    BalanceLoss(model, runner, W_AUX).add([b.graph for b in mine], DP * M)
    touched = sum(p.grad is not None for p in runner.parameters())
    mdist.allreduce_gradients(runner.parameters(), groups.stage)
    # experts no rank routed to keep grad None (zero in the serial reference)
    g = {n: p.grad.detach().clone() for n, p in runner.named_parameters()
         if p.grad is not None}
    gathered = mdist.allgather_object((coord.dp, g, touched, len(runner.parameters())))
    if env.rank == 0:
        merged = {n: torch.zeros_like(v) for n, v in ref.items()}
        for dp, gr, _, _ in gathered:
            if dp == 0:
                merged.update(gr)
        key = f"{name}:{label}"
        report["runs"][key] = {"program": runner.program.describe(),
                               "err": relative_error(merged, ref),
                               "touched": [(t, n) for _, _, t, n in gathered]}
        print(f"{key} {runner.program.describe()} err {report['runs'][key]['err']:.2e}",
              flush=True)

if env.rank == 0:
    (out / "result.json").write_text(json.dumps(report, indent=1))
mdist.barrier()
mdist.shutdown()
