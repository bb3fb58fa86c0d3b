"""Export a training checkpoint as a one-file inference checkpoint (``matris.checkpoint``).

The averaged (EMA) weights are exported when the run kept an EMA, else the raw weights.
Works offline, without MPI: ``matris-train export RUN_DIR_OR_CHECKPOINT [--out PATH]``.
Pipeline runs are merged: each stage's part (taken from the ranks with dp = gp = 0)
contributes the parameters it trained.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpointing import latest_checkpoint, load_part, part_name, read_index
from .config import from_yaml_text


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a run directory, a checkpoints directory or itself."""
    path = Path(path)
    if (path / "index.json").is_file():
        return path
    for root in (path, path / "checkpoints"):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise FileNotFoundError(f"no complete training checkpoint under {path}")


def merged_weights(ckpt: Path) -> tuple[dict[str, torch.Tensor], int, bool]:
    """(state dict, step, whether EMA weights were used) merged over the stage parts."""
    index = read_index(ckpt)
    topo = index["topology"]
    state: dict[str, torch.Tensor] = {}
    used_ema = True
    for rank in range(index["world_size"]):
        gp = rank % topo["gp"]
        dp = rank // (topo["gp"] * topo["pp"])
        if dp or gp:
            continue  # replicas hold the same stage
        part = load_part(ckpt / part_name(rank))
        state.update(part["buffers"])
        if part["ema"] is not None:
            state.update(part["ema"]["shadow"])
        else:
            used_ema = False
            state.update(part["model"])
    return state, int(index["step"]), used_ema


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Write the inference checkpoint of training checkpoint ``ckpt`` to ``out``."""
    from matris.checkpoint import save_checkpoint
    from matris.config import preset
    from matris.model import MatRIS

    ckpt = resolve_checkpoint(ckpt)
    cfg_text = (ckpt / "config.yaml").read_text()
    cfg = from_yaml_text(cfg_text)
    state, step, used_ema = merged_weights(ckpt)
    model = MatRIS(preset(cfg.model.preset, **cfg.model.overrides))
    dtype = next(iter(v for k, v in state.items() if v.is_floating_point())).dtype
    model.to(dtype=dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{ckpt}: parts do not cover the model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    out = Path(out)
    save_checkpoint(out, model, extra={"step": step, "ema": used_ema, "source": str(ckpt),
                                       "train_config": cfg_text})
    return out
