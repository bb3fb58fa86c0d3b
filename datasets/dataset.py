"""``ShardedDataset``: the trainer's view of a dataset root (docs/architecture.md §1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from . import layout
from .shards import ShardReader
from .splits import SPLIT_NAMES


class ShardedDataset:
    """Random access to the frames of a built dataset root.

    ``ds[i]`` -> frame dict (see ``schema``); ``len(ds)``; ``ds.natoms`` (int64, aligned with
    ``ds[i]``); ``ds.manifest`` (dict); ``ds.reference_energies`` (float64 (119,), eV per atom
    of element Z, 0 for elements not in the data); ``ds.indices`` (global frame index of
    each item). ``split`` is None (all frames) or a name under ``splits/``.

    Picklable: only the root, split and small index arrays travel; LMDB handles open lazily
    in each process (read-only, ``lock=False``) and are reopened after fork.
    """

    def __init__(self, root: str | Path, split: str | None = None):
        self.root = Path(root)
        self.split = split
        self.manifest = layout.read_manifest(self.root)
        index = self.root / layout.INDEX
        self._offsets = np.load(index / "shard_offsets.int64.npy", allow_pickle=False)
        all_natoms = np.load(index / "natoms.int32.npy", allow_pickle=False)
        if split is None:
            self.indices = np.arange(len(all_natoms), dtype=np.int64)
        else:
            path = self.root / layout.SPLITS / f"{split}.int64.npy"
            if not path.exists():
                known = sorted(p.name.split(".")[0]
                               for p in (self.root / layout.SPLITS).glob("*.int64.npy"))
                raise KeyError(f"split {split!r} not in {self.root} (have {known or SPLIT_NAMES})")
            self.indices = np.load(path, allow_pickle=False).astype(np.int64)
        self.natoms = all_natoms[self.indices].astype(np.int64)
        self._paths = [self.root / s["path"] for s in self.manifest["shards"]]
        n_total = int(self._offsets[-1])
        if n_total != self.manifest["n_frames"] or len(self._paths) + 1 != len(self._offsets):
            raise ValueError(f"{self.root}: index/ does not match manifest.yaml "
                             f"({n_total} vs {self.manifest['n_frames']} frames)")
        self._readers: list[ShardReader] | None = None

    @property
    def reference_energies(self) -> np.ndarray:
        """float64 (119,): fitted eV/atom per element Z (index 0 unused, absent -> 0)."""
        mu = np.zeros(119, np.float64)
        per = (self.manifest.get("reference_energies") or {}).get("per_element") or {}
        for symbol, value in per.items():
            mu[atomic_numbers[symbol]] = float(value)
        return mu

    def __len__(self) -> int:
        return len(self.indices)

    def locate(self, global_index: int) -> tuple[int, int]:
        """Global frame index -> (shard number, key within shard)."""
        s = int(np.searchsorted(self._offsets, global_index, side="right")) - 1
        return s, int(global_index - self._offsets[s])

    def _reader(self, s: int) -> ShardReader:
        if self._readers is None:
            self._readers = [ShardReader(p) for p in self._paths]
        return self._readers[s]

    def __getitem__(self, i: int) -> dict:
        n = len(self.indices)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for dataset of {n} frames")
        s, key = self.locate(int(self.indices[i]))
        return self._reader(s)[key]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_readers"] = None  # LMDB handles never cross process boundaries
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def close(self) -> None:
        for r in self._readers or ():
            r.close()
        self._readers = None

    def __repr__(self) -> str:
        return (f"ShardedDataset({str(self.root)!r}, split={self.split!r}, "
                f"n={len(self)}, shards={len(self._paths)})")
