"""Metrics: JSONL log, TensorBoard (when installed), tqdm progress, validation accumulators.

Only rank 0 writes. ``metrics.jsonl`` holds one JSON object per line::

    {"kind": "train", "step": 10, "loss": ..., "loss_energy": ..., "lr": ..., "grad_norm": ...,
     "frames_per_s": ..., "atoms_per_s": ..., "rss_mb": ..., "max_rss_mb": ..., "time_s": ...}
    {"kind": "val", "step": 50, "energy_mae_mev_atom": ..., "forces_mae_mev_a": ...,
     "stress_mae_gpa": ..., "n_frames": ...}
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from .batch import Labels
from .loss import pairs

VAL_KEYS = {"energy": ("energy_mae_mev_atom", 1000.0), "forces": ("forces_mae_mev_a", 1000.0),
            "stress": ("stress_mae_gpa", 1.0), "magmoms": ("magmoms_mae_mub", 1.0)}


def memory_stats(device: torch.device) -> dict[str, float]:
    """Current and peak resident memory of this process (MB) and, on CUDA, peak allocated."""
    out = {"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        out["rss_mb"] = pages * resource.getpagesize() / 2**20
    except (OSError, IndexError, ValueError):
        pass
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


class MetricsLog:
    """Append-only JSONL (+ TensorBoard) writer; a no-op on ranks other than 0.

    On resume from step ``resume_step`` the lines of later steps (written by the run that
    crashed after that checkpoint) are dropped so the learning curve has no duplicates.
    """

    def __init__(self, out_dir: str | Path, enabled: bool, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.tb = None

    def write(self, kind: str, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **values}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float):
                    self.tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict]:
    """Records of a ``metrics.jsonl`` (optionally only one kind)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if kind is None or rec["kind"] == kind:
                out.append(rec)
    return out


class Throughput:
    """Frames/s and atoms/s since the last :meth:`rates` call."""

    def __init__(self) -> None:
        self.t0, self.frames, self.atoms = time.perf_counter(), 0, 0

    def add(self, frames: int, atoms: int) -> None:
        self.frames += frames
        self.atoms += atoms

    def rates(self) -> dict[str, float]:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        out = {"frames_per_s": self.frames / dt, "atoms_per_s": self.atoms / dt}
        self.t0, self.frames, self.atoms = time.perf_counter(), 0, 0
        return out


class ValAccumulator:
    """Sums of absolute errors and counts per term, plus a capped sample of
    (prediction, label) pairs for parity plots.

    Units of the kept pairs: energy eV/atom, forces eV/Å, stress GPa, magmoms μB.
    """

    def __init__(self, keep: int = 20000) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}
        self.pairs: dict[str, list[np.ndarray]] = {}
        self.kept: dict[str, int] = {}
        self.keep = keep
        self.frames = 0

    def add(self, pred: dict[str, torch.Tensor], labels: Labels) -> None:
        self.frames += len(labels.natoms)
        for term, (p, y) in pairs(pred, labels).items():
            err = (p - y).detach()
            self.sums[term] = self.sums.get(term, 0.0) + float(err.abs().sum())
            self.counts[term] = self.counts.get(term, 0.0) + err.numel()
            room = self.keep - self.kept.get(term, 0)
            if room > 0:
                pair = torch.stack([p.detach(), y.detach()], dim=1)[:room]
                self.pairs.setdefault(term, []).append(pair.cpu().double().numpy())
                self.kept[term] = self.kept.get(term, 0) + len(pair)

    def totals(self) -> dict[str, float]:
        """Flat dict ``sum_<term>``, ``count_<term>``, ``frames`` (to all-reduce over DP)."""
        out = {"frames": float(self.frames)}
        for term in VAL_KEYS:
            out[f"sum_{term}"] = self.sums.get(term, 0.0)
            out[f"count_{term}"] = self.counts.get(term, 0.0)
        return out

    @staticmethod
    def finalize(totals: dict[str, float]) -> dict[str, float]:
        """MAEs in reporting units (meV/atom, meV/Å, GPa, μB) from reduced totals."""
        out: dict[str, float] = {"n_frames": totals["frames"]}
        for term, (key, scale) in VAL_KEYS.items():
            if totals[f"count_{term}"] > 0:
                out[key] = scale * totals[f"sum_{term}"] / totals[f"count_{term}"]
        return out

    def pair_arrays(self) -> dict[str, np.ndarray]:
        """(n, 2) arrays of (prediction, label) per term."""
        return {t: np.concatenate(v) for t, v in self.pairs.items() if v}
