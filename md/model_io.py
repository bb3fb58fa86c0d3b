"""Resolve the calculator's model, device and dtype arguments."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from matris.model import MatRIS

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """"auto" (or None) → CUDA when available, else CPU; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"float32"/"float64" (or the torch dtypes) → torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def load_model(model: MatRIS | str | os.PathLike, device: torch.device,
               dtype: torch.dtype) -> MatRIS:
    """A MatRIS in eval mode on `device`/`dtype` with frozen parameters.

    `model` is a checkpoint path (read with `matris.checkpoint.load_checkpoint`, i.e.
    ``torch.load(weights_only=True)``) or a `MatRIS`. A given model object is copied
    (the calculator freezes and converts its own copy; the caller's model is untouched).
    """
    if isinstance(model, (str, os.PathLike)):
        from matris.checkpoint import load_checkpoint

        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model checkpoint not found: {path}")
        model = load_checkpoint(path, map_location="cpu")
    elif not isinstance(model, MatRIS):
        raise TypeError(f"model must be a checkpoint path or a matris.model.MatRIS, got "
                        f"{type(model).__name__}")
    else:
        model = copy.deepcopy(model)
    model = model.to(device=device, dtype=dtype)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
