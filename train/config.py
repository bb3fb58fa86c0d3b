"""Training configuration: strict YAML → nested dataclasses, dotted CLI overrides.

``load_config("configs/tiny.yaml", ["optim.lr=3e-4", "parallel.dp=2"])`` reads the YAML,
applies the overrides (values parsed as YAML, so ``true``/``null``/``[1, 2]`` work), and builds
a :class:`TrainConfig`. Unknown keys and bad values raise :class:`ConfigError` naming the
dotted key and what is allowed. The resolved config (:func:`to_yaml`) is printed at start
and saved with every checkpoint. The key reference lives in ``docs/training.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SCHEDULES = ("gpipe4", "1f1b4", "hanayo4", "symfold", "wavek")


class ConfigError(ValueError):
    """A config key is unknown or its value is not allowed; the message names the key."""


@dataclass
class DataConfig:
    root: str = "runs/data/embedded"         # ShardedDataset root (manifest.yaml inside)
    train_split: str = "train"
    val_split: str | None = "val"            # null: no validation
    val_max_frames: int | None = None        # validate on N frames evenly spaced over the split
    num_workers: int = 0                     # loader worker processes per rank (build graphs)
    worker_start: Literal["forkserver", "spawn", "fork"] = "forkserver"
    prefetch_factor: int = 2
    shuffle: bool = True


@dataclass
class ModelSection:
    preset: str = "tiny"                     # matris.config.ModelConfig preset name
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig field → value


@dataclass
class ParallelConfig:
    pp: int = 1
    dp: int = 1
    gp: int = 1
    schedule: Literal["gpipe4", "1f1b4", "hanayo4", "symfold", "wavek"] = "symfold"
    microbatches: int = 1                    # micro-batches per DP rank per optimizer step
    lazy_p3: bool = False
    wavek_k: int = 1
    costs: str | None = None                 # phase-cost JSON (pipeline_phase_costs.py) for
                                             # cost-aware schedules; null = built-in default
    schedule_options: dict[str, Any] = field(default_factory=dict)  # generator options, e.g.
                                             # {fused_turn: true, split_w: true}
    stage_cuts: list[int] | None = None      # block index where each stage after the first starts
    bucket_mb: float = 25.0                  # gradient all-reduce bucket size, MB
    timeout_s: float = 300.0                 # rendezvous / collective timeout, seconds


@dataclass
class LossWeights:
    energy: float = 1.0                      # energy per atom, eV/atom
    forces: float = 1.0                      # force components, eV/Å
    stress: float = 0.1                      # stress components, GPa
    magmoms: float = 0.0                     # μB
    moe_balance: float = 0.01                # MoE load-balancing loss (mean over the step's
                                             # micro-batches; 1 = uniform; matris.train.moe)


@dataclass
class LossConfig:
    kind: Literal["mse", "mae", "huber"] = "mse"
    huber_delta: float = 0.01
    weights: LossWeights = field(default_factory=LossWeights)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.01               # cosine floor as a fraction of lr
    clip_grad_norm: float | None = 10.0      # null: no clipping


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.999
    warmup: bool = True                      # decay_n = min(decay, (1 + n) / (10 + n))


@dataclass
class TrainSection:
    steps: int | None = 1000                 # optimizer steps (exactly one of steps/epochs)
    epochs: int | None = None
    stop_at: int | None = None               # stop after this step with a checkpoint (the
                                             # schedule still runs to steps); then --resume
    max_atoms: int = 512                     # atoms per micro-batch (cap)
    max_edges: int | None = None             # edges per micro-batch (cap), needs edge counts
    seed: int = 0
    dtype: Literal["float32", "float64", "bf16"] = "float32"  # bf16: autocast, CUDA only
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None               # torch threads per rank (clamped to cores)


@dataclass
class CheckpointConfig:
    dir: str | None = None                   # default <log.out>/checkpoints
    every: int = 100                         # steps between checkpoints; 0: only at the end
    keep_last: int = 3
    export: str | None = None                # inference checkpoint; default <log.out>/model.pt


@dataclass
class LogConfig:
    out: str = "runs/default"                # run directory: metrics, plots, checkpoints
    every: int = 10                          # steps between metric lines
    val_every: int = 100                     # steps between validations; 0: only at the end
    val_at_start: bool = False               # also validate before the first step (baseline)
    tensorboard: bool = True                 # when the tensorboard package is importable
    progress: bool = True                    # tqdm bar on rank 0
    plots: bool = True                       # parity plots + learning curve at the end


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def checkpoint_dir(self) -> Path:
        """Where training checkpoints go (``checkpoint.dir`` or ``<log.out>/checkpoints``)."""
        return Path(self.checkpoint.dir or Path(self.log.out) / "checkpoints")

    @property
    def export_path(self) -> Path:
        """Inference checkpoint path (``checkpoint.export`` or ``<log.out>/model.pt``)."""
        return Path(self.checkpoint.export or Path(self.log.out) / "model.pt")


# ------------------------------------------------------------------ typed construction

def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp, key: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: {value!r} is not allowed; expected {_describe(tp)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise bad
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if origin is list:
        if not isinstance(value, list | tuple):
            raise bad
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if tp is Any:
        return value
    raise TypeError(f"{key}: unsupported annotation {tp!r}")


def from_dict(cls, data: Any, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping; unknown keys and bad values raise ConfigError."""
    where = prefix or "the config root"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown key {dotted!r}{hint}; allowed keys in {where}: "
                              + ", ".join(names))
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


# ------------------------------------------------------------------------- validation

def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Cross-field and range checks; returns ``cfg``."""
    p, t, o = cfg.parallel, cfg.train, cfg.optim
    for name in ("pp", "dp", "gp", "microbatches", "wavek_k"):
        _check(getattr(p, name) >= 1, f"parallel.{name}", f"must be >= 1, got {getattr(p, name)}")
    _check(p.bucket_mb > 0, "parallel.bucket_mb", "must be > 0")
    _check(p.timeout_s > 0, "parallel.timeout_s", "must be > 0")
    if p.stage_cuts is not None:
        _check(len(p.stage_cuts) == p.pp - 1, "parallel.stage_cuts",
               f"needs pp - 1 = {p.pp - 1} cut indices, got {len(p.stage_cuts)}")
        _check(all(a < b for a, b in zip(p.stage_cuts, p.stage_cuts[1:])) and
               all(c >= 1 for c in p.stage_cuts), "parallel.stage_cuts",
               "must be strictly increasing block indices >= 1")
    _check((t.steps is None) != (t.epochs is None), "train.steps",
           "set exactly one of train.steps and train.epochs (the other to null)")
    for name in ("steps", "epochs", "stop_at", "max_edges", "threads"):
        v = getattr(t, name)
        _check(v is None or v >= 1, f"train.{name}", f"must be >= 1 or null, got {v}")
    _check(t.max_atoms >= 1, "train.max_atoms", f"must be >= 1, got {t.max_atoms}")
    _check(not (t.dtype == "bf16" and t.device == "cpu"), "train.dtype",
           "bf16 autocast is only supported with train.device = cuda or auto on a GPU")
    _check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _check(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas",
           f"must be two numbers in [0, 1), got {o.betas}")
    _check(o.eps > 0, "optim.eps", "must be > 0")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    _check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]")
    _check(o.clip_grad_norm is None or o.clip_grad_norm > 0, "optim.clip_grad_norm",
           "must be > 0 or null")
    _check(0 <= cfg.ema.decay < 1, "ema.decay", f"must be in [0, 1), got {cfg.ema.decay}")
    w = cfg.loss.weights
    for name in ("energy", "forces", "stress", "magmoms"):
        _check(getattr(w, name) >= 0, f"loss.weights.{name}", "must be >= 0")
    _check(w.moe_balance >= 0, "loss.weights.moe_balance", "must be >= 0")
    _check(w.energy + w.forces + w.stress + w.magmoms > 0, "loss.weights",
           "at least one weight must be > 0")
    _check(cfg.loss.huber_delta > 0, "loss.huber_delta", "must be > 0")
    d = cfg.data
    _check(d.num_workers >= 0, "data.num_workers", "must be >= 0")
    _check(d.prefetch_factor >= 1, "data.prefetch_factor", "must be >= 1")
    _check(d.val_max_frames is None or d.val_max_frames >= 1, "data.val_max_frames",
           "must be >= 1 or null")
    c, lg = cfg.checkpoint, cfg.log
    _check(c.every >= 0, "checkpoint.every", "must be >= 0 (0: only at the end)")
    _check(c.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
    _check(lg.every >= 1, "log.every", "must be >= 1")
    _check(lg.val_every >= 0, "log.val_every", "must be >= 0 (0: only at the end)")
    return cfg


# --------------------------------------------------------------------- overrides, I/O

def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the nested dict ``data`` in place.

    Unknown keys are caught later by :func:`from_dict`, which names them.
    """
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    dotted, raw = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {assignment!r}: empty key component")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {dotted}: cannot parse {raw!r} as YAML: {err}") from None
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {'.'.join(parts[:i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                ) -> TrainConfig:
    """Read YAML ``path`` (``None``: defaults only), apply dotted overrides, validate."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for assignment in overrides:
        apply_override(data, assignment)
    return validate(from_dict(TrainConfig, data))


def to_dict(cfg: TrainConfig) -> dict:
    """Plain nested dict (only str/int/float/bool/None/list/dict), for YAML and checkpoints."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML text (``load_config`` of this text gives ``cfg`` back)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def from_yaml_text(text: str) -> TrainConfig:
    """Parse a resolved config saved by :func:`to_yaml` (e.g. from a checkpoint)."""
    return validate(from_dict(TrainConfig, yaml.safe_load(text) or {}))
