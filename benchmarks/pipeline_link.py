"""Hand-off time between two pipeline ranks on this machine: the α–β link model that the
simulator charges, measured through the executor's own path.

    python benchmarks/pipeline_link.py [--preset 10m] [--repeats 100] [--date D] [--refit]

Starts itself under ``mpirun -n 2`` (one torch thread per rank). Every hand-off goes
through :class:`matris.train.dist.p2p.PeerLinks`, as in the executor: an int64 header,
then one message per tensor, over torch.distributed (gloo on CPU, NCCL when both ranks
have a GPU). Rank 0 sends, rank 1 sends the same hand-off back (ping-pong); one-way time
= round trip / 2, median over ``--repeats`` rounds (every payload once per round, so
load bursts on the shared cores hit all payloads alike) after two warm-up rounds.

Payloads: one float32 tensor of 2^k bytes (k = 3 … 25), and the **real boundary** of the
preset's phase-cost micro-batch (``pipeline_phase_costs.structures``: atom, bond and angle
features after stage 0's P1, the hand-off of P1, P2 ``a``, P3 ``ā`` and P4 ``h̄`` alike).

Link model: α = median over the payloads ≤ 1 KiB of their one-way time less bytes / β
(latency; header included); β = median over the payloads ≥ 1 MiB of bytes / (t − α)
(bandwidth); α_h = the real boundary's measured time less its bytes / β (its four
messages pay more latency than a small payload's two). The report puts α + bytes/β next
to the measured real boundary, and the boundary's time next to t1 of one stage of the
uniform P-stage cut of a cost file (``--measured-costs``), the quantity that decides
whether four chunks per rank survive communication (``pipeline_comm_chunks.py --link``).
The ranks are idle while they communicate here; in a pipeline step gloo's transfer shares
the cores with compute.

Writes ``benchmarks/results/pipeline_link_<date><tag>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MACHINE = "2-vCPU CPU VM"
SIZES = [2 ** k for k in range(3, 26)]  # bytes: 8 B … 32 MiB
SMALL, LARGE = 1024, 1 << 20  # α from payloads ≤ SMALL, β from payloads ≥ LARGE


def boundary(preset_name: str) -> list:
    """The P1 hand-off of stage 0 (atom (N, D), bond (U, D), angle (A, D) float32) of the
    preset's phase-cost micro-batch, cut after its first interaction block."""
    import torch

    from matris.config import preset
    from matris.model import MatRIS
    from matris.train.graph_parallel.testing import labelled_batch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pipeline_phase_costs import structures  # a sibling script

    torch.manual_seed(0)
    cfg = preset(preset_name)
    model = MatRIS(cfg).float()
    batch = labelled_batch(structures(cfg, seed=0), seed=1, dtype=torch.float32)
    stage0 = model.stages([1])[0]
    with torch.no_grad():
        io = stage0(None, batch.graph, batch.graph.positions, None)
    return [t.contiguous() for t in io.tensors().values()]


def round_trip(links, rank: int, tensors: list, tag: int) -> float:
    """One-way time (s, rank 0's clock) of one round trip of ``tensors``."""
    import torch.distributed as dist

    dist.barrier()
    t0 = time.perf_counter()
    if rank == 0:
        links.send(tensors, 1, tag)
        links.recv(1, tag)
    else:
        back = links.recv(0, tag)
        links.send(back, 0, tag)
    links.finish()
    return (time.perf_counter() - t0) / 2


def worker(args) -> None:
    import torch

    from matris.train.dist.launch import init_distributed
    from matris.train.dist.p2p import PeerLinks

    env = init_distributed(device="auto", threads=1)
    if env.world_size != 2:
        raise SystemExit(f"pipeline_link.py worker needs 2 ranks, got {env.world_size}")
    links = PeerLinks([0, 1], env.device)
    # Rank 1 only echoes what it receives: the payloads (and the model behind the real
    # boundary) live on rank 0.
    sender = env.rank == 0
    real = [t.to(env.device) for t in boundary(args.preset)] if sender else []
    payloads = {str(nbytes): [torch.zeros(max(1, nbytes // 4), device=env.device)]
                if sender else [] for nbytes in SIZES}
    payloads["real"] = real
    times: dict[str, list[float]] = {key: [] for key in payloads}
    # Rounds outside, payloads inside: a burst of load on the shared cores hits every
    # payload alike instead of one size. Two warm-up rounds.
    for r in range(args.repeats + 2):
        for i, (key, tensors) in enumerate(payloads.items()):
            t = round_trip(links, env.rank, tensors, tag=10 + i)
            if r >= 2:
                times[key].append(t)
    if sender:
        real_times = times.pop("real")
        out = {"sizes": times, "device": str(env.device), "backend": env.backend,
               "real": {"shapes": [list(t.shape) for t in real],
                        "bytes": sum(t.numel() * t.element_size() for t in real),
                        "times": real_times}}
        Path(args.raw).write_text(json.dumps(out))


def fit(raw: dict) -> dict:
    """α (s), β (B/s) and the model's error on the real boundary (see module docstring)."""
    med = {int(b): statistics.median(t) for b, t in raw["sizes"].items()}
    # α: median over the small payloads of t − b/β; β: median of the large payloads'
    # per-size bandwidths b / (t − α), robust to one slow size (a least squares fit is
    # dominated by the largest payload, the one most exposed to noise). Each needs the
    # other: a few alternations converge (the small payloads' b/β is tiny).
    inv_beta = 0.0
    for _ in range(5):
        alpha = statistics.median(t - b * inv_beta for b, t in med.items() if b <= SMALL)
        inv_beta = statistics.median((t - alpha) / b for b, t in med.items() if b >= LARGE)
    real_bytes = raw["real"]["bytes"]
    real = statistics.median(raw["real"]["times"])
    model = alpha + real_bytes * inv_beta
    # The real boundary is a header and three tensors, four messages (the small payloads:
    # two), so it pays more latency than α: the simulator charges it this hand-off latency,
    # which makes α_h + bytes/β the measured boundary time.
    alpha_handoff = max(alpha, real - real_bytes * inv_beta)
    return {"alpha_s": alpha, "beta_Bps": 1.0 / inv_beta, "alpha_handoff_s": alpha_handoff,
            "median_one_way_s": med,
            "real_bytes": real_bytes, "real_shapes": raw["real"]["shapes"],
            "real_one_way_s": real, "real_model_s": model,
            "real_spread_s": [min(raw["real"]["times"]), max(raw["real"]["times"])]}


def stage_t1(costs_file: str, Ps: list[int]) -> dict[int, dict[str, float]]:
    """{P: {profile: t1 (s) of one stage of the uniform P-stage cut}} of a cost file."""
    from matris.train.pipeline.costs import load_costs

    models = load_costs(costs_file)
    return {P: {name: sum(t[0] for t in cm.untied().for_stages(P).stage_times) / P
                for name, cm in models.items()} for P in Ps}


def markdown(res: dict, argv: str) -> str:
    f = res["fit"]
    L = [f"# Pipeline hand-off time, {res['date']}, {MACHINE}", "",
         f"`python benchmarks/pipeline_link.py {argv}`", "",
         f"Two ranks on this machine, torch.distributed backend **{res['backend']}** on "
         f"`{res['device']}`, the executor's `PeerLinks` (header + one message per tensor); "
         f"one-way = round trip / 2, median of {res['repeats']} rounds, every payload once "
         "per round. The ranks do nothing else while they communicate.", "",
         f"* latency α = **{f['alpha_s'] * 1e6:.0f} µs** (median over payloads ≤ 1 KiB)",
         f"* bandwidth β = **{f['beta_Bps'] / 1e9:.2f} GB/s** (payloads ≥ 1 MiB)",
         f"* real boundary of the `{res['preset']}` phase-cost micro-batch (shapes "
         f"{', '.join('×'.join(map(str, s)) for s in f['real_shapes'])}; "
         f"{f['real_bytes'] / 1e6:.2f} MB): measured **{f['real_one_way_s'] * 1e3:.2f} ms** "
         f"one-way (min {f['real_spread_s'][0] * 1e3:.2f}, max "
         f"{f['real_spread_s'][1] * 1e3:.2f}), α + bytes/β predicts "
         f"{f['real_model_s'] * 1e3:.2f} ms",
         f"* hand-off latency for the simulator α_h = **{f['alpha_handoff_s'] * 1e6:.0f} µs**: "
         "the measured boundary time less its bytes / β (a boundary is four messages, a "
         "small payload two); `pipeline_comm_chunks.py --link` charges α_h + bytes / β", ""]
    if res.get("t1"):
        L += [f"Hand-off of the real boundary as a fraction of t1 of one stage (uniform "
              f"P-stage cut of `{res['measured_costs']}`):", "",
              "| P | profile | t1 per stage, ms | hand-off / t1 |", "|---|---|---:|---:|"]
        for P, per in res["t1"].items():
            for name, t1 in per.items():
                L.append(f"| {P} | {name} | {t1 * 1e3:.1f} | "
                         f"{f['real_one_way_s'] / t1:.3f} |")
        L.append("")
    L += ["| payload bytes | one-way µs (median) | α + b/β µs |", "|---:|---:|---:|"]
    for b, t in f["median_one_way_s"].items():
        L.append(f"| {b} | {t * 1e6:.0f} | {(f['alpha_s'] + int(b) / f['beta_Bps']) * 1e6:.0f} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="10m")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--measured-costs", default=str(
        RESULTS / "pipeline_phase_costs_2026-11-22f_uniform.costs.json"))
    ap.add_argument("--P", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--refit", action="store_true",
                    help="rebuild the report from the date's raw times (no measurement)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--raw", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    stem = RESULTS / f"pipeline_link_{args.date}{args.tag}"
    raw = f"{stem}.raw.json"
    if not args.refit:
        mpirun = Path(sys.executable).parent / "mpirun"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        subprocess.run([str(mpirun), "-n", "2", sys.executable, "-W", "ignore::FutureWarning",
                        str(Path(__file__).resolve()), "--worker", "--raw", raw,
                        "--preset", args.preset, "--repeats", str(args.repeats)],
                       check=True, env=env, cwd=REPO, timeout=1800)
    data = json.loads(Path(raw).read_text())
    res = {"date": args.date, "preset": args.preset, "repeats": len(data["real"]["times"]),
           "device": data["device"], "backend": data["backend"], "fit": fit(data),
           "measured_costs": args.measured_costs and os.path.relpath(args.measured_costs, REPO)}
    if args.measured_costs:
        res["t1"] = stage_t1(args.measured_costs, args.P)
    Path(f"{stem}.json").write_text(json.dumps(res, indent=1))
    Path(f"{stem}.md").write_text(markdown(res, " ".join(sys.argv[1:] if argv is None
                                                           else argv)))
    print(Path(f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
