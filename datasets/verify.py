"""``matris-data verify``: recompute shard checksums and decode every record."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import layout
from .shards import ShardCorruptError, ShardReader, sha256_file


def verify_dataset(root: str | Path, progress: bool = True) -> list[str]:
    """Return a list of problems (empty when the dataset is intact).

    Checks: each shard's sha256 and frame count against the manifest, each record's crc32
    and decodability (problems name shard and key), natoms per frame against index/, and
    that splits are disjoint, sorted and in range.
    """
    root = Path(root)
    manifest = layout.read_manifest(root)
    problems: list[str] = []
    index = root / layout.INDEX
    natoms = np.load(index / "natoms.int32.npy", allow_pickle=False)
    offsets = np.load(index / "shard_offsets.int64.npy", allow_pickle=False)
    if len(offsets) != len(manifest["shards"]) + 1 or offsets[-1] != manifest["n_frames"]:
        problems.append("index/shard_offsets.int64.npy does not match the manifest's shards")
        return problems
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(manifest["n_frames"]), desc="verifying", unit=" frames",
                   disable=None, file=sys.stderr)
    for s, entry in enumerate(manifest["shards"]):
        path = root / entry["path"]
        if not path.exists():
            problems.append(f"shard {entry['path']}: file missing")
            continue
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            problems.append(f"shard {entry['path']}: sha256 mismatch (manifest "
                            f"{entry['sha256'][:16]}..., file {digest[:16]}...)")
        reader = ShardReader(path)
        try:
            n = len(reader)
            if n != entry["n_frames"]:
                problems.append(f"shard {entry['path']}: holds {n} frames, manifest says "
                                f"{entry['n_frames']}")
            for key in range(min(n, entry["n_frames"])):
                try:
                    frame = reader[key]
                except ShardCorruptError as exc:
                    problems.append(str(exc))
                    continue
                g = int(offsets[s]) + key
                if len(frame["numbers"]) != natoms[g]:
                    problems.append(f"shard {entry['path']}: key {key}: {len(frame['numbers'])}"
                                    f" atoms, index/natoms says {natoms[g]}")
                if bar is not None:
                    bar.update(1)
        except ShardCorruptError as exc:
            problems.append(str(exc))
        finally:
            reader.close()
    if bar is not None:
        bar.close()
    problems.extend(_check_splits(root, manifest))
    return problems


def _check_splits(root: Path, manifest: dict) -> list[str]:
    problems, seen = [], None
    n = manifest["n_frames"]
    for name, rel in (manifest.get("splits") or {}).get("files", {}).items():
        path = root / rel
        if not path.exists():
            problems.append(f"split {name}: {rel} missing")
            continue
        idx = np.load(path, allow_pickle=False)
        if idx.size and (idx.min() < 0 or idx.max() >= n or np.any(np.diff(idx) <= 0)):
            problems.append(f"split {name}: indices not sorted/unique within [0, {n})")
        mask = np.zeros(n, bool)
        mask[idx[(idx >= 0) & (idx < n)]] = True
        if seen is not None and np.any(seen & mask):
            problems.append(f"split {name} overlaps another split")
        seen = mask if seen is None else (seen | mask)
    return problems
