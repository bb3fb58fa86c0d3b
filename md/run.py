"""Run an MD simulation or a relaxation with logging, trajectory, plot and summary.

Used by `matris-md`; also callable from Python. Every function writes into `out_dir`:
``thermo.csv`` (MD) or ``relax.csv``, ``thermo.png``, a trajectory, ``final.extxyz``
and ``summary.json``, and returns the summary dict.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from matris.md import drivers
from matris.md.observers import (
    Progress,
    RelaxLog,
    ThermoLog,
    TrajectoryWriter,
    current_fmax,
    energy_drift,
)
from matris.md.plots import plot_thermo


def _calc_stats(atoms: Atoms) -> dict:
    nl = getattr(atoms.calc, "neighbors", None)
    if nl is None:
        return {}
    return {"graph_builds": nl.builds, "graph_reuses": nl.reuses,
            "model_evaluations": getattr(atoms.calc, "evaluations", None)}


def _finish(atoms: Atoms, out: Path, log, summary: dict, title: str,
            extra: dict | None) -> dict:
    write(out / "final.extxyz", atoms, format="extxyz")
    summary.update(extra or {})
    cols = {c: log.column(c) for c in log.columns}
    plot_thermo(cols, out / "thermo.png", title=title, n_atoms=len(atoms))
    summary.update(_calc_stats(atoms))
    # NaN (pressure/volume of non-periodic systems) is not valid JSON: write null.
    summary = {k: None if isinstance(v, float) and not np.isfinite(v) else v
               for k, v in summary.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_md(atoms: Atoms, out_dir: str | Path, ensemble: str, steps: int, *,
           timestep_fs: float = 1.0, temperature_K: float = 300.0, pressure_GPa: float = 0.0,
           thermostat: str = "langevin", anisotropic: bool = False,
           friction_per_fs: float = 0.01, tdamp_fs: float | None = None,
           pdamp_fs: float | None = None, seed: int | None = 0, init_velocities: bool = True,
           log_every: int = 10, traj_every: int = 100, traj_format: str = "extxyz",
           progress: bool = True, extra: dict | None = None) -> dict:
    """MD of `atoms` (calculator attached) for `steps` steps; see module docstring.

    Initial momenta: Maxwell–Boltzmann at `temperature_K` (seeded, zero total momentum)
    unless `init_velocities` is False. For NVE the summary has the energy drift in
    meV/atom/ps (least-squares slope of Etot over the logged steps).
    """
    if steps < 0 or log_every < 1 or traj_every < 0:
        raise ValueError("need steps >= 0, log_every >= 1 and traj_every >= 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dyn = drivers.make_dynamics(
        atoms, ensemble, timestep_fs=timestep_fs, temperature_K=temperature_K,
        pressure_GPa=pressure_GPa, thermostat=thermostat, anisotropic=anisotropic,
        friction_per_fs=friction_per_fs, tdamp_fs=tdamp_fs, pdamp_fs=pdamp_fs, seed=seed)
    if init_velocities:  # after the integrator: it may add a FixCom constraint (fewer dof)
        drivers.init_velocities(atoms, temperature_K, seed)
    log = ThermoLog(dyn, atoms, out / "thermo.csv")
    dyn.attach(log, interval=log_every)
    if hasattr(atoms.calc, "request_stress"):  # the log reads stress (pressure): ask ahead
        calc = atoms.calc
        dyn.attach(lambda: (dyn.nsteps + 1) % log_every == 0 and calc.request_stress(),
                   interval=1)
    traj = None
    if traj_every:
        traj = TrajectoryWriter(atoms, out / f"trajectory.{traj_format}")
        dyn.attach(traj, interval=traj_every)
    bar = Progress(steps, timestep_fs, enabled=progress, desc=ensemble)
    dyn.attach(lambda: bar.update(dyn.nsteps, T=atoms.get_temperature()), interval=1)
    start = time.perf_counter()
    try:
        dyn.run(steps)
    finally:
        wall = time.perf_counter() - start
        bar.close()
        log.close()
        if traj is not None:
            traj.close()
    t, etot = log.column("time_ps"), log.column("Etot_eV")
    half = len(t) // 2
    summary = {
        "ensemble": ensemble, "thermostat": None if ensemble == "nve" else thermostat,
        "n_atoms": len(atoms), "steps": int(dyn.nsteps), "timestep_fs": timestep_fs,
        "wall_s": wall, "ms_per_step": 1000.0 * wall / max(steps, 1),
        "ns_per_day": steps * timestep_fs * 1e-6 * 86400.0 / wall if wall > 0 else None,
        "mean_T_K_second_half": float(np.mean(log.column("T_K")[half:])),
        "mean_P_GPa_second_half": float(np.mean(log.column("P_GPa")[half:])),
        "final_volume_A3": float(log.column("volume_A3")[-1]),
        "final_Epot_eV": float(log.column("Epot_eV")[-1]),
        "trajectory_frames": traj.frames if traj is not None else 0,
    }
    if ensemble == "nve":
        summary["drift_meV_per_atom_per_ps"] = energy_drift(t, etot, len(atoms))
        summary["Etot_std_meV_per_atom"] = float(1000.0 * np.std(etot) / len(atoms))
    return _finish(atoms, out, log, summary, f"{ensemble.upper()} {atoms.get_chemical_formula()}",
                   extra)


def run_relax(atoms: Atoms, out_dir: str | Path, *, fmax: float = 0.05, steps: int = 500,
              optimizer: str = "FIRE", relax_cell: bool = True, pressure_GPa: float = 0.0,
              traj_every: int = 1, traj_format: str = "extxyz", progress: bool = True,
              extra: dict | None = None) -> dict:
    """Relax positions (and the cell of 3D-periodic structures when `relax_cell`)
    until the largest force (cell included) is below `fmax` eV/Å or `steps` steps."""
    if not fmax > 0 or steps < 0:
        raise ValueError(f"need fmax > 0 and steps >= 0, got fmax={fmax}, steps={steps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opt = drivers.relaxer(atoms, optimizer, relax_cell, pressure_GPa)
    e0 = float(atoms.get_potential_energy())
    log = RelaxLog(opt, atoms, out / "relax.csv")
    opt.attach(log, interval=1)
    traj = None
    if traj_every:
        traj = TrajectoryWriter(atoms, out / f"trajectory.{traj_format}")
        opt.attach(traj, interval=traj_every)
    bar = Progress(steps, None, enabled=progress, desc="relax")
    opt.attach(lambda: bar.update(opt.nsteps, fmax=current_fmax(opt)), interval=1)
    start = time.perf_counter()
    try:
        converged = bool(opt.run(fmax=fmax, steps=steps))
    finally:
        wall = time.perf_counter() - start
        bar.close()
        log.close()
        if traj is not None:
            traj.close()
    summary = {
        "ensemble": "relax", "optimizer": optimizer,
        "relax_cell": bool(relax_cell and atoms.pbc.all()), "n_atoms": len(atoms),
        "converged": converged, "steps": int(opt.nsteps), "fmax_target": fmax,
        "final_fmax": current_fmax(opt), "initial_Epot_eV": e0,
        "final_Epot_eV": float(atoms.get_potential_energy()), "wall_s": wall,
        "final_volume_A3": float(atoms.get_volume()) if atoms.pbc.all() else None,
    }
    return _finish(atoms, out, log, summary, f"relax {atoms.get_chemical_formula()}", extra)
