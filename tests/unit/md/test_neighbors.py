"""Skin reuse: the restricted candidate graph equals a fresh build at the true cutoffs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.md.langevin import Langevin
from ase.units import fs

from matris.graph import build_graph
from matris.md import MatRISCalculator
from matris.md.drivers import init_velocities
from matris.md.neighbors import SkinNeighborList, ordered_pairs, restrict_graph
from matris.outputs import compute_outputs

from .conftest import si_cell, skewed_oxide

RC, R3, SKIN = 5.0, 3.5, 1.0


def arrays(atoms: Atoms):
    return atoms.numbers, atoms.positions.copy(), atoms.cell.array.copy(), atoms.pbc.copy()


def molecule() -> Atoms:
    rng = np.random.default_rng(2)
    pos = rng.uniform(0, 6, (10, 3))
    return Atoms(numbers=[6] * 5 + [1] * 5, positions=pos, pbc=False)


def slab() -> Atoms:
    atoms = si_cell(1, rattle=0.1)
    atoms.pbc = [True, True, False]
    return atoms


def edge_set(graph) -> set:
    """Directed edges as (centre, neighbour, rounded physical vector): independent of
    edge order and of the image convention of the positions."""
    pos = graph.positions.numpy()
    cell = graph.cell[0].numpy()
    c, n = graph.edge_index.numpy()
    vec = pos[n] + graph.edge_shift.numpy() @ cell - pos[c]
    return {(int(a), int(b), *np.round(v, 8)) for a, b, v in zip(c, n, vec)}


def angle_set(graph) -> set:
    pos = graph.positions.numpy()
    cell = graph.cell[0].numpy()
    c, n = graph.edge_index.numpy()
    vec = np.round(pos[n] + graph.edge_shift.numpy() @ cell - pos[c], 8)
    p, q = graph.angle_edges.numpy()
    return {(int(c[a]), *vec[a], *vec[b]) for a, b in zip(p, q)}


def canonical(graph) -> tuple[set, set, set]:
    """Order-free form of a graph: directed edges as (centre, neighbour, shift), bonds
    as their canonical edge's key, angles as (key p, key q). Also checks that every
    edge's bond is the edge itself or its reverse (consistent indexing)."""
    c, n = graph.edge_index.numpy()
    shift = graph.edge_shift.numpy().astype(int)
    keys = [(int(a), int(b), *map(int, s)) for a, b, s in zip(c, n, shift)]
    for e, u in enumerate(graph.edge_bond.numpy()):
        k, r = keys[e], keys[graph.bond_edge.numpy()[u]]
        assert r == k or r == (k[1], k[0], -k[2], -k[3], -k[4]), "edge/bond mismatch"
    bonds = {keys[e] for e in graph.bond_edge.numpy()}
    angles = {(keys[p], keys[q]) for p, q in graph.angle_edges.numpy().T}
    assert len(angles) == graph.n_angles and len(bonds) == graph.n_bonds
    assert np.all(np.diff(c) >= 0), "edges must stay sorted by centre"
    return set(keys), bonds, angles


@pytest.mark.parametrize("make", [si_cell, skewed_oxide, molecule, slab])
def test_restriction_equals_fresh_build(make, model):
    """Atoms moved by < skin/2 (no wrapping): the same edges, bonds and angles as a
    fresh build (order may differ: build_graph orders bonds by its cell list), and the
    same energy and forces to float64 rounding."""
    atoms = make()
    numbers, pos, cell, pbc = arrays(atoms)
    candidates = build_graph(numbers, pos, cell, pbc, RC + SKIN, 1e-9)
    rng = np.random.default_rng(0)
    step = rng.normal(size=pos.shape)
    moved = pos + 0.45 * SKIN * step / np.linalg.norm(step, axis=1, keepdims=True)
    got = restrict_graph(candidates, moved, RC, R3)
    ref = build_graph(numbers, moved, cell, pbc, RC, R3)
    assert ref.n_angles > 0 and ref.n_edges > 0
    assert canonical(got) == canonical(ref)
    assert torch.equal(got.positions, ref.positions)
    assert (got.cutoff, got.three_body_cutoff) == (RC, R3)
    out = [compute_outputs(model, g, stress=bool(pbc.all())) for g in (got, ref)]
    assert abs(float(out[0]["energy"] - out[1]["energy"])) <= 1e-12 * abs(float(out[1]["energy"]))
    for key in out[1]:
        torch.testing.assert_close(out[0][key], out[1][key], rtol=1e-10, atol=1e-12,
                                   equal_nan=True)


def test_ordered_pairs_rule():
    centre = np.array([0, 0, 0, 1, 1, 2])
    short = np.array([True, False, True, True, True, True])
    p, q = ordered_pairs(centre, short, 3)
    assert list(zip(p, q)) == [(0, 2), (2, 0), (3, 4), (4, 3)]


def test_wrapped_atoms_reuse_same_edges_and_energy(model):
    """Wrapping atoms back into the cell (lattice jumps) keeps the candidates and gives
    the same edge/angle sets and energy as a fresh build (float64 rounding)."""
    atoms = si_cell(2)
    atoms.positions[:5] -= 0.3  # some atoms leave the cell through a face
    reuse = MatRISCalculator(model, dtype="float64", skin=SKIN)
    fresh = MatRISCalculator(model, dtype="float64", skin=0.0)
    reuse.get_potential_energy(atoms)
    atoms.positions += 0.1
    atoms.wrap()
    assert atoms.get_scaled_positions(wrap=False).min() >= 0  # really wrapped
    nl = reuse.neighbors
    g = nl.graph(*arrays(atoms))
    assert (nl.builds, nl.reuses) == (1, 1)
    ref = build_graph(*arrays(atoms), model.config.cutoff, model.config.three_body_cutoff)
    assert edge_set(g) == edge_set(ref)
    assert angle_set(g) == angle_set(ref)
    e_reuse = reuse.get_potential_energy(atoms)
    e_fresh = fresh.get_potential_energy(atoms)
    assert abs(e_reuse - e_fresh) <= 1e-12 * abs(e_fresh)
    np.testing.assert_allclose(reuse.get_forces(atoms), fresh.get_forces(atoms), atol=1e-11)


def test_displacement_threshold_and_state_changes():
    atoms = skewed_oxide()
    nl = SkinNeighborList(RC, R3, SKIN)
    numbers, pos, cell, pbc = arrays(atoms)
    nl.graph(numbers, pos, cell, pbc)
    near = pos.copy()
    near[3, 0] += 0.49 * SKIN
    nl.graph(numbers, near, cell, pbc)
    assert (nl.builds, nl.reuses) == (1, 1)
    far = pos.copy()
    far[3, 0] += 0.51 * SKIN
    nl.graph(numbers, far, cell, pbc)
    assert (nl.builds, nl.reuses) == (2, 1)
    changed = numbers.copy()
    changed[0] = 14
    nl.graph(changed, far, cell, pbc)
    assert nl.builds == 3
    nl.graph(changed, far, cell, np.array([True, True, False]))
    assert nl.builds == 4


def test_cell_deformation_reuse(model):
    """A small homogeneous strain reuses the candidates (results equal a fresh build);
    a large compression forces a rebuild."""
    atoms = skewed_oxide()
    # stress="always": one evaluation per geometry, so the counts below are per geometry
    calc = MatRISCalculator(model, dtype="float64", skin=0.5, stress="always")
    fresh = MatRISCalculator(model, dtype="float64", skin=0.0, stress="always")
    calc.get_potential_energy(atoms)
    strain = np.array([[0.004, 0.001, 0.0], [0.001, -0.003, 0.002], [0.0, 0.002, 0.001]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    atoms.positions[0] += 0.05
    e, s = calc.get_potential_energy(atoms), calc.get_stress(atoms)
    assert (calc.neighbors.builds, calc.neighbors.reuses) == (1, 1)
    assert abs(e - fresh.get_potential_energy(atoms)) <= 1e-12 * abs(e)
    np.testing.assert_allclose(s, fresh.get_stress(atoms), rtol=1e-10, atol=1e-14)
    atoms.set_cell(atoms.cell.array * 0.9, scale_atoms=True)
    calc.get_potential_energy(atoms)
    assert calc.neighbors.builds == 2


@pytest.mark.slow
def test_md_with_skin_matches_rebuild_every_step(model):
    """Langevin MD at 1500 K with a small skin: at every step the reused-graph energy
    and forces equal those of a calculator that rebuilds every step; rebuilds and
    reuses both happen (atoms cross the skin/2 threshold), and atoms are wrapped
    back into the cell every 20 steps."""
    atoms = si_cell(1, rattle=0.05)
    atoms.calc = MatRISCalculator(model, dtype="float64", skin=0.3)
    fresh = MatRISCalculator(model, dtype="float64", skin=0.0)
    init_velocities(atoms, 1500.0, seed=1)
    dyn = Langevin(atoms, 2.0 * fs, temperature_K=1500.0, friction=0.02 / fs, fixcm=False,
                   rng=np.random.default_rng(0))
    worst = {"energy": 0.0, "forces": 0.0, "steps": 0}

    def compare():
        if dyn.nsteps % 20 == 19:
            atoms.wrap()
        e = atoms.get_potential_energy()
        e_ref = fresh.get_potential_energy(atoms)
        worst["energy"] = max(worst["energy"], abs(e - e_ref) / abs(e_ref))
        worst["forces"] = max(worst["forces"],
                              float(np.abs(atoms.get_forces() - fresh.get_forces(atoms)).max()))
        worst["steps"] += 1

    dyn.attach(compare, interval=1)
    dyn.run(250)
    nl = atoms.calc.neighbors
    assert worst["steps"] == 251
    assert nl.builds >= 3, f"only {nl.builds} builds: the test did not cross the skin"
    assert nl.reuses >= 100, f"only {nl.reuses} reuses"
    assert worst["energy"] <= 1e-12, worst
    assert worst["forces"] <= 1e-10, worst
