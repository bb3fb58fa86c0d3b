"""Launched by test_dist.py under mpirun: launch, topology groups, collectives, p2p.

Usage: dist_basics.py PP DP GP. Prints "OK rank=<r>" when every check passes.
"""

import sys

import torch

from matris.train import dist as mdist

pp, dp, gp = (int(a) for a in sys.argv[1:4])
env = mdist.init_distributed(device="cpu", timeout_s=60)
topo = mdist.Topology(pp=pp, dp=dp, gp=gp, world_size=env.world_size)
groups = mdist.build_groups(topo, env.rank)
r, c = env.rank, groups.coord
assert env.threads >= 1 and torch.get_num_threads() == env.threads
assert env.local_size == env.world_size  # one node

# Every group contains this rank and has the right size; members differ only in one coord.
for dim in ("dp", "pp", "gp"):
    g = groups[dim]
    assert r in g.ranks and g.size == topo.size(dim), (dim, g)
    for other in g.ranks:
        oc = topo.coord(other)
        for d2 in ("dp", "pp", "gp"):
            if d2 != dim:
                assert getattr(oc, d2) == getattr(c, d2)

# all_reduce over each dimension: sum of ranks in the group.
for dim in ("dp", "pp", "gp", "stage", "world"):
    t = torch.tensor([float(r)], dtype=torch.float64)
    mdist.all_reduce_(t, groups[dim])
    assert t.item() == sum(groups[dim].ranks), (dim, t.item(), groups[dim].ranks)

# Bucketed gradient all-reduce over DP (mean) with tiny buckets, including a parameter
# whose gradient is missing on some ranks (zero-filled there) and one that no rank
# touched (stays None, as in a single process: the optimizer keeps no state for it).
params = [torch.nn.Parameter(torch.zeros(n, dtype=torch.float64)) for n in (5, 300, 7, 1, 4)]
for i, p in enumerate(params):
    if not (i == 2 and c.dp == 0) and i != 4:
        p.grad = torch.full_like(p, float(c.dp + 1) * (i + 1))
mdist.allreduce_gradients(params, groups.dp, op="mean", bucket_mb=1e-3)
assert params[4].grad is None
for i, p in enumerate(params[:4]):
    contrib = [(d + 1) * (i + 1) for d in range(dp) if not (i == 2 and d == 0)]
    if not contrib:  # dp = 1: parameter 2 has no gradient anywhere
        assert p.grad is None
        continue
    want = sum(contrib) / dp
    assert torch.all(p.grad == want), (i, p.grad[:3], want)

d = mdist.all_reduce_dict({"a": 1.0, "b": float(r)}, groups.world)
assert d == {"a": float(env.world_size), "b": float(sum(range(env.world_size)))}

# Point to point along the pipeline: stage s sends to s+1 a tensor of a shape the
# receiver does not know, then a known-shape tensor back.
if pp > 1:
    nxt = topo.rank(c.dp, c.pp + 1, c.gp) if c.pp + 1 < pp else None
    prv = topo.rank(c.dp, c.pp - 1, c.gp) if c.pp > 0 else None
    if nxt is not None:
        mdist.send_tensors([torch.arange(r + 3, dtype=torch.float32).reshape(1, -1),
                            torch.tensor([True, False])], nxt)
    if prv is not None:
        got = mdist.recv_tensors(prv)
        assert got[0].shape == (1, prv + 3) and got[0][0, -1].item() == prv + 2, got
        assert got[1].dtype == torch.bool and got[1].tolist() == [True, False]
        mdist.send(torch.full((2, 2), float(r)), prv)
    if nxt is not None:
        back = mdist.recv((2, 2), torch.float32, nxt)
        assert torch.all(back == nxt)

mdist.barrier()
print(f"OK rank={r} coord={c} threads={env.threads}", flush=True)
mdist.shutdown()
