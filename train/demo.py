"""The main job, end to end (`make demo`): data → 3D-parallel training → test → export → MD.

    python -m matris.train.demo [--out demo_out] [--steps N] [--md-steps N] [--ranks 4]

Every stage runs the project's real command line in a subprocess and prints it, so the
demo doubles as a recipe:

1. ``matris-data build`` shards the embedded periodic-table dataset (teacher-labelled by
   CHGNet, see docs/embedded_dataset.md) and ``matris-data inspect`` describes it;
2. ``mpirun -n 4 matris-train configs/demo.yaml`` trains a small MatRIS with pipeline ×
   data parallelism (PP=2 × DP=2) and the ``wavek`` four-phase schedule;
3. ``matris-train export`` writes the inference checkpoint (EMA weights);
4. ``matris-train eval`` scores it on the held-out **test** split (frames never trained on);
5. ``matris-md`` runs NVT MD of a test-split structure with the exported model;
6. a summary (``summary.md`` / ``summary.json``) gathers the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "demo.yaml"


def _bin(name: str) -> str:
    """A console script of this environment (next to the running interpreter)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def run(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run `cmd`, echo it, tee its output to `log`; return wall seconds or exit on failure."""
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, **(env or {})})
        for line in proc.stdout:
            out.write(line)
            if "it/s" not in line and "s/it" not in line:  # keep progress bars in the log
                print("  " + line.rstrip(), flush=True)
    if proc.wait() != 0:
        sys.exit(f"demo: step failed (exit {proc.returncode}): {shlex.join(cmd)}\n"
                 f"      full log: {log}")
    return time.perf_counter() - t0


def pick_md_structure(data_root: Path, out: Path) -> dict:
    """The largest fully periodic frame of the test split, written as extxyz for matris-md."""
    import ase.io
    from ase import Atoms

    from matris.datasets import ShardedDataset

    ds = ShardedDataset(data_root, split="test")
    best, best_n = None, -1
    for i in range(len(ds)):
        n = int(ds.natoms[i])
        if n > best_n:
            frame = ds[i]
            if bool(frame["pbc"].all()):
                best, best_n = i, n
    frame = ds[best]
    atoms = Atoms(numbers=frame["numbers"], positions=frame["positions"], cell=frame["cell"],
                  pbc=frame["pbc"])
    ase.io.write(out, atoms, format="extxyz")
    return {"test_index": best, "source_id": str(frame.get("source_id", "")),
            "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms)}


def _records(metrics: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, metrics.read_text().splitlines()) if r["kind"] == kind]


def summarize(out: Path, timings: dict, md_pick: dict) -> dict:
    """Collect the figures of every stage into one dict (written as JSON and markdown)."""
    import torch

    manifest_path = out / "data" / "manifest.yaml"
    import yaml

    manifest = yaml.safe_load(manifest_path.read_text())
    evals = json.loads((out / "eval" / "eval_test.json").read_text())
    md = json.loads((out / "md" / "summary.json").read_text())
    records = _records(out / "train" / "metrics.jsonl", "train")
    val = _records(out / "train" / "metrics.jsonl", "val")
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    n_params = sum(v.numel() for k, v in state["state_dict"].items()
                   if not k.endswith("reference_energies"))
    traces = sorted((out / "train").glob("pipeline_trace_step*.json"))
    trace = json.loads(traces[-1].read_text())["otherData"] if traces else {}
    rates = [r["frames_per_s"] for r in records if "frames_per_s" in r]
    atom_rates = [r["atoms_per_s"] for r in records if "atoms_per_s" in r]
    splits = (manifest.get("splits") or {}).get("counts", {})
    return {
        "dataset": {"frames": manifest.get("n_frames"), "elements":
                    len(manifest.get("elements", {}) or {}), "splits": splits},
        "model": {"parameters": n_params, "config": state["config"]},
        "training": {"steps": records[-1]["step"] if records else 0,
                     "median_frames_per_s": statistics.median(rates) if rates else None,
                     "median_atoms_per_s": statistics.median(atom_rates) if atom_rates else None,
                     "final_loss": records[-1]["loss"] if records else None,
                     "pipeline_program": trace.get("program"),
                     "pipeline_bubble_measured": trace.get("bubble"),
                     "pipeline_trace_step": trace.get("step"),
                     # validation split before the first step and after the last
                     "val_first": val[0] if val else None,
                     "val_last": val[-1] if val else None},
        "test": {k: evals[k] for k in ("n_frames", "energy_mae_mev_atom", "forces_mae_mev_a",
                                       "stress_mae_gpa", "magmoms_mae_mub",
                                       "baseline_energy_mae_mev_atom",
                                       "baseline_forces_mae_mev_a") if k in evals},
        "md": {**md_pick, **{k: md[k] for k in ("ensemble", "steps", "timestep_fs",
                                                "ms_per_step", "ns_per_day",
                                                "mean_T_K_second_half") if k in md}},
        "wall_s": timings,
    }


def _val_line(t: dict) -> str:
    first, last = t.get("val_first"), t.get("val_last")
    if not first or not last or first is last:
        return "- **Validation**: n/a"
    return (f"- **Validation** ({int(first['n_frames'])} val frames), step {first['step']} → "
            f"{last['step']}: energy {first['energy_mae_mev_atom']:.1f} → "
            f"{last['energy_mae_mev_atom']:.1f} meV/atom, forces "
            f"{first['forces_mae_mev_a']:.1f} → {last['forces_mae_mev_a']:.1f} meV/Å")


def _markdown(s: dict, out: Path) -> str:
    d, t, e, m = s["dataset"], s["training"], s["test"], s["md"]
    bubble = t["pipeline_bubble_measured"]
    lines = [
        "# MatRIS-Janus demo summary", "",
        f"- **Data**: {d['frames']} frames over {d['elements']} elements "
        f"(embedded CHGNet-labelled set); splits {d['splits']}",
        f"- **Model**: {s['model']['parameters']:,} parameters",
        f"- **Training**: {t['steps']} steps, mpirun -n 4 (PP=2 × DP=2), "
        f"{t['pipeline_program']}; median {t['median_frames_per_s']:.1f} frames/s "
        f"({t['median_atoms_per_s']:.0f} atoms/s); measured pipeline bubble "
        + (f"{100 * bubble:.1f}% (step {t['pipeline_trace_step']})" if bubble is not None
           else "n/a"),
        _val_line(t),
        f"- **Test split** ({e.get('n_frames')} held-out frames): energy "
        f"{e.get('energy_mae_mev_atom', float('nan')):.1f} meV/atom, forces "
        f"{e.get('forces_mae_mev_a', float('nan')):.1f} meV/Å, stress "
        f"{e.get('stress_mae_gpa', float('nan')):.3f} GPa (trivial baselines on the same "
        f"frames: composition-only energy {e.get('baseline_energy_mae_mev_atom', float('nan')):.1f}"
        f" meV/atom, zero forces {e.get('baseline_forces_mae_mev_a', float('nan')):.1f} meV/Å)",
        f"- **MD**: {m['ensemble'].upper()} {m['steps']} steps × {m['timestep_fs']} fs of "
        f"{m['formula']} ({m['n_atoms']} atoms, test frame {m['source_id']}): "
        f"{m['ms_per_step']:.1f} ms/step ({m['ns_per_day']:.2f} ns/day), mean T (2nd half) "
        f"{m['mean_T_K_second_half']:.0f} K",
        "- **Wall time per stage (s)**: " + ", ".join(f"{k} {v:.0f}"
                                                        for k, v in s["wall_s"].items()),
        "", f"Figures: {out}/train/learning_curve.png, {out}/eval/parity_test.png, "
        f"{out}/train/pipeline_trace_step*.png (Perfetto: .json), {out}/md/thermo.png", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m matris.train.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output folder (replaced)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--steps", type=int, help="training steps (default: the config's)")
    p.add_argument("--md-steps", type=int, default=200)
    p.add_argument("--md-temperature", type=float, default=600.0)
    p.add_argument("--ranks", type=int, default=4, help="MPI ranks (pp × dp of the config)")
    p.add_argument("overrides", nargs="*", help="extra matris-train key=value overrides")
    args = p.parse_args(argv)
    from matris.datasets.embedded import embedded_dataset_path

    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    logs, timings, t_start = out / "logs", {}, time.perf_counter()
    data = out / "data"
    env1 = {"OMP_NUM_THREADS": "1"}
    timings["data"] = run([_bin("matris-data"), "build", "--source", "extxyz",
                           str(embedded_dataset_path()), "--out", str(data), "--overwrite",
                           "--no-progress"], logs / "build.log", env1)
    run([_bin("matris-data"), "inspect", str(data)], logs / "inspect.log")
    (out / "data_inspect.txt").write_text((logs / "inspect.log").read_text())

    train_cmd = [_bin("mpirun"), "-n", str(args.ranks), _bin("matris-train"), args.config,
                 f"data.root={data}", f"log.out={out / 'train'}", *args.overrides]
    if args.steps is not None:
        train_cmd.append(f"train.steps={args.steps}")
    timings["train"] = run(train_cmd, logs / "train.log", env1)
    model = out / "model.pt"
    run([_bin("matris-train"), "export", str(out / "train"), "--out", str(model)],
        logs / "export.log")
    timings["test"] = run([_bin("matris-train"), "eval", str(model), str(data), "--split",
                           "test", "--out", str(out / "eval")], logs / "eval.log", env1)
    (out / "md").mkdir(exist_ok=True)
    pick = pick_md_structure(data, out / "md" / "start.extxyz")
    timings["md"] = run([_bin("matris-md"), "--model", str(model), "--structure",
                         str(out / "md" / "start.extxyz"), "--ensemble", "nvt",
                         "--temperature", str(args.md_temperature), "--timestep", "1",
                         "--steps", str(args.md_steps), "--out", str(out / "md"),
                         "--threads", "2", "--no-progress"], logs / "md.log")
    timings["total"] = time.perf_counter() - t_start
    summary = summarize(out, timings, pick)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    text = _markdown(summary, out)
    (out / "summary.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
