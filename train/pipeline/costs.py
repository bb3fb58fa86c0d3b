"""Cost models for the simulator and the cost-aware scheduler (pure Python).

A :class:`CostModel` holds, per stage, the times t1..t4 of the four phases for one
micro-batch, the deferrable weight-gradient fractions of P3/P4, the fused-turn factor,
activation-set sizes |A| and |A'|, boundary tensor sizes and an α–β link model
(a transfer of b bytes takes ``alpha + b / beta``).

Cost files (``--costs FILE``) are JSON::

    {"label": "10M preset, CPU fp32, 1 thread",  "units": "s",  "lazy_p3": false,
     "stages": [{"t": [t1, t2, t3, t4], "mem_a": bytes, "mem_ap": bytes,
                 "mem_q3": bytes, "mem_q4": bytes}, ...],
     "w_frac": {"P3": 0.5, "P4": 0.5},  "split_factor": {"P3": 1.0, "P4": 1.0},
     "fused_factor": 0.7,
     "tensor_bytes": {"h": 1e5, "a": 1e5, "f_acc": 3e3, "abar": 1e5, "dl_df": 3e3,
                      "hbar": 1e5},
     "alpha": 2e-5, "beta": 1e9, "stage_overhead": [o1, o2, o3, o4],
     "cuts": [0, 1, ...], "model_blocks": L}

or a bundle ``{"eager": {...}, "lazy": {...}}`` (both variants of the same model).

Two ways to reach the schedule's stage count S:

* **By cuts** (files written by ``matris-train costs`` / ``pipeline_phase_costs.py``, which
  record ``"cuts"``: the interaction-block cuts of the measured stages, and
  ``"model_blocks"``): :meth:`CostModel.cuts_for` chooses S stages among the measured
  ones, balancing their work (``matris.cuts.balance``), and :meth:`CostModel.for_cuts`
  sums the measured stages inside each (one fixed per-stage overhead per stage). The
  pipeline runner cuts the model at the same ``cuts_for(S)``, so every time and every
  memory size the scheduler plans with belongs to a stage the runner really runs.
* **By depth share** (files without ``"cuts"``, uniform profiles): the costs, less the
  overhead, are a piecewise-constant density over model depth (a wave placement with 2P
  chunks gets each P-stage cost split in halves, plus the overhead on every chunk). A
  study device, not a description of any particular cut.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from matris.cuts import balance, validate_cuts

from .actions import BOUNDARY, W_OF, Action, Kind

PHASE_INDEX = {Kind.P1: 0, Kind.P2: 1, Kind.P3: 2, Kind.P4: 3}
#: Activation-set name (``deps.creates``) → the CostModel field holding its sizes, and
#: that field's per-stage default (A' = 1.35 |A|: the toy model; queues: not measured).
_MEM_FIELDS = {"A": "mem_a", "A'": "mem_ap", "Q3": "mem_q3", "Q4": "mem_q4"}
_MEM_DEFAULTS = {"mem_a": 1.0, "mem_ap": 1.35, "mem_q3": 0.0, "mem_q4": 0.0}
SET_NAMES = tuple(_MEM_FIELDS)
MEM_FIELDS = tuple(_MEM_FIELDS.values())


@dataclass(frozen=True)
class CostModel:
    """Per-stage phase costs, memory sizes and communication model.

    Attributes:
        stage_times: per stage, (t1, t2, t3, t4) for one micro-batch.
        w_frac: deferrable weight-gradient share of P3 and P4 ({"P3": f3, "P4": f4}).
        split_factor: a split phase's two parts together last ``split_factor · t`` (1: an
            ideal split; > 1 when splitting costs extra, e.g. the bookkeeping of the
            executor's deferred GEMMs): the critical part ``(1 − w)·f·t``, the W part
            ``w·f·t``.
        fused_factor: a fused P3+P4 turn costs ``fused_factor * (t3 + t4)``.
        lazy_p3: the times describe the lazy-P3 variant (P3 = ā only; P4 does the rest).
        stage_overhead: per phase, the fixed part of every stage's time (geometry
            recompute, boundary leaves, dispatch), included in ``stage_times``: resampling
            to more stages scales only the rest, so a finer cut costs more in all.
        mem_a, mem_ap: per stage, size of the P1 graph A and of the P2 graph A'.
        mem_q3, mem_q4: per stage, bytes a split P3 / P4 queues for its W action beyond
            what A and A' hold anyway (the deferred GEMMs' new gradient factors), live
            from the critical action to the W action; zeros when not measured.
        tensor_bytes: bytes of each boundary tensor (see ``actions.BOUNDARY``).
        alpha, beta: link latency (time) and bandwidth (bytes per time unit; inf = free).
        unit_cuts: the interaction-block cuts of the measured stages (``len(unit_cuts) + 1``
            stages; stage 0 starts at block 0), or None when the stages are not tied to
            cuts of a model (then :meth:`for_stages` resamples by depth share).
        model_blocks: interaction blocks L of the measured model (None: unknown).
    """

    stage_times: tuple[tuple[float, float, float, float], ...]
    label: str = "unlabelled"
    units: str = "s"
    w_frac: dict = field(default_factory=lambda: {"P3": 0.5, "P4": 0.5})
    split_factor: dict = field(default_factory=lambda: {"P3": 1.0, "P4": 1.0})
    fused_factor: float = 0.7
    lazy_p3: bool = False
    mem_a: tuple[float, ...] = ()
    mem_ap: tuple[float, ...] = ()
    mem_q3: tuple[float, ...] = ()
    mem_q4: tuple[float, ...] = ()
    tensor_bytes: dict = field(default_factory=dict)
    alpha: float = 0.0
    beta: float = math.inf
    stage_overhead: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    unit_cuts: tuple[int, ...] | None = None
    model_blocks: int | None = None

    def __post_init__(self) -> None:
        n = len(self.stage_times)
        if n == 0:
            raise ValueError("a cost model needs at least one stage")
        if any(len(t) != 4 or min(t) < 0 for t in self.stage_times):
            raise ValueError(f"stage_times must be non-negative 4-tuples: {self.stage_times}")
        for name, default in _MEM_DEFAULTS.items():
            if not getattr(self, name):
                object.__setattr__(self, name, (default,) * n)
        if len(self.stage_overhead) != 4 or min(self.stage_overhead) < 0:
            raise ValueError(f"stage_overhead must be 4 non-negative times: "
                             f"{self.stage_overhead}")
        if any(len(m) != n for m in self.set_sizes().values()):
            raise ValueError("mem_a / mem_ap / mem_q3 / mem_q4 need one entry per stage")
        for key in ("P3", "P4"):
            if not 0.0 <= self.w_frac.get(key, 0.0) < 1.0:
                raise ValueError(f"w_frac[{key}] must be in [0, 1)")
            if not self.split_factor.get(key, 1.0) >= 1.0:
                raise ValueError(f"split_factor[{key}] must be >= 1")
        if self.unit_cuts is not None:
            top = self.model_blocks if self.model_blocks is not None else \
                max(map(int, self.unit_cuts), default=0)
            try:
                cuts = tuple(validate_cuts(self.unit_cuts, top))
            except ValueError as err:
                raise ValueError(f"cuts do not describe {n} stages of a model with "
                                 f"{self.model_blocks} blocks: {err}") from None
            if len(cuts) != n - 1:
                raise ValueError(f"cuts {list(cuts)} do not describe {n} stages (need "
                                 f"{n - 1} cuts)")
            object.__setattr__(self, "unit_cuts", cuts)

    @property
    def num_stages(self) -> int:
        return len(self.stage_times)

    # ---------------------------------------------------------------- derived
    @property
    def max_stages(self) -> float:
        """The most stages :meth:`for_stages` can give (the measured ones, when tied to
        cuts; else unlimited)."""
        return math.inf if self.unit_cuts is None else self.num_stages

    def work(self) -> list[float]:
        """Per stage, Σ over the phases of the time beyond the fixed per-stage overhead:
        what merging stages adds up (the overhead is paid once per stage)."""
        o = self.stage_overhead
        return [sum(max(0.0, t[k] - o[k]) for k in range(4)) for t in self.stage_times]

    def cuts_for(self, num_stages: int, num_devices: int | None = None) -> list[int] | None:
        """Block cuts for ``num_stages`` stages made of whole measured stages, balancing
        :meth:`work` (``matris.cuts.balance``: min-max per stage, or per device for a wave
        placement on ``num_devices``); None if not tied to cuts."""
        if self.unit_cuts is None:
            return None
        if not 1 <= num_stages <= self.num_stages:
            raise ValueError(f"the cost model measured {self.num_stages} stages (cuts "
                             f"{list(self.unit_cuts)}); it cannot price {num_stages} stages")
        return [self.unit_cuts[i] for i in balance(self.work(), num_stages, num_devices)]

    def for_cuts(self, cuts) -> CostModel:
        """The stages a model cut at ``cuts`` would have: each the sum of the measured
        stages inside it, less the overhead of the stages it merged (every stage pays it
        once). ``cuts`` must be a subset of :attr:`unit_cuts`."""
        if self.unit_cuts is None:
            raise ValueError("this cost model is not tied to cuts of a model; use "
                             "for_stages (depth share)")
        pos = {c: i + 1 for i, c in enumerate(self.unit_cuts)}  # cut → first stage after
        given = list(cuts)
        try:
            cuts = validate_cuts(given, max(self.unit_cuts, default=0))
        except ValueError:
            cuts = None
        if cuts is None or any(c not in pos for c in cuts):
            raise ValueError(f"cuts {given} are not increasing cuts among the measured ones "
                             f"{list(self.unit_cuts)}")
        if cuts == list(self.unit_cuts):
            return self
        bounds = [0, *(pos[c] for c in cuts), self.num_stages]
        groups = [range(a, b) for a, b in itertools.pairwise(bounds)]
        o = self.stage_overhead
        times = tuple(tuple(max(o[k], sum(self.stage_times[s][k] for s in g)
                                - (len(g) - 1) * o[k]) for k in range(4)) for g in groups)
        return replace(self, stage_times=times, unit_cuts=tuple(cuts),
                       **{f: tuple(sum(getattr(self, f)[s] for s in g) for g in groups)
                          for f in _MEM_FIELDS.values()})

    def untied(self) -> CostModel:
        """The same stages, resampled by depth share from now on: for studies beyond the
        measured model (more stages than it has, emulation with any P)."""
        return replace(self, unit_cuts=None, model_blocks=None)

    def for_program(self, prog) -> CostModel:
        """The costs of ``prog``'s stages (a Program or skeleton): :meth:`for_stages` on
        its stage and device counts, the cuts the pipeline runner makes for it."""
        return self.for_stages(prog.num_stages, prog.num_devices)

    def for_stages(self, num_stages: int, num_devices: int | None = None) -> CostModel:
        """The costs at ``num_stages`` stages: by cuts (:meth:`cuts_for`,
        :meth:`for_cuts`; ``num_devices`` balances a wave placement per device) when tied
        to a model's cuts, else resampled by depth share (costs beyond the fixed
        per-stage overhead and memory scale with depth share; every stage keeps the
        overhead)."""
        if num_stages == self.num_stages:
            return self
        if self.unit_cuts is not None:
            return self.for_cuts(self.cuts_for(num_stages, num_devices))
        o = self.stage_overhead
        cols = [[max(0.0, t[k] - o[k]) for t in self.stage_times] for k in range(4)]
        times = tuple(zip(*([x + o[k] for x in _resample(c, num_stages)]
                            for k, c in enumerate(cols))))
        return replace(self, stage_times=times,
                       **{f: tuple(_resample(getattr(self, f), num_stages))
                          for f in _MEM_FIELDS.values()})

    def set_sizes(self) -> dict[str, tuple[float, ...]]:
        """{set name: per-stage size}: 'A', "A'", 'Q3', 'Q4' (see ``deps.creates``)."""
        return {name: getattr(self, f) for name, f in _MEM_FIELDS.items()}

    def t(self, stage: int, kind: Kind) -> float:
        """Full (unsplit) time of phase ``kind`` on ``stage``."""
        return self.stage_times[stage][PHASE_INDEX[kind]]

    def w(self, kind: Kind) -> float:
        """Weight-gradient share of P3/P4."""
        return float(self.w_frac.get(kind.name, 0.0))

    def f(self, kind: Kind) -> float:
        """Split factor of P3/P4 (both parts together over the unsplit phase)."""
        return float(self.split_factor.get(kind.name, 1.0))

    def duration(self, prog, action: Action) -> float:
        """Compute time of ``action`` in ``prog`` (0 for SEND/RECV/REDUCE)."""
        k, s = action.kind, action.stage
        if not k.is_compute:
            return 0.0
        if k is Kind.P34:
            return self.fused_factor * (self.t(s, Kind.P3) + self.t(s, Kind.P4))
        if k in W_OF:
            parent = W_OF[k]
            return self.t(s, parent) * self.w(parent) * self.f(parent)
        full = self.t(s, k)
        if prog.splits(action):
            return full * (1.0 - self.w(k)) * self.f(k)  # the W part is its own action
        return full

    def comm_time(self, phase: Kind) -> float:
        """α–β time of one boundary hand-off of sweep ``phase`` (0 if on one device)."""
        if self.alpha == 0.0 and math.isinf(self.beta):
            return 0.0
        nbytes = sum(self.tensor_bytes.get(name, 0.0) for name in BOUNDARY[phase])
        return self.alpha + (nbytes / self.beta if nbytes else 0.0)

    def total_time(self) -> float:
        """Σ over stages and phases: one micro-batch's compute, the unit of throughput."""
        return sum(sum(t) for t in self.stage_times)

    # ---------------------------------------------------------------- IO
    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = [{"t": list(t), **{f: getattr(self, f)[s] for f in _MEM_FIELDS.values()}}
                       for s, t in enumerate(self.stage_times)]
        for key in ("stage_times", *_MEM_FIELDS.values()):
            d.pop(key)
        d["beta"] = None if math.isinf(self.beta) else self.beta
        cuts = d.pop("unit_cuts")
        d["cuts"] = None if cuts is None else list(cuts)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CostModel:
        stages = d["stages"]
        beta = d.get("beta")
        return cls(stage_times=tuple(tuple(float(x) for x in st["t"]) for st in stages),
                   label=d.get("label", "unlabelled"), units=d.get("units", "s"),
                   w_frac=dict(d.get("w_frac", {"P3": 0.5, "P4": 0.5})),
                   split_factor=dict(d.get("split_factor", {"P3": 1.0, "P4": 1.0})),
                   fused_factor=float(d.get("fused_factor", 0.7)),
                   lazy_p3=bool(d.get("lazy_p3", False)),
                   **{f: tuple(float(st.get(f, default)) for st in stages)
                      for f, default in _MEM_DEFAULTS.items()},
                   tensor_bytes=dict(d.get("tensor_bytes", {})),
                   alpha=float(d.get("alpha", 0.0)),
                   beta=math.inf if beta is None else float(beta),
                   stage_overhead=tuple(float(x) for x in
                                        d.get("stage_overhead", (0.0,) * 4)),
                   unit_cuts=None if d.get("cuts") is None else tuple(d["cuts"]),
                   model_blocks=d.get("model_blocks"))


def _resample(values, n: int) -> list[float]:
    """Integrate a piecewise-constant density (len(values) equal cells on [0,1]) over
    ``n`` equal cells. Σ is preserved."""
    m = len(values)
    out = []
    for j in range(n):
        lo, hi = j / n, (j + 1) / n
        acc = 0.0
        for i in range(int(lo * m), min(m, math.ceil(hi * m))):
            a, b = max(lo, i / m), min(hi, (i + 1) / m)
            if b > a:
                acc += values[i] * (b - a) * m
        out.append(acc)
    return out


# ---------------------------------------------------------------- profiles
#: Ratios measured on the research note's toy model (CPU fp32, 1 thread): NOT the 10M
#: preset. Replace with ``--costs FILE`` once the preset is measured.
TOY_RATIOS = {
    "eager": (1.0, 1.0, 7.0, 3.0),   # note section 1: 1 : 1.0 : 7.0 : 2.9, rounded as 1:1:7:3
    "lazy": (1.0, 1.2, 1.4, 7.0),    # lazy-P3: 1 : 1.2 : 1.4 : 7.0
    "equal": (1.0, 1.0, 1.0, 1.0),
}


def uniform(num_stages: int, ratios=(1.0, 1.0, 1.0, 1.0), *, label: str | None = None,
            lazy_p3: bool = False, **kw) -> CostModel:
    """Every stage with the same phase times ``ratios`` (relative units)."""
    return CostModel(stage_times=(tuple(float(r) for r in ratios),) * num_stages,
                     label=label or f"uniform {':'.join(f'{r:g}' for r in ratios)}",
                     units=kw.pop("units", "rel"), lazy_p3=lazy_p3, **kw)


def toy_profile(variant: str, num_stages: int, **kw) -> CostModel:
    """Default study profile: the note's measured *toy* ratios, uniform stages."""
    if variant not in TOY_RATIOS:
        raise ValueError(f"unknown toy profile {variant!r}; choose from {sorted(TOY_RATIOS)}")
    kw.setdefault("w_frac", {"P3": 0.0 if variant == "lazy" else 0.5, "P4": 0.5})
    return uniform(num_stages, TOY_RATIOS[variant], lazy_p3=variant == "lazy",
                   label=f"toy-{variant} {':'.join(f'{r:g}' for r in TOY_RATIOS[variant])} "
                         "(research-note toy model ratios, NOT measured on the 10M preset)",
                   **kw)


#: Phase ratios t1:t2:t3:t4 of the whole model (uniform stages), W shares and split
#: factors of the executor's deferred-GEMM W split, fused-turn factor and |A'|/|A|, W-queue
#: sizes |Q3|, |Q4| / |A|, measured on the 10M preset on CPU (fp32, 1 thread, 48 atoms /
#: 17,170 angles per micro-batch) by ``benchmarks/pipeline_phase_costs.py``, 2026-11-22f
#: (results/pipeline_phase_costs_2026-11-22f.*: after the deferred-gradient fix, malloc
#: tuned, the fused turn measured on the whole model). The executor's default cost model
#: when ``parallel.costs`` is not set. (Before: the 2026-11-22 run, t3 = 3.87 t1, P4
#: split factor 1.08, under a falling load.)
_LABEL = "10M preset, CPU fp32 1 thread, measured 2026-11-22f (uniform stages)"
MEASURED_10M_CPU: dict | None = {
    "eager": {"ratios": (1.0, 1.127, 4.762, 1.745), "w_frac": {"P3": 0.209, "P4": 0.298},
              "split_factor": {"P3": 1.029, "P4": 1.023}, "fused_factor": 0.752,
              "mem_ap_over_a": 1.042, "mem_q3_over_a": 1.48, "mem_q4_over_a": 1.06,
              "label": f"{_LABEL}, eager P3"},
    "lazy": {"ratios": (1.0, 1.107, 2.604, 4.976), "w_frac": {"P3": 0.0, "P4": 0.211},
             "split_factor": {"P3": 1.0, "P4": 1.005}, "fused_factor": 0.752,
             "mem_ap_over_a": 1.042, "mem_q4_over_a": 1.59, "label": f"{_LABEL}, lazy P3"},
}


def measured_profile(variant: str, num_stages: int) -> CostModel:
    """Uniform stages with the measured 10M-preset CPU ratios (:data:`MEASURED_10M_CPU`),
    or the toy profile when none are recorded."""
    prof = (MEASURED_10M_CPU or {}).get(variant)
    if prof is None:
        return toy_profile(variant, num_stages)
    return uniform(num_stages, prof["ratios"], lazy_p3=variant == "lazy",
                   w_frac=dict(prof["w_frac"]), fused_factor=prof["fused_factor"],
                   split_factor=dict(prof.get("split_factor", {"P3": 1.0, "P4": 1.0})),
                   mem_a=(1.0,) * num_stages, mem_ap=(prof["mem_ap_over_a"],) * num_stages,
                   mem_q3=(prof.get("mem_q3_over_a", 0.0),) * num_stages,
                   mem_q4=(prof.get("mem_q4_over_a", 0.0),) * num_stages,
                   label=prof["label"])


def load_costs(path: str | Path) -> dict[str, CostModel]:
    """Read a cost file: one model (returned under its variant name) or a bundle."""
    data = json.loads(Path(path).read_text())
    if "stages" in data:
        cm = CostModel.from_dict(data)
        return {"lazy" if cm.lazy_p3 else "eager": cm}
    out = {}
    for name, d in data.items():
        d = dict(d)
        d.setdefault("lazy_p3", name == "lazy")
        out[name] = CostModel.from_dict(d)
    return out


def save_costs(models: dict[str, CostModel], path: str | Path) -> None:
    Path(path).write_text(json.dumps({k: m.to_dict() for k, m in models.items()}, indent=1))
