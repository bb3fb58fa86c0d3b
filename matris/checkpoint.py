"""Single-file inference checkpoints: config, weights, reference energies, format version.

The file is a `torch.save` of plain data and tensors only, so it loads with
``torch.load(weights_only=True)`` (no pickled classes). Writes are atomic: a temporary
file in the same directory is written, fsync'ed and renamed over the target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from matris.config import ModelConfig
from matris.model import MatRIS

FORMAT = "matris-janus-model"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)


class CheckpointError(ValueError):
    """The file is not a readable MatRIS-Janus model checkpoint."""


def _check_plain(value: Any, where: str = "extra") -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            _check_plain(v, f"{where}[{k}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{where}: keys must be strings, got {k!r}")
            _check_plain(v, f"{where}.{k}")
        return
    if isinstance(value, torch.Tensor):
        return
    raise CheckpointError(f"{where}: only plain data (numbers, strings, lists, dicts, "
                          f"tensors) can be stored, got {type(value).__name__}")


def save_checkpoint(path: str | os.PathLike, model: MatRIS, extra: dict | None = None) -> None:
    """Atomically write `model` (config, CPU state_dict, reference energies) to `path`.

    `extra` is optional plain data (e.g. training step, dataset manifest id).
    """
    if extra is not None:
        _check_plain(extra)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "reference_energies": model.reference_energies.detach().cpu().to(torch.float64),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "extra": extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The validated raw payload (config dict, state_dict, reference_energies, extra)."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # unpickling errors of all kinds
        raise CheckpointError(f"{path}: not a readable model checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    version = payload.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version!r} is not supported by this "
            f"version of matris (supported: {list(SUPPORTED_VERSIONS)})")
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> MatRIS:
    """Rebuild the model (eval mode, saved dtype). Its `extra` is in ``model.checkpoint_extra``."""
    payload = read_checkpoint(path, map_location)
    model = MatRIS(ModelConfig.from_dict(payload["config"]))
    dtype = getattr(torch, payload.get("dtype", "float32"))
    model.to(dtype=dtype)
    model.load_state_dict(payload["state_dict"])
    model.set_reference_energies(payload["reference_energies"])
    model.to(device=map_location if isinstance(map_location, (str, torch.device)) else None)
    model.eval()
    model.checkpoint_extra = payload.get("extra")
    return model
