"""One shard = one single-file LMDB environment (``subdir=False``), immutable once written.

Keys are 8-byte big-endian frame indices local to the shard (byte order equals numeric
order, so a cursor walks frames in order). Reserved keys start with ``__``:
``__count__`` (8-byte big-endian frame count) and ``__meta__`` (UTF-8 JSON).
Values are records from :mod:`matris.datasets.codec`.

``ShardWriter`` writes ``<path>.partial`` and renames it to ``<path>`` on ``close()``, so
a shard is visible only when complete. ``ShardReader`` opens lazily, read-only and
without a lock file; it reopens after ``fork`` and drops its handle when pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from pathlib import Path

import lmdb

from .codec import RecordError, check_record, decode_record, encode_record
from .schema import SCHEMA_VERSION

SHARD_FORMAT = "mshard"
SHARD_VERSION = 1
COUNT_KEY = b"__count__"
META_KEY = b"__meta__"
_KEY = struct.Struct(">Q")
_INITIAL_MAP = 64 << 20
_BATCH = 512


class ShardCorruptError(RuntimeError):
    """A shard or one of its records is damaged; the message names the shard and key."""


def frame_key(i: int) -> bytes:
    """LMDB key of local frame ``i``: 8 bytes, big-endian."""
    return _KEY.pack(i)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


class ShardWriter:
    """Append encoded frames to a new shard; the file appears at ``path`` only on close().

    ``meta`` (a JSON-able dict) is stored under ``__meta__``. The LMDB map grows by
    doubling when full, so no size has to be guessed up front.
    """

    def __init__(self, path: str | Path, compress: bool = False, meta: dict | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.compress = compress
        self.meta = dict(meta or {})
        self.count = 0
        self._pending: list[tuple[bytes, bytes]] = []
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        if self.partial.exists():
            self.partial.unlink()
        self._map_size = _INITIAL_MAP
        self._env = lmdb.open(str(self.partial), subdir=False, map_size=self._map_size,
                              lock=False, sync=False, metasync=False, meminit=False,
                              max_dbs=0)

    def append(self, frame: dict) -> int:
        """Encode and queue one normalized frame; return its local index."""
        return self.append_encoded(encode_record(frame, compress=self.compress))

    def append_encoded(self, value: bytes) -> int:
        i = self.count
        self._pending.append((frame_key(i), value))
        self.count += 1
        if len(self._pending) >= _BATCH:
            self._flush()
        return i

    def _put_all(self, items: list[tuple[bytes, bytes]]) -> None:
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in items:
                        txn.put(key, value, append=key[:2] != b"__")
                return
            except lmdb.MapFullError:
                # The aborted transaction left nothing behind; grow and redo the batch.
                self._map_size *= 2
                self._env.set_mapsize(self._map_size)

    def _flush(self) -> None:
        if self._pending:
            self._put_all(self._pending)
            self._pending = []

    def close(self) -> dict:
        """Finish the shard; return {path, n_frames, bytes, sha256}."""
        meta = {"format": SHARD_FORMAT, "version": SHARD_VERSION,
                "schema_version": SCHEMA_VERSION, "n_frames": self.count, **self.meta}
        # Last batch and reserved keys in one transaction (fewer copy-on-write pages).
        self._put_all([*self._pending, (COUNT_KEY, _KEY.pack(self.count)),
                       (META_KEY, json.dumps(meta, sort_keys=True).encode())])
        self._pending = []
        self._env.sync(True)
        self._env.close()
        os.replace(self.partial, self.path)
        return {"path": self.path.name, "n_frames": self.count,
                "bytes": self.path.stat().st_size, "sha256": sha256_file(self.path)}

    def abort(self) -> None:
        """Drop a half-written shard (used when a build fails)."""
        try:
            self._env.close()
        finally:
            if self.partial.exists():
                self.partial.unlink()


# One Environment per (process, file) because LMDB refuses to open the same file twice in
# one process. Keyed by pid so a forked child never touches its parent's handle.
_ENVS: dict[tuple[int, int, int], list] = {}


def _close_inherited_envs() -> None:
    """In a forked child: close the parent's environments (this child's copies only).

    py-lmdb remembers open files per process and a forked child inherits that list, so the
    child could not open the shard again. Closing the inherited copy unmaps it in the
    child only; the parent's handle is untouched. Read-only, lock-free envs hold no lock
    table, so nothing shared is released.
    """
    pid = os.getpid()
    for key in [k for k in _ENVS if k[0] != pid]:
        env = _ENVS.pop(key)[0]
        with contextlib.suppress(lmdb.Error):
            env.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_envs)


def _acquire_env(path: Path) -> tuple[tuple, lmdb.Environment]:
    st = os.stat(path)
    key = (os.getpid(), st.st_dev, st.st_ino)
    entry = _ENVS.get(key)
    if entry is None:
        env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False,
                        meminit=False, max_readers=4096)
        entry = _ENVS[key] = [env, 0]
    entry[1] += 1
    return key, entry[0]


def _release_env(key: tuple) -> None:
    entry = _ENVS.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        entry[0].close()
        del _ENVS[key]


class ShardReader:
    """Random access to one shard's frames (lazy, read-only, fork/spawn safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pid = None
        self._key = None
        self._env = None
        self._txn = None

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def _open(self):
        if self._pid != os.getpid() or self._txn is None:
            # After fork the inherited handle belongs to the parent: forget, never close it.
            self._env = self._txn = self._key = None
            if not self.path.exists():
                raise FileNotFoundError(f"shard {self.path} does not exist")
            self._key, self._env = _acquire_env(self.path)
            self._txn = self._env.begin(buffers=True)
            self._pid = os.getpid()
        return self._txn

    def close(self) -> None:
        if self._pid == os.getpid() and self._key is not None:
            self._txn.abort()
            _release_env(self._key)
        self._env = self._txn = self._key = None
        self._pid = None

    def __len__(self) -> int:
        raw = self._get_raw(COUNT_KEY, "__count__")
        return _KEY.unpack(bytes(raw))[0]

    def meta(self) -> dict:
        return json.loads(bytes(self._get_raw(META_KEY, "__meta__")))

    def _get_raw(self, key: bytes, name) -> memoryview:
        txn = self._open()
        try:
            value = txn.get(key)
        except lmdb.Error as exc:
            raise ShardCorruptError(f"shard {self.path}: key {name}: lmdb error: {exc}") from exc
        if value is None:
            raise ShardCorruptError(f"shard {self.path}: key {name} is missing")
        return value

    def get_bytes(self, i: int) -> bytes:
        """Raw stored record of local frame ``i`` (checksum verified)."""
        raw = self._get_raw(frame_key(i), i)
        try:
            check_record(raw)
        except RecordError as exc:
            raise ShardCorruptError(f"shard {self.path}: key {i}: {exc}") from exc
        return bytes(raw)

    def __getitem__(self, i: int) -> dict:
        raw = self._get_raw(frame_key(i), i)
        try:
            return decode_record(raw)
        except RecordError as exc:
            raise ShardCorruptError(f"shard {self.path}: key {i}: {exc}") from exc

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]
