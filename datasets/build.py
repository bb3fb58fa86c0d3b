"""``matris-data build``: convert a source into a sharded dataset root (serial or mpirun).

Each rank converts its slice of the input, writes its own shards and a summary under
``_work/``; after a barrier rank 0 merges the summaries into ``index/``, ``splits/`` and
finally ``manifest.yaml`` (see :mod:`matris.datasets.finalize`).

Work split over R ranks:

* at least R input files: contiguous blocks of files balanced by bytes, so with
  ``--shards R`` (the default) the manifest order equals the serial build's order;
* fewer files than ranks (e.g. one MPtrj JSON): every rank parses the stream and converts
  items ``k`` with ``k % R == rank`` (parsing is repeated, conversion/checks/encoding split).

Shards: ``S = max(--shards, R)`` shard ids; rank r owns ids ``j ≡ r (mod R)`` and deals its
frames round-robin over them. Global frame order = shards by id, frames in write order.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import layout
from .parallel import get_comm
from .schema import FrameError, normalize_frame
from .shards import ShardWriter
from .sources import SourceError, SourceOptions, make_source
from .stats import RankStats
from .validate import MIN_DISTANCE, check_frame

log = logging.getLogger("matris.datasets.build")
MAX_LISTED_REJECTS = 1000


class BuildError(RuntimeError):
    """The build cannot produce a dataset (strict-mode reject, empty input, ...)."""


@dataclass
class BuildConfig:
    """Inputs of one build. ``split`` fractions are train,val,test (by group_id)."""

    source: str
    inputs: list
    out: Path
    shards: int | None = None
    split: tuple = (0.9, 0.05, 0.05)
    seed: int = 0
    strict: bool = False
    compress: bool = False
    overwrite: bool = False
    min_distance: float = MIN_DISTANCE
    options: SourceOptions = field(default_factory=SourceOptions)
    progress: bool = True


def assign_files(sizes: list[int], size: int, rank: int) -> tuple[list[int], bool]:
    """File indices for ``rank`` and whether items are strided (fewer files than ranks)."""
    n = len(sizes)
    if size == 1:
        return list(range(n)), False
    if n < size:
        return list(range(n)), True
    # Contiguous blocks with ~equal bytes; each rank gets at least one file.
    cum = np.cumsum(np.maximum(np.asarray(sizes, dtype=float), 1.0))
    total = cum[-1]
    cuts = [0]
    for r in range(1, size):
        cut = int(np.searchsorted(cum, total * r / size, side="left")) + 1
        cut = min(max(cut, cuts[-1] + 1), n - (size - r))
        cuts.append(cut)
    cuts.append(n)
    return list(range(cuts[rank], cuts[rank + 1])), False


class _RankBuild:
    """State of one rank's conversion."""

    def __init__(self, cfg: BuildConfig, comm):
        self.cfg, self.comm = cfg, comm
        self.out = Path(cfg.out)
        self.n_shards = max(cfg.shards or comm.size, comm.size)
        self.my_shards = [j for j in range(self.n_shards) if j % comm.size == comm.rank]
        self.writers: dict[int, ShardWriter] = {}
        self.stats = RankStats()
        self.rejects: list[dict] = []
        self.n_rejected = 0
        self.kept = 0
        self.seen = 0

    def reject(self, path, frame, reason: str) -> None:
        msg = f"{path}: frame {frame}: {reason}"
        if self.cfg.strict:
            raise BuildError(f"rejected (--strict): {msg}")
        log.warning("skipping %s", msg)
        self.n_rejected += 1
        if len(self.rejects) < MAX_LISTED_REJECTS:
            self.rejects.append({"file": str(path), "frame": frame, "reason": reason})

    def write(self, frame: dict) -> None:
        sid = self.my_shards[self.kept % len(self.my_shards)]
        writer = self.writers.get(sid)
        if writer is None:
            writer = self.writers[sid] = ShardWriter(
                self.out / layout.SHARDS / layout.shard_name(sid), compress=self.cfg.compress,
                meta={"shard_id": sid, "source": self.cfg.source})
        writer.append(frame)
        self.stats.add(sid, frame)
        self.kept += 1

    def run(self, source, files: list[Path], strided: bool, bar) -> None:
        size, rank = self.comm.size, self.comm.rank
        k = 0
        for path in files:
            try:
                for index, raw in source.iter_file(path):
                    if strided:
                        mine, k = (k % size == rank), k + 1
                        if not mine:
                            continue
                    self.seen += 1
                    try:
                        frame = normalize_frame(source.convert(path, index, raw))
                        check_frame(frame, self.cfg.min_distance)
                    except (FrameError, ValueError, TypeError, KeyError, IndexError) as exc:
                        self.reject(path, index, str(exc))
                    else:
                        self.write(frame)
                    if bar is not None:
                        bar.update(1)
            except SourceError as exc:
                # In strided mode every rank parses the file: report the error once.
                if not strided or rank == 0:
                    self.reject(exc.path, exc.frame, exc.reason)

    def close(self) -> list[dict]:
        infos = []
        for sid in sorted(self.writers):
            info = self.writers[sid].close()
            info["shard_id"] = sid
            infos.append(info)
        self.writers.clear()
        return infos

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()
        self.writers.clear()

    def save_summary(self, infos: list[dict]) -> None:
        """Write this rank's summary (JSON + .npz, no pickle) for rank 0 to merge."""
        work = self.out / layout.WORK
        work.mkdir(parents=True, exist_ok=True)
        st = self.stats
        arrays = {"ctc": st.ctc, "cty": st.cty, "element_atoms": st.element_atoms,
                  "element_frames": st.element_frames}
        for info in infos:
            s = st.shards[info["shard_id"]]
            sid = info["shard_id"]
            arrays[f"natoms_{sid}"] = np.asarray(s.natoms, np.int32)
            arrays[f"epa_{sid}"] = np.asarray(s.energy_per_atom, np.float64)
            arrays[f"fmax_{sid}"] = np.asarray(s.fmax, np.float32)
            info["groups"] = s.groups
        np.savez(work / f"rank-{self.comm.rank:05d}.npz", **arrays)
        summary = {"rank": self.comm.rank, "shards": infos, "rejects": self.rejects,
                   "n_rejected": self.n_rejected, "n_seen": self.seen,
                   "labels": st.labels, "yty": st.yty, "n_fit": st.n_fit,
                   "stress_min": st.stress_min if np.isfinite(st.stress_min) else None,
                   "stress_max": st.stress_max if np.isfinite(st.stress_max) else None}
        tmp = work / f"rank-{self.comm.rank:05d}.json.tmp"
        tmp.write_text(json.dumps(summary))
        tmp.replace(work / f"rank-{self.comm.rank:05d}.json")


def _progress(comm, enabled: bool):
    if not enabled or comm.rank != 0:
        return None
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (CI logs, pipes).
    return tqdm(desc="converting", unit=" frames", disable=None, file=sys.stderr)


def build_dataset(cfg: BuildConfig, comm=None) -> dict | None:
    """Run a build; return the manifest on rank 0 (None on other ranks)."""
    from .finalize import finalize

    comm = comm or get_comm()
    out = Path(cfg.out)
    if (out / layout.MANIFEST).exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} already holds a dataset ({layout.MANIFEST}); "
                              "pass --overwrite to replace it")
    source = make_source(cfg.source, cfg.options)
    files = source.expand(cfg.inputs)
    if not files:
        raise BuildError("empty input: no files given")
    if comm.rank == 0:
        layout.prepare_root(out, cfg.overwrite)
    comm.barrier()
    mine, strided = assign_files([f.stat().st_size for f in files], comm.size, comm.rank)
    work = _RankBuild(cfg, comm)
    bar = _progress(comm, cfg.progress)
    try:
        work.run(source, [files[i] for i in mine], strided, bar)
        infos = work.close()
    except BaseException:
        work.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    work.save_summary(infos)
    comm.barrier()
    manifest = None
    if comm.rank == 0:
        manifest = finalize(cfg, files, comm.size)
    comm.barrier()
    return manifest
