"""Reusable physics checks for any MatRIS-like model (dense or MoE presets).

Each `check_*` function raises `AssertionError` with the measured error when the
property is violated and returns the measured error otherwise, so test suites (ours in
tests/physics, the MoE presets' later) can run the same checks on any config. Models
are evaluated in float64 with random, perturbed weights (`random_model`).
"""

from __future__ import annotations

import numpy as np
import torch

from matris.config import ModelConfig
from matris.graph import AtomGraph, build_graph, collate
from matris.model import MatRIS
from matris.outputs import compute_outputs

Structure = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # numbers, pos, cell, pbc


def random_model(config: ModelConfig, seed: int = 0, scale: float = 0.3) -> MatRIS:
    """A float64 model whose weights are perturbed away from their initial values.

    Norm weights and residual γ's (initialised to exactly 1) and biases (0) are
    randomised too, and reference energies are random, so no term is trivially
    constant, zero or symmetric.
    """
    torch.manual_seed(seed)
    model = MatRIS(config).double()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            std = float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 1.0
            p.add_(scale * std * noise if p.dim() > 1 else scale * noise)
    ref = np.zeros(119)
    ref[1:] = np.random.default_rng(seed).uniform(-8.0, -1.0, 118)
    model.set_reference_energies(ref)
    return model


def graph_of(model: MatRIS, structure: Structure) -> AtomGraph:
    cfg = model.config
    numbers, pos, cell, pbc = structure
    g = build_graph(numbers, pos, cell, pbc, cfg.cutoff, cfg.three_body_cutoff)
    return g.to(dtype=next(model.parameters()).dtype)


def evaluate(model: MatRIS, structure: Structure, stress: bool = False) -> dict:
    return compute_outputs(model, graph_of(model, structure), stress=stress)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def check_invariance(model, structure: Structure, seed: int = 0, tol: float = 1e-10):
    """E invariant, F and σ equivariant under a rotation + translation."""
    rng = np.random.default_rng(seed)
    numbers, pos, cell, pbc = structure
    rot = random_rotation(rng)
    shift = rng.normal(size=3) * 3.0
    ref = evaluate(model, structure, stress=bool(np.all(pbc)))
    moved = (numbers, pos @ rot.T + shift, cell @ rot.T, pbc)
    out = evaluate(model, moved, stress=bool(np.all(pbc)))
    err = {"energy": _rel(out["energy"], ref["energy"]),
           "forces": _rel(out["forces"], ref["forces"].numpy() @ rot.T)}
    if np.all(pbc):
        err["stress"] = _rel(out["stress"][0], rot @ ref["stress"][0].numpy() @ rot.T)
    assert max(err.values()) < tol, f"rotation/translation errors {err} exceed {tol}"
    return err


def check_permutation(model, structure: Structure, seed: int = 0, tol: float = 1e-10):
    """E invariant and F permuted under a permutation of the atoms."""
    numbers, pos, cell, pbc = structure
    perm = np.random.default_rng(seed).permutation(len(numbers))
    ref = evaluate(model, structure)
    out = evaluate(model, (numbers[perm], pos[perm], cell, pbc))
    err = {"energy": _rel(out["energy"], ref["energy"]),
           "forces": _rel(out["forces"], ref["forces"][perm])}
    assert max(err.values()) < tol, f"permutation errors {err} exceed {tol}"
    return err


def check_forces_fd(model, structure: Structure, h: float = 1e-5, tol: float = 1e-6):
    """Forces vs central finite differences of the energy (graph rebuilt per point)."""
    numbers, pos, cell, pbc = structure
    forces = evaluate(model, structure)["forces"].numpy()
    fd = np.zeros_like(forces)
    for i in range(len(numbers)):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                p = pos.copy()
                p[i, k] += sign * h
                energies.append(float(evaluate(model, (numbers, p, cell, pbc))["energy"][0]))
            fd[i, k] = -(energies[0] - energies[1]) / (2 * h)
    err = float(np.linalg.norm(forces - fd) / np.linalg.norm(fd))
    assert err < tol, f"forces vs finite differences: relative error {err:.2e} > {tol}"
    return err


def check_stress_fd(model, structure: Structure, h: float = 1e-5, tol: float = 1e-6):
    """Stress vs finite differences of E under symmetric strain of positions and cell."""
    numbers, pos, cell, pbc = structure
    stress = evaluate(model, structure, stress=True)["stress"][0].numpy()
    volume = abs(np.linalg.det(cell))
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            energies = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[i, j] += sign * h / 2
                eps[j, i] += sign * h / 2
                deform = np.eye(3) + eps
                s = (numbers, pos @ deform, cell @ deform, pbc)
                energies.append(float(evaluate(model, s)["energy"][0]))
            fd[i, j] = fd[j, i] = (energies[0] - energies[1]) / (2 * h * volume)
    err = float(np.abs(stress - fd).max() / np.abs(fd).max())
    assert err < tol, f"stress vs finite strain: relative error {err:.2e} > {tol}"
    return err


def check_extensivity(model, structure: Structure, tol: float = 1e-10):
    """A 2×2×2 supercell has 8× the energy and the same (tiled) forces."""
    numbers, pos, cell, pbc = structure
    shifts = np.array([[a, b, c] for a in range(2) for b in range(2) for c in range(2)])
    big_pos = np.concatenate([pos + s @ cell for s in shifts])
    big = (np.tile(numbers, 8), big_pos, 2 * cell, pbc)
    ref = evaluate(model, structure)
    out = evaluate(model, big)
    err = {"energy": _rel(out["energy"] / 8, ref["energy"]),
           "forces": _rel(out["forces"], np.tile(ref["forces"].numpy(), (8, 1)))}
    assert max(err.values()) < tol, f"extensivity errors {err} exceed {tol}"
    return err


def check_isolated_atoms(model, elements=(1, 8, 26, 79)):
    """An isolated atom (alone, or far from a second one) has its reference energy."""
    ref = model.reference_energies.detach().numpy()
    errs = []
    for z in elements:
        out = evaluate(model, (np.array([z]), np.zeros((1, 3)), np.zeros((3, 3)),
                               np.zeros(3, bool)))
        errs.append(abs(float(out["energy"][0]) - ref[z]))
        assert float(out["forces"].abs().max()) == 0.0
    far = 3.0 * model.config.cutoff
    pair = (np.array(elements[:2]), np.array([[0.0, 0, 0], [far, 0, 0]]), np.zeros((3, 3)),
            np.zeros(3, bool))
    errs.append(abs(float(evaluate(model, pair)["energy"][0]) - ref[list(elements[:2])].sum()))
    assert max(errs) < 1e-12, f"isolated-atom energy differs from reference by {max(errs)}"
    return max(errs)


def check_batch_consistency(model, structures: list[Structure], tol: float = 1e-12):
    """A batch of different structures gives the same results as each alone."""
    graphs = [graph_of(model, s) for s in structures]
    batch = compute_outputs(model, collate(graphs), stress=True)
    errs = []
    a0 = 0
    for k, g in enumerate(graphs):
        single = compute_outputs(model, g, stress=True)
        n = g.n_atoms
        errs.append(_rel(batch["energy"][k], single["energy"][0]))
        errs.append(_rel(batch["forces"][a0:a0 + n], single["forces"]))
        if bool(g.pbc.all()):
            errs.append(_rel(batch["stress"][k], single["stress"][0]))
        a0 += n
    assert max(errs) < tol, f"batch vs single max relative error {max(errs):.2e} > {tol}"
    return max(errs)


def cutoff_scan(model, which: str, delta: float = 1e-6):
    """Jumps of E and F as a neighbour crosses a cutoff of a 3-atom molecule.

    Atoms A (origin) and B (2 Å along x) are bonded; atom C sits on the y axis at
    distance r − 3δ, r − δ and r + δ from A, with r the two-body (`which="two_body"`) or
    three-body cutoff (C stays away from every other cutoff). A smooth quantity has a
    second difference f(r+δ) − 2f(r−δ) + f(r−3δ) of order δ², a discontinuous one of
    order its jump. Returns (|Δ²E| in eV, max |Δ²F| in eV/Å).
    """
    cfg = model.config
    radius = cfg.cutoff if which == "two_body" else cfg.three_body_cutoff
    numbers = np.array([8, 1, 6])
    results = []
    for d in (radius - 3 * delta, radius - delta, radius + delta):
        pos = np.array([[0.0, 0, 0], [2.0, 0, 0], [0.0, d, 0]])
        results.append(evaluate(model, (numbers, pos, np.zeros((3, 3)), np.zeros(3, bool))))
    e = [float(r["energy"][0]) for r in results]
    f = [r["forces"] for r in results]
    d_e = abs(e[2] - 2 * e[1] + e[0])
    d_f = float((f[2] - 2 * f[1] + f[0]).abs().max())
    return d_e, d_f


def check_cutoff_continuity(model, which: str, tol_e: float = 1e-9, tol_f: float = 1e-7):
    """E and F continuous as a neighbour crosses the two-body or three-body cutoff."""
    d_e, d_f = cutoff_scan(model, which)
    assert d_e < tol_e and d_f < tol_f, (
        f"{which} cutoff: energy jump {d_e:.3e} eV, force jump {d_f:.3e} eV/Å")
    return d_e, d_f
