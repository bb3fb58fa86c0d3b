"""MD speed: ms per Langevin step of MatRIS-Janus against CHGNet and the official MatRIS.

Every measurement runs in a fresh subprocess with one torch thread: ASE Langevin
(300 K, 1 fs, friction 0.01/fs, Maxwell–Boltzmann start, seed 0), `--warmup` steps,
then per-step wall times of `--steps` steps (or fewer when `--budget` seconds run
out); the figure is their median. Engines:

- ``ours``: `matris.md.MatRISCalculator` (float32, skin 1 Å: neighbour-list reuse on),
  random weights, in the project venv.
- ``chgnet``: CHGNet 0.4.2 pretrained 0.3.0 (412,525 parameters) through its ASE
  calculator, in ``--chgnet-python``'s venv.
- ``official``: the official ``matris`` 1.0.0 wheel's ``MatRISCalculator`` (task efs,
  mode torch, activation_checkpoint off) with random weights loaded through its real
  loader, the config mirroring ours (widths, blocks, Fourier angles, LayerNorm,
  cutoffs, energy head), in ``--official-python``'s venv.

Structures: Si diamond (a = 5.43 Å) and rocksalt MgO (a = 4.21 Å) with a quarter of Mg
replaced alternately by Ca and Zn, as 2³/3³/5³ cubic supercells (64, 216, 1000 atoms),
rattled by 0.05 Å. Engines of one (system, size) run back to back in each round
(``--plan`` sets models, sizes and rounds); ratios are taken within a round, then the
median over rounds. Results (JSON + markdown) are rewritten after every job.

    python benchmarks/md_speed.py --out benchmarks/results --date 2026-11-21
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = {
    # name: (our preset overrides on top of "10m", official MatRIS kwargs)
    "small": (dict(num_blocks=4, width=40, energy_head=[64, 32]),
              dict(num_layers=4, node_feat_dim=40, edge_feat_dim=40, three_body_feat_dim=40,
                   mlp_hidden_dims=(64, 32))),
    "10m": ({}, dict(num_layers=10, mlp_hidden_dims=(256, 192))),
}
OFFICIAL_COMMON = dict(three_body_expansion="fourier", num_radial=7, num_angular=7,
                       norm_type="layer", pairwise_cutoff=6.0, three_body_cutoff=4.5)
SIZES = {64: 2, 216: 3, 1000: 5}


# --------------------------------------------------------------------------- worker side
def make_structure(system: str, n_atoms: int):
    import numpy as np
    from ase.build import bulk

    rep = SIZES[n_atoms]
    if system == "si":
        atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(rep)
    elif system == "oxide":
        atoms = bulk("MgO", "rocksalt", 4.21, cubic=True).repeat(rep)
        mg = np.flatnonzero(atoms.numbers == 12)
        swap = mg[::4]
        atoms.numbers[swap[0::2]] = 20  # Ca
        atoms.numbers[swap[1::2]] = 30  # Zn
    else:
        raise ValueError(system)
    atoms.rattle(0.05, seed=0)
    return atoms


def build_calculator(engine: str, model: str, workdir: Path, job: dict):
    """(calculator, parameter count)."""
    if engine == "ours":
        import torch

        from matris.config import preset
        from matris.md import MatRISCalculator
        from matris.model import MatRIS

        torch.manual_seed(0)
        net = MatRIS(preset("10m", **MODELS[model][0]))
        # stress="always": like the official (task efs) and CHGNet calculators.
        calc = MatRISCalculator(net, device="cpu", dtype="float32", skin=1.0,
                                checkpoint=job["ours_checkpoint"], stress="always")
        return calc, sum(p.numel() for p in net.parameters())
    if engine == "chgnet":
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        net = CHGNet.load(use_device="cpu", verbose=False)
        return (CHGNetCalculator(model=net, use_device="cpu"),
                sum(p.numel() for p in net.parameters()))
    if engine == "official":
        import torch

        from matris.applications.base import MatRISCalculator
        from matris.model import MatRIS

        torch.manual_seed(0)
        net = MatRIS(**OFFICIAL_COMMON, **MODELS[model][1])
        path = workdir / f"official_{model}.pt"
        torch.save({"config": net.config, "state_dict": net.state_dict()}, path)
        calc = MatRISCalculator(model=str(path), task="efs", device="cpu", mode="torch",
                                activation_checkpoint=False)
        return calc, sum(p.numel() for p in net.parameters())
    raise ValueError(engine)


def worker(job: dict) -> dict:
    import numpy as np
    import torch
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    torch.set_num_threads(1)
    load_start = os.getloadavg()
    atoms = make_structure(job["system"], job["n_atoms"])
    t0 = time.perf_counter()
    calc, n_params = build_calculator(job["engine"], job["model"], Path(job["workdir"]), job)
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=300, friction=0.01 / units.fs,
                   fixcm=False, rng=np.random.default_rng(0))
    atoms.get_forces()  # first evaluation (graph build, lazy init) is not timed
    setup_s = time.perf_counter() - t0
    dyn.run(job["warmup"])
    steps, start = [], time.perf_counter()
    while len(steps) < job["steps"] and (len(steps) < job["min_steps"]
                                         or time.perf_counter() - start < job["budget"]):
        t = time.perf_counter()
        dyn.run(1)  # one force evaluation per step (ASE caches the others)
        steps.append(time.perf_counter() - t)
    out = {**job, "params": int(n_params), "setup_s": setup_s, "timed_steps": len(steps),
           "ms_per_step": 1000 * statistics.median(steps) if steps else None,
           "ms_per_step_all": [1000 * s for s in steps],
           "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "final_T_K": float(atoms.get_temperature()),
           "loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    nl = getattr(calc, "neighbors", None)
    if nl is not None:
        graph = nl.graph(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
        out.update(graph_builds=nl.builds, graph_reuses=nl.reuses, n_angles=graph.n_angles,
                   checkpointed=bool(calc._use_checkpoint(graph)))
    return out


# --------------------------------------------------------------------------- driver side
def run_job(python: str, job: dict, mem_gb: float, timeout: float) -> dict:
    """Run one worker in a fresh process (1 thread, address-space limit) and parse it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)

    def limit():
        lim = int(mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    cmd = [python, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd="/tmp", preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {**job, "error": f"timeout after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout)[-800:]
    return {**job, "error": f"exit {proc.returncode}: {tail}"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    p.add_argument("--machine", default="2-vCPU CPU VM")
    p.add_argument("--tag", default="", help="suffix of the result file names")
    p.add_argument("--plan", default="small:64,216:2;10m:64,216:1;small:1000:1",
                   help="';'-separated MODEL:SIZES:ROUNDS entries, run in this order")
    p.add_argument("--systems", default="si,oxide")
    p.add_argument("--engines", default="ours,chgnet,official")
    p.add_argument("--skip", default="10m:official:216",
                   help="comma list of model:engine:size to skip (memory/time)")
    p.add_argument("--ours-checkpoint", choices=("auto", "off"), default="off",
                   help="our calculator's recompute setting; 'off' matches the official "
                        "calculator's activation_checkpoint=False")
    p.add_argument("--append", action="store_true",
                   help="add to the existing result files of the same name")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--min-steps", type=int, default=3)
    p.add_argument("--budget", type=float, default=60.0, help="s of timed steps per job")
    p.add_argument("--mem-gb", type=float, default=12.0, help="address-space cap per job")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--ours-python", default=sys.executable)
    p.add_argument("--chgnet-python", default="/root/side-envs/chgnet/bin/python")
    p.add_argument("--official-python", default="/root/side-envs/matris-official/bin/python")
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path("/tmp/md_speed_work")
    workdir.mkdir(exist_ok=True)
    pythons = {"ours": args.ours_python, "chgnet": args.chgnet_python,
               "official": args.official_python}
    skip = set(filter(None, args.skip.split(",")))
    engines = args.engines.split(",")
    meta = {"date": args.date, "machine": args.machine, "threads": 1,
            "loadavg_start": os.getloadavg(), "args": vars(args)}
    stem = f"md_speed_{args.date}_{args.machine.replace(' ', '-')}"
    stem += f"_{args.tag}" if args.tag else ""
    results, t_start = [], time.time()
    if args.append and (out_dir / f"{stem}.json").exists():
        old = json.loads((out_dir / f"{stem}.json").read_text())
        results = old["runs"]
        meta["loadavg_start"] = old["meta"]["loadavg_start"]
        meta["parts"] = [*old["meta"].get("parts", [old["meta"]["args"]]), vars(args)]
        t_start -= old["meta"]["wall_s"]
    for model, sizes, rounds in plan(args.plan):
        for rnd in range(rounds):
            for system in args.systems.split(","):
                for size in sizes:
                    for engine in engines:
                        # CHGNet has one size (0.4M): it runs with the small model's jobs.
                        if (engine == "chgnet" and model != "small") or \
                                f"{model}:{engine}:{size}" in skip:
                            continue
                        job = dict(engine=engine, model=model, system=system, n_atoms=size,
                                   round=rnd, warmup=args.warmup, steps=args.steps,
                                   min_steps=args.min_steps, budget=args.budget,
                                   workdir=str(workdir),
                                   ours_checkpoint=(False if args.ours_checkpoint == "off"
                                                    else "auto"))
                        res = run_job(pythons[engine], job, args.mem_gb, args.timeout)
                        results.append(res)
                        msg = (f"{res['ms_per_step']:.1f} ms/step" if res.get("ms_per_step")
                               else res.get("error", "?")[:200])
                        print(f"[round {rnd}] {model:5s} {engine:8s} {system:5s} {size:5d}: "
                              f"{msg}  load {os.getloadavg()[0]:.2f}", flush=True)
                        # Written after every job, so an interrupted run keeps its results.
                        meta.update(loadavg_end=os.getloadavg(), wall_s=time.time() - t_start)
                        (out_dir / f"{stem}.json").write_text(
                            json.dumps({"meta": meta, "runs": results}, indent=1) + "\n")
                        (out_dir / f"{stem}.md").write_text(report(meta, results))
    print(f"wrote {out_dir / stem}.json and .md")
    return 0


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _load(values) -> str:
    return "(" + ", ".join(f"{x:.2f}" for x in values) + ")"


def _fmt(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}"


def report(meta: dict, runs: list[dict]) -> str:
    """Markdown: per model, ms/step per engine (median over rounds) and speed ratios
    (taken within each round, then the median)."""
    ok = [r for r in runs if r.get("ms_per_step")]
    params = {(r["engine"], r["model"]): r["params"] for r in ok}
    lines = [f"# MD speed, {meta['date']}, {meta['machine']}", "",
             "ms per ASE Langevin step (300 K, 1 fs), 1 torch thread, median over timed "
             "steps after warm-up, then over rounds. Ratios > 1 mean MatRIS-Janus is faster; "
             "they are computed within a round (engines back to back) and their median "
             "is shown.", "",
             f"Load average (1, 5, 15 min) at start {_load(meta['loadavg_start'])}, at end "
             f"{_load(meta['loadavg_end'])}; wall {meta['wall_s'] / 60:.0f} min.", ""]
    for (engine, model), n in sorted(params.items()):
        lines.append(f"- {engine} / {model}: {n:,} parameters")
    lines.append("")
    for model in dict.fromkeys(r["model"] for r in runs):
        lines += [f"## model {model}", "",
                  "| system | atoms | ours | official | CHGNet | official/ours | "
                  "CHGNet/ours | ours peak RSS GB |", "|---|---|---|---|---|---|---|---|"]
        keys = dict.fromkeys((r["system"], r["n_atoms"]) for r in runs if r["model"] == model)
        for system, n in keys:
            def times(engine, system=system, n=n, model=model):
                return {r["round"]: r["ms_per_step"] for r in ok if r["engine"] == engine
                        and r["system"] == system and r["n_atoms"] == n
                        and (engine == "chgnet" or r["model"] == model)}
            ours, off, chg = times("ours"), times("official"), times("chgnet")

            def ratio(other, ours=ours):
                return _median([other[k] / ours[k] for k in ours if k in other])

            rss = _median([r["peak_rss_GB"] for r in ok if r["engine"] == "ours"
                           and r["model"] == model and r["system"] == system
                           and r["n_atoms"] == n])
            lines.append(f"| {system} | {n} | {_fmt(_median(ours.values()))} | "
                         f"{_fmt(_median(off.values()))} | {_fmt(_median(chg.values()))} | "
                         f"{_fmt(ratio(off), 2)} | {_fmt(ratio(chg), 2)} | {_fmt(rss, 2)} |")
        lines.append("")
    errors = [r for r in runs if not r.get("ms_per_step")]
    if errors:
        lines += ["## runs without a result", ""]
        lines += [f"- round {r['round']} {r['model']} {r['engine']} {r['system']} "
                  f"{r['n_atoms']}: {str(r.get('error'))[:300]}" for r in errors]
        lines.append("")
    return "\n".join(lines)


def plan(text: str) -> list[tuple[str, list[int], int]]:
    """Parse "small:64,216:2;10m:64:1" into [(model, sizes, rounds), ...]."""
    out = []
    for entry in filter(None, text.split(";")):
        model, sizes, rounds = entry.split(":")
        if model not in MODELS:
            raise SystemExit(f"unknown model {model!r}; known: {sorted(MODELS)}")
        out.append((model, [int(x) for x in sizes.split(",")], int(rounds)))
    return out


if __name__ == "__main__":
    sys.exit(main())
