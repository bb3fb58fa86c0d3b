"""Large models without the memory: build on the meta device, materialise only what a
process needs.

A ``moe-1b`` model is 4 GB of float32 parameters; a pipeline rank needs only its stages,
and a specialised inference model only the experts its elements use. Build the model
under ``torch.device("meta")`` (shapes, no storage), then call `materialize_` on the
sub-modules to keep: they get CPU storage and a fresh random initialisation of the same
kind as the constructor's (PyTorch defaults for Linear / LayerNorm / Embedding, ones for
RMSNorm weights and residual γ's, N(0, std) router logits, zero reference energies and
the constructor's buffers). Weights come from the generator state, not from a
constructor-built model, so use a checkpoint to get trained or reproducible weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from matris.nn.basis import Bessel
from matris.nn.interaction import _Gammas
from matris.nn.mlp import RMSNorm
from matris.nn.moe import MoELayer
from matris.nn.moe_router import ElementRouter, FeatureRouter
from matris.nn.readout import Readout


def is_meta(module: nn.Module) -> bool:
    """True when any parameter or buffer of `module` has no storage (meta device)."""
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


@torch.no_grad()
def materialize_(module: nn.Module, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> nn.Module:
    """Give every tensor of `module` storage on `device` and initialise it (in place).

    Returns `module`. Floating tensors end in `dtype` (basis frequencies are computed in
    float64 first, as in the constructor). Unknown parametrised module types raise, so a
    new parameter cannot silently stay uninitialised.
    """
    module.to_empty(device=device)
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.LayerNorm, nn.Embedding, FeatureRouter)):
            m.reset_parameters()
        elif isinstance(m, (RMSNorm, _Gammas)):
            for p in m.parameters(recurse=False):
                p.fill_(1.0)
        elif isinstance(m, ElementRouter):
            m.logits.normal_(0.0, m.init_std)
        elif any(True for _ in m.parameters(recurse=False)):
            raise TypeError(f"materialize_: no initialiser for {type(m).__name__}")
        if isinstance(m, ElementRouter | FeatureRouter):
            m.expert_ids.copy_(torch.arange(m.expert_ids.numel()))
        if isinstance(m, ElementRouter):
            m.allowed.fill_(True)
        if isinstance(m, MoELayer):
            m.local_of.copy_(torch.arange(m.local_of.numel()))
        if isinstance(m, Bessel):
            n = m.frequencies.numel()
            m.frequencies = torch.arange(1, n + 1, dtype=torch.float64, device=device) * math.pi
        if isinstance(m, Readout):
            m.reference_energies.zero_()
    return module.to(dtype=dtype)
