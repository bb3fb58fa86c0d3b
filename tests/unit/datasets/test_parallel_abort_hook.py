"""The dataset builder's MPI abort hook: traceback first, a pause for mpirun, then abort."""

from __future__ import annotations

import sys

from matris.datasets import parallel


class _RecordingComm:
    rank = 1
    size = 2

    def __init__(self, events):
        self.events = events

    def abort(self, code: int = 1) -> None:
        self.events.append(("abort", code))


def test_hook_writes_traceback_then_waits_then_aborts(monkeypatch, capsys):
    events = []
    monkeypatch.setattr(sys, "excepthook", lambda *a: events.append(("previous",)))
    monkeypatch.setattr(parallel.time, "sleep", lambda s: events.append(("sleep", s)))
    parallel.install_abort_hook(_RecordingComm(events))
    try:
        raise ValueError("frame 3 of bad.xyz: unknown atomic number 0")
    except ValueError:
        sys.excepthook(*sys.exc_info())
    err = capsys.readouterr().err
    assert "[rank 1] uncaught exception" in err
    assert "unknown atomic number 0" in err
    # The pause must come before the abort: MPI_Abort drops text still in flight.
    assert events[:2] == [("sleep", parallel._FORWARD_GRACE_S), ("abort", 1)]
    assert parallel._FORWARD_GRACE_S >= 0.5

