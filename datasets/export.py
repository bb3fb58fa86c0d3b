"""``matris-data export``: a dataset root -> extxyz or fairchem ASE-LMDB (``.aselmdb``).

aselmdb rows follow the layout read by ase-db-backends / fairchem (see
``sources/aselmdb.py``): ids from 1, ``nextid``, zlib-compressed JSON with arrays as ASE
jsonio ``{"__ndarray__": [shape, dtype, flat]}`` objects (floats printed with ``repr``, so
they round-trip exactly). Stress is written as ASE Voigt (6,), like ASE rows.
Provenance strings go to ``key_value_pairs``; charge, spin and energy_correction to ``data``
(fairchem copies ``data`` into ``atoms.info``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

import lmdb
import numpy as np

from .dataset import ShardedDataset

# ASE database times are years since 2000-01-01 (ase.db.core.now); computed here to avoid
# importing ase.db just for a constant.
_YEAR = 365.25 * 24 * 3600
_T2000 = 946681200.0


def _nd(arr: np.ndarray) -> dict:
    arr = np.asarray(arr)
    return {"__ndarray__": [list(arr.shape), arr.dtype.name, arr.ravel().tolist()]}


def frame_to_row(frame: dict) -> dict:
    """Frame -> ASE AtomsRow-style dict (JSON-able)."""
    s = frame.get("stress")
    row = {
        "numbers": _nd(frame["numbers"].astype(np.int64)),
        "positions": _nd(frame["positions"]),
        "unique_id": hashlib.md5(str(frame.get("source_id", "")).encode()).hexdigest(),
        "pbc": _nd(frame["pbc"]),
        "cell": _nd(frame["cell"]),
        "calculator": "unknown",
        "calculator_parameters": {},
    }
    if "energy" in frame:
        row["energy"] = float(frame["energy"])
    if "forces" in frame:
        row["forces"] = _nd(frame["forces"])
    if s is not None:
        row["stress"] = _nd(np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]))
    if "magmoms" in frame:
        row["magmoms"] = _nd(frame["magmoms"])
    now = (time.time() - _T2000) / _YEAR
    row.update({"ctime": now, "user": "matris-data", "mtime": now})
    row["key_value_pairs"] = {k: frame[k] for k in ("dataset", "task", "source_id", "group_id")
                              if k in frame}
    row["data"] = {k: (float(frame[k]) if k == "energy_correction" else int(frame[k]))
                   for k in ("charge", "spin", "energy_correction") if k in frame}
    return row


def _encode(obj) -> bytes:
    return zlib.compress(json.dumps(obj).encode("utf-8"))


def _frames(ds, progress: bool, desc: str):
    it = iter(ds)
    if progress:
        from tqdm import tqdm

        total = len(ds) if hasattr(ds, "__len__") else None
        it = tqdm(it, total=total, desc=desc, unit=" frames", disable=None, file=sys.stderr)
    return it


def export_aselmdb(ds: ShardedDataset | Iterable[dict], out: str | Path,
                   progress: bool = True) -> int:
    """Write all frames of ``ds`` (a dataset or any iterable of frames) to one ``.aselmdb``
    file; return the row count."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it first")
    tmp = out.with_name(out.name + ".partial")
    tmp.unlink(missing_ok=True)
    map_size = 1 << 30
    env = lmdb.open(str(tmp), subdir=False, map_size=map_size, lock=False, sync=False)
    n, batch = 0, []

    def flush(items):
        nonlocal map_size
        while True:
            try:
                with env.begin(write=True) as txn:
                    for k, v in items:
                        txn.put(k, v)
                return
            except lmdb.MapFullError:
                map_size *= 2
                env.set_mapsize(map_size)

    try:
        for frame in _frames(ds, progress, "export aselmdb"):
            n += 1
            batch.append((str(n).encode("ascii"), _encode(frame_to_row(frame))))
            if len(batch) >= 512:
                flush(batch)
                batch = []
        batch.append((b"nextid", _encode(n + 1)))
        batch.append((b"metadata", _encode({"exported_by": "matris-data",
                                             "source": str(getattr(ds, "root", "")),
                                             "n_rows": n})))
        flush(batch)
        env.sync(True)
    finally:
        env.close()
    tmp.replace(out)
    return n


def export_extxyz(ds: ShardedDataset | Iterable[dict], out: str | Path,
                  progress: bool = True) -> int:
    """Write all frames to one extxyz file (ASE writer; floats printed with 8 decimals)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for frame in _frames(ds, progress, "export extxyz"):
            atoms = Atoms(numbers=frame["numbers"], positions=frame["positions"],
                          cell=frame["cell"], pbc=frame["pbc"])
            results = {}
            if "energy" in frame:
                results["energy"] = float(frame["energy"])
            if "forces" in frame:
                results["forces"] = frame["forces"]
            if "stress" in frame:
                s = frame["stress"]
                results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2],
                                              s[0, 1]])
            if "magmoms" in frame:
                results["magmoms"] = frame["magmoms"]
            for key in ("charge", "spin", "energy_correction", "dataset", "task",
                        "source_id", "group_id"):
                if key in frame:
                    value = frame[key]
                    atoms.info[key] = float(value) if key == "energy_correction" else value
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
            write(fh, atoms, format="extxyz")
            n += 1
    tmp.replace(out)
    return n
