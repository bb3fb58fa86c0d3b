"""ShardWriter / ShardReader: atomic visibility, map growth, pickling, fork/spawn, bit flips."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

from matris.datasets import shards as shards_mod
from matris.datasets.schema import frames_equal, normalize_frame
from matris.datasets.shards import ShardCorruptError, ShardReader, ShardWriter


def _frames(rng, make_frame, n, size=5):
    return [normalize_frame(make_frame(rng, size)) for _ in range(n)]


def test_shard_visible_only_after_close(tmp_path, rng, make_frame):
    path = tmp_path / "s.lmdb"
    w = ShardWriter(path)
    for f in _frames(rng, make_frame, 3):
        w.append(f)
    assert not path.exists(), "an unfinished shard must not be visible"
    info = w.close()
    assert path.exists() and not w.partial.exists()
    assert info["n_frames"] == 3 and len(info["sha256"]) == 64
    assert len(ShardReader(path)) == 3
    assert ShardReader(path).meta()["format"] == "mshard"


def test_abort_leaves_nothing(tmp_path, rng, make_frame):
    w = ShardWriter(tmp_path / "s.lmdb")
    w.append(_frames(rng, make_frame, 1)[0])
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_map_grows_when_full(tmp_path, rng, make_frame, monkeypatch):
    monkeypatch.setattr(shards_mod, "_INITIAL_MAP", 64 << 10)  # 64 KiB: must grow
    frames = _frames(rng, make_frame, 300, size=20)
    w = ShardWriter(tmp_path / "s.lmdb")
    for f in frames:
        w.append(f)
    w.close()
    r = ShardReader(tmp_path / "s.lmdb")
    assert len(r) == 300
    assert all(frames_equal(a, r[i]) for i, a in enumerate(frames))


def test_reader_pickles_without_handle(tmp_path, rng, make_frame):
    frames = _frames(rng, make_frame, 2)
    w = ShardWriter(tmp_path / "s.lmdb")
    for f in frames:
        w.append(f)
    w.close()
    r = ShardReader(tmp_path / "s.lmdb")
    assert frames_equal(r[1], frames[1])
    r2 = copy.deepcopy(r)  # the pickling protocol of worker transfer (__getstate__)
    assert r2._env is None and frames_equal(r2[0], frames[0])
    r.close()
    r2.close()


def _flip_inside_record(path, record: bytes, offset: int):
    """Flip one bit of every verbatim copy of ``record`` in the file (LMDB's copy-on-write
    can leave a stale copy in a free page, so flip them all)."""
    blob = bytearray(path.read_bytes())
    at = blob.find(record)
    assert at >= 0, "record bytes not found verbatim in the shard file"
    while at >= 0:
        blob[at + offset] ^= 0x10
        at = blob.find(record, at + 1)
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("compress", [False, True])
def test_bit_flip_caught_by_reader_naming_shard_and_key(tmp_path, rng, make_frame, compress):
    from matris.datasets.codec import encode_record

    frames = _frames(rng, make_frame, 4, size=6)
    path = tmp_path / "shard-00007.lmdb"
    w = ShardWriter(path, compress=compress)
    for f in frames:
        w.append(f)
    w.close()
    target = encode_record(frames[2], compress=compress)
    _flip_inside_record(path, target, len(target) // 2)
    r = ShardReader(path)
    assert frames_equal(r[1], frames[1])  # other records still read fine
    with pytest.raises(ShardCorruptError, match=r"shard-00007\.lmdb: key 2: crc32 mismatch"):
        r[2]
    r.close()


def test_missing_key_is_named(tmp_path, rng, make_frame):
    w = ShardWriter(tmp_path / "s.lmdb")
    w.append(_frames(rng, make_frame, 1)[0])
    w.close()
    with pytest.raises(ShardCorruptError, match="key 5 is missing"):
        ShardReader(tmp_path / "s.lmdb")[5]


def test_two_readers_same_file_one_process(tmp_path, rng, make_frame):
    frames = _frames(rng, make_frame, 2)
    w = ShardWriter(tmp_path / "s.lmdb")
    for f in frames:
        w.append(f)
    w.close()
    a, b = ShardReader(tmp_path / "s.lmdb"), ShardReader(tmp_path / "s.lmdb")
    assert frames_equal(a[0], b[0])  # LMDB refuses a second env: the cache shares one
    a.close()
    assert frames_equal(b[1], frames[1])
    b.close()
    ino = (tmp_path / "s.lmdb").stat().st_ino
    assert not any(k[0] == os.getpid() and k[2] == ino for k in shards_mod._ENVS), \
        "closing both readers must close the shared environment"


def test_frames_equal_detects_differences(rng, make_frame):
    a = normalize_frame(make_frame(rng, 3))
    b = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in a.items()}
    assert frames_equal(a, b)
    b["positions"][0, 0] = np.nextafter(b["positions"][0, 0], 10)
    assert not frames_equal(a, b)
    c = dict(a)
    del c["stress"]
    assert not frames_equal(a, c)
