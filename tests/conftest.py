"""Shared pytest fixtures: launching `mpirun` from tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def mpirun_path() -> str:
    """The `mpirun` shipped by the pip `mpich` package in this interpreter's venv."""
    candidate = Path(sys.executable).parent / "mpirun"
    if not candidate.exists():
        pytest.skip(f"no mpirun next to {sys.executable}; install the pip 'mpich' package")
    return str(candidate)


def run_mpi(n: int, args: list[str], timeout: float = 300, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run `mpirun -n N python ARGS...`; on failure, show both output streams.

    Each rank gets one torch thread (ranks x threads must not exceed the 2 cores).
    """
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    cmd = [mpirun_path(), "-n", str(n), sys.executable, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}"
            f"\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture
def mpirun():
    """Fixture form of :func:`run_mpi`."""
    return run_mpi
