"""The serial model is the composition of its stages, for any cuts; a pipeline-style
chain of per-stage VJPs reproduces serial forces and stress."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from matris.config import preset
from matris.graph import build_graph, collate
from matris.outputs import compute_outputs
from matris.testing import random_model


@pytest.fixture(scope="module")
def setup():
    model = random_model(preset("tiny", num_blocks=3), seed=1)
    rng = np.random.default_rng(2)
    graphs = []
    for n in (6, 4):
        cell = np.diag([4.3, 4.0, 4.6]) + rng.normal(scale=0.3, size=(3, 3))
        pos = rng.random((n, 3)) @ cell
        graphs.append(build_graph(rng.integers(1, 30, n), pos, cell, True, 5.0, 3.5))
    return model, collate(graphs)


CUTS = [[], [0], [1], [3], [1, 2], [0, 1, 2, 3], [0, 3]]


@pytest.mark.parametrize("cuts", CUTS)
def test_composed_stages_bit_identical(setup, cuts):
    model, graph = setup
    ref = compute_outputs(model, graph, stress=True)
    pos = graph.positions.detach().requires_grad_(True)
    strain = torch.zeros(graph.num_structures, 3, 3, dtype=pos.dtype, requires_grad=True)
    io = None
    for stage in model.stages(cuts):
        io = stage(io, graph, pos, strain)
    f, s = torch.autograd.grad(io.energy.sum(), [pos, strain])
    # The forward is bit-identical; gradients of several stages' geometry sum in a
    # different order than one stage's, so forces and stress agree to rounding.
    assert torch.equal(io.energy, ref["energy"])
    torch.testing.assert_close(-f, ref["forces"], rtol=0, atol=1e-14)
    vol = torch.linalg.det(graph.cell).abs()[:, None, None]
    torch.testing.assert_close(s / vol, ref["stress"], rtol=0, atol=1e-14)
    assert len(model.stages(cuts)) == len(cuts) + 1


@pytest.mark.parametrize("cuts", [[1], [0, 2]])
def test_pipeline_vjp_chain_matches_serial(setup, cuts):
    """Each stage gets its own leaf copies of positions/strain and detached inputs; the
    backward runs stage by stage (as a pipeline executor would) and sums the geometry
    gradients of all stages."""
    model, graph = setup
    ref = compute_outputs(model, graph, stress=True)
    stages = model.stages(cuts)
    records, io = [], None
    for stage in stages:
        pos = graph.positions.detach().requires_grad_(True)
        strain = torch.zeros(graph.num_structures, 3, 3, dtype=pos.dtype, requires_grad=True)
        inputs = None
        if io is not None:
            inputs = {k: v.detach().requires_grad_(True) for k, v in io.tensors().items()}
            io = type(io)(**inputs)
        out = stage(io, graph, pos, strain)
        records.append((inputs, out, pos, strain))
        io = out
    force = torch.zeros_like(graph.positions)
    virial = torch.zeros(graph.num_structures, 3, 3, dtype=force.dtype)
    grads = None
    for inputs, out, pos, strain in reversed(records):
        if grads is None:
            outs, cot = [out.energy], [torch.ones_like(out.energy)]
        else:
            names = list(grads)
            outs, cot = [out.tensors()[k] for k in names], [grads[k] for k in names]
        leaves = [pos, strain] + ([] if inputs is None else list(inputs.values()))
        g = torch.autograd.grad(outs, leaves, cot, allow_unused=True)
        force -= g[0]
        virial += g[1]
        if inputs is not None:
            grads = dict(zip(inputs, g[2:]))
    vol = torch.linalg.det(graph.cell).abs()[:, None, None]
    torch.testing.assert_close(force, ref["forces"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(virial / vol, ref["stress"], rtol=1e-12, atol=1e-14)


def test_bad_cuts_and_io(setup):
    model, graph = setup
    with pytest.raises(ValueError, match="strictly increasing"):
        model.stages([2, 1])
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        model.stages([4])
    stages = model.stages([1])
    with pytest.raises(ValueError, match="io=None"):
        stages[1](None, graph, graph.positions, None)


def test_balanced_cuts():
    model = random_model(preset("tiny", num_blocks=6), seed=0)
    cuts = model.balanced_cuts(3)
    assert len(cuts) == 2
    costs = model.unit_costs()
    bounds = [0, *[c + 1 for c in cuts], len(costs)]
    loads = [sum(costs[a:b]) for a, b in itertools.pairwise(bounds)]
    assert max(loads) <= 2 * costs[1] + costs[0] + costs[-1]  # two blocks per stage
    # Measured costs: a very expensive first block gets a stage of its own.
    custom = [0.1, 10.0, 1, 1, 1, 1, 1, 0.1]
    assert model.balanced_cuts(2, costs=custom) == [1]
    with pytest.raises(ValueError, match="num_stages"):
        model.balanced_cuts(9)


def test_checkpointed_blocks_same_forces(setup):
    """Recomputing blocks in the backward (inference memory saver) changes nothing."""
    model, graph = setup
    ref = compute_outputs(model, graph, stress=True, checkpoint=False)
    ck = compute_outputs(model, graph, stress=True, checkpoint=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(ck[key], ref[key], rtol=0, atol=1e-14)


def test_row_chunking_does_not_change_results(setup, monkeypatch):
    """Fused ops process rows in chunks; any chunk size gives the same training
    gradients (forces, stress and second-order parameter gradients)."""
    from matris.nn import ops

    model, graph = setup

    def grads():
        model.zero_grad()
        out = compute_outputs(model, graph, stress=True, create_graph=True)
        loss = out["energy"].square().sum() + out["forces"].square().sum() \
            + out["stress"].square().sum()
        loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()
                     if p.grad is not None}

    ref_out, ref_grads = grads()
    monkeypatch.setattr(ops, "CHUNK_ROWS", 7)
    out, g = grads()
    for k in ("energy", "forces", "stress"):
        torch.testing.assert_close(out[k], ref_out[k], rtol=1e-12, atol=1e-14)
    assert g.keys() == ref_grads.keys()
    for k in g:
        torch.testing.assert_close(g[k], ref_grads[k], rtol=1e-10, atol=1e-13)
