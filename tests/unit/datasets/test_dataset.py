"""ShardedDataset over a built root: contract API, splits, pickling, DataLoader workers."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from matris.datasets import BuildConfig, ShardedDataset, build_dataset
from matris.datasets.schema import frames_equal, normalize_frame


@pytest.fixture
def built(tmp_path, rng, make_frame, write_extxyz):
    """60 frames in 3 extxyz files (12 groups of 5), built into 3 shards."""
    frames = [normalize_frame(make_frame(rng, int(rng.integers(2, 9)), group=f"g{i // 5}"))
              for i in range(60)]
    inputs = []
    for k in range(3):
        inputs.append(write_extxyz(tmp_path / f"in{k}.xyz", frames[20 * k:20 * (k + 1)]))
    root = tmp_path / "ds"
    build_dataset(BuildConfig(source="extxyz", inputs=inputs, out=root, shards=3,
                              progress=False, split=(0.6, 0.2, 0.2), seed=3))
    return root, frames


def _original(frames, frame):
    """The input frame a built frame came from, via its source_id 'in<k>.xyz:<i>'."""
    name, i = frame["source_id"].split(":")
    return frames[20 * int(name[2]) + int(i)]


def test_contract_api(built):
    root, frames = built
    ds = ShardedDataset(root)
    assert len(ds) == 60
    assert ds.natoms.dtype == np.int64 and len(ds.natoms) == 60
    assert all(ds.natoms[i] == len(ds[i]["numbers"]) for i in range(60))
    assert ds.manifest["n_frames"] == 60 and len(ds.manifest["shards"]) == 3
    ref = ds.reference_energies
    assert ref.dtype == np.float64 and ref.shape == (119,) and ref[0] == 0.0
    present = {int(z) for f in frames for z in f["numbers"]}
    absent = sorted(set(range(1, 119)) - present)
    assert np.all(ref[absent] == 0.0)
    # Same frames as the inputs (extxyz text stores positions with 8 decimals).
    seen = set()
    for frame in ds:
        orig = _original(frames, frame)
        seen.add(frame["source_id"])
        np.testing.assert_array_equal(frame["numbers"], orig["numbers"])
        np.testing.assert_allclose(frame["positions"], orig["positions"], atol=1e-7)
        np.testing.assert_allclose(frame["forces"], orig["forces"], atol=1e-7)
        assert frame["group_id"] == orig["group_id"]
    assert len(seen) == 60
    assert ds[-1]["source_id"] == ds[59]["source_id"]
    with pytest.raises(IndexError):
        ds[60]


def test_splits_never_share_a_group(built):
    root, _ = built
    parts = {name: ShardedDataset(root, name) for name in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == 60
    groups = {name: {p[i]["group_id"] for i in range(len(p))} for name, p in parts.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert all(len(p) > 0 for p in parts.values())
    np.testing.assert_array_equal(parts["val"].natoms,
                                  ShardedDataset(root).natoms[parts["val"].indices])
    with pytest.raises(KeyError, match="split 'nope'"):
        ShardedDataset(root, "nope")


def test_pickle_round_trip(built):
    root, _ = built
    ds = ShardedDataset(root, "train")
    first = ds[0]
    # deepcopy runs the same __getstate__/__setstate__ as the pickling that ships a
    # dataset to spawned DataLoader workers (exercised for real in the next test)
    clone = copy.deepcopy(ds)
    assert clone._readers is None
    assert frames_equal(clone[0], first) and len(clone) == len(ds)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers(built, context):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    root, _ = built
    ds = ShardedDataset(root)
    ds[0]  # open handles in the parent first: workers must not reuse them
    # Default conversion (numpy -> tensors); the dataset itself must pickle for spawn.
    loader = DataLoader(ds, batch_size=None, shuffle=False, num_workers=2,
                        multiprocessing_context=context)
    got = list(loader)
    assert len(got) == len(ds)
    for i, item in enumerate(got):
        assert isinstance(item["positions"], torch.Tensor)
        back = {k: (v.numpy()[()] if v.ndim == 0 else v.numpy())
                if isinstance(v, torch.Tensor) else v for k, v in item.items()}
        assert frames_equal(back, ds[i]), f"frame {i} differs after the worker round trip"
