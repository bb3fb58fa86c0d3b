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

Every job runs under an address-space limit (``--mem-gb``, default 8 GB) so that a model
that does not fit fails cleanly (reported as OOM) instead of starving the machine; jobs
run one at a time.

Structures: Si diamond (a = 5.43 Å) and rocksalt MgO (a = 4.21 Å) with a quarter of Mg
replaced alternately by Ca and Zn, as 2³/3³/5³ cubic supercells (64, 216, 1000 atoms),
rattled by 0.05 Å. Engines of one (system, size) run back to back in each round
(``--plan`` sets models, sizes, rounds, systems and the recompute setting); ratios are
taken within a round, then the median over rounds. Recompute ``on`` means per-block
activation checkpointing in our force backward (``checkpoint=True``) and
``activation_checkpoint=True`` for the official calculator; ``off`` is the default of
both for MD. Results (JSON + markdown) are rewritten after every job.

    python benchmarks/md_speed.py --out benchmarks/results --date 2026-11-22 \
        --plan "small:64,216:3;small:1000:1:si:off;small:1000:1:si:on;4m:64:2:si"
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
    "4m": (dict(num_blocks=4), dict(num_layers=4, mlp_hidden_dims=(256, 192))),
    "10m": ({}, dict(num_layers=10, mlp_hidden_dims=(256, 192))),
}
RECOMPUTE = {"off": False, "on": True, "auto": "auto"}  # our calculator's `checkpoint`
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
                                checkpoint=RECOMPUTE[job["recompute"]], stress="always")
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
                                activation_checkpoint=job["recompute"] == "on")
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
    steps, cpu, start = [], [], time.perf_counter()
    while len(steps) < job["steps"] and (len(steps) < job["min_steps"]
                                         or time.perf_counter() - start < job["budget"]):
        t, c = time.perf_counter(), time.process_time()
        dyn.run(1)  # one force evaluation per step (ASE caches the others)
        steps.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    out = {**job, "params": int(n_params), "setup_s": setup_s, "timed_steps": len(steps),
           "ms_per_step": 1000 * statistics.median(steps) if steps else None,
           "ms_per_step_all": [1000 * s for s in steps],
           # process CPU time (1 thread): less sensitive than wall time to other jobs
           "cpu_ms_per_step": 1000 * statistics.median(cpu) if cpu else None,
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
    p.add_argument("--plan", default="small:64,216:3;small:1000:1:si:off;"
                                      "small:1000:1:si:on;4m:64:2:si",
                   help="';'-separated MODEL:SIZES:ROUNDS[:SYSTEMS[:RECOMPUTE]] entries "
                        "(systems '+'-separated, default --systems; recompute off/on/auto, "
                        "default --recompute), run in this order")
    p.add_argument("--systems", default="si,oxide")
    p.add_argument("--engines", default="ours,chgnet,official")
    p.add_argument("--skip", default="",
                   help="comma list of model:engine:size to skip (memory/time)")
    p.add_argument("--recompute", choices=sorted(RECOMPUTE), default="off",
                   help="default recompute setting of plan entries (see the docstring)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the markdown from the existing JSON, run nothing")
    p.add_argument("--append", action="store_true",
                   help="add to the existing result files of the same name")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--min-steps", type=int, default=3)
    p.add_argument("--budget", type=float, default=60.0, help="s of timed steps per job")
    p.add_argument("--mem-gb", type=float, default=8.0,
                   help="address-space cap per job in GB (RLIMIT_AS)")
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
    stem = f"md_speed_{args.date}" + (f"_{args.tag}" if args.tag else "")
    if args.report_only:
        old = json.loads((out_dir / f"{stem}.json").read_text())
        (out_dir / f"{stem}.md").write_text(report(old["meta"], old["runs"]))
        print(f"wrote {out_dir / stem}.md")
        return 0
    results, t_start = [], time.time()
    if args.append and (out_dir / f"{stem}.json").exists():
        old = json.loads((out_dir / f"{stem}.json").read_text())
        results = old["runs"]
        meta["loadavg_start"] = old["meta"]["loadavg_start"]
        meta["parts"] = [*old["meta"].get("parts", [old["meta"]["args"]]), vars(args)]
        t_start -= old["meta"]["wall_s"]
    for model, sizes, rounds, systems, recompute in plan(args.plan, args.systems,
                                                         args.recompute):
        for _ in range(rounds):
            for system in systems:
                for size in sizes:
                    # Round numbers run on across plan entries and --append parts.
                    rnd = 1 + max([r["round"] for r in results if r["model"] == model
                                   and r["recompute"] == recompute and r["system"] == system
                                   and r["n_atoms"] == size], default=-1)
                    for engine in engines:
                        # CHGNet has one size (0.4M, no recompute option): it runs with
                        # the small model's recompute-off jobs.
                        if (engine == "chgnet" and (model != "small" or recompute != "off")) \
                                or f"{model}:{engine}:{size}" in skip:
                            continue
                        job = dict(engine=engine, model=model, system=system, n_atoms=size,
                                   round=rnd, warmup=args.warmup, steps=args.steps,
                                   min_steps=args.min_steps, budget=args.budget,
                                   workdir=str(workdir), recompute=recompute,
                                   mem_gb=args.mem_gb)
                        res = run_job(pythons[engine], job, args.mem_gb, args.timeout)
                        results.append(res)
                        msg = (f"{res['ms_per_step']:.1f} ms/step" if res.get("ms_per_step")
                               else res.get("error", "?")[:200])
                        print(f"[round {rnd}] {model:5s} {recompute:3s} {engine:8s} "
                              f"{system:5s} {size:5d}: "
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


def _failure(runs: list[dict]) -> str | None:
    """Short reason for a table cell whose runs all failed (None if any succeeded)."""
    if not runs or any(r.get("ms_per_step") for r in runs):
        return None
    text = " ".join(str(r.get("error")) for r in runs)
    if any(k in text for k in ("MemoryError", "can't allocate", "out of memory",
                               "std::bad_alloc", "exit -9")):
        return f"OOM ({runs[0].get('mem_gb', '?'):g} GB)"
    return "timeout" if "timeout" in text else "error"


def _cell(grp, engine, system, n, key="ms_per_step"):
    """(runs of `engine` in a table row of group `grp`, {round: value of `key`} of those
    that have one). CHGNet runs only in the small model's recompute-off group."""
    rows = [r for r in grp if r["engine"] == engine and r["system"] == system
            and r["n_atoms"] == n]
    return rows, {r["round"]: r[key] for r in rows if r.get(key)}


def _show(rows, times) -> str:
    return _failure(rows) or _fmt(_median(list(times.values())))


def _ratio(ours: dict, other: dict, other_rows) -> str:
    """Median over rounds of other/ours (both ran in the round)."""
    value = _median([other[k] / ours[k] for k in ours if k in other])
    if value is None and ours and _failure(other_rows):
        return f"ours only ({_failure(other_rows)})"
    return _fmt(value, 2)


def report(meta: dict, runs: list[dict]) -> str:
    """Markdown: per model and recompute setting, ms/step per engine (median over rounds),
    speed ratios (taken within each round, then the median) and the 1-min load average
    at job start (median over the row's jobs)."""
    ok = [r for r in runs if r.get("ms_per_step")]
    params = {(r["engine"], r["model"]): r["params"] for r in ok}
    lines = [f"# MD speed, {meta['date']}, {meta['machine']}", "",
             "ms per ASE Langevin step (300 K, 1 fs; energy + forces + stress), 1 torch "
             "thread, float32, random weights (CHGNet: pretrained), median over timed steps "
             "after warm-up, then over rounds. Ratios > 1 mean MatRIS-Janus is faster; "
             "they are computed within a round (engines back to back) and their median "
             "is shown. The CPU columns use each worker's process CPU time per step "
             "instead of wall time (less sensitive to other jobs on the machine), from the "
             "rounds that recorded it (`CPU rounds`); times in ms. Jobs ran one at a "
             "time, each under an address-space limit of "
             f"{meta['args'].get('mem_gb', '?')} GB.", "",
             f"Load average (1, 5, 15 min) at start {_load(meta['loadavg_start'])}, at end "
             f"{_load(meta['loadavg_end'])}; wall {meta['wall_s'] / 60:.0f} min. The machine "
             "has 2 cores shared with other engineers' jobs: absolute times carry their "
             "load; the interleaved ratios are the robust figure.", ""]
    for (engine, model), n in sorted(params.items()):
        lines.append(f"- {engine} / {model}: {n:,} parameters")
    lines.append("")
    groups = dict.fromkeys((r["model"], r.get("recompute", "off")) for r in runs)
    for model, rec in groups:
        grp = [r for r in runs if r["model"] == model and r.get("recompute", "off") == rec]
        lines += [f"## model {model}, recompute {rec}", "",
                  "| system | atoms | rounds | ours | official | CHGNet | official/ours | "
                  "CHGNet/ours | CPU rounds | ours CPU | official CPU | CHGNet CPU | "
                  "official/ours (CPU) | CHGNet/ours (CPU) | ours peak RSS GB | load (1 min) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        keys = dict.fromkeys((r["system"], r["n_atoms"]) for r in grp)
        for system, n in keys:
            (o_runs, ours), (f_runs, off), (c_runs, chg) = (
                _cell(grp, e, system, n) for e in ("ours", "official", "chgnet"))
            cpu = {e: _cell(grp, e, system, n, "cpu_ms_per_step")[1]
                   for e in ("ours", "official", "chgnet")}
            row_runs = [r for r in grp if r["system"] == system and r["n_atoms"] == n]
            rss = _median([r["peak_rss_GB"] for r in o_runs if r.get("ms_per_step")])
            load = _median([r["loadavg_start"][0] for r in row_runs if "loadavg_start" in r])
            rounds = len({r["round"] for r in row_runs})
            cpu_rounds = len({r["round"] for r in row_runs if r.get("cpu_ms_per_step")})
            lines.append(f"| {system} | {n} | {rounds} | {_show(o_runs, ours)} | "
                         f"{_show(f_runs, off)} | {_show(c_runs, chg)} | "
                         f"{_ratio(ours, off, f_runs)} | {_ratio(ours, chg, c_runs)} | "
                         f"{cpu_rounds} | {_show(o_runs, cpu['ours'])} | "
                         f"{_show(f_runs, cpu['official'])} | {_show(c_runs, cpu['chgnet'])} | "
                         f"{_ratio(cpu['ours'], cpu['official'], f_runs)} | "
                         f"{_ratio(cpu['ours'], cpu['chgnet'], c_runs)} | "
                         f"{_fmt(rss, 2)} | {_fmt(load, 2)} |")
        lines.append("")
    errors = [r for r in runs if not r.get("ms_per_step")]
    if errors:
        lines += ["## runs without a result", ""]
        lines += [f"- round {r['round']} {r['model']} recompute {r.get('recompute')} "
                  f"{r['engine']} {r['system']} {r['n_atoms']}: "
                  f"{' '.join(str(r.get('error')).split())[-300:]}" for r in errors]
        lines.append("")
    return "\n".join(lines)


def plan(text: str, systems: str = "si,oxide", recompute: str = "off"):
    """Parse "small:64,216:2;4m:64:1:si+oxide:on" into
    [(model, sizes, rounds, systems, recompute), ...]; missing fields take the defaults."""
    out = []
    for entry in filter(None, text.split(";")):
        fields = entry.split(":")
        if not 3 <= len(fields) <= 5:
            raise SystemExit(f"bad plan entry {entry!r}: MODEL:SIZES:ROUNDS[:SYSTEMS[:RECOMPUTE]]")
        model, sizes, rounds = fields[:3]
        syst = fields[3].split("+") if len(fields) > 3 else systems.split(",")
        rec = fields[4] if len(fields) > 4 else recompute
        if model not in MODELS:
            raise SystemExit(f"unknown model {model!r}; known: {sorted(MODELS)}")
        if rec not in RECOMPUTE:
            raise SystemExit(f"unknown recompute {rec!r}; known: {sorted(RECOMPUTE)}")
        out.append((model, [int(x) for x in sizes.split(",")], int(rounds), syst, rec))
    return out


if __name__ == "__main__":
    sys.exit(main())
