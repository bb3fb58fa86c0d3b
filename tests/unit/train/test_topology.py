"""Rank ↔ (dp, pp, gp) mapping: GP innermost, then PP, DP outermost."""

from __future__ import annotations

import itertools

import pytest

from matris.train.dist import Topology, TopologyError, threads_per_rank


def test_mapping_order_and_inverse():
    topo = Topology(pp=3, dp=2, gp=2, world_size=12)
    # GP innermost: consecutive ranks share dp and pp.
    assert [topo.coord(r).gp for r in range(4)] == [0, 1, 0, 1]
    assert [topo.coord(r).pp for r in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [topo.coord(r).dp for r in range(12)] == [0] * 6 + [1] * 6
    for r in range(12):
        c = topo.coord(r)
        assert topo.rank(c.dp, c.pp, c.gp) == r


@pytest.mark.parametrize(("pp", "dp", "gp"), list(itertools.product([1, 2, 3], [1, 2], [1, 2])))
def test_groups_partition_the_world(pp, dp, gp):
    topo = Topology(pp=pp, dp=dp, gp=gp, world_size=pp * dp * gp)
    for dim in ("dp", "pp", "gp"):
        groups = topo.groups(dim)
        flat = sorted(r for g in groups for r in g)
        assert flat == list(range(topo.world_size))
        assert all(len(g) == topo.size(dim) for g in groups)
        for g in groups:  # members differ only along `dim`
            coords = [topo.coord(r) for r in g]
            for other in {"dp", "pp", "gp"} - {dim}:
                assert len({getattr(c, other) for c in coords}) == 1
            assert [getattr(c, dim) for c in coords] == list(range(topo.size(dim)))
    stage = topo.stage_replicas()
    assert len(stage) == pp and all(len(g) == dp * gp for g in stage)
    assert all(topo.coord(r).pp == p for p, g in enumerate(stage) for r in g)


def test_product_mismatch_names_every_factor():
    with pytest.raises(TopologyError) as err:
        Topology(pp=2, dp=3, gp=1, world_size=4)
    msg = str(err.value)
    for fragment in ("parallel.pp", "parallel.dp", "parallel.gp", "2 × 3 × 1", "= 6", "4 ranks"):
        assert fragment in msg


def test_threads_never_exceed_fair_share():
    assert threads_per_rank(2, 1, None) == 2
    assert threads_per_rank(2, 2, None) == 1
    assert threads_per_rank(2, 4, None) == 1  # oversubscribed ranks still get one
    assert threads_per_rank(16, 4, 8) == 4   # request clamped
    assert threads_per_rank(16, 4, 2) == 2
    with pytest.raises(ValueError):
        threads_per_rank(2, 1, 0)
