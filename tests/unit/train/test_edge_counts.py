"""Per-frame edge counts: equal to the graph builder's, cached in the root, shared over ranks."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from matris.datasets import ShardedDataset
from matris.graph import build_graph
from matris.train import edge_counts as ec
from matris.train.testing import build_emt_dataset


@pytest.fixture(scope="module")
def emt_root(tmp_path_factory):
    return build_emt_dataset(tmp_path_factory.mktemp("emt") / "ds", n=12, seed=3)


@pytest.fixture
def root(emt_root, tmp_path):
    """A private copy of the dataset root (each test starts without a cache)."""
    import shutil

    out = tmp_path / "ds"
    shutil.copytree(emt_root, out)
    return out


def _graph_edges(frame, cutoff):
    g = build_graph(frame["numbers"], frame["positions"], frame["cell"], frame["pbc"], cutoff,
                    min(cutoff, 3.0))
    return int(g.num_edges.sum())


@pytest.mark.parametrize("cutoff", [2.6, 5.0, 6.5])
def test_counts_equal_the_graph_builders(emt_root, cutoff):
    ds = ShardedDataset(emt_root)
    want = [_graph_edges(ds[i], cutoff) for i in range(len(ds))]
    got = ec.count_edges(ds, cutoff, np.arange(len(ds)))
    assert got.dtype == np.int64 and got.tolist() == want
    assert min(want) >= 0 and max(want) > 0


def test_counts_of_a_molecule_and_a_slab_equal_the_graph_builders():
    rng = np.random.default_rng(0)
    molecule = {"numbers": np.array([6, 1, 1, 8]), "positions": rng.uniform(0, 3, (4, 3)),
                "cell": None, "pbc": False}
    slab = {"numbers": np.full(6, 29), "positions": rng.uniform(0, 4, (6, 3)),
            "cell": np.diag([2.6, 3.1, 0.0]), "pbc": np.array([True, True, False])}
    for frame in (molecule, slab):
        assert ec.frame_edges(frame, 4.0) == _graph_edges(frame, 4.0)


def test_cache_is_written_once_and_reused(root, monkeypatch):
    counts = ec.edge_counts(root, 5.0)
    path = ec.cache_path(root, 5.0)
    assert path.name == "edges_rc5.0.int64.npy" and path.parent == root / "index"
    assert np.array_equal(np.load(path), counts) and len(counts) == 12
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]

    def no_counting(*args, **kwargs):
        raise AssertionError("recounted although the cache exists")

    monkeypatch.setattr(ec, "count_edges", no_counting)
    assert np.array_equal(ec.edge_counts(root, 5.0), counts)
    with pytest.raises(AssertionError, match="recounted"):  # another cutoff: another file
        ec.edge_counts(root, 4.0)


def test_a_corrupt_cache_is_recounted(root):
    counts = ec.edge_counts(root, 5.0)
    np.save(ec.cache_path(root, 5.0), counts[:5])  # e.g. from another build of the root
    with pytest.warns(UserWarning, match="not a valid edge-count cache"):
        again = ec.edge_counts(root, 5.0)
    assert np.array_equal(again, counts)
    assert np.array_equal(np.load(ec.cache_path(root, 5.0)), counts)


def test_read_only_root_keeps_counts_in_memory(root, monkeypatch):
    monkeypatch.setattr(ec, "_MEMORY", {})

    def read_only(path, counts):
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(ec, "_write_atomic", read_only)
    with pytest.warns(UserWarning, match="keeping them in memory"):
        counts = ec.edge_counts(root, 5.0)
    assert not ec.cache_path(root, 5.0).exists()
    monkeypatch.setattr(ec, "count_edges", lambda *a, **k: pytest.fail("recounted"))
    assert np.array_equal(ec.edge_counts(root, 5.0), counts)


class _Ranks:
    """``allgather`` for ``world`` threads standing in for MPI ranks."""

    def __init__(self, world):
        self.world, self.barrier = world, threading.Barrier(world)
        self.slots = [None] * world
        self.calls = 0

    def allgather_for(self, rank):
        def allgather(obj):
            self.slots[rank] = obj
            self.barrier.wait()
            out = list(self.slots)
            self.barrier.wait()  # nobody overwrites a slot before everyone has read it
            if rank == 0:
                self.calls += 1
            return out
        return allgather


def _run_ranks(root, world):
    ranks, results, errors = _Ranks(world), [None] * world, []

    def rank_main(r):
        try:
            results[r] = ec.edge_counts(root, 5.0, rank=r, world=world,
                                        allgather=ranks.allgather_for(r))
        except BaseException as err:  # surfaced below, not lost in the thread
            errors.append(err)
            ranks.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results, ranks.calls


def test_ranks_split_the_count_and_agree(root, monkeypatch):
    want = ec.count_edges(ShardedDataset(root), 5.0, np.arange(12))
    counted = []

    def recording(ds, cutoff, frames):
        counted.extend(int(f) for f in frames)
        return want[frames]  # no concurrent LMDB reads from the stand-in threads

    monkeypatch.setattr(ec, "count_edges", recording)
    results, calls = _run_ranks(root, world=3)
    assert all(np.array_equal(r, want) for r in results)
    assert sorted(counted) == list(range(12))  # each frame counted by exactly one rank
    assert np.array_equal(np.load(ec.cache_path(root, 5.0)), want)
    assert calls == 2  # "have the cache?" then the parts

    counted.clear()
    results, calls = _run_ranks(root, world=3)  # now every rank reads the cache
    assert all(np.array_equal(r, want) for r in results) and counted == [] and calls == 1
