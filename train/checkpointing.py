"""Training checkpoints: atomic per-rank parts, a completion marker, keep-last-k.

Layout of one checkpoint (``<checkpoint dir>/step_00000100/``)::

    rank00000.pt ... rankNNNNN.pt   each rank's own state (its stage's model, optimizer,
                                    EMA, RNG states, sampler position, step)
    config.yaml                     the resolved training config (rank 0)
    index.json                      step, world size, topology, part names (rank 0)
    COMPLETE                        written last, after every rank's part is durable

Every file is written to a temporary name in the same directory, fsynced, renamed over the
final name and the directory fsynced, so a crash (even ``kill -9``) leaves either the old
file or the new one, never a torn file. A checkpoint without ``COMPLETE`` is never picked
by :func:`latest_checkpoint`. Parts hold only tensors and plain containers and are loaded
with ``torch.load(weights_only=True)``: nothing is unpickled as code.

This module does no communication: callers pass ``barrier`` (the world barrier) so the
marker is written only after all parts exist. Multi-node runs need a shared filesystem
for the checkpoint directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

FORMAT_VERSION = 1
COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


def fsync_dir(path: str | Path) -> None:
    """Make a rename/creation inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _default_mode() -> int:
    """Permission bits a plain ``open(path, "w")`` would give under this process's umask."""
    umask = os.umask(0o022)  # reading the umask means setting it; restore at once
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_mode()


def _atomic(path: Path, write: Callable[[object], None]) -> None:
    """Write through a unique temp file in ``path``'s folder, fsync, rename, fsync the
    folder. The temp name is unique across processes and hosts (ranks on a shared file
    system may write the same file), and the result gets ordinary permissions (mkstemp
    alone makes 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _FILE_MODE)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, rename)."""
    _atomic(Path(path), lambda fh: fh.write(data))


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic(Path(path), lambda fh: torch.save(obj, fh))


def load_part(path: str | Path) -> dict:
    """Load a part with ``weights_only=True`` onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def part_name(rank: int) -> str:
    return f"rank{rank:05d}.pt"


def list_checkpoints(root: str | Path, complete_only: bool = True) -> list[tuple[int, Path]]:
    """(step, dir) of the checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir() and (not complete_only or (child / COMPLETE).is_file()):
            out.append((int(m.group(1)), child))
    return sorted(out)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint directory under ``root``, or ``None``."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def _remove(path: Path) -> None:
    # Drop the marker first: a directory half-deleted by a crash is then never picked.
    marker = path / COMPLETE
    if marker.exists():
        marker.unlink()
        fsync_dir(path)
    shutil.rmtree(path, ignore_errors=True)


def prune(root: str | Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` complete checkpoints; drop older or incomplete ones
    that are older than the newest complete one (leftovers of crashed writes)."""
    complete = list_checkpoints(root)
    if not complete:
        return
    newest = complete[-1][0]
    keep = {p for _, p in complete[-keep_last:]}
    for step, path in list_checkpoints(root, complete_only=False):
        if path not in keep and step <= newest:
            _remove(path)


def save_checkpoint(root: str | Path, step: int, rank: int, state: dict, *,
                    world_size: int, config_yaml: str, meta: dict | None = None,
                    barrier: Callable[[], None] = lambda: None, keep_last: int = 3) -> Path:
    """Collectively write checkpoint ``step``: every rank calls this with its own ``state``.

    ``meta`` (rank 0, JSON-able: e.g. topology) goes into ``index.json``. Returns the
    checkpoint directory.
    """
    path = step_dir(root, step)
    if rank == 0:
        path.mkdir(parents=True, exist_ok=True)
        fsync_dir(path.parent)
        if (path / COMPLETE).exists():  # re-writing a step: invalidate before touching parts
            (path / COMPLETE).unlink()
            fsync_dir(path)
    barrier()
    path.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, path / part_name(rank))
    if rank == 0:
        atomic_write_bytes(path / "config.yaml", config_yaml.encode())
        index = {"format": FORMAT_VERSION, "step": step, "world_size": world_size,
                 "parts": [part_name(r) for r in range(world_size)], **(meta or {})}
        atomic_write_bytes(path / "index.json", json.dumps(index, indent=1).encode())
    barrier()
    if rank == 0:
        atomic_write_bytes(path / COMPLETE, f"{step}\n".encode())
        prune(root, keep_last)
    return path


def read_index(path: str | Path) -> dict:
    """``index.json`` of a checkpoint; raises if the checkpoint is not complete."""
    path = Path(path)
    if not (path / COMPLETE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {COMPLETE} marker)")
    return json.loads((path / "index.json").read_text())


def check_stage_cuts(path: str | Path, index: dict, cuts: list[int] | None) -> None:
    """Refuse to resume a pipeline run whose stage cuts differ from the checkpoint's.

    Each rank's part holds its stages' parameters and optimizer state, so different cuts
    (``parallel.costs`` re-measured, or ``parallel.stage_cuts`` changed) would put them on
    the wrong ranks. Checkpoints written before the cuts were recorded are not checked.
    """
    saved = index.get("stage_cuts")
    if saved is None or cuts is None or list(saved) == list(cuts):
        return
    raise ValueError(f"{path} was written with pipeline stage cuts {list(saved)}; this run "
                     f"cuts the model at {list(cuts)} (parallel.costs or parallel.stage_cuts "
                     f"changed since, or, for a wave placement, the per-rank balancing of "
                     f"2026-11-23). Resume with parallel.stage_cuts={list(saved)}")


def load_checkpoint(path: str | Path, rank: int, world_size: int,
                    expect: dict | None = None, stage_cuts: list[int] | None = None) -> dict:
    """Load this rank's part of checkpoint ``path``.

    ``expect`` (e.g. the topology) must match the values stored in ``index.json``; a
    checkpoint written by a different world size or topology is refused with a message
    naming both (resharding is not supported). ``stage_cuts``: the pipeline's cuts, see
    :func:`check_stage_cuts`.
    """
    index = read_index(path)
    check_stage_cuts(path, index, stage_cuts)
    if index["world_size"] != world_size:
        raise ValueError(f"{path} was written by {index['world_size']} ranks, this job has "
                         f"{world_size}; resume with the same mpirun -n and parallel settings")
    for key, value in (expect or {}).items():
        if index.get(key) != value:
            raise ValueError(f"{path}: checkpoint has {key}={index.get(key)!r}, this run "
                             f"{value!r}; resume with the same settings")
    return load_part(Path(path) / part_name(rank))
