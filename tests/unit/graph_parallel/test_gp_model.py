"""The graph-parallel model on G in-process parts (threads) equals the serial model:
outputs, and parameter gradients of the full E + F + σ (+ magmom) loss through the
double backward. Broken exchanges must make these comparisons fail."""

from __future__ import annotations

import copy

import pytest
import torch

from matris.config import preset
from matris.outputs import compute_outputs
from matris.testing import random_model
from matris.train.dist.halo import GraphExchange
from matris.train.graph_parallel.forward import part_outputs
from matris.train.graph_parallel.runner import GraphParallelRunner
from matris.train.graph_parallel.simulate import run_parts
from matris.train.graph_parallel.testing import (
    case_graphs,
    counts_of,
    grads_of,
    labelled_batch,
    loss_config,
    relative_error,
)
from matris.train.step import LocalRunner

TOL = 1e-10


@pytest.fixture(scope="module")
def model():
    return random_model(preset("tiny"), seed=3)


def gp_outputs(model, batch, G, exchange_cls=GraphExchange, stress=True):
    """Energy/forces/stress/magmoms of the G parts, reassembled in global atom order."""
    runner_models = [model] * G  # forward only: sharing the module is fine

    def fn(r, transport):
        runner = GraphParallelRunner(runner_models[r], loss_config(), torch.device("cpu"),
                                     "float64", transport)
        part, _ = runner.prepare(batch.graph)
        ex = exchange_cls(part.plan, transport)
        out = part_outputs(runner_models[r], part, ex, stress=stress)
        return part.owned_atoms, out

    res = run_parts(fn, G)
    n = batch.graph.n_atoms
    forces = torch.full((n, 3), float("nan"), dtype=torch.float64)
    magmoms = torch.full((n,), float("nan"), dtype=torch.float64)
    for ids, out in res:
        forces[ids] = out["forces"]
        magmoms[ids] = out["magmoms"]
    for _, out in res[1:]:  # replicated totals are bit-identical on every part
        assert torch.equal(out["energy"], res[0][1]["energy"])
    out = {"energy": res[0][1]["energy"], "forces": forces, "magmoms": magmoms}
    if stress:
        out["stress"] = res[0][1]["stress"]
    return out


@pytest.mark.parametrize("case,G", [("triclinic", 2), ("triclinic", 4), ("molecule", 3),
                                    ("batch", 4), ("tiny", 4)])
def test_outputs_equal_serial(model, case, G):
    batch = labelled_batch(case_graphs(case), seed=0)
    periodic = bool(batch.graph.pbc.all())
    ref = compute_outputs(model, batch.graph, stress=periodic)
    out = gp_outputs(model, batch, G, stress=periodic)
    for key in ref:
        err = relative_error(out[key], ref[key])
        assert err < TOL, f"{case} G={G} {key}: relative error {err:.2e}"


def test_results_are_reproducible_bit_for_bit(model):
    batch = labelled_batch(case_graphs("batch"), seed=0)
    first, second = gp_outputs(model, batch, 4), gp_outputs(model, batch, 4)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def _gp_gradients(model, batches, G, exchange_cls=GraphExchange):
    counts = counts_of(batches)
    models = [copy.deepcopy(model) for _ in range(G)]

    def fn(r, transport):
        runner = GraphParallelRunner(models[r], loss_config(), torch.device("cpu"), "float64",
                                     transport)
        if exchange_cls is not GraphExchange:
            prepare = runner.prepare

            def broken(graph):
                part, _ = prepare(graph)
                return part, exchange_cls(part.plan, transport)
            runner.prepare = broken
        return runner.run(batches, counts)

    results = run_parts(fn, G)
    total = {k: sum(grads_of(m)[k] for m in models) for k in grads_of(models[0])}
    sums = {t: sum(r.sums.get(t, 0.0) for r in results) for t in results[0].sums}
    return total, sums


def _serial_gradients(model, batches):
    serial = copy.deepcopy(model)
    runner = LocalRunner(serial, loss_config(), torch.device("cpu"), "float64")
    result = runner.run(batches, counts_of(batches))
    return grads_of(serial), result.sums


@pytest.mark.parametrize("cases,G", [(("batch", "molecule"), 2), (("triclinic", "tiny"), 4)])
def test_loss_gradients_equal_serial(model, cases, G):
    batches = [labelled_batch(case_graphs(c), seed=k) for k, c in enumerate(cases)]
    ref, ref_sums = _serial_gradients(model, batches)
    got, sums = _gp_gradients(model, batches, G)
    assert max(float(v.abs().max()) for v in ref.values()) > 0
    err = relative_error(got, ref)
    assert err < TOL, f"parameter gradients: worst relative error {err:.2e}"
    assert relative_error(sums, ref_sums) < TOL, (sums, ref_sums)


class NoBondSum(GraphExchange):
    """Skips the cut-bond reduction (each part keeps its own partial sums)."""

    def bonds(self, x):
        return x


class NoHaloRefresh(GraphExchange):
    """Never refreshes halo rows of atom features."""

    def atoms(self, x):
        return x


class NoForceReduce(GraphExchange):
    """Exact forward, but halo position gradients are dropped instead of reverse-summed."""

    def positions(self, x):
        return x


@pytest.mark.parametrize("broken,key", [(NoBondSum, "energy"), (NoHaloRefresh, "energy"),
                                        (NoForceReduce, "forces")])
def test_broken_exchange_is_detected(model, broken, key):
    batch = labelled_batch(case_graphs("triclinic"), seed=0)
    ref = compute_outputs(model, batch.graph, stress=True)
    out = gp_outputs(model, batch, 2, exchange_cls=broken)
    assert relative_error(out[key], ref[key]) > 1e-6
    if broken is NoForceReduce:
        assert relative_error(out["energy"], ref["energy"]) < TOL


def test_broken_bond_sum_breaks_gradients(model):
    batches = [labelled_batch(case_graphs("batch"), seed=0)]
    ref, _ = _serial_gradients(model, batches)
    got, _ = _gp_gradients(model, batches, 2, exchange_cls=NoBondSum)
    assert relative_error(got, ref) > 1e-6
