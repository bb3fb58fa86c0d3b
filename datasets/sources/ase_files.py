"""Sources read through ASE: extxyz (and any ASE-readable trajectory), ASE ``.db``, VASP.

All stream: ``ase.io.iread(path, index=':')`` yields one ``Atoms`` at a time and
``ase.db`` rows come from a cursor.

Under mpirun ASE's I/O is "parallel" by default: once mpi4py is imported, ``ase.parallel``
makes rank 0 read and broadcast to every rank. Our ranks read *different* files, so every
call passes ``parallel=False`` (``serial=True`` for ``ase.db``); without it rank 1 silently
gets rank 0's frames (caught by tests/distributed/datasets).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .base import FrameError, Source, SourceError

_GROUP_KEYS = ("group_id", "mp_id", "material_id")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


@contextlib.contextmanager
def plain_file(path: Path) -> Iterator[Path]:
    """``path`` itself, or a temporary decompressed copy of a .gz/.bz2/.xz file.

    Why: ASE's extxyz reader first indexes frame offsets and then seeks back to each
    frame; every backward seek in a compressed stream restarts decompression from the
    start, so reading a 6 MB .extxyz.gz took ~25 min instead of seconds. One streaming
    copy to disk keeps memory bounded (multi-GB inputs) and makes the read linear.
    """
    opener = _OPENERS.get(path.suffix.lower())
    if opener is None:
        yield path
        return
    fd, tmp = tempfile.mkstemp(prefix="matris-", suffix=path.stem and Path(path.stem).suffix)
    try:
        with os.fdopen(fd, "wb") as out, opener(path, "rb") as src:
            shutil.copyfileobj(src, out, length=1 << 20)
        yield Path(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _lookup(atoms, key: str | None, per_atom: bool):
    """Label ``key`` from the calculator results, else atoms.info / atoms.arrays."""
    if not key:
        return None
    calc = atoms.calc
    results = getattr(calc, "results", None) or {}
    if key in results and results[key] is not None:
        return results[key]
    store = atoms.arrays if per_atom else atoms.info
    value = store.get(key)
    if value is None and per_atom:
        value = atoms.info.get(key)  # some writers put per-atom arrays into info
    return value


def atoms_to_frame(atoms, options, info_extra: dict | None = None) -> dict:
    """ASE Atoms (+ calculator) -> raw frame dict (not yet normalized).

    Stress from a calculator is ASE Voigt (eV/Å³, ASE sign); from info it may be 3x3/9/6.
    """
    info = dict(atoms.info)
    if info_extra:
        info.update(info_extra)
    frame = {
        "numbers": np.asarray(atoms.numbers),
        "positions": np.asarray(atoms.positions),
        "cell": np.asarray(atoms.cell.array),
        "pbc": np.asarray(atoms.pbc),
    }
    for name, key, per_atom in (("energy", options.energy_key, False),
                                ("forces", options.forces_key, True),
                                ("stress", options.stress_key, False),
                                ("magmoms", options.magmoms_key, True)):
        value = _lookup(atoms, key, per_atom)
        if value is None and name in ("energy", "stress") and info_extra:
            value = info_extra.get(key)
        if value is not None:
            frame[name] = value
    for name, key in (("charge", options.charge_key), ("spin", options.spin_key)):
        value = info.get(key) if key else None
        if value is not None:
            try:
                frame[name] = int(value)
            except (TypeError, ValueError) as exc:
                raise FrameError(f"{name} ({key}={value!r}) is not an integer") from exc
    for key in ("source_id", "dataset"):  # keep the input's own provenance when present
        if info.get(key) is not None:
            frame[key] = str(info[key])
    task = info.get("task") or info.get("config_type")
    if task is not None and not options.task:
        frame["task"] = str(task)
    return frame


def _group_from(info: dict, options):
    keys = (options.group_key,) if options.group_key else _GROUP_KEYS
    for key in keys:
        if key in info and info[key] is not None:
            return info[key]
    return None


class AseFileSource(Source):
    """extxyz or any trajectory ASE can read (``--format`` picks ASE's format name).

    group_id: ``--group-key`` in atoms.info, else info group_id/mp_id/material_id,
    else each frame is its own group.
    """

    name = "extxyz"
    patterns = ("*.xyz", "*.extxyz", "*.xyz.gz", "*.extxyz.gz", "*.xyz.bz2",
                "*.extxyz.bz2", "*.xyz.xz", "*.extxyz.xz")
    default_format: str | None = None

    def _format(self) -> str | None:
        return self.options.format or self.default_format

    def iter_file(self, path: Path) -> Iterator[tuple[int, object]]:
        import ase.io

        index = -1
        try:
            with plain_file(path) as readable:
                for index, atoms in enumerate(ase.io.iread(readable, index=":",
                                                              format=self._format(),
                                                              parallel=False)):
                    yield index, atoms
        except SourceError:
            raise
        except Exception as exc:  # ASE raises many types on malformed text
            raise SourceError(path, index + 1,
                              f"unreadable ({type(exc).__name__}: {exc})") from exc
        if index < 0:
            raise SourceError(path, 0, "file contains no frames")

    def convert(self, path: Path, index: int, raw) -> dict:
        frame = atoms_to_frame(raw, self.options)
        return self.provenance(frame, path, index, _group_from(raw.info, self.options))


class VaspSource(AseFileSource):
    """VASP ``vasprun.xml`` / ``OUTCAR``: every ionic step (ASE ``iread(index=':')``).

    ``energy`` is ASE's energy (σ→0 extrapolated), ``free_energy`` is available via
    ``--energy-key free_energy``; stress is converted by ASE to eV/Å³, ASE sign.
    group_id defaults to the file path, so all steps of one run stay in one split.
    """

    name = "vasp"
    patterns = ("vasprun*.xml*", "OUTCAR*")

    def _format(self) -> str | None:
        return self.options.format

    def iter_file(self, path: Path):
        fmt = self.options.format or ("vasp-out" if "OUTCAR" in path.name else "vasp-xml")
        import ase.io

        index = -1
        try:
            for index, atoms in enumerate(ase.io.iread(path, index=":", format=fmt,
                                                          parallel=False)):
                yield index, atoms
        except Exception as exc:
            raise SourceError(path, index + 1,
                              f"unreadable ({type(exc).__name__}: {exc})") from exc
        if index < 0:
            raise SourceError(path, 0, "file contains no ionic steps")

    def convert(self, path: Path, index: int, raw) -> dict:
        frame = atoms_to_frame(raw, self.options)
        group = _group_from(raw.info, self.options) if self.options.group_key else str(path)
        return self.provenance(frame, path, index, group)


class AseDbSource(Source):
    """ASE database (``.db`` SQLite, ``.json``) through ``ase.db.connect().select()``.

    Labels come from the row's calculator results; ``key_value_pairs`` and ``data`` are
    searched for info keys (REF_energy, charge, spin, group key). Frame index = row id.
    """

    name = "ase-db"
    patterns = ("*.db",)

    def iter_file(self, path: Path):
        import ase.db

        row_id = 0
        try:
            db = ase.db.connect(str(path), serial=True)
            for row in db.select():
                row_id = row.id
                yield row.id, row
        except Exception as exc:
            raise SourceError(path, row_id, f"unreadable ({type(exc).__name__}: {exc})") from exc
        if row_id == 0:
            raise SourceError(path, 0, "database contains no rows")

    def convert(self, path: Path, index: int, raw) -> dict:
        row = raw
        extra = dict(row.get("key_value_pairs", {}) or {})
        extra.update(row.get("data", {}) or {})
        atoms = row.toatoms()
        frame = atoms_to_frame(atoms, self.options, info_extra=extra)
        for name, key in (("forces", self.options.forces_key),
                          ("magmoms", self.options.magmoms_key)):
            if name not in frame and key in extra:
                frame[name] = extra[key]
        return self.provenance(frame, path, index, _group_from(extra, self.options))
