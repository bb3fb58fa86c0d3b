"""GraphPartition invariants and local part graphs, without any communication."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matris.graph import collate
from matris.nn.geometry import bond_vectors
from matris.train.graph_parallel.part import build_part
from matris.train.graph_parallel.partition import partition_graph
from matris.train.graph_parallel.testing import CASES, case_graphs, lattice


@pytest.fixture(scope="module", params=CASES)
def graph(request):
    return collate(case_graphs(request.param))


def arrays(g):
    return (g.edge_index[0].numpy(), g.edge_index[1].numpy(), g.edge_bond.numpy(),
            g.bond_edge.numpy(), g.angle_edges.numpy())


@pytest.mark.parametrize("G", [1, 2, 3, 4])
def test_ownership_and_halo_invariants(graph, G):
    part = partition_graph(graph, G)
    centre, neigh, edge_bond, bond_edge, angle_edges = arrays(graph)
    n, n_e, n_a = graph.n_atoms, graph.n_edges, graph.n_angles
    owned = np.concatenate([p.owned for p in part.parts])
    assert np.array_equal(np.sort(owned), np.arange(n)), "every atom owned exactly once"
    edge_hits, angle_hits = np.zeros(n_e, int), np.zeros(n_a, int)
    bond_hits = np.zeros(graph.n_bonds, int)
    for p, idx in enumerate(part.parts):
        assert np.all(part.owner[idx.owned] == p) and np.all(np.diff(idx.owned) > 0)
        mine = part.owner[centre[idx.edges]] == p
        edge_hits[idx.edges[mine]] += 1
        angle_hits[idx.angles] += 1
        assert np.all(part.owner[centre[angle_edges[0, idx.angles]]] == p)
        bond_hits[idx.bonds] += 1
        # Both directed edges of every local bond are local, and nothing else.
        assert np.array_equal(np.sort(idx.edges), np.nonzero(np.isin(edge_bond, idx.bonds))[0])
        # Halo = non-owned endpoints of local edges, grouped by owner.
        ends = np.unique(np.concatenate([centre[idx.edges], neigh[idx.edges]]))
        assert np.array_equal(np.sort(idx.halo), ends[part.owner[ends] != p])
        assert np.all(np.diff(idx.halo_owner) >= 0) and np.all(idx.halo_owner != p)
        assert np.array_equal(idx.recv_counts, np.bincount(idx.halo_owner, minlength=G))
        for q, other in enumerate(part.parts):
            # What p sends to q is exactly q's halo owned by p, in q's order.
            assert np.array_equal(idx.owned[idx.send[q]], other.halo[other.halo_owner == p])
            # Cut bonds: the same global bonds, in the same order, on both sides.
            assert np.array_equal(idx.bonds[idx.shared[q]], other.bonds[other.shared[p]])
    assert np.all(edge_hits == 1), "every directed edge owned once (by its centre's part)"
    assert np.all(angle_hits == 1), "every angle owned once"
    ends = part.owner[np.stack([centre[bond_edge], neigh[bond_edge]])]
    assert np.array_equal(bond_hits, np.where(ends[0] == ends[1], 1, 2)), \
        "a bond is local to the parts of its two endpoints"


@pytest.mark.parametrize("G", [2, 4])
def test_per_part_sums_equal_serial_sums(graph, G):
    """Per-edge / per-angle sums over owned rows, and per-bond sums over angles after the
    cut-bond reduction, equal the serial sums (what `exchange.bonds` relies on)."""
    rng = np.random.default_rng(0)
    centre, _, edge_bond, _, angle_edges = arrays(graph)
    f_edge, f_angle = rng.normal(size=graph.n_edges), rng.normal(size=graph.n_angles)
    angle_bond = edge_bond[angle_edges[0]]
    serial_bond = np.bincount(angle_bond, weights=f_angle, minlength=graph.n_bonds)
    part = partition_graph(graph, G)
    tot_edge = tot_angle = 0.0
    partial = []
    for p, idx in enumerate(part.parts):
        own = idx.edges[part.owner[centre[idx.edges]] == p]
        tot_edge += f_edge[own].sum()
        tot_angle += f_angle[idx.angles].sum()
        local_bond = np.searchsorted(idx.bonds, angle_bond[idx.angles])
        partial.append(np.bincount(local_bond, weights=f_angle[idx.angles],
                                   minlength=idx.bonds.size).astype(float))
    assert tot_edge == pytest.approx(f_edge.sum(), rel=1e-12)
    assert tot_angle == pytest.approx(f_angle.sum(), rel=1e-12)
    for p, idx in enumerate(part.parts):
        summed = partial[p].copy()
        for q in range(G):
            summed[idx.shared[q]] += partial[q][part.parts[q].shared[p]]
        np.testing.assert_allclose(summed, serial_bond[idx.bonds], rtol=1e-12, atol=1e-12)
        if G > 1 and any(s.size for s in idx.shared):  # the reduction matters here
            assert not np.allclose(partial[p], serial_bond[idx.bonds])


@pytest.mark.parametrize("G", [2, 4])
def test_local_graph_reproduces_global_geometry(graph, G):
    """Local bonds have the same canonical edge, numbers and vectors (bit for bit)."""
    g = graph.to(dtype=torch.float64)
    ref = bond_vectors(g, g.positions, None)
    part = partition_graph(g, G)
    for p in range(G):
        lp = build_part(g, part, p)
        loc = lp.graph
        bonds = torch.tensor(np.array(lp.index.bonds))
        assert torch.equal(bond_vectors(loc, loc.positions, None), ref[bonds])
        assert torch.equal(loc.numbers, g.numbers[lp.atoms])
        assert torch.equal(lp.atoms[loc.edge_index], g.edge_index[:, torch.tensor(
            np.array(lp.index.edges))])
        assert torch.all(loc.edge_index[0][:-1] <= loc.edge_index[0][1:]), "sorted by centre"
        assert int(loc.num_angles.sum()) == loc.n_angles and int(loc.num_atoms.sum()) == loc.n_atoms
        assert torch.all(loc.edge_index[0][loc.angle_edges[0]] < lp.num_owned)


def test_deterministic_frozen_and_empty_parts():
    g = collate(case_graphs("tiny"))
    a, b = partition_graph(g, 4), partition_graph(g, 4)
    assert np.array_equal(a.owner, b.owner)
    assert min(p.num_owned for p in a.parts) == 0, "3 atoms in 4 parts: one part is empty"
    with pytest.raises(ValueError):
        a.owner[0] = 1  # read-only arrays
    with pytest.raises(AttributeError):
        a.num_parts = 3  # frozen
    empty = next(p for p in range(4) if a[p].num_owned == 0)
    lp = build_part(g, a, empty)
    assert lp.graph.n_atoms == 0 and lp.graph.n_edges == 0 and lp.plan.peers() == []


def test_balance_and_halo_on_a_large_cell():
    g = lattice((8, 8, 12), 2.6, 0.2, 0.2, seed=7)
    for G in (2, 4):
        stats = partition_graph(g, G).stats()
        assert stats["imbalance"] < 1.05, stats["imbalance"]
        owned = [c["owned"] for c in stats["parts"]]
        assert max(owned) - min(owned) <= 0.1 * g.n_atoms / G
    # Slabs along the longest axis: the G=2 halo is two faces of thickness ~r_c.
    assert partition_graph(g, 2).stats()["halo_fraction"] < 1.0


def test_forced_owner_and_bad_input():
    g = collate(case_graphs("molecule"))
    owner = np.arange(g.n_atoms) % 3
    part = partition_graph(g, 3, owner=owner)
    assert np.array_equal(part.owner, owner)
    with pytest.raises(ValueError, match="part ids"):
        partition_graph(g, 2, owner=owner)
    with pytest.raises(ValueError, match="num_parts"):
        partition_graph(g, 0)
