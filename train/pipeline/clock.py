"""Wall clocks for per-action timing that see a GPU's work, not just its launch.

CUDA kernels run asynchronously: ``time.perf_counter`` around an action on a GPU measures
how long the host took to *queue* its kernels, and the time shows up later, in whichever
action first waits for the device (a receive, a ``.item()``). :func:`action_clock`
returns a clock that first waits for the device's queued work, so that a slice
[start, end) holds exactly the action's own kernels. Waiting costs the overlap of host
launches with device work, so the executor uses it on traced steps only (section
"Executor" of docs/schedules.md); the phase-cost measurement uses it always.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def action_clock(device: torch.device | str) -> Callable[[], float]:
    """``time.perf_counter`` (seconds) for a CPU ``device``; for a CUDA device, a clock
    that calls ``torch.cuda.synchronize(device)`` before reading ``time.perf_counter``."""
    device = torch.device(device)
    if device.type != "cuda":
        return time.perf_counter

    def synced() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return synced
