"""Dataset-root layout and manifest I/O.

::

    <root>/manifest.yaml                 written last; its presence means "build complete"
    <root>/shards/shard-00000.lmdb ...   single-file LMDB shards (see shards.py)
    <root>/index/natoms.int32.npy        atoms per frame, global order
    <root>/index/shard_offsets.int64.npy cumulative frame counts, length n_shards + 1
    <root>/index/energy_per_atom.float64.npy   NaN where a frame has no energy
    <root>/index/fmax.float32.npy        max |F| per frame (eV/Å), NaN without forces
    <root>/index/metadata.npz            {"natoms": ...} as fairchem's samplers expect
    <root>/splits/{train,val,test}.int64.npy   sorted global frame indices
    <root>/_work/                        per-rank scratch during a build (removed at the end)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

MANIFEST = "manifest.yaml"
SHARDS = "shards"
INDEX = "index"
SPLITS = "splits"
WORK = "_work"
FORMAT = "mshard"
FORMAT_VERSION = 1
OWNED = (SHARDS, INDEX, SPLITS, WORK)


class IncompleteDatasetError(FileNotFoundError):
    """A dataset root without manifest.yaml (missing, or an interrupted build)."""


def shard_name(shard_id: int) -> str:
    return f"shard-{shard_id:05d}.lmdb"


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.exists():
        hint = (" (the build did not complete; rerun `matris-data build`)"
                if (Path(root) / SHARDS).exists() else "")
        raise IncompleteDatasetError(f"{path} not found{hint}")
    with open(path, encoding="utf-8") as fh:
        manifest = yaml.safe_load(fh)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if int(manifest.get("format_version", -1)) > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {manifest['format_version']} is newer than "
                         f"this reader ({FORMAT_VERSION})")
    return manifest


def write_manifest(root: str | Path, manifest: dict) -> Path:
    """Write atomically (tmp file + fsync + rename): readers never see half a manifest."""
    path = Path(root) / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(manifest, fh, sort_keys=False, allow_unicode=True, width=100)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def prepare_root(root: str | Path, overwrite: bool) -> None:
    """Make ``root`` ready for a fresh build.

    A completed dataset (manifest present) is only replaced with ``overwrite``; its
    manifest is deleted *first*, so a crash mid-rebuild leaves an incomplete root rather
    than a manifest describing shards that are gone. Leftovers of an interrupted build are
    removed. Only this layout's own entries are touched; other files stay.
    """
    root = Path(root)
    manifest = root / MANIFEST
    if manifest.exists():
        if not overwrite:
            raise FileExistsError(f"{root} already holds a dataset ({MANIFEST}); "
                                  "pass --overwrite to replace it")
        manifest.unlink()
    (root / (MANIFEST + ".tmp")).unlink(missing_ok=True)
    for name in OWNED:
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    root.mkdir(parents=True, exist_ok=True)
