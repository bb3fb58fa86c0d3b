"""Launched by test_gp.py as ``mpirun -n G gp_equal.py OUT METHOD [CASE ...]``.

The G ranks form one graph-parallel group (``TorchTransport`` with METHOD = p2p or
alltoall). For each case (default: all of ``testing.CASES``) every rank computes its
part's outputs and its share of the E + F + σ + magmom loss gradients; the gradients are
summed over the group (as the trainer does) and rank 0 compares everything with the
serial model on the whole micro-batch. Rank 0 writes OUT/result.json with the relative
errors and facts about the parts (empty parts, cut bonds, bit-identical replicas).
"""

import copy
import json
import sys
from pathlib import Path

import torch

from matris.config import preset
from matris.outputs import compute_outputs
from matris.testing import random_model
from matris.train import dist as mdist
from matris.train.dist.halo import TorchTransport
from matris.train.graph_parallel.forward import part_outputs
from matris.train.graph_parallel.runner import GraphParallelRunner
from matris.train.graph_parallel.testing import (
    CASES,
    case_graphs,
    counts_of,
    grads_of,
    labelled_batch,
    loss_config,
    relative_error,
)
from matris.train.step import LocalRunner

out_dir, method = Path(sys.argv[1]), sys.argv[2]
cases = sys.argv[3:] or list(CASES)
env = mdist.init_distributed(device="cpu", timeout_s=120)
groups = mdist.build_groups(mdist.Topology(pp=1, dp=1, gp=env.world_size,
                                           world_size=env.world_size), env.rank)
transport = TorchTransport(groups.gp, method)
base = random_model(preset("tiny"), seed=3)  # identical on every rank (seeded)
cpu = torch.device("cpu")
report = {}
for k, case in enumerate(cases):
    batch = labelled_batch(case_graphs(case), seed=k)
    periodic = bool(batch.graph.pbc.all())
    # Outputs of this part, reassembled from every part's owned rows.
    runner = GraphParallelRunner(base, loss_config(), cpu, "float64", transport)
    part, ex = runner.prepare(batch.graph)
    out = part_outputs(base, part, ex, stress=periodic)
    n = batch.graph.n_atoms
    full = {key: ex.gather_owned(out[key], part.owned_atoms, n) for key in ("forces", "magmoms")}
    full["energy"] = out["energy"]
    if periodic:
        full["stress"] = out["stress"]
    replicas = mdist.allgather_object([out["energy"].tolist(), out.get("stress", torch.zeros(
        0)).tolist()])
    counts = mdist.allgather_object(part.index.counts())
    evaluated = runner.evaluate(batch)
    # Gradients of this part's loss share, summed over the group.
    model = copy.deepcopy(base)
    gp_runner = GraphParallelRunner(model, loss_config(), cpu, "float64", transport)
    result = gp_runner.run([batch], counts_of([batch]))
    mdist.allreduce_gradients(gp_runner.parameters(), groups.gp)
    sums = mdist.all_reduce_dict({t: result.sums.get(t, 0.0) for t in sorted(result.sums)},
                                 groups.gp)
    if env.rank == 0:
        ref = compute_outputs(base, batch.graph, stress=periodic)
        serial = copy.deepcopy(base)
        ref_result = LocalRunner(serial, loss_config(), cpu, "float64").run(
            [batch], counts_of([batch]))
        ref_eval = LocalRunner(base, loss_config(), cpu, "float64").evaluate(batch)
        errors = {key: relative_error(full[key], ref[key]) for key in ref}
        errors["grads"] = relative_error(grads_of(model), grads_of(serial))
        errors["loss_sums"] = relative_error(sums, ref_result.sums)
        errors["evaluate"] = relative_error(evaluated, ref_eval)
        report[case] = {
            "errors": errors,
            "grad_scale": max(float(g.abs().max()) for g in grads_of(serial).values()),
            "parts": counts,
            "empty_part": min(c["owned"] for c in counts) == 0,
            "cut_bonds": sum(c["cut_bonds"] for c in counts) // 2,
            "replicas_identical": all(r == replicas[0] for r in replicas),
            "volume": dict(ex.volume)}
        print(case, errors, flush=True)
    else:
        assert evaluated is None, "only part 0 reports validation predictions"
if env.rank == 0:
    (out_dir / "result.json").write_text(json.dumps(report, indent=1))
mdist.barrier()
mdist.shutdown()
