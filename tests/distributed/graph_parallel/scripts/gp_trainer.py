"""Launched by test_gp.py as ``mpirun -n 4 gp_trainer.py DATASET OUT``: DP=2 × GP=2.

The trainer (``matris.train.trainer.Trainer``) does not build a graph-parallel runner
yet, so this script installs ``GraphParallelRunner.from_groups`` as its ``build_runner``
for ``parallel.gp > 1`` (the few lines the trainer needs, see docs/graph_parallel.md).
Everything else is the trainer's own code: global label counts over DP, the runner's
step, the gradient all-reduce over the stage group (DP × GP), the loss report.

DP replica 0 trains on two micro-batches (a sheared cell and the 3-atom cell with self-
image bonds), replica 1 on a batch of three cells and a molecule; both GP ranks of a
replica get the same micro-batches. Rank 0 computes the serial gradient of the union on
an identical model and writes both to OUT/grads.pt.
"""

import copy
import sys
from pathlib import Path

import torch

import matris.train.trainer as trainer_module
from matris.config import preset
from matris.testing import random_model
from matris.train import dist as mdist
from matris.train.config import load_config
from matris.train.graph_parallel.runner import GraphParallelRunner
from matris.train.graph_parallel.testing import (
    case_graphs,
    counts_of,
    grads_of,
    labelled_batch,
    loss_config,
)
from matris.train.step import LocalRunner

root, out = sys.argv[1], Path(sys.argv[2])
default_build_runner = trainer_module.build_runner


def build_runner(cfg, model, groups, device):
    if cfg.parallel.gp > 1 and cfg.parallel.pp == 1:
        return GraphParallelRunner.from_groups(cfg, model, groups, device)
    return default_build_runner(cfg, model, groups, device)


trainer_module.build_runner = build_runner
lc = loss_config()
cfg = load_config(None, [f"data.root={root}", "parallel.dp=2", "parallel.gp=2",
                         "train.dtype=float64", "train.device=cpu", "model.preset=tiny",
                         f"loss.kind={lc.kind}", f"loss.huber_delta={lc.huber_delta}",
                         f"loss.weights.stress={lc.weights.stress}",
                         f"loss.weights.magmoms={lc.weights.magmoms}"])
env = mdist.init_distributed(device="cpu", timeout_s=120)
trainer = trainer_module.Trainer(cfg, env)
assert isinstance(trainer.runner, GraphParallelRunner)
with torch.no_grad():  # perturbed weights (identical on every rank), dataset references kept
    refs = trainer.model.reference_energies.clone()
    trainer.model.load_state_dict(random_model(preset("tiny"), seed=3).state_dict())
    trainer.model.reference_energies.copy_(refs)
serial_model = copy.deepcopy(trainer.model)

per_replica = {0: [("triclinic", 0), ("tiny", 1)], 1: [("batch", 2), ("molecule", 3)]}
coord = trainer.groups.coord
mine = [labelled_batch(case_graphs(c), seed=s) for c, s in per_replica[coord.dp]]
result, counts = trainer.compute_gradients(mine)
sums = mdist.all_reduce_dict({t: result.sums.get(t, 0.0) for t in sorted(result.sums)},
                             trainer.groups.world)
gp_grads = grads_of(trainer.model)  # zeros where no rank touched a parameter (as serial)
everyone = mdist.allgather_object({n: g for n, g in gp_grads.items()})

if env.rank == 0:
    union = [labelled_batch(case_graphs(c), seed=s) for r in (0, 1) for c, s in per_replica[r]]
    serial = LocalRunner(serial_model, cfg.loss, torch.device("cpu"), "float64")
    ref_result = serial.run(union, counts_of(union))
    identical = all(torch.equal(e[n], gp_grads[n]) for e in everyone for n in gp_grads)
    torch.save({"gp": gp_grads, "serial": grads_of(serial_model), "counts": counts,
                "sums": sums, "serial_sums": ref_result.sums, "identical": identical},
               out / "grads.pt")
    print("WROTE", flush=True)
mdist.barrier()
mdist.shutdown()
