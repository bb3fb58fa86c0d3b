"""Label tensors of a micro-batch and the micro-batch itself (graph + labels).

A label a frame does not have is *absent* in the dataset; here it becomes a ``False`` in the
matching mask and a NaN placeholder in the value tensor. The loss selects with the mask, so
an absent label never acts as a zero; the NaN makes any unmasked use visible at once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

LABELS = ("energy", "forces", "stress", "magmoms")


@dataclass
class Labels:
    """Labels of B frames with N atoms in all (units: eV, eV/Å, eV/Å³ ASE sign, μB).

    energy (B,), forces (N, 3), stress (B, 3, 3), magmoms (N,); ``<name>_mask`` is a bool
    tensor over frames (energy, stress) or atoms (forces, magmoms); natoms (B,) int64.
    """

    energy: torch.Tensor
    energy_mask: torch.Tensor
    forces: torch.Tensor
    forces_mask: torch.Tensor
    stress: torch.Tensor
    stress_mask: torch.Tensor
    magmoms: torch.Tensor
    magmoms_mask: torch.Tensor
    natoms: torch.Tensor

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Labels:
        """Move to ``device``; cast floating value tensors to ``dtype`` (masks stay bool)."""
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype=dtype)
            out[f.name] = t.to(device) if device is not None else t
        return replace(self, **out)

    def counts(self) -> dict[str, int]:
        """Number of labelled scalar components per loss term (the loss denominators).

        energy: frames; forces: 3 × atoms; stress: 9 × frames; magmoms: atoms.
        """
        return {"energy": int(self.energy_mask.sum()), "forces": 3 * int(self.forces_mask.sum()),
                "stress": 9 * int(self.stress_mask.sum()),
                "magmoms": int(self.magmoms_mask.sum())}


def collate_labels(frames: list[dict]) -> Labels:
    """Stack the labels of ``frames`` (dataset frame dicts) into :class:`Labels` (float64)."""
    natoms = [len(f["numbers"]) for f in frames]
    n_total = sum(natoms)

    def per_frame(key: str, shape: tuple[int, ...]):
        vals = np.full((len(frames), *shape), np.nan)
        mask = np.zeros(len(frames), dtype=bool)
        for i, f in enumerate(frames):
            if key in f:
                vals[i] = np.asarray(f[key], dtype=np.float64).reshape(shape)
                mask[i] = True
        return torch.from_numpy(vals), torch.from_numpy(mask)

    def per_atom(key: str, shape: tuple[int, ...]):
        vals = np.full((n_total, *shape), np.nan)
        mask = np.zeros(n_total, dtype=bool)
        start = 0
        for f, n in zip(frames, natoms):
            if key in f:
                vals[start:start + n] = np.asarray(f[key], dtype=np.float64).reshape(n, *shape)
                mask[start:start + n] = True
            start += n
        return torch.from_numpy(vals), torch.from_numpy(mask)

    energy, energy_mask = per_frame("energy", ())
    stress, stress_mask = per_frame("stress", (3, 3))
    forces, forces_mask = per_atom("forces", (3,))
    magmoms, magmoms_mask = per_atom("magmoms", ())
    return Labels(energy, energy_mask, forces, forces_mask, stress, stress_mask, magmoms,
                  magmoms_mask, torch.tensor(natoms, dtype=torch.int64))


@dataclass
class Batch:
    """One micro-batch: the collated ``matris.graph.AtomGraph``, labels, and the frame
    indices (into the split) it holds."""

    graph: object
    labels: Labels
    frames: tuple[int, ...]

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def n_atoms(self) -> int:
        return int(self.labels.natoms.sum())

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Batch:
        """Graph and labels on ``device``, floating tensors in ``dtype``."""
        return Batch(self.graph.to(device, dtype), self.labels.to(device, dtype), self.frames)
