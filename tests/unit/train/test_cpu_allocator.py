"""``tune_cpu_allocator``: glibc keeps freed activation buffers mapped instead of paying
their page faults again on every reuse (train/cpu_allocator.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from matris.train import cpu_allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A 64 MiB buffer allocated, touched and freed, ten times after a warm-up. Untuned, glibc
# serves it with mmap (its dynamic mmap threshold never exceeds 32 MiB) and unmaps it on
# free, so each cycle faults every page in again; tuned, it comes from the heap and is
# reused.
CYCLES = """
import resource, torch
from matris.train.cpu_allocator import tune_cpu_allocator
print(tune_cpu_allocator())
def cycle():
    torch.empty(16 * 2**20).fill_(1.0)
for _ in range(8):  # warm-up: the heap grows to fit (four cycles here)
    cycle()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(tune: bool) -> tuple[str, int]:
    env = {**os.environ, "MATRIS_MALLOC_TUNE": "1" if tune else "0"}
    out = subprocess.run([sys.executable, "-c", CYCLES], env=env, capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tuned_allocator_reuses_freed_buffers_instead_of_faulting_them_in_again():
    applied, tuned = _faults(True)
    off, untuned = _faults(False)
    assert (applied, off) == ("True", "False")
    pages_per_cycle = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert untuned >= 9 * pages_per_cycle       # untuned: the pages come back every cycle
    assert tuned <= pages_per_cycle // 2       # tuned: reused


def test_opt_out_and_other_c_libraries_leave_malloc_alone(monkeypatch):
    monkeypatch.setattr(cpu_allocator, "_applied", None)
    monkeypatch.setenv("MATRIS_MALLOC_TUNE", "0")
    assert cpu_allocator.tune_cpu_allocator() is False
    monkeypatch.setattr(cpu_allocator, "_applied", None)
    monkeypatch.setenv("MATRIS_MALLOC_TUNE", "1")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert cpu_allocator.tune_cpu_allocator() is False
