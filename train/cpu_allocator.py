"""Keep glibc's malloc from handing activation buffers back to the kernel.

Why: a training step on CPU allocates and frees activation-sized buffers (an angle
feature of the 10M preset is 17,170 × 128 × 4 B ≈ 9 MB) thousands of times. glibc
serves buffers above its mmap threshold with fresh ``mmap`` pages and trims the top of
the heap once more than its trim threshold is free; both thresholds adapt to the sizes
freed so far. Under some allocation orders the memory keeps going back to the kernel and
every new buffer pays its page faults again: on the 10M preset the second-order pass
(P3) of a pipeline stage holding all 10 blocks took 12.9-16.4 s in three runs against
9.3-9.5 s for the same blocks as 12 stages (``fill_`` and ``index_select`` of fresh
buffers 7-8× slower in the profile), two stages of 5 blocks 10.6-12.7 s. With mmap off
and trimming off (``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD = -1``) the three layouts took
9.3, 9.5 and 9.3 s. Half measures were not enough: the largest mmap threshold glibc
accepts (32 MiB) still left 12.7 / 12.9 s (larger buffers exist), a 1 GiB trim
threshold with mmap off still 12.0 s for the whole model.

The cost: freed heap memory stays mapped to the process and is reused by it, as a
caching allocator does (the GPU's never returns memory to the driver either); peak RSS
of the measurement above: see ``docs/schedules.md``, section 10. A serial training step
was not affected (11.06 s vs 11.05 s). ``MATRIS_MALLOC_TUNE=0`` turns this off.
"""

from __future__ import annotations

import ctypes
import os
import platform

#: glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_applied: bool | None = None


def tune_cpu_allocator() -> bool:
    """Turn glibc's mmap use and heap trimming off (see the module docstring), once per
    process.

    Returns True when both were set; False on other C libraries, when
    ``MATRIS_MALLOC_TUNE=0``, or when glibc refused a value. Call it before the first
    large allocation (the trainer and the benchmarks do it at start-up); it is cheap and
    idempotent.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("MATRIS_MALLOC_TUNE", "1").strip() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mmap off first (buffers then come from the heap, which brk grows; glibc still
    # falls back to mmap where brk cannot grow), then trimming off (-1: never). Trimming
    # off alone would not help: every buffer above the mmap threshold still faults.
    _applied = (mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1)
    return _applied
