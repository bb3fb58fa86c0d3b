"""mpirun tests of matris.train.dist: launch, topology groups, collectives, p2p, abort."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.mpi


@pytest.mark.parametrize(("pp", "dp", "gp"), [(2, 2, 1), (1, 2, 2)])
def test_groups_collectives_p2p(mpirun, pp, dp, gp):
    proc = mpirun(4, [str(SCRIPTS / "dist_basics.py"), str(pp), str(dp), str(gp)], timeout=180)
    # Ranks' lines may interleave without newlines between them: count the markers.
    assert sorted(re.findall(r"OK rank=(\d)", proc.stdout)) == ["0", "1", "2", "3"], proc.stdout


def test_single_process_without_mpirun():
    import subprocess

    proc = subprocess.run([sys.executable, str(SCRIPTS / "dist_basics.py"), "1", "1", "1"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "OK rank=0" in proc.stdout


def test_exception_on_one_rank_aborts_job_promptly(mpirun):
    t0 = time.monotonic()
    proc = mpirun(3, [str(SCRIPTS / "raise_on_rank.py"), "1"], timeout=120, check=False)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    assert elapsed < 60, f"mpirun took {elapsed:.0f} s to exit"
    assert "UNREACHABLE" not in proc.stdout
    # The failing rank's traceback, prefixed with its rank, is printed once.
    assert proc.stderr.count("[rank 1] RuntimeError: deliberate failure on rank 1") == 1
    assert "[rank 0] Traceback" not in proc.stderr
