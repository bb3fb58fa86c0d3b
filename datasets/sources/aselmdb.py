"""fairchem ASE-LMDB (``*.aselmdb``) read directly with lmdb + zlib + json.

On-disk facts (peers.md 3.1, checked against ase-db-backends 0.11 output):

* one single-file LMDB environment per file (``subdir=False``);
* row keys are ASCII decimal ids ``b"1"``, ``b"2"``, ... (ids start at 1);
* reserved keys ``nextid`` (next id to assign), ``deleted_ids`` (list), ``metadata``;
  the live ids are ``range(1, nextid)`` minus ``deleted_ids``;
* every value is ``zlib.compress(json)``; arrays are either nested lists (older fairchem,
  orjson) or ASE jsonio objects ``{"__ndarray__": [shape, dtype, flat_values]}``;
* a row is an ASE ``AtomsRow`` dict: numbers, positions, cell, pbc, calculator results
  (energy, forces, stress as Voigt (6,) or (3,3), free_energy, magmoms, charges),
  key_value_pairs, data (fairchem copies ``data`` into ``atoms.info``).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import lmdb
import numpy as np

from .base import FrameError, Source, SourceError

RESERVED = (b"nextid", b"deleted_ids", b"metadata")


def _object_hook(obj: dict):
    if "__ndarray__" in obj:
        shape, dtype, flat = obj["__ndarray__"]
        return np.array(flat, dtype=dtype).reshape(shape)
    return obj


def decode_value(value: bytes):
    """zlib + JSON (with ASE jsonio ndarray objects) -> Python/numpy value."""
    return json.loads(zlib.decompress(value), object_hook=_object_hook)


def open_env(path: str | Path) -> lmdb.Environment:
    return lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False,
                     meminit=False)


def live_ids(txn) -> list[int]:
    """Row ids in order: range(1, nextid) minus deleted_ids."""
    raw = txn.get(b"nextid")
    nextid = int(decode_value(raw)) if raw is not None else 1
    raw = txn.get(b"deleted_ids")
    deleted = set(decode_value(raw)) if raw is not None else set()
    return [i for i in range(1, nextid) if i not in deleted]


def row_to_frame(row: dict, options) -> dict:
    """AtomsRow dict -> raw frame dict (not yet normalized)."""
    if "numbers" not in row or "positions" not in row:
        raise FrameError("row has no numbers/positions")
    frame = {
        "numbers": np.asarray(row["numbers"]),
        "positions": np.asarray(row["positions"], dtype=np.float64),
        "cell": np.asarray(row.get("cell", np.zeros((3, 3))), dtype=np.float64),
        "pbc": np.asarray(row.get("pbc", [False] * 3), dtype=bool),
    }
    info = dict(row.get("key_value_pairs") or {})
    info.update(row.get("data") or {})
    for name, key in (("energy", options.energy_key), ("forces", options.forces_key),
                      ("stress", options.stress_key), ("magmoms", options.magmoms_key)):
        value = row.get(key)
        if value is None:
            value = info.get(key)
        if value is not None:
            frame[name] = value
    for name, key in (("charge", options.charge_key), ("spin", options.spin_key)):
        if key and info.get(key) is not None:
            frame[name] = info[key]
    for key in ("dataset", "task", "source_id"):  # written by `matris-data export`
        if isinstance(info.get(key), str):
            frame[key] = info[key]
    if info.get("energy_correction") is not None:
        frame["energy_correction"] = info["energy_correction"]
    frame["_info"] = info
    return frame


class AseLmdbSource(Source):
    """``*.aselmdb`` files or directories of them (sorted), read without ASE.

    group_id: ``--group-key`` in key_value_pairs/data, else group_id/mp_id/material_id,
    else ``sid`` (fairchem's system id), else the frame's own source_id.
    """

    name = "aselmdb"
    patterns = ("*.aselmdb",)

    def iter_file(self, path: Path):
        try:
            env = open_env(path)
        except lmdb.Error as exc:
            raise SourceError(path, 0, f"not an LMDB file ({exc})") from exc
        try:
            with env.begin() as txn:
                try:
                    ids = live_ids(txn)
                except (zlib.error, ValueError, TypeError) as exc:
                    raise SourceError(path, 0, f"bad nextid/deleted_ids ({exc})") from exc
                if not ids:
                    raise SourceError(path, 0, "file contains no rows")
                for i in ids:
                    try:
                        value = txn.get(str(i).encode("ascii"))
                    except lmdb.Error as exc:
                        raise SourceError(path, i, f"lmdb error ({exc})") from exc
                    # Pass raw bytes: decoding happens in convert(), i.e. on the owning rank.
                    yield i, value
        finally:
            env.close()

    def convert(self, path: Path, index: int, raw) -> dict:
        if raw is None:
            raise FrameError(f"row id {index} is listed but missing")
        try:
            row = decode_value(raw)
        except (zlib.error, ValueError, TypeError) as exc:
            raise FrameError(f"row id {index}: undecodable value ({exc})") from exc
        if not isinstance(row, dict):
            raise FrameError(f"row id {index}: value is not a JSON object")
        frame = row_to_frame(row, self.options)
        info = frame.pop("_info")
        keys = ((self.options.group_key,) if self.options.group_key
                else ("group_id", "mp_id", "material_id", "sid"))
        group = next((info[k] for k in keys if info.get(k) is not None), None)
        return self.provenance(frame, path, index, group)
