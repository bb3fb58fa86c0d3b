"""`PipelineRunner`: the trainer's runner seam (``matris.train.step``) for ``parallel.pp > 1``.

Every pipeline rank builds the same Program (``parallel.schedule``, ``parallel.microbatches``,
``parallel.lazy_p3``, ``parallel.wavek_k``; pure and deterministic), lowers it, cuts the
model into the Program's S stages (``parallel.stage_cuts``, else the cuts a cost file tied
to cuts priced, ``CostModel.cuts_for(S)``, else ``model.balanced_cuts(S)``)
and keeps the stages the placement gives it (several under wave placements). A step walks
the rank's action list (:class:`~.runtime.Walker`) with real compute (:mod:`.phases`) and
point-to-point hand-offs (``matris.train.dist.p2p.PeerLinks``: non-blocking sends,
blocking receives). Parameter gradients accumulate in ``.grad``; the trainer then
all-reduces them over the ``stage`` group (DP × GP) and clips with norms summed over PP.

Loss placement: energy (+ magmoms) on the last stage after P1, forces + stress on stage 0
after P2; every term is divided by the step's global count, so the world sum of the
per-rank gradients is the serial gradient and the world sum of ``StepResult.sums`` the
step's loss numerator.

Graph parallelism (``parallel.gp > 1``, docs/graph_parallel.md section 5): each rank cuts
every micro-batch with the same partition and keeps its part; one ``GraphExchange`` per
micro-batch serves every stage call on the rank; the energy seed is 1 on part 0 only; the
energy/stress terms live on part 0 (masked elsewhere, so all GP ranks record the same
graph); every GP rank of a stage runs the same Program.

Cost model (for the cost-aware generators: wavek, and the "best of" choice of 1f1b4 /
hanayo4): ``parallel.costs`` (a JSON written by ``benchmarks/pipeline_phase_costs.py``),
else :func:`default_costs` (uniform stages with the phase ratios measured on the 10M preset
on CPU, see ``costs.MEASURED_10M_CPU``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from matris.nn.exchange import LOCAL

from ..step import StepResult, autocast_context, param_dtype
from .clock import action_clock
from .costs import CostModel, load_costs, measured_profile
from .lower import lower
from .phases import FourPhase, Micro
from .program import Program
from .runtime import StageEngine, Walker
from .schedules import make_schedule
from .trace import TraceSlice

#: The runner writes ``<log.out>/pipeline_trace_step<N>.{json,png}`` after its N-th step
#: (the first after a warm-up step): measured per-action timings of every pipeline rank.
TRACE_STEP = 2


def default_costs(num_stages: int, lazy_p3: bool) -> CostModel:
    """Uniform stages with the 10M-preset CPU phase ratios (``costs.MEASURED_10M_CPU``)."""
    return measured_profile("lazy" if lazy_p3 else "eager", num_stages)


def build_program(name: str, P: int, M: int, num_blocks: int, *, lazy_p3: bool = False,
                  wavek_k: int = 1, costs: CostModel | None = None,
                  options: dict | None = None, search_w: bool = False,
                  cuts: list[int] | None = None, share=None) -> Program:
    """The lowered Program for ``name`` on P ranks and M micro-batches.

    ``options`` go to the generator (``parallel.schedule_options``: ``fused_turn``,
    ``split_w``, ``warmup``, ...). The chunk budget: a wave placement needs 2P stages, i.e.
    2P ≤ L + 2 units (embedding, L blocks, readout), and 2P measured stages when the costs
    are tied to cuts; wavek only considers it when the model has them and ``costs`` were
    given (measured for this model). ``cuts``: explicit stage cuts (``parallel.stage_cuts``;
    the costs are then those of these cuts). ``share``: wavek's search split over the
    processes that all build this program (see ``wavek.wavek``).

    wavek searches the W split (which phases run whole, under symfold's memory) only where
    its memory sizes are those of the stages the runner will run: ``costs`` tied to cuts
    (:meth:`CostModel.cuts_for`, files from ``matris-train costs``; the runner cuts at the
    same places, see :func:`stage_cuts`), or ``search_w`` (emulation, where the cost
    model is the truth). With depth-share costs the W queues of a partial split were
    mispriced: on the tiny model at P = 4 a split planned to fit held 1.33x symfold's real
    peak on one rank (results/pipeline_real_2026-11-22d.md).
    """
    units = num_blocks + 2
    if units < P:
        raise ValueError(f"pp={P} stages need at least {P} model units; the model has "
                         f"{units} (embedding, {num_blocks} blocks, readout)")
    stages, asked = _placement(name, P, options or {})
    if stages > units:
        raise ValueError(f"{name} with {asked} places {stages} "
                         f"stages on pp = {P} ranks but the model has only {units} units "
                         f"(embedding, {num_blocks} blocks, readout); use a deeper model, "
                         "fewer waves or another schedule")
    measured = costs is not None
    tied = measured and costs.unit_cuts is not None
    if tied:
        if costs.model_blocks is not None and costs.model_blocks != num_blocks:
            raise ValueError(f"the cost model ({costs.label}) was measured on a model with "
                             f"{costs.model_blocks} interaction blocks; this one has "
                             f"{num_blocks}: measure it with `matris-train costs`")
        if cuts is not None:
            costs = costs.for_cuts(cuts)
        if costs.max_stages < stages:
            raise ValueError(f"{name} with {asked} places "
                             f"{stages} stages but the cost model ({costs.label}) measured "
                             f"{costs.num_stages} (files written before the readout was "
                             "measured as a stage of its own lack it: re-measure with "
                             "`matris-train costs`); use a deeper model, another schedule, "
                             "or no parallel.costs")
    costs = costs or default_costs(P, lazy_p3)
    options = {**(options or {}), "lazy_p3": lazy_p3}
    if name == "wavek":
        # A wave doubles the stage count, and every stage pays a fixed cost (geometry
        # recompute, boundary leaves, dispatch): on the tiny model at P = 2 the wave's
        # compute was 3-16 % larger in three runs (benchmarks/results/pipeline_real_2026-
        # 11-2*.md). Only a cost file measured for this model (``stage_overhead``) can
        # weigh that; the built-in 10M profile cannot, so without one wavek keeps the V.
        wave_ok = measured and units >= 2 * P and costs.max_stages >= 2 * P
        options.setdefault("max_waves", 1 if wave_ok else 0)
        if not (tied or (search_w and measured)):  # see the docstring
            options.setdefault("split_w", False)
        if share is not None:
            options["share"] = share
    prog = make_schedule(name, P, M, costs, wavek_k=wavek_k, **options)
    return lower(prog) if P > 1 else prog


def _placement(name: str, P: int, options: dict) -> tuple[int, str]:
    """(the most stages ``name`` may place with ``options``, the options that set it):
    2·waves·P for hanayo4 (``waves``, default 1) and for wavek given ``waves`` or
    ``max_waves``; else P."""
    asked = {k: options[k] for k in ("waves", "max_waves") if k in options}
    if name == "hanayo4":
        asked.setdefault("waves", 1)
    waves = asked.get("waves", asked.get("max_waves")) if name in ("hanayo4", "wavek") else 0
    text = ", ".join(f"{k}={v}" for k, v in asked.items()) or "its default placement"
    return (2 * waves * P if waves else P), text


def stage_cuts(model, num_stages: int, cuts=None, costs: CostModel | None = None,
               num_devices: int | None = None) -> list[int]:
    """Explicit cuts (must give ``num_stages`` stages), else those the cost model priced
    (``costs.cuts_for``, when tied to cuts), else balanced by angle work; a wave placement
    on ``num_devices`` ranks is balanced per rank (``matris.cuts.balance``), as the
    planner's ``CostModel.for_program`` prices it."""
    if cuts is None:
        if costs is not None and costs.unit_cuts is not None:
            return costs.cuts_for(num_stages, num_devices)
        return model.balanced_cuts(num_stages, num_devices=num_devices)
    if len(cuts) != num_stages - 1:
        raise ValueError(f"parallel.stage_cuts gives {len(cuts) + 1} stages but the schedule "
                         f"places {num_stages} (wave placements use 2·pp); leave it null")
    return list(cuts)


def stage_parameters(model, stages: dict) -> tuple[list, dict]:
    """(named trainable parameters of ``stages`` in model order, {stage: [params]})."""
    owner = {}
    per_stage = {}
    for s, st in stages.items():
        per_stage[s] = [p for p in st.parameters() if p.requires_grad]
        for p in per_stage[s]:
            owner[id(p)] = s
    named = [(n, p) for n, p in model.named_parameters() if id(p) in owner]
    return named, per_stage


class PipelineRunner:
    """Runner for one pipeline rank (see the module docstring).

    Args:
        cfg: the ``TrainConfig``; model: the full ``MatRIS`` (only this rank's stages are
        trained here); groups: ``matris.train.dist.ProcessGroups``; device: torch device.
    """

    def __init__(self, cfg, model, groups, device) -> None:
        from matris.train.dist.p2p import PeerLinks

        p = cfg.parallel
        self.cfg, self.module, self.groups, self.device = cfg, model, groups, device
        self.loss, self.dtype_mode = cfg.loss, cfg.train.dtype
        self.dtype = param_dtype(self.dtype_mode)
        self.P, self.M = p.pp, p.microbatches
        self.rank = groups.coord.pp
        costs = None
        if p.costs:
            variants = load_costs(p.costs)
            key = "lazy" if p.lazy_p3 else "eager"
            if key not in variants:
                raise ValueError(f"parallel.costs={p.costs!r} has no {key!r} profile "
                                 f"(parallel.lazy_p3={p.lazy_p3}); it has {sorted(variants)}")
            costs = variants[key]
        share = None
        if groups.world.size > 1:  # every rank builds the same program: share wavek's search
            from matris.train.dist.comm import allgather_object

            share = (groups.rank, groups.world.size, allgather_object)
        self.program = build_program(p.schedule, self.P, self.M, model.num_blocks,
                                     lazy_p3=p.lazy_p3, wavek_k=p.wavek_k, costs=costs,
                                     options=p.schedule_options, cuts=p.stage_cuts,
                                     share=share)
        # The cuts the program's costs were priced at (see stage_cuts).
        self.cuts = stage_cuts(model, self.program.num_stages, p.stage_cuts, costs,
                               self.program.num_devices)
        all_stages = model.stages(self.cuts)
        self.stages = {s: all_stages[s] for s in self.program.stages_of(self.rank)}
        self._named, self.stage_params = stage_parameters(model, self.stages)
        self.links = PeerLinks(groups.pp.ranks, device)
        self.transport = None
        if p.gp > 1:
            from ..dist.halo import TorchTransport

            self.transport = TorchTransport(groups.gp)
        self.last_slices: list[TraceSlice] = []
        self.last_walltime = 0.0
        self._t0 = 0.0
        self.steps_run = 0
        # Time every step's actions device-accurately (on CUDA, wait for the device at
        # each action boundary: clock.action_clock); else only the traced step is.
        self.sync_timing = False

    # ------------------------------------------------------------------ seam
    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self._named)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self._named]

    def micro(self, batch, train: bool = True) -> Micro:
        """This rank's view of a micro-batch (its GP part, labels share, exchange)."""
        w_stress = float(self.loss.weights.stress)
        stress = bool(batch.labels.stress_mask.any()) and (not train or w_stress > 0)
        if self.transport is None:
            return Micro(batch.graph, batch.labels, LOCAL, None, 1.0, stress)
        from ..dist.halo import GraphExchange
        from ..graph_parallel.part import build_part
        from ..graph_parallel.partition import partition_graph
        from ..graph_parallel.runner import part_labels

        g = self.transport.rank
        part = build_part(batch.graph, partition_graph(batch.graph, self.transport.size), g)
        ex = GraphExchange(part.plan, self.transport)
        return Micro(part.graph, part_labels(batch.labels, part, g), ex, part.num_owned,
                     1.0 if g == 0 else 0.0, stress, part.owned_atoms)

    def run(self, microbatches, counts: dict[str, float]) -> StepResult:
        """One step of this rank's program over the DP rank's micro-batches."""
        if len(microbatches) != self.M:
            raise ValueError(f"the pipeline program is built for parallel.microbatches="
                             f"{self.M} micro-batches per step, got {len(microbatches)}")
        self.module.train()
        micros: dict[int, Micro] = {}

        def micro_of(m: int) -> Micro:
            if m not in micros:
                micros[m] = self.micro(microbatches[m])
            return micros[m]

        phases = FourPhase(self.stages, self.program.num_stages, self.loss, counts,
                           lazy_p3=self.program.lazy_p3, split=self.program.split_w,
                           params=self.stage_params, dtype=self.dtype,
                           autocast=lambda: autocast_context(self.device, self.dtype_mode))
        engine = StageEngine(self.program, self.rank, phases, micro_of)
        # On a GPU an action's slice ends when its kernels are queued unless the clock
        # waits for them; waiting costs the host/device overlap, so only where slices
        # are read (the traced step, or sync_timing).
        timed = self.sync_timing or self.steps_run + 1 == TRACE_STEP
        clock = action_clock(self.device) if timed else time.perf_counter
        walker = Walker(self.program, self.rank, engine, self.links, clock=clock)
        self._t0 = walker.t0
        self.last_slices = walker.run()
        self.last_walltime = clock() - walker.t0
        self.steps_run += 1
        if self.steps_run == TRACE_STEP:
            self.write_trace(Path(self.cfg.log.out) / f"pipeline_trace_step{TRACE_STEP}")
        if engine.slots:
            raise RuntimeError(f"pipeline rank {self.rank}: unfinished micro-batches "
                               f"{sorted(engine.slots)} after the step")
        return StepResult(sums=dict(phases.sums),
                          frames=sum(b.n_frames for b in microbatches),
                          atoms=sum(b.n_atoms for b in microbatches))

    def gather_slices(self) -> list[TraceSlice] | None:
        """The last step's per-action timings of every rank of the (dp = 0, gp = 0)
        pipeline, on world rank 0 (None elsewhere); collective over the world. Clocks are
        ``time.perf_counter`` offsets from each rank's step start (the steps start
        together: the first hand-offs synchronise them only loosely, see docs)."""
        from matris.train import dist as mdist

        c = self.groups.coord
        mine = [(s.action, s.start, s.end) for s in self.last_slices] if (
            c.dp == 0 and c.gp == 0) else None
        everyone = mdist.allgather_object((c.pp, mine, self._t0))
        if self.groups.rank != 0:
            return None
        base = min(t0 for _, sl, t0 in everyone if sl is not None)
        return sorted((TraceSlice(pp, a, t0 - base + s, t0 - base + e)
                       for pp, sl, t0 in everyone if sl is not None for a, s, e in sl),
                      key=lambda x: (x.device, x.start))

    def write_trace(self, stem: Path) -> Path | None:
        """Collective: the last step's merged trace as ``stem.json`` (Perfetto, the
        simulator's format) and ``stem.png`` (Gantt), written by world rank 0."""
        from .trace import gantt_png, trace_stats, write_trace

        slices = self.gather_slices()
        if slices is None:
            return None
        stats = trace_stats(slices, self.P)
        title = (f"{self.program.describe()} — step {self.steps_run}, bubble "
                 f"{stats['bubble']:.1%}")
        write_trace(slices, f"{stem}.json", program=self.program.describe(),
                    source="measured", step=self.steps_run, **stats)
        gantt_png(slices, f"{stem}.png", title=title)
        return Path(f"{stem}.json")

    def evaluate(self, batch):
        """Detached predictions on pipeline rank 0 (GP part 0); None elsewhere."""
        from .evaluate import pipeline_predict

        self.module.eval()
        return pipeline_predict(self, batch)
