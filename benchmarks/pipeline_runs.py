"""Measured pipeline runs for ``pipeline_schedules.py real|emulated`` (workers + reports).

* ``real`` (mpirun -n P, real compute, 1 thread per rank): every schedule trains the same
  step on the same micro-batches, interleaved over repeats so that the other jobs on the
  shared cores hit every schedule alike. Per schedule: median step wall time, throughput,
  the measured bubble of the median run's merged trace (1 − Σ busy / (P · makespan)), the
  simulator's replay of the same Program with the run's own per-action durations (what
  the schedule would give with free communication and no runtime overhead), and the peak
  live saved-tensor bytes per rank (``matris.train.pipeline.memory.LiveSaved``).
* ``emulated`` (mpirun -n P, sleeping compute, real messages): measured vs simulated
  makespan per schedule for a cost model.

Workers are started by :func:`launch`; rank 0 writes a raw JSON that the report reads.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MACHINE = "2-vCPU CPU VM"


def launch(n: int, args: list[str], timeout: float = 3600) -> None:
    """``mpirun -n N python this_file args`` with one torch thread per rank."""
    mpirun = Path(sys.executable).parent / "mpirun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [str(mpirun), "-n", str(n), sys.executable, "-W", "ignore::FutureWarning",
           str(Path(__file__).resolve()), *args]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, timeout=timeout, env=env, cwd=REPO)


# ----------------------------------------------------------------------------- real
def real_batches(M: int, atoms: int, seed: int = 0):
    """M float32 micro-batches of two rattled, sheared cells of ``atoms`` atoms each."""
    import torch

    from matris.train.graph_parallel.testing import labelled_batch, lattice

    reps = {8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4)}[atoms]
    return [labelled_batch([lattice(reps, 2.8, 0.1, 0.2, seed=seed + 2 * m),
                            lattice(reps, 2.9, -0.1, 0.2, seed=seed + 2 * m + 1)],
                           seed=m, dtype=torch.float32) for m in range(M)]


def real_setup(preset_name: str, blocks: int, width: int, atoms: int, M: int):
    """(model, M micro-batches) of a real run. ``tiny``: the preset with ``blocks`` blocks
    and ``width``, micro-batches of :func:`real_batches` (``atoms`` per cell). Any other
    preset: the preset as released (its blocks / width; the arguments must match) on the
    micro-batch of ``pipeline_phase_costs.py`` (a 32-atom Cu–Au and a 16-atom Si cell
    graphed with the preset's cutoffs; micro-batch m rattled with seed m), so the run
    executes what the phase costs were measured on."""
    import torch

    from matris.config import preset
    from matris.model import MatRIS

    torch.manual_seed(0)
    if preset_name == "tiny":
        return MatRIS(preset("tiny", num_blocks=blocks, width=width)).float(), \
            real_batches(M, atoms)
    cfg = preset(preset_name)
    if (cfg.num_blocks, cfg.width) != (blocks, width):
        raise ValueError(f"preset {preset_name!r} has {cfg.num_blocks} blocks, width "
                         f"{cfg.width}; got blocks={blocks}, width={width}")
    from pipeline_phase_costs import structures  # a sibling script

    from matris.train.graph_parallel.testing import labelled_batch

    return MatRIS(cfg).float(), [labelled_batch(structures(cfg, seed=m), seed=m + 1,
                                                dtype=torch.float32) for m in range(M)]


def measure_cost_file(preset_name: str, blocks: int, width: int, atoms: int, path: Path,
                      repeats: int = 3) -> str:
    """Measure the run's own model and micro-batch (:func:`real_setup`'s first) with
    ``matris.train.pipeline.measure``, one thread, and write the cost bundle (tied to the
    measured cuts) to ``path``."""
    import torch

    from matris.train.config import LossConfig
    from matris.train.pipeline.costs import save_costs
    from matris.train.pipeline.measure import cost_models, measure_runs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, batches = real_setup(preset_name, blocks, width, atoms, 1)
        res = measure_runs(model, batches[0], LossConfig(), repeats, log=None)
    finally:
        torch.set_num_threads(threads)
    save_costs(cost_models(res, f"{preset_name}, {blocks} blocks, width {width}, "
                                f"{batches[0].graph.n_atoms} atoms per micro-batch, CPU fp32 "
                                f"1 thread, {MACHINE}; one entry per unit stage"), path)
    print(f"measured {path}", flush=True)
    return str(path)


def parse_label(label: str) -> tuple[str, bool, dict]:
    """``NAME[:VARIANT]`` → (schedule, lazy P3, generator options). VARIANT: ``lazy``,
    ``W`` (weight parts split: W3 and W4), ``lazy+W`` (W4 split) or a JSON object of
    generator options (eager), e.g. ``wavek:{"split_w": true, "mem_cap": 3e8}`` (or
    ``"mem_cap": "symfold"``, see :func:`resolve_options`)."""
    name, _, variant = label.partition(":")
    if variant.startswith("{"):
        return name, False, json.loads(variant)
    if variant not in ("", "lazy", "W", "lazy+W"):
        raise ValueError(f"unknown variant {variant!r} in {label!r}")
    lazy = variant.startswith("lazy")
    options = {"split_w": ["P4"] if lazy else True} if variant.endswith("W") else {}
    return name, lazy, options


def resolve_options(options: dict, P: int, M: int, blocks: int, lazy: bool,
                    costs) -> dict:
    """``"mem_cap": "symfold"`` → the forecast of symfold's peak by ``costs`` (the run's
    CostModel; the largest rank's bytes), so that a label can ask for "W split within
    symfold's memory"."""
    if options.get("mem_cap") != "symfold":
        return options
    from matris.train.pipeline.executor import build_program
    from matris.train.pipeline.simulate import simulate

    if costs is None:
        raise ValueError('"mem_cap": "symfold" needs --costs (bytes to forecast with)')
    ref = build_program("symfold", P, M, blocks, lazy_p3=lazy, costs=costs)
    return {**options, "mem_cap": max(simulate(ref, costs).peak_mem)}


def worker_real(out: str, preset_name: str, M: int, blocks: int, width: int, atoms: int,
                repeats: int, labels: list[str], cost_file: str = "") -> None:
    import torch

    from matris.train import dist as mdist
    from matris.train.config import load_config
    from matris.train.pipeline.costs import load_costs
    from matris.train.pipeline.executor import PipelineRunner
    from matris.train.pipeline.memory import LiveSaved
    from matris.train.pipeline.testing import counts_of

    env = mdist.init_distributed(device="cpu", timeout_s=600)
    P = env.world_size
    groups = mdist.build_groups(mdist.Topology(pp=P, dp=1, gp=1, world_size=P), env.rank)
    model, batches = real_setup(preset_name, blocks, width, atoms, M)
    counts = counts_of(batches)
    bundle = load_costs(cost_file) if cost_file else {}
    runners = {}
    for label in labels:
        name, lazy, options = parse_label(label)
        options = resolve_options(options, P, M, blocks, lazy,
                                  bundle.get("lazy" if lazy else "eager"))
        cfg = load_config(None, ["train.dtype=float32", "train.device=cpu", f"parallel.pp={P}",
                                 f"parallel.microbatches={M}", f"parallel.schedule={name}",
                                 f"parallel.lazy_p3={lazy}",
                                 f"parallel.schedule_options={json.dumps(options)}",
                                 *([f"parallel.costs={cost_file}"] if cost_file else [])])
        runners[label] = PipelineRunner(cfg, model, groups, torch.device("cpu"))
    params = list(model.parameters())
    raw = {label: [] for label in labels}
    load = [os.getloadavg()]
    for rep in range(repeats + 1):  # rep 0: warm-up, not reported
        for label, runner in runners.items():
            model.zero_grad(set_to_none=True)
            mdist.barrier()
            with LiveSaved(params) as mem:
                runner.run(batches, counts)
            slices = runner.gather_slices()
            walls = mdist.allgather_object((runner.last_walltime, mem.peak))
            if env.rank == 0 and rep > 0:
                raw[label].append({"wall": max(w for w, _ in walls),
                                   "peak_live": [p for _, p in walls],
                                   "slices": [(str(s.action), s.device, s.start, s.end)
                                              for s in slices]})
        load.append(os.getloadavg())
    if env.rank == 0:
        programs = {label: r.program.describe() for label, r in runners.items()}
        info = {"P": P, "M": M, "preset": preset_name, "blocks": blocks, "width": width,
                "atoms_per_mb": batches[0].graph.n_atoms,
                "angles_per_mb": batches[0].graph.n_angles, "repeats": repeats,
                "loadavg": load, "programs": programs,
                "atoms": sum(b.n_atoms for b in batches), "threads": torch.get_num_threads(),
                "cuts": {label: r.cuts for label, r in runners.items()},
                "costs": cost_file}
        Path(out).write_text(json.dumps({"info": info, "raw": raw}))
    mdist.barrier()
    mdist.shutdown()


def replay(program, slices) -> dict:
    """Simulate ``program`` with the mean measured duration of each (kind, stage)."""
    from dataclasses import dataclass as dc

    from matris.train.pipeline.costs import CostModel
    from matris.train.pipeline.simulate import simulate

    sums: dict = {}
    for s in slices:
        if s.action.kind.is_compute:
            key = (s.action.kind, s.action.stage)
            n, t = sums.get(key, (0, 0.0))
            sums[key] = (n + 1, t + s.end - s.start)
    table = {k: t / n for k, (n, t) in sums.items()}

    @dc(frozen=True)
    class TableCosts(CostModel):
        def duration(self, prog, action):
            return table.get((action.kind, action.stage), 0.0) if action.kind.is_compute \
                else 0.0

    cm = TableCosts(stage_times=((0.0, 0.0, 0.0, 0.0),) * program.num_stages)
    r = simulate(program, cm)
    return {"makespan": r.makespan, "bubble": r.bubble}


def summarize_real(path: str) -> dict:
    """Medians and replays from a worker's raw JSON."""
    from matris.train.pipeline.actions import parse_action
    from matris.train.pipeline.costs import load_costs
    from matris.train.pipeline.executor import build_program
    from matris.train.pipeline.simulate import simulate
    from matris.train.pipeline.trace import TraceSlice, trace_stats

    data = json.loads(Path(path).read_text())
    info, out = data["info"], {}
    bundle = load_costs(info["costs"]) if info.get("costs") else {}
    for label, runs in data["raw"].items():
        walls = [r["wall"] for r in runs]
        med = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
        slices = [TraceSlice(d, parse_action(a), s, e) for a, d, s, e in med["slices"]]
        stats = trace_stats(slices, info["P"])
        name, lazy, options = parse_label(label)
        costs = bundle.get("lazy" if lazy else "eager")
        options = resolve_options(options, info["P"], info["M"], info["blocks"], lazy, costs)
        prog = build_program(name, info["P"], info["M"], info["blocks"], lazy_p3=lazy,
                             costs=costs, options=options)
        sim = replay(prog, slices)
        # The cost model's own forecast of the peak (bytes of |A|, |A'|, W queues).
        predicted = simulate(prog, costs).peak_mem if costs is not None else None
        out[label] = {"program": info["programs"][label], "wall_s": statistics.median(walls),
                      "walls": walls, "mb_per_s": info["M"] / statistics.median(walls),
                      "atoms_per_s": info["atoms"] / statistics.median(walls),
                      "bubble": stats["bubble"], "trace_makespan": stats["makespan"],
                      "replay_makespan": sim["makespan"], "replay_bubble": sim["bubble"],
                      "peak_live_mib": [p / 2**20 for p in med["peak_live"]],
                      "predicted_mib": predicted and [p / 2**20 for p in predicted],
                      "slices": med["slices"]}
    return {"info": info, "schedules": out}


# ------------------------------------------------------------------------- emulated
def worker_emulated(out: str, M: int, ms_per_t1: float, repeats: int, cost_file: str,
                    labels: list[str]) -> None:
    from matris.train import dist as mdist
    from matris.train.dist.p2p import PeerLinks
    from matris.train.pipeline.costs import load_costs
    from matris.train.pipeline.emulate import measure
    from matris.train.pipeline.executor import build_program, default_costs
    from matris.train.pipeline.simulate import simulate
    from matris.train.pipeline.trace import trace_stats

    env = mdist.init_distributed(device="cpu", timeout_s=600)
    P, rank = env.world_size, env.rank
    links = PeerLinks(list(range(P)))
    rows, load = {}, [os.getloadavg()]
    for label in labels:
        name, _, variant = label.partition(":")
        lazy = variant == "lazy"
        costs = (load_costs(cost_file)["lazy" if lazy else "eager"].untied() if cost_file
                 else default_costs(P, lazy))  # untied: emulation takes any P
        prog = build_program(name, P, M, 1000, lazy_p3=lazy, costs=costs,  # no chunk limit
                             search_w=True)  # timing check: memory plays no part
        cm = costs.for_program(prog)
        unit = ms_per_t1 * 1e-3 / (sum(t[0] for t in costs.for_stages(P).stage_times) / P)
        sim = simulate(prog, cm)
        # Time is compressed by ``unit`` (s per modelled s): scale the bytes alike, so the
        # share of communication stays what it would be at the measured speed.
        byte_scale = unit if cm.units == "s" else 1.0
        spans, first = measure(prog, cm, rank, links, unit, repeats, byte_scale)
        load.append(os.getloadavg())
        if rank == 0:
            rows[label] = {"program": prog.describe(), "simulated_s": sim.makespan * unit,
                           "simulated_bubble": sim.bubble, "measured_s": spans,
                           "measured_bubble": trace_stats(first, P)["bubble"],
                           "slices": [(str(s.action), s.device, s.start, s.end) for s in first],
                           "actions": sum(len(o) for o in prog.orders),
                           "byte_scale": byte_scale}
    if rank == 0:
        Path(out).write_text(json.dumps({"P": P, "M": M, "ms_per_t1": ms_per_t1,
                                         "repeats": repeats, "costs": cost_file or "default",
                                         "loadavg": load, "rows": rows}))
    mdist.barrier()
    mdist.shutdown()


# --------------------------------------------------------------------- commands
def cmd_real(args) -> int:
    """Real compute at P ranks for every schedule (+ memory at P_mem), see pipeline_runs."""
    from matris.train.pipeline.actions import parse_action
    from matris.train.pipeline.trace import TraceSlice, gantt_png, write_trace

    stem = RESULTS / f"pipeline_real_{args.date}"
    raw = f"{stem}.raw.json"

    if args.preset != "tiny":  # the preset as released: its blocks and width
        from matris.config import preset

        cfg = preset(args.preset)
        if args.mem_P:
            raise SystemExit("--preset other than tiny: the memory run (--mem-P) uses tiny "
                             "models with --mem-blocks; pass --mem-P 0")
        args.blocks, args.width = cfg.num_blocks, cfg.width

    def costs_for(blocks: int) -> str:  # "measure": this run's model, measured here
        if args.costs != "measure":
            return args.costs or "-"
        return measure_cost_file(args.preset, blocks, args.width, args.atoms,
                                 Path(f"{stem}_{blocks}blocks.costs.json"))

    launch(args.P, ["worker-real", raw, args.preset, str(args.M), str(args.blocks),
                    str(args.width), str(args.atoms), str(args.repeats),
                    costs_for(args.blocks), *args.schedules])
    res = summarize_real(raw)
    mem = None
    if args.mem_P:
        raw_mem = f"{stem}.mem.raw.json"
        launch(args.mem_P, ["worker-real", raw_mem, "tiny", str(args.mem_M),
                            str(args.mem_blocks), str(args.width), str(args.atoms), "1",
                            costs_for(args.mem_blocks), *args.mem_schedules])
        mem = summarize_real(raw_mem)
    for label, r in res["schedules"].items():
        slices = [TraceSlice(d, parse_action(a), s, e) for a, d, s, e in r.pop("slices")]
        name = label.replace(":", "_")
        write_trace(slices, f"{stem}_{name}.trace.json", program=r["program"],
                    source="measured")
        gantt_png(slices, f"{stem}_{name}.png", title=f"{r['program']} (real compute) — "
                  f"bubble {r['bubble']:.1%}, step {r['wall_s']:.2f} s")
    if mem:
        for r in mem["schedules"].values():
            r.pop("slices")
    Path(f"{stem}.json").write_text(json.dumps({"date": args.date, "machine": MACHINE,
                                                "real": res, "memory": mem}, indent=1))
    write_real(res, mem, Path(f"{stem}.md"), " ".join(sys.argv[1:]), args.date, MACHINE)
    print(Path(f"{stem}.md").read_text())
    return 0


def cmd_emulated(args) -> int:
    """Emulated compute at each P: measured vs simulated makespan per schedule."""
    from matris.train.pipeline.actions import parse_action
    from matris.train.pipeline.trace import TraceSlice, gantt_png

    stem = RESULTS / f"pipeline_emulated_{args.date}"
    results = []
    for P in args.P:
        raw = f"{stem}_P{P}.raw.json"
        launch(P, ["worker-emulated", raw, str(args.M), str(args.ms), str(args.repeats),
                        args.costs or "-", *args.schedules])
        res = json.loads(Path(raw).read_text())
        for label, r in res["rows"].items():
            slices = [TraceSlice(d, parse_action(a), s, e) for a, d, s, e in r.pop("slices")]
            if label.startswith(("wavek", "symfold")):
                gantt_png(slices, f"{stem}_P{P}_{label.replace(':', '_')}.png",
                          title=f"{r['program']} emulated — measured "
                                f"{min(r['measured_s']):.2f} s, simulated "
                                f"{r['simulated_s']:.2f} s")
        Path(raw).unlink()
        results.append(res)
    Path(f"{stem}.json").write_text(json.dumps({"date": args.date, "machine": MACHINE,
                                                "runs": results}, indent=1))
    write_emulated(results, Path(f"{stem}.md"), " ".join(sys.argv[1:]), args.date,
                        MACHINE)
    print(Path(f"{stem}.md").read_text())
    return 0


def add_parsers(sub) -> None:
    """The ``real`` and ``emulated`` subcommands of ``pipeline_schedules.py``."""
    import time

    real = sub.add_parser("real", help="real compute on P ranks (mpirun), every schedule")
    real.add_argument("--P", type=int, default=2)
    real.add_argument("--M", type=int, default=4)
    real.add_argument("--blocks", type=int, default=4)
    real.add_argument("--width", type=int, default=64)
    real.add_argument("--atoms", type=int, default=16, choices=(8, 16, 32),
                      help="atoms per cell of the tiny runs' micro-batches")
    real.add_argument("--preset", default="tiny", help="model preset: tiny (with --blocks, "
                      "--width, --atoms) or e.g. 10m: the preset as released on the phase-"
                      "cost micro-batch (32-atom Cu-Au + 16-atom Si cell, the preset's "
                      "cutoffs; needs --mem-P 0)")
    real.add_argument("--repeats", type=int, default=3)
    real.add_argument("--schedules", nargs="+", default=[
        "gpipe4", "1f1b4", "1f1b4:W", "hanayo4", "hanayo4:W", "symfold", "symfold:W",
        "wavek", "symfold:lazy", "wavek:lazy"], help="NAME[:lazy|:W|:lazy+W] each")
    real.add_argument("--mem-P", type=int, default=4, help="0: skip the memory run")
    real.add_argument("--mem-M", type=int, default=8)
    real.add_argument("--mem-blocks", type=int, default=6)
    real.add_argument("--mem-schedules", nargs="+", default=[
        "gpipe4", "1f1b4", "1f1b4:W", "symfold", "symfold:W", "wavek"])
    real.add_argument("--costs", help="parallel.costs for every run (a `matris-train costs` "
                      "bundle of the model run here; `measure`: measure the run's own model "
                      "and micro-batch first, one file per block count; default: the "
                      "built-in profile)")
    real.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    real.set_defaults(func=cmd_real)
    emu = sub.add_parser("emulated", help="sleeping compute, real messages (mpirun)")
    emu.add_argument("--P", type=int, nargs="+", default=[4, 8])
    emu.add_argument("--M", type=int, default=8)
    emu.add_argument("--ms", type=float, default=25.0, help="milliseconds per stage t1")
    emu.add_argument("--repeats", type=int, default=3)
    emu.add_argument("--costs", help="cost JSON (default: the executor's default model)")
    emu.add_argument("--schedules", nargs="+", default=[
        "gpipe4", "1f1b4", "hanayo4", "symfold", "wavek", "wavek:lazy"])
    emu.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    emu.set_defaults(func=cmd_emulated)


def main(argv=None) -> int:
    from matris.train.cpu_allocator import tune_cpu_allocator

    tune_cpu_allocator()  # as the trainer does (train/cli.py)
    argv = sys.argv[1:] if argv is None else argv
    kind, rest = argv[0], argv[1:]
    if kind == "worker-real":
        out, preset_name, M, blocks, width, atoms, repeats, cost_file, *labels = rest
        worker_real(out, preset_name, int(M), int(blocks), int(width), int(atoms),
                    int(repeats), labels, "" if cost_file == "-" else cost_file)
    elif kind == "worker-emulated":
        out, M, ms, repeats, cost_file, *labels = rest
        worker_emulated(out, int(M), float(ms), int(repeats),
                        "" if cost_file == "-" else cost_file, labels)
    else:
        raise SystemExit(f"unknown worker {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------- reports
def write_real(res: dict, mem: dict | None, path: Path, argv: str, date: str,
               machine: str) -> None:
    """Markdown report of ``real`` (throughput/bubble at P, memory at P_mem)."""
    info, rows = res["info"], res["schedules"]
    ref = rows.get("symfold", next(iter(rows.values())))
    L = [f"# Pipeline schedules, real compute, {date}, {machine}", "",
         f"`python benchmarks/pipeline_schedules.py {argv}`", "",
         f"P = {info['P']} ranks on the 2 cores, 1 torch thread each, float32; model: "
         f"`{info.get('preset', 'tiny')}` preset with {info['blocks']} blocks, width "
         f"{info['width']}; M = {info['M']} micro-batches of 2 cells, "
         f"{info['atoms_per_mb']} atoms"
         + (f" and {info['angles_per_mb']} angles" if "angles_per_mb" in info else "")
         + f" each ({info['atoms']} atoms per step), E + F + σ loss; every schedule runs "
         "the same step, interleaved, "
         f"{info['repeats']} timed repeats after a warm-up (medians). Load average "
         f"(1 min) per round: {', '.join(f'{x[0]:.1f}' for x in info['loadavg'])} — other "
         "jobs share the cores, so absolute times move ±30 %; ratios are from the same run.",
         "", "Measured bubble: 1 − Σ busy / (P · makespan) of the median run's merged trace "
         "(busy = wall time inside compute actions). Replay: the simulator run on the same "
         "Program with this run's mean duration per (action kind, stage), i.e. the bubble "
         "the schedule would have with free communication and no runtime overhead. Peak "
         "live: the largest total of saved-tensor bytes on each rank during the step "
         "(`matris.train.pipeline.memory`).", "",
         "Compute s / rank: Σ busy / P of that trace, the work the schedule does "
         "(W splits and extra stages add to it; two schedules with the same stages and no "
         "W split do the same work, so their difference is the run's noise).", "",
         "| schedule | program | step s | micro-batches/s | × symfold | compute s / rank | "
         "measured bubble | replay bubble | replay / measured makespan | "
         "peak live MiB per rank |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, r in rows.items():
        busy = (1.0 - r["bubble"]) * r["trace_makespan"]
        L.append(f"| {label} | {r['program']} | {r['wall_s']:.2f} | {r['mb_per_s']:.3f} | "
                 f"{ref['wall_s'] / r['wall_s']:.2f} | {busy:.2f} | {r['bubble']:.1%} | "
                 f"{r['replay_bubble']:.1%} | {r['replay_makespan'] / r['trace_makespan']:.2f}"
                 f" | {' / '.join(f'{x:.0f}' for x in r['peak_live_mib'])} |")
    if mem:
        mi, mr = mem["info"], mem["schedules"]
        L += ["", f"## Peak activation memory per rank at P = {mi['P']}", "",
              f"M = {mi['M']} micro-batches, `tiny` preset with {mi['blocks']} blocks, width "
              f"{mi['width']}; peak live saved-tensor bytes per rank (MiB), one step after a "
              "warm-up; gpipe4 holds every micro-batch's graphs, symfold at most 2P − i P1 "
              "and i + 1 P2 graphs on rank i.", "",
              "| schedule | " + " | ".join(f"rank {i}" for i in range(mi["P"])) +
              " | max | step s |", "|---|" + "---:|" * (mi["P"] + 2)]
        for label, r in mr.items():
            L.append(f"| {label} | " + " | ".join(f"{x:.0f}" for x in r["peak_live_mib"]) +
                     f" | {max(r['peak_live_mib']):.0f} | {r['wall_s']:.2f} |")
        if mi.get("costs"):
            L += ["", f"Forecast by the cost model (`{mi['costs']}`: the simulator's peak of "
                  "|A| + |A'| + W queues per rank, MiB) and the runner's stage cuts:", "",
                  "| schedule | cuts | " + " | ".join(f"rank {i}" for i in range(mi["P"])) +
                  " | max | measured max / forecast max |", "|---|---|" + "---:|" * (mi["P"] + 2)]
            for label, r in mr.items():
                pred = r.get("predicted_mib") or [float("nan")] * mi["P"]
                L.append(f"| {label} | {mi['cuts'][label]} | " + " | ".join(
                    f"{x:.0f}" for x in pred) + f" | {max(pred):.0f} | "
                    f"{max(r['peak_live_mib']) / max(pred):.2f} |")
        if "gpipe4" in mr and "symfold" in mr:
            ratio = max(mr["symfold"]["peak_live_mib"]) / max(mr["gpipe4"]["peak_live_mib"])
            L += ["", f"symfold / gpipe4 (largest rank): {ratio:.2f}"]
    path.write_text("\n".join(L) + "\n")


def write_emulated(results: list[dict], path: Path, argv: str, date: str,
                   machine: str) -> None:
    L = [f"# Pipeline schedules, emulated compute, {date}, {machine}", "",
         f"`python benchmarks/pipeline_schedules.py {argv}`", "",
         "Every compute action sleeps for its cost (the cost model scaled so that t1 of a "
         "stage of the P-stage cut lasts the given milliseconds); every hand-off is a real "
         "gloo message of the model's byte size. Measured makespan (first start to last end "
         "over all ranks, median of the repeats) against the simulator's for the same "
         "Program and costs (free communication). With a measured cost file (seconds) the "
         "message bytes are scaled by the same factor as time, so that communication keeps "
         "its measured share.", ""]
    for res in results:
        L += [f"## P = {res['P']}, M = {res['M']}, t1 = {res['ms_per_t1']:g} ms, costs: "
              f"{res['costs']}", "", f"Load average (1 min) per schedule: "
              f"{', '.join(f'{x[0]:.1f}' for x in res['loadavg'])}.", "",
              "| schedule | program | actions | simulated s | measured s | measured / "
              "simulated | simulated bubble | measured bubble |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
        for label, r in res["rows"].items():
            m = statistics.median(r["measured_s"])
            L.append(f"| {label} | {r['program']} | {r['actions']} | {r['simulated_s']:.2f} | "
                     f"{m:.2f} | {m / r['simulated_s']:.3f} | {r['simulated_bubble']:.1%} | "
                     f"{r['measured_bubble']:.1%} |")
        L.append("")
    path.write_text("\n".join(L) + "\n")
