"""MatRIS-MoE figures on CPU: balance-loss run, MD inference cost, 1B-parameter PP=4 training.

    python benchmarks/moe.py balance      # short training run, aux weight 0 vs > 0
    python benchmarks/moe.py infer        # per-MD-step cost: specialised moe-1b vs dense
    python benchmarks/moe.py train1b      # mpirun -n 4 PP=4 steps of moe-1b (self-launch)
    python benchmarks/moe.py report       # results JSON -> markdown

Results go to benchmarks/results/moe_<DATE>.{json,md} (each subcommand updates its own
section; MOE_BENCH_OUT=path redirects them, e.g. for smoke runs). Every record carries
os.getloadavg(): the 2 cores are shared with other jobs.

* balance: a width-32, 2-block model with 8 experts (top-2 + shared) trains on
  embedded-dataset frames (energy + force loss, create_graph) twice from the same
  initialisation and batches, with balance weight 0 and > 0; the hard expert loads of
  every MoE layer on held-out frames (rows per expert, from the routes) are summarised
  by their coefficient of variation and max/mean, before and after.
* infer: one process, 1 torch thread, float32, eval mode, graphs prebuilt; energy +
  forces + stress of a 3-element cell, repeated with the models interleaved (order
  rotated every repeat); wall and CPU medians. With --full (default) moe-1b is
  materialised whole (4 GB) and specialised to the cell's elements (both are timed; the
  max differences of their outputs are recorded); with --no-full it is built on the meta
  device and specialised without ever allocating the unused experts (`matris.meta`). The
  "dense, same active size" model is the 10m backbone whose gated MLPs have (k +
  shared)·D hidden units (the same active parameters per row as the MoE, in one MLP
  instead of three).
* train1b: 4 ranks (PP=4, symfold, 4 micro-batches of one 10-atom 3-element frame),
  float32, random labels; each rank builds moe-1b on the meta device and materialises
  only its stages (then builds the runner again: materialisation replaces the Parameter
  objects the runner lists). The executor is driven directly (`PipelineRunner`), not
  through the trainer, because the trainer's all-reduce zero-fills untouched experts'
  gradients (and AdamW then keeps state for all 1B parameters: 12 GB more); here experts
  that no row of the step routed to have no gradient and AdamW skips them (lazy state).
  Each rank runs under RLIMIT_AS so that it fails cleanly instead of OOM-killing others.
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

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATE = "2026-11-22"
MACHINE = "2-vCPU CPU VM"
OUT = Path(os.environ.get("MOE_BENCH_OUT", HERE / "results" / f"moe_{DATE}.json"))
INFER_FRAME = 4649       # Br12Cd4Rb4, 20 atoms, 2,832 angles (embedded dataset index)
# 10-atom 3-element cells (Br6Cd2Rb2, I6Pt2Rb2, Cl6K2Sn2, Cl6Ge2Rb2), 1.4k-1.5k angles
# each: small enough that 4 ranks stay near 3 GB each next to other jobs' benchmarks.
TRAIN_FRAMES = [4648, 4699, 4834, 4521]


def vm_hwm_gb(key: str = "VmHWM") -> float:
    """Peak resident set (VmHWM) or peak virtual size (VmPeak) of this process, GB."""
    text = Path("/proc/self/status").read_text()
    return int(text.split(f"{key}:")[1].split()[0]) * 1024 / 1e9


def save_section(name: str, data: dict) -> None:
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    old[name] = {**data, "date": DATE, "machine": MACHINE}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(old, indent=1))


def frames(indices):
    from matris.datasets.embedded import iter_embedded_atoms

    want, out = set(indices), {}
    for i, atoms in enumerate(iter_embedded_atoms()):
        if i in want:
            out[i] = atoms
        if len(out) == len(want):
            break
    return [out[i] for i in indices]


def graph_of(atoms, cfg, dtype):
    from matris.graph import build_graph

    return build_graph(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                       cfg.cutoff, cfg.three_body_cutoff).to(dtype=dtype)


# ----------------------------------------------------------------------------- balance
def load_stats(model, graphs) -> dict:
    """Hard loads (rows per expert) of every MoE layer over `graphs`: mean CV, max/mean."""
    from matris.moe import _row_keys
    from matris.nn.geometry import compute_topology
    from matris.nn.moe import ROLE_ROWS, moe_layers

    topos = [compute_topology(g) for g in graphs]
    cvs, peaks = [], []
    with torch.no_grad():
        for layer in moe_layers(model):
            z = [_row_keys(t, ROLE_ROWS[layer.role]) for t in topos]
            experts = layer.router(torch.cat(z)).experts.reshape(-1)
            load = torch.bincount(experts, minlength=layer.num_experts).double()
            cvs.append(float(load.std(unbiased=False) / load.mean()))
            peaks.append(float(load.max() / load.mean()))
    return {"cv": statistics.mean(cvs), "max_over_mean": statistics.mean(peaks)}


def cmd_balance(args) -> None:
    from matris.config import preset
    from matris.outputs import compute_outputs
    from matris.testing import random_model

    torch.set_num_threads(1)
    from matris.datasets.embedded import iter_embedded_atoms

    pool = [a for a in iter_embedded_atoms() if len(a) <= args.max_atoms]
    rng = np.random.default_rng(0)
    rng.shuffle(pool)
    train, held = pool[:args.frames], pool[args.frames:args.frames + args.held]
    if not held:
        raise SystemExit(f"only {len(pool)} frames of <= {args.max_atoms} atoms: lower --frames")
    cfg = preset("tiny", width=32, moe={"num_experts": 8, "top_k": 2, "shared_expert": True})
    # Reference energies by least squares on composition (so the task loss is sane).
    comp = np.zeros((len(train), 119))
    for i, a in enumerate(train):
        np.add.at(comp[i], a.numbers, 1.0)
    e = np.array([a.get_potential_energy() for a in train])
    refs = np.linalg.lstsq(comp, e, rcond=None)[0]
    graphs = [graph_of(a, cfg, torch.float64) for a in train]
    held_graphs = [graph_of(a, cfg, torch.float64) for a in held]
    labels = [(torch.tensor(a.get_potential_energy()), torch.tensor(a.get_forces()))
              for a in train]
    record = {"config": cfg.to_dict(), "steps": args.steps, "batch": args.batch,
              "lr": args.lr, "router_lr": args.router_lr or args.lr,
              "max_atoms": args.max_atoms,
              "train_frames": len(train), "held_frames": len(held), "runs": {}}
    for weight in args.weights:
        model = random_model(cfg, seed=7, scale=0.0)
        model.set_reference_energies(refs)
        routers = [p for n, p in model.named_parameters() if ".router." in n]
        rest = [p for n, p in model.named_parameters() if ".router." not in n]
        opt = torch.optim.Adam([{"params": rest},
                                {"params": routers, "lr": args.router_lr or args.lr}],
                               lr=args.lr)
        before = load_stats(model, held_graphs)
        order = np.random.default_rng(1)
        t0, tasks, auxes = time.perf_counter(), [], []
        for step in range(args.steps):
            idx = order.choice(len(graphs), args.batch, replace=False)
            opt.zero_grad()
            task_sum = aux_sum = 0.0
            for i in idx:
                out = compute_outputs(model, graphs[i], create_graph=True)
                n = graphs[i].n_atoms
                task = ((out["energy"][0] - labels[i][0]) / n) ** 2 + \
                    (out["forces"] - labels[i][1]).square().mean()
                task_sum = task_sum + task / args.batch
                aux_sum = aux_sum + out["aux_loss"] / args.batch
            (task_sum + weight * aux_sum).backward()
            opt.step()
            tasks.append(float(task_sum.detach()))
            auxes.append(float(aux_sum.detach()))
            if step % 50 == 0:
                print(f"w={weight} step {step}: task {tasks[-1]:.4f} aux {auxes[-1]:.4f}",
                      flush=True)
        after = load_stats(model, held_graphs)
        record["runs"][str(weight)] = {"before": before, "after": after,
                                       "task_first10": statistics.mean(tasks[:10]),
                                       "task_last10": statistics.mean(tasks[-10:]),
                                       "aux_first10": statistics.mean(auxes[:10]),
                                       "aux_last10": statistics.mean(auxes[-10:]),
                                       "seconds": time.perf_counter() - t0,
                                       "loadavg": os.getloadavg()}
        print(weight, record["runs"][str(weight)], flush=True)
    save_section("balance", record)


# ----------------------------------------------------------------------------- infer
def dense_wide(config, factor: int):
    """The dense backbone with `factor`× wider gated MLPs (same active size as an MoE
    layer with factor = k + shared experts of the backbone's shape)."""
    from matris.model import MatRIS
    from matris.nn import mlp

    old = mlp.MLP_BUILDERS["dense"]

    def wide(kind, in_dims, hidden, out, cfg, role):
        return old(kind, in_dims, hidden * (factor if kind == "gated" else 1), out, cfg, role)

    mlp.MLP_BUILDERS["dense"] = wide
    try:
        return MatRIS(config.replace(moe=None))
    finally:
        mlp.MLP_BUILDERS["dense"] = old


def specialised_random(config, elements):
    """moe-1b specialised to `elements` without allocating the unused experts."""
    from torch import nn

    from matris.meta import is_meta, materialize_
    from matris.model import MatRIS
    from matris.nn.moe import moe_layers

    with torch.device("meta"):
        full = MatRIS(config)
    layers = moe_layers(full)
    stash = [layer.experts for layer in layers]
    for layer in layers:
        layer.experts = nn.ModuleList()
    materialize_(full)  # everything but the experts (routers, shared experts, backbone)
    for layer, experts in zip(layers, stash):
        layer.experts = experts
    special = full.specialize(elements)
    for layer in moe_layers(special):
        for expert in layer.experts:
            if is_meta(expert):
                materialize_(expert)
    return special


def cmd_infer(args) -> None:
    from matris.config import preset
    from matris.model import MatRIS
    from matris.moe import count_parameters
    from matris.outputs import compute_outputs

    torch.set_num_threads(1)
    torch.manual_seed(0)
    (atoms,) = frames([INFER_FRAME])
    cfg = preset(args.preset)
    moe = cfg.moe_config
    factor = moe.top_k + int(moe.shared_expert)
    special_name, full_name = f"{args.preset} specialised", f"{args.preset} full (all experts)"
    if args.full:  # every expert held (4 GB for moe-1b); specialised from it (same weights)
        from matris.meta import materialize_

        with torch.device("meta"):
            full = MatRIS(cfg)
        materialize_(full)
        special = full.specialize(atoms.numbers)
    else:  # never allocates the unused experts
        special = specialised_random(cfg, atoms.numbers)
    models = {special_name: special,
              f"dense 10m, gated MLPs x{factor} (same active size)": dense_wide(cfg, factor),
              "dense 10m backbone": MatRIS(preset("10m"))}
    if args.full:
        models[full_name] = full
    g = graph_of(atoms, cfg, torch.float32)
    record = {"structure": atoms.get_chemical_formula(), "atoms": g.n_atoms,
              "angles": g.n_angles, "threads": 1, "dtype": "float32", "models": {}}
    counts = count_parameters(cfg)
    for name, m in models.items():
        m.eval()
        held = sum(p.numel() for p in m.parameters())
        record["models"][name] = {"held_params": held, "active_params": m.active_parameters(),
                                  "times": [], "cpu_times": []}
        compute_outputs(m, g, stress=True)  # warm-up
    record["models"][special_name]["total_params_full_model"] = counts["total"]
    if args.full:  # specialisation is exact: same energy, forces and stress
        a = compute_outputs(special, g, stress=True)
        b = compute_outputs(full, g, stress=True)
        record["specialised_minus_full_max_abs"] = {
            k: float((a[k] - b[k]).abs().max()) for k in ("energy", "forces", "stress")}
    loads, names = [], list(models)
    for rep in range(args.repeats):  # interleaved, order rotated every repeat
        loads.append(os.getloadavg())
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            t, c = time.perf_counter(), time.process_time()
            compute_outputs(models[name], g, stress=True)
            record["models"][name]["times"].append(time.perf_counter() - t)
            record["models"][name]["cpu_times"].append(time.process_time() - c)
    for r in record["models"].values():
        r["median_s"] = statistics.median(r["times"])
        r["median_cpu_s"] = statistics.median(r["cpu_times"])
    base = record["models"][f"dense 10m, gated MLPs x{factor} (same active size)"]
    for r in record["models"].values():
        r["ratio_vs_same_active_dense"] = r["median_s"] / base["median_s"]
        r["cpu_ratio_vs_same_active_dense"] = r["median_cpu_s"] / base["median_cpu_s"]
    record["loadavg"] = loads
    record["peak_rss_gb"] = vm_hwm_gb()
    print(json.dumps(record["models"], indent=1))
    save_section("infer", record)


# ----------------------------------------------------------------------------- train1b
def cmd_train1b(args) -> None:
    """Launch the 4-rank worker under mpirun; each rank writes its record."""
    tmp = HERE / "results" / f".moe_train_{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [str(Path(sys.executable).parent / "mpirun"), "-n", str(args.pp), sys.executable,
           "-W", "ignore::FutureWarning", __file__, "train-worker", str(tmp),
           "--pp", str(args.pp), "--microbatches", str(args.microbatches),
           "--steps", str(args.steps), "--schedule", args.schedule,
           "--limit-gb", str(args.limit_gb), "--preset", args.preset,
           "--balance", str(args.balance), "--frames", *map(str, args.frames)]
    print(" ".join(cmd), flush=True)
    available = int(Path("/proc/meminfo").read_text().split("MemAvailable:")[1].split()[0])
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env)
    ranks = sorted(tmp.glob("rank*.json"))
    record = {"cmd": " ".join(cmd[1:]), "returncode": proc.returncode,
              "wall_s": time.perf_counter() - t, "mem_available_gb_at_start": available / 1e6,
              "loadavg_at_start": os.getloadavg(),
              "ranks": [json.loads(p.read_text()) for p in ranks]}
    for p in ranks:
        p.unlink()
    for p in tmp.glob("pipeline_trace_step*.*"):  # the executor's measured trace of step 2
        p.rename(OUT.parent / f"{OUT.stem}_train1b_trace{p.suffix}")
        record.setdefault("trace", []).append(f"{OUT.stem}_train1b_trace{p.suffix}")
    tmp.rmdir()
    save_section("train1b", record)
    print(json.dumps(record, indent=1)[:4000])


def cmd_train_worker(args) -> None:
    limit = int(args.limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(1)
    from matris.config import preset
    from matris.meta import materialize_
    from matris.model import MatRIS
    from matris.moe import count_parameters
    from matris.train import dist as mdist
    from matris.train.config import load_config
    from matris.train.graph_parallel.testing import labelled_batch
    from matris.train.moe import BalanceLoss
    from matris.train.pipeline.executor import PipelineRunner
    from matris.train.pipeline.testing import counts_of

    env = mdist.init_distributed(device="cpu", timeout_s=1800)
    groups = mdist.build_groups(mdist.Topology(pp=args.pp, dp=1, gp=1,
                                               world_size=env.world_size), env.rank)
    cfg_model = preset(args.preset)
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = MatRIS(cfg_model)
    build_s = time.perf_counter() - t0
    cfg = load_config(None, ["train.dtype=float32", "train.device=cpu",
                             f"parallel.pp={args.pp}", f"parallel.microbatches={args.microbatches}",
                             f"parallel.schedule={args.schedule}", "loss.weights.stress=0.1",
                             "loss.weights.magmoms=0.0", f"log.out={args.out}"])
    # Materialise this rank's stages, then build the runner again: materialisation
    # replaces the Parameter objects, and the runner lists its parameters at build time.
    torch.manual_seed(env.rank)
    for stage in PipelineRunner(cfg, model, groups, torch.device("cpu")).stages.values():
        materialize_(stage, torch.float32)
    runner = PipelineRunner(cfg, model, groups, torch.device("cpu"))
    params = runner.parameters()
    assert not any(p.is_meta for p in params), "a parameter of this rank stayed on meta"
    balance = BalanceLoss(model, runner, args.balance)
    held = sum(p.numel() for p in params)
    atoms = frames(args.frames[:args.microbatches])
    batches = [labelled_batch([graph_of(a, cfg_model, torch.float32)], seed=i,
                              dtype=torch.float32) for i, a in enumerate(atoms)]
    counts = counts_of(batches)
    opt = torch.optim.AdamW(params, lr=1e-4, foreach=False)
    steps = []
    for step in range(args.steps):
        opt.zero_grad(set_to_none=True)
        mdist.barrier()
        t = time.perf_counter()
        result = runner.run(batches, counts)
        aux = balance.add([b.graph for b in batches], len(batches))  # the trainer's term
        opt.step()
        mdist.barrier()
        steps.append({"step_s": time.perf_counter() - t, "loadavg": os.getloadavg(),
                      "loss_sums": result.sums, "aux_share": aux,
                      "params_with_grad": sum(p.numel() for p in params if p.grad is not None),
                      "peak_rss_gb_so_far": vm_hwm_gb()})
        if env.rank == 0:
            print(f"step {step}: {steps[-1]['step_s']:.1f} s", flush=True)
    state = sum(t.numel() for s in opt.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)
    counts_all = count_parameters(cfg_model)
    record = {"rank": env.rank, "stages": sorted(runner.stages),
              "blocks": [runner.stages[s].block_range for s in sorted(runner.stages)],
              "program": runner.program.describe(), "meta_build_s": build_s,
              "params_held": held, "total_params": counts_all["total"],
              "active_params": counts_all["active (per row)"],
              "optimizer_state_floats": state, "steps": steps, "peak_rss_gb": vm_hwm_gb(),
              "peak_virtual_gb": vm_hwm_gb("VmPeak"), "rlimit_as_gb": args.limit_gb,
              "structures": [a.get_chemical_formula() for a in atoms],
              "angles": [int(b.graph.n_angles) for b in batches]}
    Path(args.out, f"rank{env.rank}.json").write_text(json.dumps(record, indent=1))
    mdist.barrier()
    mdist.shutdown()


# ----------------------------------------------------------------------------- report
def _report_balance(b: dict, title: str) -> list[str]:
    lr = b.get("lr", 0.01)
    router = f", router tables {b['router_lr']}" if b.get("router_lr", lr) != lr else ""
    split = "task_first10" in next(iter(b["runs"].values()))
    lines = [f"## {title}", "",
             f"{b['steps']} Adam steps (lr {lr}{router}) × {b['batch']} embedded frames "
             f"(≤ {b.get('max_atoms', 12)} atoms, {b['train_frames']} in the pool), width 32, "
             f"2 blocks, 8 experts top-2 + shared, E + F loss (+ w·aux); the same "
             f"initialisation and batch order for every w. Hard loads (rows per expert) on "
             f"{b['held_frames']} held-out frames, mean over the 12 MoE layers: CV = "
             f"std/mean of the loads, max/mean = the busiest expert's load over the mean.", ""]
    cols = ("task first 10 | task last 10 | aux first 10 | aux last 10" if split
            else "loss first 10 | loss last 10")
    n = 4 if split else 2
    lines += [f"| aux weight w | CV before | CV after | max/mean before | max/mean after "
              f"| {cols} | s | load avg (1 min) |",
              "|---|" + "---:|" * (6 + n)]
    for w, r in b["runs"].items():
        vals = ([r["task_first10"], r["task_last10"], r["aux_first10"], r["aux_last10"]]
                if split else [r["loss_first10"], r["loss_last10"]])
        lines.append(f"| {w} | {r['before']['cv']:.3f} | {r['after']['cv']:.3f} | "
                     f"{r['before']['max_over_mean']:.2f} | {r['after']['max_over_mean']:.2f} | "
                     + " | ".join(f"{v:.4f}" for v in vals)
                     + f" | {r['seconds']:.0f} | {r['loadavg'][0]:.1f} |")
    note = ("task = E + F loss; aux = the model's balance loss (1 for uniform routing)."
            if split else "The loss columns are task + w·aux (aux = 1 for uniform routing).")
    note += (" Loss columns are means of 10 per-batch values; a few frames with large "
             "forces make single batches vary by 10× or more, so they are noisy and say "
             "nothing about convergence (the run is about the routing).")
    return [*lines, "", note, ""]


def _report_infer(r: dict) -> list[str]:
    n = len(next(iter(r["models"].values()))["times"])
    loads = [x[0] for x in r["loadavg"]]
    lines = ["## Inference cost per MD step", "",
             f"{r['structure']} ({r['atoms']} atoms, {r['angles']} angles): energy + forces + "
             f"stress (`compute_outputs`, eval mode), 1 torch thread, float32, graph prebuilt; "
             f"median of {n} repeats, models interleaved (order rotated each repeat); 1-min "
             f"load average {min(loads):.1f}–{max(loads):.1f} (2 cores shared with other "
             f"jobs). Random weights; the specialised model is `full.specialize(elements)`. "
             f"Peak RSS of the process {r['peak_rss_gb']:.1f} GB.", "",
             "| model | params held | active params | median wall s | median CPU s "
             "| wall ratio | CPU ratio |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in r["models"].items():
        lines.append(f"| {name} | {m['held_params']:,} | {m['active_params']:,} | "
                     f"{m['median_s']:.3f} | {m['median_cpu_s']:.3f} | "
                     f"{m['ratio_vs_same_active_dense']:.2f} | "
                     f"{m['cpu_ratio_vs_same_active_dense']:.2f} |")
    lines += ["", "Ratios are against the dense model of the same active size (gated MLPs "
              "with (k + shared)·D hidden units)."]
    if "specialised_minus_full_max_abs" in r:
        d = r["specialised_minus_full_max_abs"]
        lines.append(f"Specialised − full, max |Δ|: energy {d['energy']:.1e} eV, forces "
                     f"{d['forces']:.1e} eV/Å, stress {d['stress']:.1e} eV/Å³.")
    return [*lines, ""]


def _report_train(t: dict) -> list[str]:
    k0 = t["ranks"][0]
    lines = ["## moe-1b training through PP=4 (mpirun -n 4)", "",
             f"`{t['cmd'].replace(str(HERE.parent) + '/', '')}` → return code "
             f"{t['returncode']}, wall {t['wall_s']:.0f} s. "
             f"{k0['program']}; one frame per micro-batch ({', '.join(k0['structures'])}; "
             f"{', '.join(map(str, k0['angles']))} angles), float32, random weights and "
             f"labels, E + F + σ loss + 0.01·balance, AdamW; 1 torch thread per rank on 2 "
             f"shared cores; MemAvailable {t['mem_available_gb_at_start']:.1f} GB and load "
             f"average {t['loadavg_at_start'][0]:.1f} at launch. Model: "
             f"{k0['total_params']:,} parameters in total, {k0['active_params']:,} active "
             f"per row; each rank built it on the meta device ({k0['meta_build_s']:.0f} s) "
             f"and materialised only its stages.", "",
             "| rank | blocks | params held | params with grad | AdamW state floats "
             "| peak RSS GB | peak virtual GB (RLIMIT_AS) | step times s |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for k in t["ranks"]:
        times = ", ".join(f"{s['step_s']:.1f}" for s in k["steps"])
        lines.append(f"| {k['rank']} | {k['blocks']} | {k['params_held']:,} | "
                     f"{k['steps'][-1]['params_with_grad']:,} | "
                     f"{k['optimizer_state_floats']:,} | {k['peak_rss_gb']:.2f} | "
                     f"{k['peak_virtual_gb']:.2f} ({k['rlimit_as_gb']}) | {times} |")
    held = sum(k["params_held"] for k in t["ranks"])
    lines += ["", f"Parameters held over the 4 ranks: {held:,}. Step time = the whole "
              f"pipeline step (all ranks, barrier to barrier) incl. the optimizer."]
    if t.get("trace"):
        lines.append(f"Measured trace of step 2: `{t['trace'][0]}` / `{t['trace'][-1]}`.")
    return [*lines, ""]


def cmd_report(args) -> None:
    data = json.loads(OUT.read_text())
    lines = [f"# MatRIS-MoE benchmarks ({DATE}, {MACHINE})", "",
             "`python benchmarks/moe.py {balance,infer,train1b,report}`; raw records in "
             f"`{OUT.name}`.", ""]
    if "train1b" in data:
        lines += _report_train(data["train1b"])
    if "infer" in data:
        lines += _report_infer(data["infer"])
    if "balance" in data:
        lines += _report_balance(data["balance"], "Balance loss (short training run)")
    if "balance_lr0.01" in data:
        lines += _report_balance(data["balance_lr0.01"],
                                 "Balance loss, earlier run: lr 0.01 for every parameter")
    if "balance_60steps" in data:
        lines += _report_balance(data["balance_60steps"], "Balance loss, first short run")
    out = OUT.with_suffix(".md")
    out.write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("balance")
    b.add_argument("--steps", type=int, default=60)
    b.add_argument("--batch", type=int, default=4)
    b.add_argument("--frames", type=int, default=400)
    b.add_argument("--lr", type=float, default=0.01)
    b.add_argument("--router-lr", type=float, default=None,
                   help="Adam lr of the router tables (default: --lr)")
    b.add_argument("--max-atoms", type=int, default=12, help="largest frame used")
    b.add_argument("--held", type=int, default=200, help="held-out frames for the loads")
    b.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.1])
    i = sub.add_parser("infer")
    i.add_argument("--preset", default="moe-1b")
    i.add_argument("--repeats", type=int, default=5)
    i.add_argument("--full", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the unspecialised model (all experts materialised)")
    for name in ("train1b", "train-worker"):
        t = sub.add_parser(name)
        if name == "train-worker":
            t.add_argument("out")
        t.add_argument("--pp", type=int, default=4)
        t.add_argument("--microbatches", type=int, default=4)
        t.add_argument("--steps", type=int, default=3)
        t.add_argument("--schedule", default="symfold")
        t.add_argument("--limit-gb", type=float, default=4.5)
        t.add_argument("--preset", default="moe-1b")
        t.add_argument("--balance", type=float, default=0.01, help="balance-loss weight")
        t.add_argument("--frames", type=int, nargs="+", default=TRAIN_FRAMES,
                       help="embedded-dataset indices of the micro-batches' frames")
    sub.add_parser("report")
    args = p.parse_args()
    {"balance": cmd_balance, "infer": cmd_infer, "train1b": cmd_train1b,
     "train-worker": cmd_train_worker, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
