"""Abort the whole MPI job when any rank raises.

Without this, one rank's exception leaves the others blocked forever in a collective
(mpi4py's docs warn about exactly this). The hook prints the failing rank's traceback once,
prefixed with its rank, then calls ``MPI.COMM_WORLD.Abort(1)``, which makes ``mpirun`` kill
every rank and exit non-zero.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

_rank: int | None = None  # set by launch once MPI is up


def set_rank(rank: int) -> None:
    """Record this process's world rank for the traceback prefix."""
    global _rank
    _rank = rank


def _rank_prefix() -> str:
    if _rank is not None:
        return f"[rank {_rank}]"
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if var in os.environ:
            return f"[rank {os.environ[var]}]"
    return "[rank 0]"


def _report_and_abort(exc_type, exc, tb) -> None:
    lines = traceback.format_exception(exc_type, exc, tb)
    prefix = _rank_prefix()
    text = "".join(f"{prefix} {line}\n"
                   for chunk in lines for line in chunk.rstrip("\n").split("\n"))
    try:
        sys.stderr.write(text)
        sys.stderr.write(f"{prefix} aborting the MPI job (MPI.COMM_WORLD.Abort(1))\n")
        sys.stderr.flush()
        sys.stdout.flush()
        # Give the launcher a moment to forward our output: MPI_Abort tears down the
        # rank's pipes, and text still in flight to mpirun would be lost.
        time.sleep(1.0)
    finally:
        from mpi4py import MPI  # lazily: loader workers import this package without MPI

        MPI.COMM_WORLD.Abort(1)


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    _report_and_abort(args.exc_type, args.exc_value, args.exc_traceback)


def install_abort_hook() -> None:
    """Install ``sys.excepthook`` and ``threading.excepthook`` that abort all ranks.

    Call again after ``init_process_group`` (which wraps ``sys.excepthook`` to buffer and
    prefix stderr): ours must be the outermost hook so the traceback is written before the
    abort. ``KeyboardInterrupt`` also aborts (Ctrl-C on one rank must not leave the
    others hanging); ``SystemExit`` never reaches the hook, so ``sys.exit(2)`` stays an
    ordinary exit.
    """
    sys.excepthook = _report_and_abort
    threading.excepthook = _thread_hook
