"""MPtrj JSON: ``{mp_id: {frame_id: record}}`` (also ``.json.gz``), streamed per mp_id.

Record fields used (peers.md 3.4): ``structure`` (pymatgen Structure dict; site
``properties.magmom``), ``uncorrected_total_energy`` and ``corrected_total_energy`` (eV),
``force`` (eV/Å), ``stress`` (kBar, VASP sign), ``magmom`` (μB).

Conventions applied at ingest:

* stress: σ_ASE [eV/Å³] = −0.1 · σ_VASP [kBar] · GPa, with ASE's ``units.GPa``
  = 1/160.21766208 eV/Å³ (kBar→GPa is ×0.1; VASP's positive = compressive);
* energy: by default ``energy`` is the *uncorrected* total energy (what DFT computed;
  consistent with forces and stress) and ``energy_correction`` = corrected − uncorrected
  (MP2020 anion/U corrections) so the corrected label stays available. With
  ``mptrj_energy="corrected"`` the corrected total becomes ``energy`` (correction kept);
* group_id = mp_id, source_id = frame_id, dataset = "mptrj", task = "PBE/PBE+U".

The structure dict is read directly (lattice matrix + site ``xyz``) instead of through
pymatgen (≈100× faster); disordered sites are rejected.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers
from ase.units import GPa

from .base import FrameError, Source, SourceError
from .jsonstream import JSONStreamError, iter_object_members

KBAR_TO_EV_A3 = -0.1 * GPa  # includes the VASP -> ASE sign flip


def kbar_to_ase_stress(stress_kbar) -> np.ndarray:
    """VASP stress in kBar (positive = compressive) -> ASE stress in eV/Å³ (3, 3)."""
    return np.asarray(stress_kbar, dtype=np.float64).reshape(3, 3) * KBAR_TO_EV_A3


def structure_arrays(struct: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                            np.ndarray | None]:
    """pymatgen Structure dict -> numbers (N,), positions (N,3) Å, cell (3,3), pbc (3,),
    site magmoms (N,) or None."""
    try:
        lattice = struct["lattice"]
        cell = np.asarray(lattice["matrix"], dtype=np.float64)
        pbc = np.asarray(lattice.get("pbc", (True, True, True)), dtype=bool)
        sites = struct["sites"]
    except (KeyError, TypeError) as exc:
        raise FrameError(f"structure dict lacks {exc}") from exc
    numbers, positions, magmoms = [], [], []
    for k, site in enumerate(sites):
        species = site.get("species", [])
        if len(species) != 1 or abs(float(species[0].get("occu", 1.0)) - 1.0) > 1e-8:
            raise FrameError(f"site {k} is disordered (species {species})")
        symbol = species[0].get("element")
        if symbol not in atomic_numbers:
            raise FrameError(f"site {k}: unknown element {symbol!r}")
        numbers.append(atomic_numbers[symbol])
        if "xyz" in site:
            positions.append(site["xyz"])
        else:
            positions.append(np.asarray(site["abc"], dtype=np.float64) @ cell)
        magmoms.append((site.get("properties") or {}).get("magmom"))
    mag = None
    if magmoms and all(m is not None for m in magmoms):
        mag = np.asarray(magmoms, dtype=np.float64)
    return (np.asarray(numbers, dtype=np.int64), np.asarray(positions, dtype=np.float64),
            cell, pbc, mag)


def record_to_frame(record: dict, energy_mode: str = "uncorrected") -> dict:
    """One MPtrj record -> raw frame dict (units converted, not yet normalized)."""
    if not isinstance(record, dict):
        raise FrameError("record is not a JSON object")
    numbers, positions, cell, pbc, site_mag = structure_arrays(record.get("structure") or {})
    frame = {"numbers": numbers, "positions": positions, "cell": cell, "pbc": pbc}
    raw_e = record.get("uncorrected_total_energy")
    corr_e = record.get("corrected_total_energy")
    if energy_mode not in ("uncorrected", "corrected"):
        raise ValueError(f"mptrj_energy must be 'uncorrected' or 'corrected', not {energy_mode}")
    energy = raw_e if energy_mode == "uncorrected" else corr_e
    if energy is not None:
        frame["energy"] = float(energy)
    if raw_e is not None and corr_e is not None:
        frame["energy_correction"] = float(corr_e) - float(raw_e)
    if record.get("force") is not None:
        frame["forces"] = np.asarray(record["force"], dtype=np.float64)
    if record.get("stress") is not None:
        stress = np.asarray(record["stress"], dtype=np.float64)
        if stress.size != 9:
            raise FrameError(f"stress has {stress.size} values, expected 9 (3x3 kBar)")
        frame["stress"] = kbar_to_ase_stress(stress)
    mag = record.get("magmom")
    if mag is not None:
        frame["magmoms"] = np.asarray(mag, dtype=np.float64)
    elif site_mag is not None:
        frame["magmoms"] = site_mag
    return frame


class MPtrjSource(Source):
    """MPtrj-style JSON (``.json`` or ``.json.gz``); one mp_id in memory at a time."""

    name = "mptrj"
    patterns = ("*.json", "*.json.gz")

    def iter_file(self, path: Path):
        opener = gzip.open if path.name.endswith(".gz") else open
        index = 0
        try:
            with opener(path, "rt", encoding="utf-8") as fh:
                for mp_id, text, offset in iter_object_members(fh):
                    try:
                        frames = json.loads(text)
                    except json.JSONDecodeError as exc:
                        # Structure intact: skip just this material.
                        yield index, FrameError(f"mp_id {mp_id}: malformed JSON at character "
                                                f"{offset + exc.pos}: {exc.msg}")
                        index += 1
                        continue
                    if not isinstance(frames, dict):
                        yield index, FrameError(f"mp_id {mp_id}: value is not an object")
                        index += 1
                        continue
                    for frame_id, record in frames.items():
                        yield index, (mp_id, frame_id, record)
                        index += 1
        except JSONStreamError as exc:
            raise SourceError(path, index, str(exc)) from exc
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise SourceError(path, index, f"unreadable ({type(exc).__name__}: {exc})") from exc
        if index == 0:
            raise SourceError(path, 0, "file contains no frames")

    def convert(self, path: Path, index: int, raw) -> dict:
        if isinstance(raw, FrameError):
            raise raw
        mp_id, frame_id, record = raw
        frame = record_to_frame(record, self.options.mptrj_energy)
        frame["dataset"] = self.options.dataset or "mptrj"
        frame["task"] = self.options.task or "PBE/PBE+U"
        frame["source_id"] = str(frame_id)
        return self.provenance(frame, path, index, mp_id)
