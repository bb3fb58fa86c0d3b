"""The exchange's autograd Functions, run as G in-process parts (threads): each backward
is the exact adjoint of its forward, and the backward of the backward is the forward."""

from __future__ import annotations

import pytest
import torch

from matris.graph import collate
from matris.train.dist.halo import GraphExchange
from matris.train.graph_parallel.part import build_part
from matris.train.graph_parallel.partition import partition_graph
from matris.train.graph_parallel.simulate import run_parts
from matris.train.graph_parallel.testing import case_graphs


def _parts(case, G):
    g = collate(case_graphs(case)).to(dtype=torch.float64)
    partition = partition_graph(g, G)
    return g, [build_part(g, partition, p) for p in range(G)]


def _rand(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("case,G", [("triclinic", 2), ("triclinic", 4), ("tiny", 4)])
def test_halo_copy_adjoint_and_double_backward(case, G):
    _, parts = _parts(case, G)

    def fn(r, transport):
        lp = parts[r]
        ex = GraphExchange(lp.plan, transport)
        n = lp.plan.num_atoms
        x = _rand((n, 5), 10 + r).requires_grad_(True)
        y = _rand((n, 5), 20 + r).requires_grad_(True)
        v = _rand((n, 5), 30 + r)
        out = ex.atoms(x)
        (adj,) = torch.autograd.grad(out, x, y, create_graph=True)  # halo reduce of y
        (back,) = torch.autograd.grad(adj, y, v)                       # halo copy of v
        return dict(x=x.detach(), y=y.detach(), out=out.detach(), adj=adj.detach(),
                    back=back, copy_v=ex.atoms(v), atoms=lp.atoms, owned=lp.num_owned)

    res = run_parts(fn, G)
    lhs = sum(float((r["out"] * r["y"]).sum()) for r in res)
    rhs = sum(float((r["x"] * r["adj"]).sum()) for r in res)
    assert lhs == pytest.approx(rhs, rel=1e-12)
    owner_rows = {}
    for r in res:
        for k in range(r["owned"]):
            owner_rows[int(r["atoms"][k])] = r["x"][k]
    for r in res:
        # Forward: owned rows unchanged, halo rows = owner's rows.
        assert torch.equal(r["out"][:r["owned"]], r["x"][:r["owned"]])
        for k in range(r["owned"], r["out"].shape[0]):
            assert torch.equal(r["out"][k], owner_rows[int(r["atoms"][k])])
        assert torch.all(r["adj"][r["owned"]:] == 0), "halo cotangents moved to owners"
        assert torch.equal(r["back"], r["copy_v"]), "backward of backward = halo copy"
    if case == "triclinic":  # the halo really communicates something
        assert any(r["out"].shape[0] > r["owned"] for r in res)


@pytest.mark.parametrize("G", [2, 4])
def test_bond_sum_and_group_sum_are_self_adjoint(G):
    g, parts = _parts("batch", G)

    def fn(r, transport):
        lp = parts[r]
        ex = GraphExchange(lp.plan, transport)
        x = _rand((lp.plan.num_bonds, 4), 40 + r).requires_grad_(True)
        y = _rand((lp.plan.num_bonds, 4), 50 + r)
        out = ex.bonds(x)
        (adj,) = torch.autograd.grad(out, x, y)
        e = _rand((g.num_structures,), 60 + r).requires_grad_(True)
        tot = ex.structures(e)
        (e_adj,) = torch.autograd.grad(tot, e, torch.full_like(tot, float(r + 1)))
        return dict(x=x.detach(), y=y, out=out.detach(), adj=adj, by_y=ex.bonds(y),
                    bonds=torch.as_tensor(lp.index.bonds.copy()), e=e.detach(), tot=tot,
                    e_adj=e_adj)

    res = run_parts(fn, G)
    lhs = sum(float((r["out"] * r["y"]).sum()) for r in res)
    rhs = sum(float((r["x"] * r["adj"]).sum()) for r in res)
    assert lhs == pytest.approx(rhs, rel=1e-12)
    serial = torch.zeros(g.n_bonds, 4, dtype=torch.float64)
    for r in res:
        serial.index_add_(0, r["bonds"], r["x"])
        assert torch.equal(r["adj"], r["by_y"])
    values: dict[int, torch.Tensor] = {}
    for r in res:
        torch.testing.assert_close(r["out"], serial[r["bonds"]], rtol=1e-14, atol=1e-14)
        for k, b in enumerate(r["bonds"].tolist()):  # replicas are bit-identical
            if b in values:
                assert torch.equal(values[b], r["out"][k])
            values[b] = r["out"][k]
    total = sum(r["e"] for r in res)
    for r in res:
        assert torch.equal(r["tot"], res[0]["tot"])
        torch.testing.assert_close(r["tot"], total, rtol=1e-14, atol=0)
        assert torch.all(r["e_adj"] == sum(range(1, G + 1))), "adjoint of all-reduce = all-reduce"


def test_gather_owned_and_shape_errors():
    g, parts = _parts("triclinic", 2)

    def fn(r, transport):
        lp = parts[r]
        ex = GraphExchange(lp.plan, transport)
        full = ex.gather_owned(g.positions[lp.owned_atoms], lp.owned_atoms, g.n_atoms)
        with pytest.raises(ValueError, match="expected"):
            ex.atoms(torch.zeros(lp.plan.num_atoms + 1, 2))
        return full

    for full in run_parts(fn, 2):
        assert torch.equal(full, g.positions)
