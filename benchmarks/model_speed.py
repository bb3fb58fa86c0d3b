"""Model speed and memory on CPU, ours vs the official MatRIS 1.0.0, side by side.

Cases (each measured in a fresh subprocess, 1 torch thread, random weights):
  inference  energy + forces + stress of Si64, Si216 (diamond, 0.05 Å noise) and a
             64-atom Mg(Ca,Zn)O rocksalt cell;
  training   one step: E+F+σ Huber loss, backward through the forces (create_graph),
             AdamW step, on 32-atom structures at batch 1 (Si) and 8 (Si, Cu, NaCl, Fe,
             MgO, GaAs, Al, LiF).
Configs: "10m" (our 10m preset; official: 10 layers, width 128, heads 256/192, Fourier,
LayerNorm, cutoffs 6/4.5 Å: 10,443,411 parameters + 94 AtomRef), "4m" (the same with 4
blocks) and "small" (3 blocks, width 64, heads 64/64, same cutoffs). Graphs are
prebuilt (not timed) for both.

The official package lives only in a side venv (offline_env.md section 3) and is run
there as a black box; its columns are skipped when that venv is absent. Each worker
runs under an address-space limit (RLIMIT_AS) and reports an allocation failure as
"OOM at <limit>" instead of taking the shared machine down. Peak memory is the worker's
VmHWM (peak RSS). Times are medians of >= 3 repeats after one warm-up call.

    python benchmarks/model_speed.py [--configs small 10m] [--cases ...] [--limit-gb 12]
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

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATE = "2026-11-21"
MACHINE = "2-vCPU CPU VM, 1 torch thread"
OFFICIAL_PYTHON = Path("/root/side-envs/matris-official/bin/python")
CASES = ["inf_si64", "inf_si216", "inf_oxide64", "train_b1", "train_b8"]
CONFIGS = ["small", "4m", "10m"]
CUTOFFS = (6.0, 4.5)
GPA = 160.21766208  # eV/Å³ → GPa


# ----------------------------------------------------------------------------- structures
def structures(case: str):
    """ASE Atoms of a case (identical in both venvs: fixed seeds)."""
    from ase.build import bulk

    def rattled(atoms, seed):
        atoms.rattle(0.05, seed=seed)
        return atoms

    if case == "inf_si64":
        return [rattled(bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2), 1)]
    if case == "inf_si216":
        return [rattled(bulk("Si", "diamond", a=5.43, cubic=True) * (3, 3, 3), 1)]
    if case == "inf_oxide64":
        atoms = bulk("MgO", "rocksalt", a=4.21, cubic=True) * (2, 2, 2)
        mg = [k for k, s in enumerate(atoms.get_chemical_symbols()) if s == "Mg"]
        for n, k in enumerate(mg[::4]):  # a quarter of Mg → alternately Ca and Zn
            atoms[k].symbol = "Ca" if n % 2 == 0 else "Zn"
        return [rattled(atoms, 1)]
    specs = [("Si", "diamond", 5.43, (2, 2, 1)), ("Cu", "fcc", 3.61, (2, 2, 2)),
             ("NaCl", "rocksalt", 5.64, (2, 2, 1)), ("Fe", "bcc", 2.87, (2, 2, 4)),
             ("MgO", "rocksalt", 4.21, (2, 2, 1)), ("GaAs", "zincblende", 5.65, (2, 2, 1)),
             ("Al", "fcc", 4.05, (2, 2, 2)), ("LiF", "rocksalt", 4.03, (2, 2, 1))]
    n = 1 if case == "train_b1" else 8
    return [rattled(bulk(s, c, a=a, cubic=True) * rep, 2 + k)
            for k, (s, c, a, rep) in enumerate(specs[:n])]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------- workers
def setup_ours(config: str, atoms_list):
    import torch

    from matris.config import ModelConfig, preset
    from matris.graph import build_graph, collate
    from matris.model import MatRIS
    from matris.outputs import compute_outputs

    cfg = preset(config) if config in ("4m", "10m") else ModelConfig(
        num_blocks=3, width=64, energy_head=(64, 64))
    torch.manual_seed(0)
    model = MatRIS(cfg)
    graphs = [build_graph(a.numbers, a.positions, a.cell.array, a.pbc, *CUTOFFS)
              for a in atoms_list]
    graph = collate(graphs).to(dtype=torch.float32)
    sizes = {"atoms": graph.n_atoms, "edges": graph.n_edges, "angles": graph.n_angles,
             "params": sum(p.numel() for p in model.parameters())}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n_atoms = graph.num_atoms.to(torch.float32)

    def infer():
        compute_outputs(model, graph, stress=True)

    def train():
        out = compute_outputs(model, graph, stress=True, create_graph=True)
        hub = torch.nn.functional.huber_loss
        loss = hub(out["energy"] / n_atoms, torch.zeros_like(n_atoms)) \
            + hub(out["forces"], torch.zeros_like(out["forces"])) \
            + 0.1 * hub(out["stress"] * GPA, torch.zeros_like(out["stress"]))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return infer, train, sizes


def setup_official(config: str, atoms_list):
    import torch
    from pymatgen.io.ase import AseAtomsAdaptor

    from matris.graph.converter import GraphConverter  # the official package (side venv)
    from matris.model import MatRIS

    kw = dict(three_body_expansion="fourier", norm_type="layer",
              pairwise_cutoff=CUTOFFS[0], three_body_cutoff=CUTOFFS[1])
    torch.manual_seed(0)
    if config in ("4m", "10m"):
        layers = 10 if config == "10m" else 4
        model = MatRIS(num_layers=layers, mlp_hidden_dims=(256, 192), **kw)
    else:
        model = MatRIS(num_layers=3, node_feat_dim=64, edge_feat_dim=64,
                       three_body_feat_dim=64, mlp_hidden_dims=(64, 64), **kw)
    conv = GraphConverter(*CUTOFFS)
    graphs = [conv(AseAtomsAdaptor.get_structure(a), mode="torch") for a in atoms_list]
    n_atoms = torch.tensor([len(a) for a in atoms_list], dtype=torch.float32)
    sizes = {"atoms": int(n_atoms.sum()), "params": sum(p.numel() for p in model.parameters())}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def infer():
        model(graphs, task="efs", is_training=False, mode="torch")

    def train():
        out = model(graphs, task="efs", is_training=True, mode="torch")
        forces = torch.cat(list(out["f"]))
        stress = torch.stack(list(out["s"]))  # GPa
        hub = torch.nn.functional.huber_loss
        loss = hub(out["e"], torch.zeros_like(out["e"])) \
            + hub(forces, torch.zeros_like(forces)) \
            + 0.1 * hub(stress, torch.zeros_like(stress))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return infer, train, sizes


def worker(impl: str, config: str, case: str, repeats: int) -> dict:
    import torch

    torch.set_num_threads(1)
    atoms_list = structures(case)
    setup = setup_ours if impl == "ours" else setup_official
    try:
        infer, train, sizes = setup(config, atoms_list)
        fn = train if case.startswith("train") else infer
        base = rss_mb()
        times, cpu = [], []
        for k in range(repeats + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if k:  # the first call is a warm-up
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    except (MemoryError, RuntimeError) as exc:
        if "alloc" not in str(exc).lower() and not isinstance(exc, MemoryError):
            raise
        return {"oom": True, "error": str(exc)[:200], "peak_rss_mb": peak_rss_mb()}
    med = statistics.median(times)
    return {"oom": False, **sizes, "times_s": times, "median_s": med, "cpu_s": cpu,
            "median_cpu_s": statistics.median(cpu),
            "atoms_per_s": sizes["atoms"] / med, "baseline_rss_mb": base,
            "peak_rss_mb": peak_rss_mb()}


# ----------------------------------------------------------------------------- driver
def run_worker(impl: str, config: str, case: str, repeats: int, limit_gb: float) -> dict:
    python = sys.executable if impl == "ours" else str(OFFICIAL_PYTHON)
    if impl == "official" and not OFFICIAL_PYTHON.exists():
        return {"skipped": f"side venv {OFFICIAL_PYTHON.parent.parent} absent"}
    limit = int(limit_gb * 2**30)

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker", impl, "--config", config,
         "--case", case, "--repeats", str(repeats)],
        capture_output=True, text=True, env=env, preexec_fn=limit_memory, cwd="/tmp")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        oom = proc.returncode < 0 or "alloc" in proc.stderr.lower()
        return {"oom": oom, "returncode": proc.returncode, "stderr": proc.stderr[-800:],
                "limit_gb": limit_gb, "process_wall_s": wall}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(limit_gb=limit_gb, process_wall_s=wall)
    return res


def fmt(res: dict, key: str, spec: str) -> str:
    if "skipped" in res:
        return "n/a"
    if res.get("oom"):
        return f"OOM at {res['limit_gb']:g} GB"
    return format(res[key], spec)


def write_report(results: dict, meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"model_speed_{DATE}"
    stem.with_suffix(".json").write_text(json.dumps({**meta, "results": results}, indent=2)
                                         + "\n")
    lines = [f"# Model speed and memory ({DATE}, {MACHINE})", "",
             f"Random weights, float32, CPU, 1 torch thread, graphs prebuilt. Median of "
             f"{meta['repeats']} repeats after a warm-up; peak = worker VmHWM (includes "
             f"~0.3–0.5 GB of Python/torch). Each worker ran under RLIMIT_AS = "
             f"{meta['limit_gb']:g} GB. Load average before/after: "
             f"{meta['loadavg_before'][0]:.2f} / {meta['loadavg_after'][0]:.2f} (2 shared "
             f"cores: other engineers' jobs were running, so times carry ±30–50%).", "",
             "| config | case | atoms | angles | ours ms | official ms | speed-up (wall) | "
             "speed-up (CPU) | ours atoms/s | ours peak MB | official peak MB | memory ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, pair in results.items():
        config, case = key.split("/")
        ours, off = pair["ours"], pair.get("official", {"skipped": "not run"})
        speed = cpu_speed = mem = "n/a"
        if not ours.get("oom") and "median_s" in ours and "median_s" in off:
            speed = f"{off['median_s'] / ours['median_s']:.2f}×"
            cpu_speed = f"{off['median_cpu_s'] / ours['median_cpu_s']:.2f}×"
            mem = f"{ours['peak_rss_mb'] / off['peak_rss_mb']:.2f}"
        elif off.get("oom") and "median_s" in ours:
            speed = cpu_speed = "official OOM"
            mem = f"< {ours['peak_rss_mb'] / (off['limit_gb'] * 1024):.2f}"
        ms = {k: ("n/a" if "median_s" not in v else f"{1e3 * v['median_s']:,.0f}")
              for k, v in (("o", ours), ("f", off))}
        lines.append(
            f"| {config} | {case} | {ours.get('atoms', '')} | {ours.get('angles', '')} | "
            f"{ms['o'] if not ours.get('oom') else fmt(ours, '', '')} | "
            f"{ms['f'] if not off.get('oom') else fmt(off, '', '')} | {speed} | {cpu_speed} | "
            f"{fmt(ours, 'atoms_per_s', ',.0f')} | {fmt(ours, 'peak_rss_mb', ',.0f')} | "
            f"{fmt(off, 'peak_rss_mb', ',.0f')} | {mem} |")
    lines += ["", "speed-up = official time / ours (same run; wall clock and process CPU "
              "time, the latter less sensitive to other jobs); memory ratio = ours peak / "
              "official peak (lower is better; with an official OOM, an upper bound from "
              "its limit).", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=["ours", "official"])
    parser.add_argument("--config", default="small")
    parser.add_argument("--case", default="inf_si64")
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--cases", nargs="+", default=CASES)
    parser.add_argument("--impls", nargs="+", default=["ours", "official"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-gb", type=float, default=12.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.config, args.case, args.repeats)))
        return 0
    meta = {"date": DATE, "machine": MACHINE, "repeats": args.repeats,
            "limit_gb": args.limit_gb, "loadavg_before": os.getloadavg()}
    results: dict = {}
    for config in args.configs:
        for case in args.cases:
            pair = {}
            for impl in args.impls:
                pair[impl] = run_worker(impl, config, case, args.repeats, args.limit_gb)
                r = pair[impl]
                print(f"{config:>5} {case:<12} {impl:<8} "
                      f"{r.get('median_s', r.get('oom', r.get('skipped')))} "
                      f"peak {r.get('peak_rss_mb', '-')} MB load {os.getloadavg()[0]:.2f}",
                      flush=True)
            results[f"{config}/{case}"] = pair
            meta["loadavg_after"] = os.getloadavg()
            write_report(results, meta, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
