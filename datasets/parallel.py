"""The only module of matris.datasets that touches MPI (lazily, and only under mpirun).

``get_comm()`` returns a tiny communicator with ``rank``, ``size``, ``barrier()`` and
``abort()``. Outside ``mpirun`` (no MPI launcher variables) it is a serial stand-in and
mpi4py is never imported, so the dataset layer works without MPI. Under ``mpirun`` a
global excepthook turns an uncaught exception on any rank into ``COMM_WORLD.Abort(1)``,
so one rank's failure ends the job instead of leaving the others waiting in a barrier.

Data between ranks travels through files in the output directory (JSON + .npy), never
through pickled MPI objects.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

# Set by MPICH/Hydra, Open MPI and PMIx launchers respectively.
_LAUNCHER_VARS = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
# Seconds between writing a failing rank's traceback and aborting (see install_abort_hook).
_FORWARD_GRACE_S = 1.0


def under_mpirun() -> bool:
    """True when this process was started by an MPI launcher."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


class SerialComm:
    rank = 0
    size = 1

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)


class MPIComm:
    """Thin wrapper over mpi4py's COMM_WORLD (barrier and abort only)."""

    def __init__(self):
        from mpi4py import MPI  # lazy: only under mpirun

        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()

    def barrier(self) -> None:
        self._comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self._comm.Abort(code)


_COMM = None


def get_comm(use_mpi: bool | None = None):
    """The process-wide communicator; MPI only when launched by mpirun (or forced)."""
    global _COMM
    if _COMM is None:
        if use_mpi is None:
            use_mpi = under_mpirun()
        _COMM = MPIComm() if use_mpi else SerialComm()
        if _COMM.size > 1:
            install_abort_hook(_COMM)
    return _COMM


def install_abort_hook(comm) -> None:
    """Make an uncaught exception on any rank abort the whole MPI job."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        sys.stderr.write(f"[rank {comm.rank}] uncaught exception, aborting the MPI job:\n")
        sys.stderr.write("".join(traceback.format_exception(exc_type, exc, tb)))
        sys.stderr.flush()
        sys.stdout.flush()
        # MPI_Abort tears down this rank's pipes at once: give mpirun a moment to forward
        # the traceback, or a loaded machine loses it (CI once saw an empty stderr).
        time.sleep(_FORWARD_GRACE_S)
        try:
            comm.abort(1)
        finally:
            previous(exc_type, exc, tb)

    sys.excepthook = hook
