"""Measure the four phases of a model per pipeline unit and turn them into a CostModel.

The torch side of ``benchmarks/pipeline_phase_costs.py`` and ``matris-train costs``: one
micro-batch runs through the executor's own phase code (:class:`FourPhase`) as a one-rank
chain over the model cut at every unit (stage 0 = embedding, then one interaction block
per stage, the last = the readout alone), phase by phase, in eight variants
(:data:`RUNS`): eager, eager with W3/W4 split (each W right after its critical part, and
late: after the step's last critical action, as a splitting schedule runs it), lazy P3,
lazy with W4 split (right after and late), and the whole model as one stage, eager (for
the fixed per-stage cost) and lazy (its P4 is the fused turn of a last stage that holds
real work). Per-action times are medians over the
repeats; |A| (|A'|) = bytes of the distinct tensors saved for backward during P1 (P2) of a
stage, parameters excluded (``saved_tensors_hooks``); |Q3| (|Q4|) = bytes of the distinct
gradient factors a split P3 (P4) queues for its W action that A and A' do not hold already.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from matris.nn.exchange import LOCAL

from .actions import Kind
from .clock import action_clock
from .costs import CostModel
from .executor import stage_parameters
from .phases import FourPhase, Micro, Slot


class SavedBytes:
    """Bytes of distinct non-parameter storages saved for backward inside the context."""

    def __init__(self, params, seen: set | None = None):
        self.params = {p.untyped_storage().data_ptr() for p in params}
        self.seen = seen if seen is not None else set()
        self.nbytes = 0

    def pack(self, t):
        st = t.untyped_storage()
        key = st.data_ptr()
        if key not in self.params and key not in self.seen:
            self.seen.add(key)
            self.nbytes += st.nbytes()
        return t.detach()  # not t: a saved output would hold its own grad_fn (a cycle)

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _nb(t) -> int:
    return t.numel() * t.element_size()


def queue_bytes(queue, held: set, params: set) -> int:
    """Bytes of the distinct storages ``queue`` keeps alive beyond ``held`` and ``params``
    (sets of storage data pointers)."""
    seen, n = set(), 0
    for t in queue.tensors():
        st = t.untyped_storage()
        key = st.data_ptr()
        if key not in params and key not in held and key not in seen:
            seen.add(key)
            n += st.nbytes()
    return n


#: name: (lazy P3, split phases, W late).
RUNS = {"eager": (False, (), False), "eager_split": (False, (Kind.P3, Kind.P4), False),
        "eager_split_late": (False, (Kind.P3, Kind.P4), True),
        "lazy": (True, (), False), "lazy_split": (True, (Kind.P4,), False),
        "lazy_split_late": (True, (Kind.P4,), True), "whole": (False, (), False),
        "whole_lazy": (True, (), False)}
#: "…_split": each W right after its critical part (what the cost files before
#: 2026-11-23 priced a split at); "…_split_late": every W after the last critical action
#: of the step, as a schedule that splits runs it (deferred into a bubble, its saved
#: factors long out of cache), so its split factor is the one a planner should trust.
#: "whole": the model as one stage (eager); Σ unit stages − whole = the fixed cost of the
#: extra stages (geometry recompute, leaves, dispatch), see ``stage_overhead``.
#: "whole_lazy": its lazy P4 is the fused turn (P3 + P4 in one call) of a stage with every
#: block; the unit chain's last stage is the readout alone, too small to measure it on.


def run_chain(model, stages, batch, loss, *, lazy: bool, split, late: bool = False,
              memory: bool = False, autocast=None):
    """One micro-batch through every stage, phase by phase: ({(kind, stage): seconds},
    with ``memory`` {("A" | "A'" | "Q3" | "Q4", stage): bytes}, boundary bytes).
    ``late``: the W actions of ``split`` phases run after every critical action (all W3
    0→S−1, then all W4 S−1→0) instead of right after their own critical part.
    ``autocast``: the executor's context-manager factory for the forward (bf16 on CUDA).
    Times wait for the device's queued work (``clock.action_clock``)."""
    S = len(stages)
    counts = batch.labels.counts()
    _, params = stage_parameters(model, dict(enumerate(stages)))
    ph = FourPhase(dict(enumerate(stages)), S, loss, counts, lazy_p3=lazy,
                   split=frozenset(split), params=params, autocast=autocast,
                   dtype=next(model.parameters()).dtype)
    micro = Micro(batch.graph, batch.labels, LOCAL, None, 1.0, bool(batch.graph.pbc.all()))
    slots = [Slot(s, 0, micro) for s in range(S)]
    times, mem = {}, {}
    all_params = list(model.parameters())
    clock = action_clock(batch.graph.positions.device)

    def timed(key, fn, *args):
        t = clock()
        out = fn(*args)
        times[key] = clock() - t
        return out

    h = None
    for s in range(S):
        with SavedBytes(all_params) if memory else _null() as sb:
            h = timed((Kind.P1, s), ph.p1, slots[s], h)
        if memory:
            mem[("A", s)], mem[("seen", s)] = sb.nbytes, sb.seen
    msg, boundary = None, {}
    for s in reversed(range(S)):
        a_in, f = (None, None) if msg is None else (msg[:-2], msg[-2:])
        with SavedBytes(all_params, mem.get(("seen", s))) if memory else _null() as sb:
            a_out, sums = timed((Kind.P2, s), ph.p2, slots[s], a_in, f)
        if memory:
            mem[("A'", s)] = sb.nbytes
        msg = None if a_out is None else a_out + sums
        if s == S // 2 and msg is not None:
            boundary = {"a": sum(_nb(t) for t in a_out), "f_acc": sum(_nb(t) for t in sums)}
            boundary["h"] = boundary["hbar"] = sum(_nb(t) for t in slots[s - 1].out) if s else 0
            boundary["abar"], boundary["dl_df"] = boundary["a"], boundary["f_acc"]
    abar, dl = None, None
    pids = {p.untyped_storage().data_ptr() for p in all_params}

    def queued(name, queue, s):
        if memory:
            mem[(name, s)] = queue_bytes(queue, mem[("seen", s)], pids)

    deferred = []  # (kind, stage, W function, slot) of a late run, in issue order

    def w_action(kind, s, fn, slot):
        if late:
            deferred.append((kind, s, fn, slot))
        else:
            timed((kind, s), fn, slot)

    for s in range(S):
        abar, dl = timed((Kind.P3, s), ph.p3, slots[s], abar, dl)
        if Kind.P3 in split and not lazy:
            queued("Q3", slots[s].w3_queue, s)
            w_action(Kind.W3, s, ph.w3, slots[s])
    hbar = None
    for s in reversed(range(S)):
        hbar = timed((Kind.P4, s), ph.p4, slots[s], hbar)
        if Kind.P4 in split:
            queued("Q4", slots[s].w4_queue, s)
            w_action(Kind.W4, s, ph.w4, slots[s])
    for kind, s, fn, slot in deferred:
        timed((kind, s), fn, slot)
    del slots
    return times, {k: v for k, v in mem.items() if k[0] != "seen"}, boundary


def measure_runs(model, batch, loss, repeats: int = 3, log=print, autocast=None) -> dict:
    """Every run of :data:`RUNS`, interleaved ``repeats`` times, on ``batch`` (a collated
    labelled micro-batch, already on the model's device and dtype); ``autocast`` as in
    :func:`run_chain`.

    Returns {"info", "median", "samples", "boundary", "mem"}: times in seconds keyed
    ``"P1:s"``…, bytes per stage of |A| / |A'| (``"A:s"``, ``"A':s"``) and of the W
    queues (``"Q3:s"``, ``"Q4:s"`` eager, ``"lazy Q4:s"``), boundary bytes.
    """
    cfg = model.config
    # Cuts 0..L: the readout is a stage of its own, so that a cost file can price every
    # stage count up to L + 2 (a wave with 2P = L + 2 stages ends on the readout alone).
    stages = model.stages(list(range(cfg.num_blocks + 1)))
    whole = model.stages([])
    g = batch.graph
    info = {"atoms": g.n_atoms, "edges": g.n_edges, "bonds": g.n_bonds,
            "angles": g.n_angles, "structures": g.num_structures,
            "stages": [[*st.block_range, st.last] for st in stages]}
    samples: dict[str, dict] = {r: {} for r in RUNS}
    # Untimed first chain: warms the allocator and measures |A|, |A'| (the saved-tensor
    # hooks would slow the timed runs).
    _, mem, boundary = run_chain(model, stages, batch, loss, lazy=False, split=(),
                                 memory=True, autocast=autocast)
    # The queues, from untimed split chains (|A|, |A'| stay those of the unsplit run). Late
    # W, so that these chains also reach the late runs' peak memory: otherwise the first
    # timed late run pays for growing the heap (it ran ~40 % slow on CPU).
    for prefix, (lazy, split, late) in (("", RUNS["eager_split_late"]),
                                        ("lazy ", RUNS["lazy_split_late"])):
        _, qmem, _ = run_chain(model, stages, batch, loss, lazy=lazy, split=split, late=late,
                               memory=True, autocast=autocast)
        mem.update({(prefix + k[0], k[1]): v for k, v in qmem.items() if k[0][0] == "Q"})
    order = [r for _ in range(repeats) for r in RUNS]
    for i, run in enumerate(order):
        lazy, split, late = RUNS[run]
        t = time.time()
        chain = whole if run.startswith("whole") else stages
        times, _, _ = run_chain(model, chain, batch, loss, lazy=lazy, split=split,
                                late=late, autocast=autocast)
        for k, v in times.items():
            samples[run].setdefault(f"{k[0].name}:{k[1]}", []).append(v)
        if log is not None:
            log(f"[{i + 1}/{len(order)}] {run}: {time.time() - t:.1f} s "
                f"(load {os.getloadavg()[0]:.1f})")
    med = {r: {k: statistics.median(v) for k, v in d.items()} for r, d in samples.items()}
    return {"info": info, "median": med, "samples": samples, "boundary": boundary,
            "mem": {f"{k[0]}:{k[1]}": v for k, v in mem.items()}}


def cost_models(res: dict, label: str) -> dict[str, CostModel]:
    """The {"eager", "lazy"} bundle from :func:`measure_runs` (seconds, bytes); ``label``
    names the model and machine. Adds ``res["derived"]`` (W shares, split factors, ...)."""
    med, mem = res["median"], res["mem"]
    S = len(res["info"]["stages"])

    def t(run, kind, s):
        return med[run].get(f"{kind}:{s}", 0.0)

    def share(run, phase, w):  # Σ W / Σ (critical + W) and Σ (critical + W) / Σ unsplit
        crit = sum(t(run, phase, s) for s in range(S))
        wt = sum(t(run, w, s) for s in range(S))
        base = sum(t(run.split("_")[0], phase, s) for s in range(S))
        return wt / (crit + wt), (crit + wt) / base

    def shares(suffix):  # (W share, split factor) per split phase of the runs ``suffix``
        return {"P3": share("eager_split" + suffix, "P3", "W3"),
                "P4": share("eager_split" + suffix, "P4", "W4"),
                "lazy_P4": share("lazy_split" + suffix, "P4", "W4")}

    # Files measured before 2026-11-23 have no late runs: their W ran right after its
    # critical part, which flatters the split (see RUNS); price the late runs when present.
    late = "eager_split_late" in med
    right_after = shares("")
    priced = shares("_late") if late else right_after
    (w3, f3), (w4, f4), (lw4, lf4) = priced["P3"], priced["P4"], priced["lazy_P4"]
    # Fixed per-stage cost: (Σ over the S unit stages − the model as one stage) / (S − 1),
    # per phase (eager runs; applied to both variants: lazy P3 of a single stage has no
    # boundary to differentiate, so the lazy runs cannot separate it).
    overhead = tuple(max(0.0, (sum(t("eager", k, s) for s in range(S)) - t("whole", k, 0))
                         / (S - 1)) if "whole" in med and S > 1 else 0.0
                     for k in ("P1", "P2", "P3", "P4"))
    if "whole_lazy" in med:
        # The fused turn of a stage holding every block (see RUNS), over that stage's
        # t3 + t4 as the cost model prices it: the unit stages' sum less the overhead of
        # the S − 1 extra stages (CostModel.for_cuts). Not over the whole run's own eager
        # P3: with glibc's default malloc a many-block stage's P3 ran up to 1.7x its
        # blocks' sum on CPU (train/cpu_allocator.py), which flattered the fused call.
        merged = sum(t("eager", k, s) for k in ("P3", "P4") for s in range(S)) \
            - (S - 1) * (overhead[2] + overhead[3])
        fused = t("whole_lazy", "P4", 0) / merged
    else:  # files measured before the readout had its own stage: last = block + readout
        fused = t("lazy", "P4", S - 1) / (t("eager", "P3", S - 1) + t("eager", "P4", S - 1))

    def sizes(key):
        return tuple(float(mem.get(f"{key}:{s}", 0.0)) for s in range(S))

    ranges = res["info"]["stages"]  # [first block, stop block, last] per measured stage
    common = {"mem_a": sizes("A"), "mem_ap": sizes("A'"),
              "tensor_bytes": res["boundary"], "fused_factor": fused, "units": "s",
              "stage_overhead": overhead, "unit_cuts": tuple(r[0] for r in ranges[1:]),
              "model_blocks": ranges[-1][1]}
    out = {}
    queues = {"eager": {"mem_q3": sizes("Q3"), "mem_q4": sizes("Q4")},
              "lazy": {"mem_q4": sizes("lazy Q4")}}
    for variant, run, wf, sf in (("eager", "eager", {"P3": w3, "P4": w4},
                                  {"P3": max(1.0, f3), "P4": max(1.0, f4)}),
                                 ("lazy", "lazy", {"P3": 0.0, "P4": lw4},
                                  {"P3": 1.0, "P4": max(1.0, lf4)})):
        times = tuple(tuple(t(run, k, s) for k in ("P1", "P2", "P3", "P4")) for s in range(S))
        out[variant] = CostModel(stage_times=times, label=f"{label} ({variant} P3)",
                                 lazy_p3=variant == "lazy", w_frac=wf, split_factor=sf,
                                 **common, **queues[variant])
    res["derived"] = {"w3": w3, "split_factor_P3": f3, "w4": w4, "split_factor_P4": f4,
                      "lazy_w4": lw4, "lazy_split_factor_P4": lf4, "fused_factor": fused,
                      "raw_split_factors": {"P3": f3, "P4": f4, "lazy_P4": lf4},
                      "split_factors_w_right_after": {k: f for k, (_, f) in right_after.items()},
                      "w_late": late,
                      "stage_overhead": overhead}
    return out
