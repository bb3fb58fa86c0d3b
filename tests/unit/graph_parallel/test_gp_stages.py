"""Pipeline stages run on a part (what a PP × GP executor does): each stage gets its own
positions / strain leaves and detached inputs, the force backward runs stage by stage
(P2 of the four-phase schedule, with create_graph), and the per-stage geometry gradients
summed over stages and reduced over parts give the serial forces and stress."""

from __future__ import annotations

import pytest
import torch

from matris.config import preset
from matris.outputs import compute_outputs
from matris.stages import StageIO
from matris.testing import random_model
from matris.train.dist.halo import GraphExchange
from matris.train.graph_parallel.part import build_part
from matris.train.graph_parallel.partition import partition_graph
from matris.train.graph_parallel.simulate import run_parts
from matris.train.graph_parallel.testing import case_graphs, labelled_batch, relative_error


@pytest.mark.parametrize("cuts,G", [([1], 2), ([0, 2], 3)])
def test_stage_chain_on_parts_equals_serial(cuts, G):
    model = random_model(preset("tiny", num_blocks=3), seed=4)
    graph = labelled_batch(case_graphs("triclinic"), seed=0).graph
    ref = compute_outputs(model, graph, stress=True)
    partition = partition_graph(graph, G)
    stages = model.stages(cuts)

    def fn(r, transport):
        part = build_part(graph, partition, r)
        ex = GraphExchange(part.plan, transport)
        g = part.graph
        records, io = [], None
        for stage in stages:  # P1: one set of leaves per stage (as on separate ranks)
            x = g.positions.detach().requires_grad_(True)
            strain = torch.zeros(g.num_structures, 3, 3, dtype=x.dtype, requires_grad=True)
            inputs = None
            if io is not None:
                inputs = {k: v.detach().requires_grad_(True) for k, v in io.tensors().items()}
                io = StageIO(**inputs)
            out = stage(io, g, ex.positions(x), strain, ex)
            records.append((inputs, out, x, strain))
            io = out
        energy = io.energy
        force = torch.zeros_like(g.positions)
        virial = torch.zeros(g.num_structures, 3, 3, dtype=force.dtype)
        cot = None
        for inputs, out, x, strain in reversed(records):  # P2, create_graph as in training
            if cot is None:  # the energy is seeded once per GP group (part 0)
                outs = [out.energy]
                cots = [torch.full_like(out.energy, 1.0 if r == 0 else 0.0)]
            else:
                names = list(cot)
                outs, cots = [out.tensors()[k] for k in names], [cot[k] for k in names]
            leaves = [x, strain] + ([] if inputs is None else list(inputs.values()))
            grads = torch.autograd.grad(outs, leaves, cots, create_graph=True)
            force = force - grads[0]
            virial = virial + grads[1]
            if inputs is not None:
                cot = dict(zip(inputs, grads[2:]))
        stress = ex.reduce(virial) / torch.linalg.det(g.cell).abs()[:, None, None]
        assert torch.all(force[part.num_owned:] == 0), "halo rows reduced to their owners"
        return part.owned_atoms, energy.detach(), force[:part.num_owned].detach(), \
            stress.detach()

    res = run_parts(fn, G)
    forces = torch.full_like(ref["forces"], float("nan"))
    for ids, energy, f, stress in res:
        forces[ids] = f
        assert relative_error(energy, ref["energy"]) < 1e-12
        assert relative_error(stress, ref["stress"]) < 1e-10
    assert relative_error(forces, ref["forces"]) < 1e-10
