"""The embedded periodic-table dataset shipped with the repository (teacher-labelled, not DFT).

`ptable_chgnet.extxyz.gz` holds ~6,000 periodic frames over 89 elements labelled by CHGNet
0.3.0 (energy eV, forces eV/Å, stress eV/Å³ with ASE's sign, magmoms μB); its JSON sidecar
holds provenance and statistics. How it was made: docs/embedded_dataset.md.

Reading: do not hand the .gz path straight to `ase.io.iread` for the whole file. ASE's
extxyz reader indexes the file and then seeks back to every frame, and a backward seek in
a gzip stream restarts decompression from the beginning, so that costs O(frames²) (~25 min
here instead of ~5 s). Use :func:`iter_embedded_atoms` (decompresses into memory first) or
:func:`decompressed_path` (a plain .extxyz copy for tools that take a path).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
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


def iter_embedded_atoms() -> Iterator:
    """Yield every frame as `ase.Atoms` with a SinglePointCalculator holding the labels.

    The text (~17 MB) is decompressed into memory once, then parsed frame by frame.
    """
    import ase.io

    with gzip.open(embedded_dataset_path(), "rt") as fh:
        text = io.StringIO(fh.read())
    yield from ase.io.iread(text, index=":", format="extxyz")


def decompressed_path(directory: Path | str | None = None) -> Path:
    """A plain `ptable_chgnet.extxyz` copy (written once, reused while the .gz is unchanged).

    `directory` defaults to `$TMPDIR/matris-embedded-<first 12 hex of the .gz sha256>`; the
    copy is written to a temporary name and renamed, so concurrent callers are safe.
    """
    source = embedded_dataset_path()
    if directory is None:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
        directory = Path(tempfile.gettempdir()) / f"matris-embedded-{digest}"
    directory = Path(directory)
    target = directory / DATA_FILE.removesuffix(".gz")
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    with gzip.open(source, "rb") as fin, open(tmp, "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
    tmp.replace(target)
    return target
