"""Graph building vs a brute-force O(N²·images) reference on random and awkward cells."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from matris.graph import AtomGraph, build_graph, collate


def brute_force_edges(positions, cell, pbc, cutoff):
    """Set of directed edges (i, j, S) with |x_j + S·cell − x_i| <= cutoff, by enumeration."""
    cell = np.asarray(cell, dtype=float)
    reach = []
    if all(pbc):  # atoms may sit outside the cell: widen the range by their spread
        frac = np.floor(positions @ np.linalg.inv(cell))
        spread = (frac.max(axis=0) - frac.min(axis=0)).astype(int)
    for k in range(3):
        if pbc[k] and all(pbc):
            height = 1.0 / np.linalg.norm(np.linalg.inv(cell)[:, k])
            reach.append(int(np.ceil(cutoff / height)) + 1 + spread[k])
        else:  # mixed pbc: a generous fixed range of images
            reach.append(8 if pbc[k] else 0)
    edges = set()
    for s in itertools.product(*[range(-r, r + 1) for r in reach]):
        shift = np.array(s, dtype=float) @ cell if any(s) else np.zeros(3)
        diff = positions[None, :, :] + shift - positions[:, None, :]
        d = np.linalg.norm(diff, axis=-1)
        for i, j in zip(*np.nonzero(d <= cutoff)):
            if i == j and not any(s):
                continue
            edges.add((int(i), int(j), s))
    return edges


def graph_edges(g: AtomGraph):
    c, nb = g.edge_index.numpy()
    s = g.edge_shift.numpy().astype(int)
    return {(int(a), int(b), tuple(int(x) for x in v)) for a, b, v in zip(c, nb, s)}


def random_structure(rng, n, kind):
    if kind == "skewed":
        cell = np.array([[4.3, 0, 0], [3.5, 3.0, 0], [1.0, 2.5, 3.2]])
        pbc = [True] * 3
    elif kind == "tiny":
        cell = np.array([[1.9, 0.1, 0], [0.3, 2.1, 0], [0.2, -0.4, 2.2]])
        pbc = [True] * 3
    elif kind == "mixed":
        cell = np.array([[3.0, 0, 0], [1.0, 4.0, 0], [0, 0, 0.0]])
        pbc = [True, True, False]
    elif kind == "wire":
        cell = np.array([[2.5, 0, 0], [0, 0, 0], [0, 0, 0.0]])
        pbc = [True, False, False]
    elif kind == "molecule":
        cell = np.zeros((3, 3))
        pbc = [False] * 3
    else:
        cell = np.diag([6.0, 7.0, 5.5])
        pbc = [True] * 3
    frac = rng.random((n, 3))
    pos = frac @ cell if all(pbc) else frac * 6.0
    if all(pbc):
        pos += rng.normal(scale=3.0, size=(n, 3))  # atoms outside the cell are legal
    return pos, cell, pbc


@pytest.mark.parametrize("kind", ["ortho", "skewed", "tiny", "mixed", "wire", "molecule"])
def test_edges_match_brute_force(kind):
    rng = np.random.default_rng(hash(kind) % 2**32)
    n = 3 if kind == "tiny" else 9
    pos, cell, pbc = random_structure(rng, n, kind)
    numbers = rng.integers(1, 90, size=n)
    g = build_graph(numbers, pos, cell, pbc, cutoff=4.0, three_body_cutoff=2.8)
    ref = brute_force_edges(pos, cell, pbc, 4.0)
    assert graph_edges(g) == ref
    assert g.n_edges == len(ref) == 2 * g.n_bonds


def test_bond_pairing_and_angles():
    rng = np.random.default_rng(0)
    pos, cell, pbc = random_structure(rng, 7, "skewed")
    g = build_graph(np.full(7, 14), pos, cell, pbc, cutoff=4.5, three_body_cutoff=3.0)
    c, nb = g.edge_index
    # Each bond has exactly two edges, reverse of each other.
    counts = torch.bincount(g.edge_bond, minlength=g.n_bonds)
    assert torch.all(counts == 2)
    assert torch.equal(g.edge_bond[g.bond_edge], torch.arange(g.n_bonds))
    other = torch.empty_like(g.bond_edge)
    mask = torch.ones(g.n_edges, dtype=torch.bool)
    mask[g.bond_edge] = False
    other[g.edge_bond[mask]] = torch.nonzero(mask).squeeze(1)
    assert torch.equal(c[g.bond_edge], nb[other]) and torch.equal(nb[g.bond_edge], c[other])
    assert torch.equal(g.edge_shift[g.bond_edge], -g.edge_shift[other])
    # Angles: all ordered pairs of distinct short edges at a centre.
    vec = pos[nb.numpy()] + g.edge_shift.numpy() @ cell - pos[c.numpy()]
    d = np.linalg.norm(vec, axis=1)
    expected = {(p, q) for p in range(g.n_edges) for q in range(g.n_edges)
                if p != q and c[p] == c[q] and d[p] < 3.0 and d[q] < 3.0}
    got = set(map(tuple, g.angle_edges.T.tolist()))
    assert got == expected and len(expected) > 0


def test_isolated_atoms_and_bad_input():
    g = build_graph([8, 1], [[0, 0, 0], [20, 0, 0]], np.zeros((3, 3)), False, 5.0, 3.5)
    assert g.n_edges == 0 and g.n_angles == 0 and g.n_atoms == 2
    with pytest.raises(ValueError, match="numbers"):
        build_graph([0], [[0, 0, 0]], None, False, 5.0, 3.5)
    with pytest.raises(ValueError, match="periodic lattice vectors"):
        build_graph([1], [[0, 0, 0]], np.zeros((3, 3)), True, 5.0, 3.5)
    with pytest.raises(ValueError, match="three_body_cutoff"):
        build_graph([1], [[0, 0, 0]], None, False, 3.0, 3.5)


def test_collate_pickle_and_to():
    rng = np.random.default_rng(1)
    graphs = []
    for kind in ("ortho", "molecule", "tiny"):
        pos, cell, pbc = random_structure(rng, 4, kind)
        graphs.append(build_graph(rng.integers(1, 50, 4), pos, cell, pbc, 4.0, 3.0))
    b = collate([copy.deepcopy(g) for g in graphs])  # the reduce protocol workers use
    assert b.num_structures == 3 and b.n_atoms == 12
    assert b.n_edges == sum(g.n_edges for g in graphs)
    assert b.n_angles == sum(g.n_angles for g in graphs)
    # Offsets: the batched topology of structure 2 equals its own, shifted.
    e0 = graphs[0].n_edges + graphs[1].n_edges
    assert torch.equal(b.edge_index[:, e0:] - 8, graphs[2].edge_index)
    assert torch.equal(b.angle_edges[:, -graphs[2].n_angles:] - e0, graphs[2].angle_edges)
    assert torch.equal(b.batch, torch.tensor([0] * 4 + [1] * 4 + [2] * 4))
    f = b.to(dtype=torch.float32)
    assert f.positions.dtype == torch.float32 and f.edge_index.dtype == torch.int64


@pytest.mark.parametrize("kind", ["ortho", "skewed"])
def test_many_bins_match_brute_force(kind):
    """A supercell large enough for many cell-list bins (chunking and bin edges)."""
    rng = np.random.default_rng(7)
    base = np.diag([6.0, 7.0, 5.5]) if kind == "ortho" else np.array(
        [[4.3, 0, 0], [3.5, 3.0, 0], [1.0, 2.5, 3.2]])
    cell = base * 3
    n = 90
    pos = rng.random((n, 3)) @ cell
    g = build_graph(np.ones(n, int), pos, cell, True, cutoff=3.7, three_body_cutoff=3.0)
    assert graph_edges(g) == brute_force_edges(pos, cell, [True] * 3, 3.7)
