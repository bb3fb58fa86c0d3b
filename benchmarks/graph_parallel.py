"""Graph-parallel figures: memory per rank, halo fraction, communication volume, step time.

    python benchmarks/graph_parallel.py [--reps 2] [--steps 2] [--cell 10 10 20]

writes ``benchmarks/results/graph_parallel_<date>.{json,md}``. The orchestrator (this
process, no MPI) computes the partition figures itself and launches workers, one
configuration at a time, interleaved over ``--reps`` rounds so that every configuration
sees similar load from other jobs on the shared cores:

- timing: serial ``LocalRunner`` with 1 and with 2 torch threads, and G = 2
  (``mpirun -n 2``, 1 thread per rank): a float32 training step (E + F + σ loss, double
  backward) of the `tiny` preset on a rattled, sheared ~2,000-atom cell; wall and CPU
  time per step (GP: the slowest rank);
- memory: serial and G = 1, 2, 4: the peak RSS of each rank during one step, with the
  kernel's high-water mark reset after setup (``/proc/self/clear_refs``) and glibc's
  mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``) so freed blocks go back to the OS and
  RSS follows live memory (this slows the step; memory runs are not timed);
- communication: bytes each rank sends per exchange kernel, split into the forward, the
  force backward (P2) and the loss backward (P3 + P4), per interaction block.

Internal: ``graph_parallel.py worker KIND ...`` is what the orchestrator launches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATE, MACHINE = "2026-11-21", "2-vCPU CPU VM"


# --------------------------------------------------------------------------- worker

def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _setup(cell, dtype):
    from matris.config import preset
    from matris.testing import random_model
    from matris.train.graph_parallel.testing import labelled_batch, lattice

    graph = lattice(tuple(cell), 2.6, 0.1, 0.15, seed=1)
    batch = labelled_batch([graph], seed=0, dtype=dtype)
    model = random_model(preset("tiny"), seed=0).to(dtype)
    return model, batch


def worker(args) -> None:
    import torch

    model, batch = _setup(args.cell, torch.float32)
    from matris.train.graph_parallel.testing import counts_of, loss_config

    counts = counts_of([batch])
    cpu = torch.device("cpu")
    load = [os.getloadavg()[0]]
    gp, rank, mdist = args.kind == "gp", 0, None
    if gp:
        from matris.train import dist as mdist
        from matris.train.dist.halo import TorchTransport
        from matris.train.graph_parallel.runner import GraphParallelRunner

        env = mdist.init_distributed(device="cpu", timeout_s=600)
        rank, size = env.rank, env.world_size
        groups = mdist.build_groups(mdist.Topology(pp=1, dp=1, gp=size, world_size=size), rank)
        runner = GraphParallelRunner(model, loss_config(), cpu, "float32",
                                     TorchTransport(groups.gp))
    else:
        from matris.train.step import LocalRunner

        torch.set_num_threads(args.threads)
        runner = LocalRunner(model, loss_config(), cpu, "float32")

    def step() -> tuple[float, float]:
        if gp:
            mdist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        runner.run([batch], counts)
        for p in runner.parameters():
            p.grad = None
        return time.perf_counter() - t0, time.process_time() - c0

    out: dict = {"kind": args.kind, "threads": torch.get_num_threads(), "rank": rank}
    if args.memory:
        base = _rss_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
        step()
        out.update(base_mib=base / 1024, peak_mib=_rss_kb("VmHWM") / 1024)
    else:
        for _ in range(args.warmup):
            step()
        times = [step() for _ in range(args.steps)]
        out.update(wall=[t[0] for t in times], cpu=[t[1] for t in times])
    if gp and args.volume:
        out.update(volume=_volumes(runner, model, batch, counts), part=_part_info(runner, batch))
    load.append(os.getloadavg()[0])
    out["load"] = load
    if gp:
        everyone = mdist.allgather_object(out)
        if rank == 0:
            Path(args.out).write_text(json.dumps(everyone))
        mdist.barrier()
        mdist.shutdown()
    else:
        Path(args.out).write_text(json.dumps([out]))


def _part_info(runner, batch) -> dict:
    import time as _t

    t0 = _t.perf_counter()
    part, _ = runner.prepare(batch.graph)
    return {"seconds": _t.perf_counter() - t0, **part.index.counts()}


def _volumes(runner, model, batch, counts) -> dict:
    """Bytes this rank sends per kernel in the forward, the force backward (P2) and the
    loss backward (P3 + P4) of one step."""
    from matris.train.graph_parallel.forward import part_outputs

    def volume(**kw):
        part, ex = runner.prepare(batch.graph)
        part_outputs(model, part, ex, **kw)
        return dict(ex.volume)

    fwd = volume(forces=False, stress=False, magmoms=True)
    fwd_p2 = volume(forces=True, stress=True, magmoms=True, create_graph=True)
    runner.run([batch], counts)
    step = dict(runner.last_exchange.volume)
    keys = sorted(set(fwd) | set(fwd_p2) | set(step))
    return {k: {"forward": fwd.get(k, 0), "p2": fwd_p2.get(k, 0) - fwd.get(k, 0),
                "p3p4": step.get(k, 0) - fwd_p2.get(k, 0)} for k in keys}


def transport_worker(args) -> None:
    """Median seconds per exchange call of each transport (p2p, alltoall) on the benchmark
    cell's part, features of width ``--width``: halo copy (n_local, D), cut-bond sum
    (U_local, 5·D: one block's two reductions at once), energies (B,)."""
    import torch

    from matris.train import dist as mdist
    from matris.train.dist.halo import GraphExchange, TorchTransport
    from matris.train.graph_parallel.part import build_part
    from matris.train.graph_parallel.partition import partition_graph
    from matris.train.graph_parallel.testing import lattice

    env = mdist.init_distributed(device="cpu", timeout_s=600)
    groups = mdist.build_groups(mdist.Topology(pp=1, dp=1, gp=env.world_size,
                                               world_size=env.world_size), env.rank)
    g = lattice(tuple(args.cell), 2.6, 0.1, 0.15, seed=1).to(dtype=torch.float32)
    part = build_part(g, partition_graph(g, env.world_size), env.rank)
    gen = torch.Generator().manual_seed(env.rank)
    h = torch.randn(part.plan.num_atoms, args.width, generator=gen)
    b = torch.randn(part.plan.num_bonds, 5 * args.width, generator=gen)
    e = torch.randn(g.num_structures, generator=gen)
    out: dict = {"rank": env.rank, "load": [os.getloadavg()[0]]}
    for method in ("p2p", "alltoall"):
        ex = GraphExchange(part.plan, TorchTransport(groups.gp, method))
        res = {}
        for name, call, x in (("halo_copy", ex.atoms, h), ("bond_sum", ex.bonds, b),
                              ("group_sum", ex.structures, e)):
            times = []
            for k in range(args.steps + 3):  # 3 warm-up calls
                mdist.barrier()
                t0 = time.perf_counter()
                call(x)
                if k >= 3:
                    times.append(time.perf_counter() - t0)
            res[name] = median(times)
        res["bytes_per_call"] = {k: v / ex.calls[k] for k, v in ex.volume.items()}
        plan, tr = part.plan, ex.transport
        me = plan.part
        send = [None if q == me else b.index_select(0, plan.shared[q])
                for q in range(plan.num_parts)]
        shapes = [(plan.shared[q].shape[0], b.shape[1]) for q in range(plan.num_parts)]
        times = []
        for k in range(args.steps + 3):  # the bond sum's messages alone, no local copies
            mdist.barrier()
            t0 = time.perf_counter()
            tr.exchange(send, shapes, b.dtype, b.device)
            if k >= 3:
                times.append(time.perf_counter() - t0)
        res["bond_sum_messages"] = median(times)
        out[method] = res
    out["load"].append(os.getloadavg()[0])
    everyone = mdist.allgather_object(out)
    if env.rank == 0:
        Path(args.out).write_text(json.dumps(everyone))
    mdist.barrier()
    mdist.shutdown()


# --------------------------------------------------------------------------- orchestrator

def launch(kind: str, n: int, extra: list[str], memory: bool, threads: int = 1) -> list[dict]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    if memory:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, __file__, "worker", kind, "--out", str(out), *extra]
        if memory:
            cmd.append("--memory")
        if kind in ("gp", "transport"):
            cmd = [str(Path(sys.executable).parent / "mpirun"), "-n", str(n), *cmd]
        else:
            cmd += ["--threads", str(threads)]
        subprocess.run(["nice", *cmd], check=True, env=env, cwd=REPO)
        return json.loads(out.read_text())


def halo_table(sizes, parts=(2, 4, 8)) -> list[dict]:
    from matris.train.graph_parallel.partition import partition_graph
    from matris.train.graph_parallel.testing import lattice

    rows = []
    for reps in sizes:
        g = lattice(reps, 2.6, 0.1, 0.15, seed=1)
        for G in parts:
            t0 = time.perf_counter()
            part = partition_graph(g, G)
            seconds = time.perf_counter() - t0
            s = part.stats()
            cut = sum(c["cut_bonds"] for c in s["parts"]) // 2
            rows.append({"atoms": g.n_atoms, "cell": list(reps), "G": G,
                         "halo_fraction": s["halo_fraction"], "cut_bond_fraction": cut / g.n_bonds,
                         "imbalance": s["imbalance"], "partition_s": seconds})
    return rows


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])


def _mib(x: float) -> str:
    return f"{x:,.0f}"


def render(r: dict) -> str:
    """The markdown report of a result dict (see `main`)."""
    g = r["graph"]
    lines = [f"# Graph parallelism (GP) figures ({r['date']}, {r['machine']})", "",
             f"`benchmarks/graph_parallel.py`. Rattled, sheared simple-cubic cell "
             f"{'×'.join(map(str, r['cell']))} = {g['atoms']:,} atoms, {g['edges']:,} edges, "
             f"{g['angles']:,} angles; `{r['preset']}` preset (cutoffs 5 / 3.5 Å), "
             f"{r['dtype']}, one training step = forward + force/stress backward with "
             f"create_graph + loss backward (E + F + σ + magmoms, Huber). Load average "
             f"(1 min) at start {r['load_start'][0]:.2f}, at end {r['load_end'][0]:.2f}: the 2 "
             "cores are shared with other jobs, so wall times are indicative; CPU times "
             "are less affected.", "", "## Step time (median over steps and rounds)", "",
             "| configuration | wall s | CPU s / rank | wall vs serial 1 thread | "
             "load (1 min) during | samples (wall s) |", "|---|---:|---:|---:|---:|---|"]
    t = r["timing"]
    base = median([w for run in t["serial_1t"] for w in run["wall"]])
    rows = [("serial, 1 thread", t["serial_1t"]), ("serial, 2 threads", t["serial_2t"]),
            ("GP = 2 (mpirun -n 2, 1 thread each)", t["gp2"])]
    for name, runs in rows:
        if name.startswith("GP"):  # per step: the slowest rank
            walls = [max(rk["wall"][i] for rk in job) for job in runs
                     for i in range(len(job[0]["wall"]))]
            cpus = [median([rk["cpu"][i] for rk in job]) for job in runs
                    for i in range(len(job[0]["cpu"]))]
            loads = [x for job in runs for rk in job for x in rk["load"]]
        else:
            walls = [w for run in runs for w in run["wall"]]
            cpus = [c for run in runs for c in run["cpu"]]
            loads = [x for run in runs for x in run["load"]]
        lines.append(f"| {name} | {median(walls):.2f} | {median(cpus):.2f} | "
                     f"{base / median(walls):.2f}× | {min(loads):.1f}–{max(loads):.1f} | "
                     f"{', '.join(f'{w:.1f}' for w in walls)} |")
    lines += ["", "## Peak memory per rank (one training step)", "",
              "Peak RSS of each rank (high-water mark reset after building model and graph; "
              "`MALLOC_MMAP_THRESHOLD_=131072` so freed blocks return to the OS). "
              "'step' = peak − RSS before the step.", "",
              "| configuration | ranks | peak RSS / rank, max (MiB) | step memory / rank, "
              "max (MiB) | vs serial step memory |", "|---|---:|---:|---:|---:|"]
    m = r["memory"]
    ser = max(x["peak_mib"] - x["base_mib"] for x in m["serial"])
    for key, runs in m.items():
        step = max(x["peak_mib"] - x["base_mib"] for x in runs)
        lines.append(f"| {key} | {len(runs)} | {_mib(max(x['peak_mib'] for x in runs))} | "
                     f"{_mib(step)} | {step / ser:.2f} |")
    lines += ["", "## Halo fraction (halo atoms / owned atoms) and cut bonds vs cell size", "",
              "| atoms | G | halo / owned | cut bonds / bonds | imbalance (max/mean weight) | "
              "partition (s) |", "|---:|---:|---:|---:|---:|---:|"]
    for h in r["halo"]:
        lines.append(f"| {h['atoms']:,} | {h['G']} | {h['halo_fraction']:.3f} | "
                     f"{h['cut_bond_fraction']:.3f} | {h['imbalance']:.3f} | "
                     f"{h['partition_s']:.3f} |")
    job = next(j for j in t["gp2"] if "volume" in j[0])
    blocks = 2  # the tiny preset
    lines += ["", "## Communication volume, G = 2 (bytes sent per rank, float32)", "",
              "Per interaction block: `halo_copy` = atom-feature halo refresh (2 per block in "
              "the forward; in P3 as the adjoint of P2's reduce), `halo_reduce` = reverse sum "
              "of halo cotangents, `bond_sum` = cut-bond partial sums (line attention: 4·D "
              "numerators/denominators, line refinement: D). `group_sum` (energies, stress) "
              "is per step, not per block.", "",
              "| kernel | rank | forward KiB | P2 KiB | P3+P4 KiB | per block, whole step KiB |",
              "|---|---:|---:|---:|---:|---:|"]
    for rk in job:
        for kern, v in rk["volume"].items():
            per = 1 if kern == "group_sum" else blocks
            total = (v["forward"] + v["p2"] + v["p3p4"]) / per / 1024
            lines.append(f"| {kern} | {rk['rank']} | {v['forward'] / 1024:,.1f} | "
                         f"{v['p2'] / 1024:,.1f} | {v['p3p4'] / 1024:,.1f} | "
                         f"{total:,.1f}{'' if per > 1 else ' (per step)'} |")
    parts = [rk["part"] for rk in job]
    lines += ["", "Parts (G = 2): " + "; ".join(
        f"rank {k}: {p['owned']} owned + {p['halo']} halo atoms, {p['angles']:,} angles, "
        f"{p['cut_bonds']:,} cut bonds, partition + local graph {p['seconds']:.2f} s"
        for k, p in enumerate(parts)), ""]
    if "transport" in r:
        lines += ["## Transports: time per exchange call (median of 30, slowest rank)", "",
                  "Width D = 128 (the production width), float32, parts of the benchmark cell. "
                  "`bond_sum` moves 5·D per cut bond (one block's two reductions at once); its "
                  "time includes the out-of-place copy of the whole local (U, 5·D) tensor "
                  "that autograd needs, `bond_sum_messages` is the message exchange alone. "
                  "`p2p` = irecv/isend with the peers that exchange rows; `alltoall` = one "
                  "`all_to_all_single` per call.", "",
                  "| G | kernel | KiB sent / rank | p2p ms | alltoall ms |",
                  "|---:|---|---:|---:|---:|"]
        kernels = ("halo_copy", "bond_sum", "bond_sum_messages", "group_sum")
        for key, job in r["transport"].items():
            for kern in kernels:
                kib = max(rk["p2p"]["bytes_per_call"].get(kern.split("_messages")[0], 0)
                          for rk in job) / 1024
                ms = [1e3 * max(rk[m][kern] for rk in job) for m in ("p2p", "alltoall")]
                lines.append(f"| {key[1:]} | {kern} | {kib:,.1f} | {ms[0]:.2f} | {ms[1]:.2f} |")
        loads = [x for job in r["transport"].values() for rk in job for x in rk["load"]]
        lines += ["", f"Load (1 min) during: {min(loads):.1f}–{max(loads):.1f}.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--steps-2t", type=int, default=1,
                    help="timed steps of the 2-thread serial run (no warm-up: with other jobs "
                         "on the cores, 2 threads can be ~10x slower)")
    ap.add_argument("--cell", type=int, nargs=3, default=[10, 10, 20])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--only", choices=["all", "transport"], default="all",
                    help="transport: (re)measure only the transports, into the existing JSON")
    args = ap.parse_args(argv)
    common = ["--cell", *map(str, args.cell)]
    out = Path(args.out)
    transport_args = [*common, "--steps", "30", "--width", "128"]
    if args.only == "transport":
        path = out / f"graph_parallel_{DATE}.json"
        result = json.loads(path.read_text())
        result["transport"] = {f"G{G}": launch("transport", G, transport_args, False)
                               for G in (2, 4)}
        path.write_text(json.dumps(result, indent=1))
        (out / f"graph_parallel_{DATE}.md").write_text(render(result))
        return
    timed = [*common, "--steps", str(args.steps), "--warmup", "1"]
    from matris.train.graph_parallel.testing import lattice

    g = lattice(tuple(args.cell), 2.6, 0.1, 0.15, seed=1)
    result = {"date": DATE, "machine": MACHINE, "cell": args.cell, "preset": "tiny",
              "dtype": "float32", "load_start": os.getloadavg(),
              "graph": {"atoms": g.n_atoms, "edges": g.n_edges, "bonds": g.n_bonds,
                        "angles": g.n_angles}}
    result["halo"] = halo_table([(4, 4, 8), (5, 5, 10), (6, 6, 12), (8, 8, 16), (10, 10, 20),
                                 (13, 13, 24), (16, 16, 32)])
    timing: dict[str, list] = {"serial_1t": [], "serial_2t": [], "gp2": []}
    for rep in range(args.reps):
        timing["serial_1t"] += launch("serial", 1, timed, False, threads=1)
        timing["serial_2t"] += launch("serial", 1, [*common, "--steps", str(args.steps_2t),
                                                    "--warmup", "0"], False, threads=2)
        timing["gp2"].append(launch("gp", 2, timed + ["--volume"] * (rep == 0), False))
    result["timing"] = timing
    memory = {"serial": launch("serial", 1, common, True)}
    for G in (1, 2, 4):
        memory[f"gp{G}"] = launch("gp", G, common, True)
    result["memory"] = memory
    result["transport"] = {f"G{G}": launch("transport", G, transport_args, False)
                           for G in (2, 4)}
    result["load_end"] = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"graph_parallel_{DATE}.json").write_text(json.dumps(result, indent=1))
    (out / f"graph_parallel_{DATE}.md").write_text(render(result))
    print((out / f"graph_parallel_{DATE}.md").read_text())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        wp = argparse.ArgumentParser()
        wp.add_argument("kind", choices=["serial", "gp", "transport"])
        wp.add_argument("--out", required=True)
        wp.add_argument("--cell", type=int, nargs=3, default=[10, 10, 20])
        wp.add_argument("--steps", type=int, default=2)
        wp.add_argument("--warmup", type=int, default=1)
        wp.add_argument("--threads", type=int, default=1)
        wp.add_argument("--memory", action="store_true")
        wp.add_argument("--volume", action="store_true")
        wp.add_argument("--width", type=int, default=128)
        wargs = wp.parse_args(sys.argv[2:])
        (transport_worker if wargs.kind == "transport" else worker)(wargs)
    else:
        main()
