"""wavek's search shared by the processes that all build the program (``share``): each
evaluates every size-th candidate, rows are exchanged (once for the plain candidates,
once for the randomized passes), and every process ends with the unshared search's
program. Processes are threads here, exchanging through a barrier."""

from __future__ import annotations

import threading

import pytest

from matris.train.pipeline.costs import measured_profile
from matris.train.pipeline.schedules import make_schedule


def shared_runs(size: int, **kw) -> list:
    """Run wavek on ``size`` threads with a thread allgather; their programs."""
    slots: list = [None] * size
    barrier = threading.Barrier(size)
    calls = [0] * size
    out: list = [None] * size
    errors: list = []

    def allgather_for(rank):
        def allgather(obj):
            calls[rank] += 1
            slots[rank] = obj
            barrier.wait()
            got = list(slots)
            barrier.wait()  # nobody overwrites a slot before all have read
            return got
        return allgather

    def run(rank):
        try:
            out[rank] = make_schedule("wavek", share=(rank, size, allgather_for(rank)), **kw)
        except BaseException as exc:  # re-raised below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    rounds = 1 if kw.get("restarts") == 0 else 2  # plain candidates, randomized passes
    assert calls == [rounds] * size, f"{rounds} exchange(s) per process"
    return out


@pytest.mark.parametrize("variant,size,restarts", [("eager", 3, 2), ("lazy", 2, 2),
                                                   ("eager", 1, 2), ("lazy", 2, 0)])
def test_shared_search_equals_the_unshared_one(variant, size, restarts):
    P, M = 4, 8
    kw = {"P": P, "M": M, "costs": measured_profile(variant, P),
          "lazy_p3": variant == "lazy", "max_waves": 1, "restarts": restarts}
    ref = make_schedule("wavek", **kw)
    for prog in shared_runs(size, **kw):
        assert prog.to_text() == ref.to_text() and prog.unsplit == ref.unsplit
        assert prog.meta["chosen"] == ref.meta["chosen"]
        assert prog.meta["candidates"] == ref.meta["candidates"]
        assert prog.meta["restarts"] == ref.meta["restarts"]
        assert prog.meta["restarts"]["passes"] == restarts * 3 * 3
