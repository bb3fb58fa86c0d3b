"""The embedded periodic-table dataset shipped with the repository (teacher-labelled, not DFT).

`ptable_chgnet.extxyz.gz` holds ~6,000 periodic frames over 89 elements labelled by CHGNet
0.3.0 (energy eV, forces eV/Å, stress eV/Å³ with ASE's sign, magmoms μB); its JSON sidecar
holds provenance and statistics. Read it with `ase.io.iread(embedded_dataset_path())` or
`matris-data build --source extxyz <path>`. How it was made: docs/embedded_dataset.md.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_FILE = "ptable_chgnet.extxyz.gz"
METADATA_FILE = "ptable_chgnet.json"


def embedded_dataset_path() -> Path:
    """Path of the shipped extxyz.gz (raises FileNotFoundError if the package lacks it)."""
    path = Path(__file__).resolve().with_name(DATA_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"embedded dataset missing: {path} (regenerate it with "
                                f"`matris-data synth --teacher chgnet --seed 0 --frames 6000 "
                                f"--out {path}`)")
    return path


def embedded_metadata_path() -> Path:
    """Path of the JSON sidecar (provenance: teacher versions, command, statistics)."""
    return Path(__file__).resolve().with_name(METADATA_FILE)


def embedded_metadata() -> dict:
    """The sidecar as a dict (keys: sha256, command, config, teacher, task, extxyz, stats)."""
    return json.loads(embedded_metadata_path().read_text())
