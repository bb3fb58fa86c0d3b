"""`MatRISCalculator`: the ASE calculator of a MatRIS model.

Units and conventions (ASE): energy eV, forces eV/Å (−∂E/∂x), stress as a Voigt
6-vector [xx, yy, zz, yz, xz, xy] in eV/Å³ with ASE's sign (σ = (1/V)·∂E/∂ε, positive
= tensile), magmoms μB, energies (per atom, reference energies included) eV;
free_energy = energy. Stress exists only for cells periodic along all three axes.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
)

from matris.graph import build_graph, collate
from matris.md.compile import ModelRunner
from matris.md.evaluate import atoms_arrays, run_model, split_results
from matris.md.model_io import load_model, resolve_device, resolve_dtype
from matris.md.neighbors import CandidateGraph, SkinNeighborList
from matris.md.validate import UNSEEN_POLICIES, check_min_distance, known_elements
from matris.model import MatRIS
from matris.moe_select import ExpertSelection


class MatRISCalculator(Calculator):
    """ASE calculator for a MatRIS model.

    Args:
        model: a checkpoint path (`matris.checkpoint`, loaded with weights_only) or a
            `MatRIS` (copied; the caller's model is untouched).
        device: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...
        dtype: "float32" (default; MD speed) or "float64" (phonons, Hessians, tests).
        skin: neighbour-list skin in Å (default 1.0). The graph is rebuilt only when an
            atom moved more than skin/2 since the last build (modulo lattice vectors)
            or cell/pbc/numbers changed; results are those of a fresh build. 0 rebuilds
            at every new geometry.
        compile: False, True (torch.compile with inductor) or a torch.compile backend
            name; falls back to eager with one warning if compilation fails.
        unseen_elements: "error" (default), "warn" or "allow" for elements missing from
            the model's training data (zero reference energy); see `matris.md.validate`.
        checkpoint: recompute interaction blocks during the force backward (less memory,
            up to ~3x more time on CPU): True, False, or "auto" (default): off while the
            estimated activation memory (`activation_bytes`) stays below the budget,
            on above it.
        checkpoint_budget_gb: budget of the "auto" rule in GB; None (default) = half of
            the memory available on the device at each evaluation.
        stress: "auto" (default) computes the stress of 3D-periodic cells when it is asked
            for, or ahead of time when it was read at the previous geometry (cell
            filters, NPT) or announced with `request_stress`; "always" computes it with
            every calculation.
        moe_elements: MoE models with element routing evaluate a copy holding only the
            experts their elements route to (`matris.moe_select`; results identical to
            the full model): None (default) specialises to the elements seen so far
            (the full model is kept to add experts when a new element appears), a list
            of atomic numbers specialises once and drops the full model (memory tracks
            active parameters; other elements raise), "all" keeps every expert.
            Ignored for dense models.
        **kwargs: passed to `ase.calculators.calculator.Calculator`.

    Attributes:
        model: the `MatRIS` evaluated now (eval mode, frozen; for MoE models the one
        specialised to the elements seen, see ``experts``). neighbors: the
        `SkinNeighborList` (``neighbors.builds`` / ``neighbors.reuses`` count graph
        builds and reuses).
    """

    implemented_properties = ("energy", "free_energy", "energies", "forces", "stress",
                              "magmoms")

    def __init__(self, model: MatRIS | str | os.PathLike, device: str = "auto",
                 dtype: str = "float32", skin: float = 1.0, compile: bool | str = False,
                 unseen_elements: str = "error", checkpoint: bool | str = "auto",
                 checkpoint_budget_gb: float | None = None, stress: str = "auto",
                 moe_elements=None, **kwargs):
        super().__init__(**kwargs)
        if unseen_elements not in UNSEEN_POLICIES:
            raise ValueError(f"unseen_elements must be one of {list(UNSEEN_POLICIES)}, "
                             f"got {unseen_elements!r}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        if isinstance(model, MatRIS) and not isinstance(moe_elements, str | None):
            # select before load_model copies the model, so unused experts are never
            # copied; the selection below adopts this model instead of selecting again
            model = ExpertSelection(model, moe_elements).model
        self.experts = ExpertSelection(load_model(model, self.device, self.dtype),
                                       moe_elements)
        self.model = self.experts.model
        cfg = self.model.config
        self._compile = compile
        self.runner = ModelRunner(self.model, compile)
        self.neighbors = SkinNeighborList(cfg.cutoff, cfg.three_body_cutoff, skin)
        self.unseen_elements = unseen_elements
        if checkpoint not in (True, False, "auto"):
            raise ValueError(f"checkpoint must be True, False or 'auto', got {checkpoint!r}")
        self.checkpoint = checkpoint
        self.checkpoint_budget_gb = checkpoint_budget_gb
        if stress not in ("auto", "always"):
            raise ValueError(f"stress must be 'auto' or 'always', got {stress!r}")
        self.stress_mode = stress
        self._stress_read = False  # stress was read at the current geometry
        self._stress_next = False  # include stress in the next calculation
        self.evaluations = 0  # model evaluations (calculations) so far
        self.known_elements = known_elements(
            self.model.reference_energies.detach().cpu().numpy(), cfg.max_z)
        props = list(type(self).implemented_properties)
        if not cfg.magmom_head:
            props.remove("magmoms")
        self.implemented_properties = props

    # ------------------------------------------------------------------ single structure
    def calculate(self, atoms: Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        """Fill ``self.results`` with energy, free_energy, energies, forces, magmoms and,
        for 3D-periodic cells, stress per the `stress` policy (requesting stress of
        another cell raises PropertyNotImplementedError)."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                f"stress is only defined for cells periodic along all three axes "
                f"(pbc={atoms.pbc.tolist()})")
        # Stress costs extra autograd work: compute it when asked, when it was read at the
        # previous geometry (cell filters and NPT read it at every step) or announced.
        with_stress = periodic and (self.stress_mode == "always" or "stress" in properties
                                    or self._stress_read or self._stress_next)
        self._stress_read = self._stress_next = False
        numbers, positions, cell, pbc = self._arrays(atoms)
        self._select_experts(numbers)
        graph = self.neighbors.graph(numbers, positions, cell, pbc)
        check_min_distance(self.neighbors.last_min_length)
        res = run_model(self.runner, graph.to(self.device, self.dtype), stress=with_stress,
                        magmoms="magmoms" in self.implemented_properties,
                        checkpoint=self._use_checkpoint(graph))
        self.evaluations += 1
        self.results = split_results(res, [len(numbers)], [with_stress])[0]

    def get_property(self, name, atoms=None, allow_calculation=True):
        """ASE's get_property; also remembers that stress was read (see `stress`)."""
        value = super().get_property(name, atoms, allow_calculation)
        if name == "stress":
            self._stress_read = True
        return value

    def request_stress(self) -> None:
        """Include the stress in the next calculation (a logger that reads it every k
        steps calls this one step ahead, so no calculation is repeated)."""
        self._stress_next = True

    # ------------------------------------------------------------------ many structures
    def batch_evaluate(self, structures: list[Atoms], max_batch_atoms: int = 2048
                       ) -> list[dict]:
        """Evaluate many structures with few forward passes (screening).

        Structures are packed in order into batches of at most `max_batch_atoms` atoms
        (a larger structure runs alone); each gets a fresh graph (no skin). Returns one
        dict per structure with the same keys, units and conventions as ``results``
        after a single-structure calculation (stress only for 3D-periodic cells).
        Every structure is validated before any is evaluated.
        """
        if max_batch_atoms < 1:
            raise ValueError(f"max_batch_atoms must be >= 1, got {max_batch_atoms}")
        arrays = []
        for k, atoms in enumerate(structures):
            try:
                arrays.append(self._arrays(atoms))
            except ValueError as exc:
                raise type(exc)(f"structure {k}: {exc}") from exc
        results: list[dict] = []
        for chunk in _chunks([len(a[0]) for a in arrays], max_batch_atoms):
            results.extend(self._evaluate_chunk([arrays[k] for k in chunk]))
        return results

    def _evaluate_chunk(self, arrays) -> list[dict]:
        cfg = self.model.config
        graphs = [build_graph(*a, cfg.cutoff, cfg.three_body_cutoff) for a in arrays]
        periodic = [bool(np.all(a[3])) for a in arrays]
        self._select_experts(np.concatenate([a[0] for a in arrays]))
        for g in graphs:
            check_min_distance(CandidateGraph(g).bond_lengths(g.positions.numpy()))
        batch = collate(graphs).to(self.device, self.dtype)
        res = run_model(self.runner, batch, stress=any(periodic),
                        magmoms="magmoms" in self.implemented_properties,
                        checkpoint=self._use_checkpoint(batch))
        return split_results(res, [len(a[0]) for a in arrays], periodic)

    def _select_experts(self, numbers) -> None:
        """MoE: evaluate the model specialised to these elements (`moe_elements`)."""
        model = self.experts.for_numbers(numbers)
        if model is not self.model:
            compile_ = self._compile if self.runner.fallback_reason is None else False
            self.model, self.runner = model, ModelRunner(model, compile_)

    def _use_checkpoint(self, graph) -> bool:
        if self.checkpoint != "auto":
            return bool(self.checkpoint)
        need = activation_bytes(self.model.config, graph.n_angles, self.dtype)
        if self.checkpoint_budget_gb is not None:
            return need > self.checkpoint_budget_gb * 2**30
        return need > 0.5 * available_bytes(self.device)

    def _arrays(self, atoms: Atoms):
        return atoms_arrays(atoms, self.model.config.max_z, self.known_elements,
                            self.unseen_elements)


def activation_bytes(config, n_angles: int, dtype: torch.dtype) -> float:
    """Rough peak memory (bytes) of one energy+forces evaluation without recomputation:
    ~150 bytes per (angle, channel, block) in float32, measured on CPU (angle tensors
    dominate), doubled in float64."""
    per = 150.0 * (2.0 if dtype == torch.float64 else 1.0)
    return per * n_angles * config.width * config.num_blocks


def available_bytes(device: torch.device) -> float:
    """Free memory on `device`: CUDA's free memory, or Linux MemAvailable for the CPU
    (inf when unknown, i.e. never checkpoint by default)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float("inf")


def _chunks(sizes: list[int], limit: int) -> list[list[int]]:
    """Consecutive index groups whose sizes sum to at most `limit` (or one item)."""
    groups: list[list[int]] = []
    total = 0
    for k, n in enumerate(sizes):
        if groups and total + n <= limit:
            groups[-1].append(k)
            total += n
        else:
            groups.append([k])
            total = n
    return groups

