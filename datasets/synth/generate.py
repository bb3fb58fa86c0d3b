"""Run a plan: build frames, label them with the teacher, check, stream to disk, checkpoint.

Frames are appended to an uncompressed stream in a work directory after each unit, with a
small JSON progress file (units done, byte offset, running statistics). A crashed run resumes
from the last finished unit (the stream is truncated back to the recorded offset); because
each unit draws from its own seeded generator the result is byte-identical to an
uninterrupted run. At the end the stream is gzip-compressed (no timestamp) to the output and
a JSON sidecar with provenance and statistics is written next to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from .config import SynthConfig
from .extxyz import PROPERTIES, format_frame, gzip_deterministic
from .md import md_snapshots
from .perturb import (
    make_static_frame,
    min_distance_ratio,
    nearest_neighbour_distance,
    random_strain,
    supercell_options,
)
from .plan import ParentSpec, Unit, build_parent, build_plan
from .relax import volume_scan
from .teacher import ChgnetTeacher, Labels

FORMAT_VERSION = 1
DATASET_NAME = "matris-ptable-chgnet"
REJECT_REASONS = ("too_close", "teacher_error", "non_finite", "max_force")
#: An MD trajectory whose snapshots fail the checks this many times in a row has collapsed
#: or exploded; it is abandoned (the shortfall is recorded) rather than run on.
MD_MAX_CONSECUTIVE_REJECTS = 3


def sidecar_path(out: Path) -> Path:
    """`name.extxyz.gz` -> `name.json` (provenance and statistics)."""
    name = out.name
    for suffix in (".gz", ".extxyz", ".xyz"):
        name = name.removesuffix(suffix)
    return out.with_name(name + ".json")


@dataclass
class Stats:
    """Running statistics of accepted frames (JSON round-trippable)."""

    frames: int = 0
    by_family: dict[str, int] = field(default_factory=dict)
    by_sampling: dict[str, int] = field(default_factory=dict)
    element_frames: dict[str, int] = field(default_factory=dict)
    element_atoms: dict[str, int] = field(default_factory=dict)
    natoms_hist: dict[str, int] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    rejects: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    shortfall: dict[str, int] = field(default_factory=dict)
    energy_per_atom: list[float] = field(default_factory=lambda: [np.inf, -np.inf])
    force_norm_max: float = 0.0
    force_sum_max: float = 0.0
    stress: list[float] = field(default_factory=lambda: [np.inf, -np.inf])
    magmom: list[float] = field(default_factory=lambda: [np.inf, -np.inf])
    parent_scale: dict[str, float] = field(default_factory=dict)

    def add(self, atoms: Atoms, labels: Labels, family: str, sampling: str, gid: str) -> None:
        n = len(atoms)
        self.frames += 1
        self.by_family[family] = self.by_family.get(family, 0) + 1
        self.by_sampling[sampling] = self.by_sampling.get(sampling, 0) + 1
        symbols = atoms.get_chemical_symbols()
        for s in sorted(set(symbols)):
            self.element_frames[s] = self.element_frames.get(s, 0) + 1
        for s in symbols:
            self.element_atoms[s] = self.element_atoms.get(s, 0) + 1
        self.natoms_hist[str(n)] = self.natoms_hist.get(str(n), 0) + 1
        if gid not in self.groups:
            self.groups.append(gid)
        e = labels.energy / n
        self.energy_per_atom = [min(self.energy_per_atom[0], e), max(self.energy_per_atom[1], e)]
        self.force_norm_max = max(self.force_norm_max,
                                  float(np.linalg.norm(labels.forces, axis=1).max()))
        self.force_sum_max = max(self.force_sum_max,
                                 float(np.linalg.norm(labels.forces.sum(axis=0))))
        self.stress = [min(self.stress[0], float(labels.stress.min())),
                       max(self.stress[1], float(labels.stress.max()))]
        if labels.magmoms is not None:
            self.magmom = [min(self.magmom[0], float(labels.magmoms.min())),
                           max(self.magmom[1], float(labels.magmoms.max()))]

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for key in ("energy_per_atom", "stress", "magmom"):
            d[key] = [float(v) for v in d[key]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Stats:
        return cls(**d)


def check_geometry(atoms: Atoms, cfg: SynthConfig) -> str | None:
    """Reject reason for the structure itself, or None."""
    if min_distance_ratio(atoms) < cfg.min_distance_ratio:
        return "too_close"
    return None


def check_labels(labels: Labels, cfg: SynthConfig) -> str | None:
    """Reject reason for the teacher's labels, or None."""
    arrays = [np.array([labels.energy]), labels.forces, labels.stress]
    if labels.magmoms is not None:
        arrays.append(labels.magmoms)
    if not all(np.isfinite(a).all() for a in arrays):
        return "non_finite"
    if float(np.linalg.norm(labels.forces, axis=1).max()) > cfg.max_force:
        return "max_force"
    return None


class Generator:
    """Executes units with one teacher; caches relaxed parents by group id."""

    def __init__(self, cfg: SynthConfig, teacher: ChgnetTeacher,
                 log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.teacher = teacher
        self.log = log
        self._parents: dict[str, tuple[Atoms, float, float]] = {}

    def relaxed_parent(self, spec: ParentSpec) -> tuple[Atoms, float, float]:
        """(primitive cell at the teacher's volume minimum, nearest-neighbour Å, scale)."""
        if spec.group_id not in self._parents:
            atoms = build_parent(spec)
            scale = 1.0
            if spec.relax:
                atoms, scale = volume_scan(atoms, self.teacher.energy)
            self._parents[spec.group_id] = (atoms, nearest_neighbour_distance(atoms), scale)
        return self._parents[spec.group_id]

    def _info(self, unit: Unit, source_id: str) -> dict[str, str | float]:
        info: dict[str, str | float] = {
            "group_id": unit.parent.group_id, "source_id": source_id,
            "dataset": DATASET_NAME, "task": self.teacher.task_tag,
            "teacher": self.teacher.teacher_tag, "teacher_model": self.teacher.model_tag,
            "family": unit.parent.kind, "prototype": unit.parent.prototype,
            "sampling": unit.mode,
        }
        if unit.mode == "md":
            info["temperature_K"] = unit.temperature_K
        return info

    def _accept(self, atoms: Atoms, stats: Stats) -> Labels | None:
        """Teacher labels of `atoms` if it passes every check, else None (reject counted)."""
        reason = check_geometry(atoms, self.cfg)
        labels = None
        if reason is None:
            try:
                labels = self.teacher.label(atoms) if atoms.calc is None \
                    else self.teacher.labels_from_calculator(atoms)
            except Exception as exc:  # any teacher failure is a reject, not a crash
                self.log(f"  teacher error: {type(exc).__name__}: {exc}")
                reason = "teacher_error"
        if reason is None:
            reason = check_labels(labels, self.cfg)
        if reason is not None:
            stats.rejects[reason] += 1
            return None
        return labels

    def _static(self, unit: Unit, rng: np.random.Generator, stats: Stats) -> Iterator[str]:
        cfg = self.cfg
        parent, nn, _ = self.relaxed_parent(unit.parent)
        accepted, attempts = 0, 0
        while accepted < unit.n_frames and attempts < unit.n_frames * cfg.max_attempts_per_frame:
            attempts += 1
            atoms = make_static_frame(parent, nn, rng, cfg.natoms_min, cfg.natoms_max,
                                      cfg.max_aspect, cfg.max_strain, cfg.rattle_min,
                                      cfg.rattle_max, cfg.rattle_nn_cap)
            labels = self._accept(atoms, stats)
            if labels is None:
                continue
            stats.add(atoms, labels, unit.parent.kind, "static", unit.parent.group_id)
            yield format_frame(atoms, labels,
                               self._info(unit, f"{unit.parent.group_id}/s{accepted:03d}"))
            accepted += 1

    def _md(self, unit: Unit, rng: np.random.Generator, stats: Stats) -> Iterator[str]:
        cfg = self.cfg
        parent, _, _ = self.relaxed_parent(unit.parent)
        options = supercell_options(parent, cfg.md_natoms_min, cfg.md_natoms_max,
                                    cfg.max_aspect)
        atoms = parent.repeat(options[int(rng.integers(len(options)))])
        eps = random_strain(rng, cfg.max_strain)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        accepted, samples, consecutive = 0, 0, 0
        traj = md_snapshots(atoms, self.teacher.calculator, rng, unit.temperature_K,
                            unit.timestep_fs, cfg.md_friction, cfg.md_equilibration,
                            cfg.md_stride)
        tag = unit.unit_id.rsplit(":", 1)[-1]
        try:
            while accepted < unit.n_frames and samples < unit.n_frames * cfg.max_attempts_per_frame:
                try:
                    step, live = next(traj)
                except Exception as exc:  # teacher failure inside the integrator
                    self.log(f"  MD stopped: {type(exc).__name__}: {exc}")
                    stats.rejects["teacher_error"] += 1
                    return
                samples += 1
                labels = self._accept(live, stats)
                if labels is None:
                    consecutive += 1
                    if consecutive >= MD_MAX_CONSECUTIVE_REJECTS:  # trajectory has collapsed
                        self.log(f"  MD {unit.unit_id} abandoned at step {step}")
                        return
                    continue
                consecutive = 0
                frame = live.copy()
                frame.calc = None
                stats.add(frame, labels, unit.parent.kind, "md", unit.parent.group_id)
                sid = f"{unit.parent.group_id}/md{tag}/t{step:04d}"
                yield format_frame(frame, labels, self._info(unit, sid))
                accepted += 1
        finally:
            traj.close()

    def run_unit(self, unit: Unit, stats: Stats) -> list[str]:
        """Frames (extxyz text) of one unit; shortfalls are recorded in `stats`."""
        rng = np.random.default_rng(list(unit.seed))
        frames: list[str] = []
        try:
            body = self._static if unit.mode == "static" else self._md
            frames = list(body(unit, rng, stats))
        except Exception as exc:  # e.g. the volume scan hit a teacher error
            self.log(f"  unit {unit.unit_id} failed: {type(exc).__name__}: {exc}")
            stats.rejects["teacher_error"] += 1
        if unit.parent.group_id in self._parents:
            stats.parent_scale[unit.parent.group_id] = round(
                self._parents[unit.parent.group_id][2], 6)
        if len(frames) < unit.n_frames:
            stats.shortfall[unit.unit_id] = unit.n_frames - len(frames)
        return frames


def fingerprint(cfg: SynthConfig, plan: list[Unit], provenance: dict) -> str:
    """Hash of everything the output depends on (for safe resume)."""
    blob = json.dumps({"format": FORMAT_VERSION, "config": cfg.to_dict(),
                       "teacher": provenance,
                       "plan": [(u.unit_id, u.n_frames) for u in plan]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def generate(cfg: SynthConfig, out: Path, work_dir: Path, teacher: ChgnetTeacher,
             resume: bool = True, log: Callable[[str], None] = print) -> dict:
    """Generate the dataset to `out` (extxyz.gz) and its sidecar; returns the sidecar dict."""
    plan = build_plan(cfg)
    fp = fingerprint(cfg, plan, teacher.provenance())
    work_dir.mkdir(parents=True, exist_ok=True)
    stream, progress = work_dir / "frames.extxyz", work_dir / "progress.json"
    done, offset, stats = 0, 0, Stats()
    if resume and progress.exists() and stream.exists():
        state = json.loads(progress.read_text())
        if state.get("fingerprint") == fp:
            done, offset, stats = state["units_done"], state["bytes"], Stats.from_dict(
                state["stats"])
            log(f"resuming after unit {done}/{len(plan)} ({stats.frames} frames)")
        else:
            log("checkpoint belongs to different settings; starting over")
    gen = Generator(cfg, teacher, log)
    t0 = time.time()
    mode = "r+b" if offset else "wb"
    with open(stream, mode) as fh:
        fh.truncate(offset)
        fh.seek(offset)
        for idx in range(done, len(plan)):
            unit = plan[idx]
            text = "".join(gen.run_unit(unit, stats)).encode()
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
            offset += len(text)
            _write_json_atomic(progress, {"fingerprint": fp, "units_done": idx + 1,
                                          "bytes": offset, "stats": stats.to_dict()})
            elapsed = time.time() - t0
            rate = elapsed / (idx + 1 - done)
            log(f"[{idx + 1}/{len(plan)}] {unit.unit_id}: frames={stats.frames} "
                f"rejects={sum(stats.rejects.values())} elapsed={elapsed:.0f}s "
                f"eta={rate * (len(plan) - idx - 1):.0f}s")
    out.parent.mkdir(parents=True, exist_ok=True)
    gzip_deterministic(stream, out)
    sidecar = build_sidecar(cfg, out, teacher, stats)
    _write_json_atomic(sidecar_path(out), sidecar)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {stats.frames} frames, "
        f"{len(stats.element_frames)} elements) in {time.time() - t0:.0f}s")
    return sidecar


def build_sidecar(cfg: SynthConfig, out: Path, teacher: ChgnetTeacher, stats: Stats) -> dict:
    """Provenance + statistics document (deterministic: no timestamps, no host names)."""
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return {
        "format_version": FORMAT_VERSION,
        "file": out.name,
        "sha256": digest,
        "bytes": out.stat().st_size,
        "dataset": DATASET_NAME,
        "description": ("Teacher-labelled distillation data (NOT DFT): structures generated "
                        "with ASE, labelled by a pretrained universal potential."),
        "command": (f"matris-data synth --teacher {cfg.teacher} --seed {cfg.seed} "
                    f"--frames {cfg.frames} --out {out.name}"),
        "config": cfg.to_dict(),
        "teacher": teacher.provenance(),
        "task": teacher.task_tag,
        "extxyz": {"properties": PROPERTIES,
                   "labels": {"energy": "eV total", "forces": "eV/Å",
                              "stress": "eV/Å³ 3x3 ASE sign", "magmoms": "μB"},
                   "info": ["group_id", "source_id", "dataset", "task", "teacher",
                            "teacher_model", "family", "prototype", "sampling",
                            "temperature_K (md only)"]},
        "stats": {**stats.to_dict(), "n_groups": len(stats.groups),
                  "n_elements": len(stats.element_frames)},
    }
