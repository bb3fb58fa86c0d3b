"""Observers attached to ASE dynamics/optimisers: CSV thermo log, trajectory, progress.

Attach with ``dyn.attach(observer, interval=k)``; ASE calls observers before the first
step (step 0) and after every k-th step. CSV columns (MD):
``step, time_ps, T_K, Epot_eV, Ekin_eV, Etot_eV, P_GPa, volume_A3`` — P includes the
kinetic (ideal-gas) term and is NaN, like the volume, unless the cell is 3D-periodic.
Relaxation logs ``step, Epot_eV, fmax_eV_A, P_GPa, volume_A3`` (P without kinetic term).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import Trajectory, write

MD_COLUMNS = ("step", "time_ps", "T_K", "Epot_eV", "Ekin_eV", "Etot_eV", "P_GPa", "volume_A3")
RELAX_COLUMNS = ("step", "Epot_eV", "fmax_eV_A", "P_GPa", "volume_A3")


def pressure_GPa(atoms: Atoms, include_ideal_gas: bool) -> float:
    """Pressure −tr(σ)/3 in GPa (NaN unless 3D-periodic)."""
    if not atoms.pbc.all():
        return float("nan")
    stress = atoms.get_stress(voigt=True, include_ideal_gas=include_ideal_gas)
    return float(-stress[:3].mean() / units.GPa)


class _CsvLog:
    def __init__(self, path: str | Path, columns: tuple[str, ...]):
        self.path = Path(path)
        self.columns = columns
        self.rows: list[tuple] = []
        self._file = open(self.path, "w", newline="")  # noqa: SIM115 (closed in close())
        self._csv = csv.writer(self._file)
        self._csv.writerow(columns)

    def _write(self, row: tuple) -> None:
        self.rows.append(row)
        self._csv.writerow([f"{v:.12g}" if isinstance(v, float) else v for v in row])
        self._file.flush()

    def column(self, name: str) -> np.ndarray:
        k = self.columns.index(name)
        return np.array([r[k] for r in self.rows], dtype=float)

    def close(self) -> None:
        self._file.close()


class ThermoLog(_CsvLog):
    """MD thermo log (one row per call; the step is the integrator's step count)."""

    def __init__(self, dyn, atoms: Atoms, path: str | Path):
        super().__init__(path, MD_COLUMNS)
        self.dyn, self.atoms = dyn, atoms

    def __call__(self) -> None:
        a = self.atoms
        epot = float(a.get_potential_energy())
        ekin = float(a.get_kinetic_energy())
        volume = float(a.get_volume()) if a.pbc.all() else float("nan")
        self._write((int(self.dyn.nsteps), float(self.dyn.get_time() / (1000 * units.fs)),
                     float(a.get_temperature()), epot, ekin, epot + ekin,
                     pressure_GPa(a, include_ideal_gas=True), volume))


class RelaxLog(_CsvLog):
    """Relaxation log; fmax is that of the optimised object (atoms or cell filter)."""

    def __init__(self, opt, atoms: Atoms, path: str | Path):
        super().__init__(path, RELAX_COLUMNS)
        self.opt, self.atoms = opt, atoms

    def __call__(self) -> None:
        a = self.atoms
        volume = float(a.get_volume()) if a.pbc.all() else float("nan")
        self._write((int(self.opt.nsteps), float(a.get_potential_energy()), current_fmax(self.opt),
                     pressure_GPa(a, include_ideal_gas=False), volume))


def current_fmax(opt) -> float:
    """Largest force norm (eV/Å; cell 'forces' included under a cell filter)."""
    return float(opt.optimizable.gradient_norm(opt.optimizable.get_gradient()))


class TrajectoryWriter:
    """Appends frames (with energy, forces, stress when available) to an extxyz file
    or an ASE .traj file, chosen by the file suffix."""

    def __init__(self, atoms: Atoms, path: str | Path):
        self.atoms = atoms
        self.path = Path(path)
        self.frames = 0
        if self.path.suffix == ".traj":
            self._traj = Trajectory(str(self.path), "w", atoms)
            self._file = None
        elif self.path.suffix in (".xyz", ".extxyz"):
            self._traj = None
            self._file = open(self.path, "w")  # noqa: SIM115 (closed in close())
        else:
            raise ValueError(f"trajectory file must end in .extxyz, .xyz or .traj: {path}")

    def __call__(self) -> None:
        if self._traj is not None:
            self._traj.write()
        else:
            write(self._file, self.atoms, format="extxyz")
            self._file.flush()
        self.frames += 1

    def close(self) -> None:
        if self._traj is not None:
            self._traj.close()
        else:
            self._file.close()


class Progress:
    """tqdm progress bar with ns/day (MD) or fmax (relaxation) in the postfix."""

    def __init__(self, total: int, timestep_fs: float | None, enabled: bool = True,
                 desc: str = "md"):
        from tqdm import tqdm

        self.timestep_fs = timestep_fs
        self.bar = tqdm(total=total, desc=desc, unit="step", disable=not enabled,
                        dynamic_ncols=True, mininterval=0.5)
        self.start = time.perf_counter()
        self.done = 0

    def update(self, steps_done: int, **info) -> None:
        self.bar.update(steps_done - self.done)
        self.done = steps_done
        post = {k: f"{v:.4g}" for k, v in info.items()}
        if self.timestep_fs is not None:
            post["ns/day"] = f"{self.ns_per_day():.3g}"
        self.bar.set_postfix(post, refresh=False)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def ns_per_day(self) -> float:
        """Simulated ns per wall-clock day so far."""
        wall = self.elapsed()
        if wall <= 0 or self.timestep_fs is None:
            return float("nan")
        return self.done * self.timestep_fs * 1e-6 * 86400.0 / wall

    def close(self) -> None:
        self.bar.close()


def energy_drift(time_ps: np.ndarray, etot_eV: np.ndarray, n_atoms: int) -> float:
    """Slope of a least-squares line through Etot(t), in meV/atom/ps (NaN if < 3 points)."""
    time_ps = np.asarray(time_ps, dtype=float)
    if time_ps.size < 3 or np.ptp(time_ps) == 0:
        return float("nan")
    slope = np.polyfit(time_ps, np.asarray(etot_eV, dtype=float), 1)[0]
    return float(1000.0 * slope / n_atoms)
