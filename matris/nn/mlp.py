"""MLPs of the interaction blocks and the factory that builds them.

`GatedMLP` takes its input as *parts*: a list of ``(features, index)`` pairs whose
concatenation ``[f_0[idx_0], f_1[idx_1], ...]`` is the logical input. The first linear
layer is applied to each part on its own rows *before* gathering (projection split), so
an angle MLP never materialises an [A, 3·D] concatenation and its first-layer GEMM on A
rows only sees the angle features; bond and atom projections run on U or N rows.

Every MLP of a block is built by `build_mlp`, which dispatches on the config: dense
modules by default, or a builder registered under ``"moe"`` (MatRIS-MoE,
`matris.nn.moe`) when ``config.moe`` is set. Every MLP is called as ``mlp(parts, z)``
where ``z`` is the route key of each output row: the atomic number of its centre atom
(atoms, edges, angles; shape (R,)) or the two atomic numbers of a bond (shape (R, 2)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from matris.config import ModelConfig
from matris.nn.deferred import linear
from matris.nn.fused import gated_tail
from matris.nn.ops import gather, silu_linear

Part = tuple[Tensor, Tensor | None]


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · w over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(kind: str, dim: int) -> nn.Module:
    """LayerNorm (weight and bias) or RMSNorm (weight) of width `dim`."""
    return nn.LayerNorm(dim) if kind == "layernorm" else RMSNorm(dim)


def gather_sum(parts: Sequence[Part], layers: Sequence[nn.Linear]) -> Tensor:
    """Σ_k layer_k(f_k)[idx_k]: a linear map of the concatenated parts, projected first.

    The first part must be row-aligned (index None) or all parts may be gathered; the
    result has as many rows as the gathered indices (or the aligned part).
    """
    out = None
    for (feat, idx), layer in zip(parts, layers):
        y = linear(feat, layer.weight, layer.bias)
        if idx is not None:
            y = gather(y, idx)
        out = y if out is None else out + y
    return out


class GatedMLP(nn.Module):
    """φ(Norm_c(core(x))) ⊙ σ(Norm_g(gate(x))) with two-layer core and gate (biases).

    Args:
        in_dims: widths of the input parts (their concatenation is the input).
        hidden: hidden width h of core and gate.
        out: output width.
        norm: "layernorm" or "rmsnorm".

    The first layers of core and gate are stored together per part ([2h, d_k]) and
    the bias sits on part 0, so the parameter count equals the unsplit module's.
    """

    def __init__(self, in_dims: Sequence[int], hidden: int, out: int, norm: str):
        super().__init__()
        self.hidden = hidden
        self.first = nn.ModuleList(
            nn.Linear(d, 2 * hidden, bias=(k == 0)) for k, d in enumerate(in_dims))
        self.core = nn.Linear(hidden, out)
        self.gate = nn.Linear(hidden, out)
        self.norm_core = make_norm(norm, out)
        self.norm_gate = make_norm(norm, out)

    def forward(self, parts: Sequence[Part], z: Tensor | None = None) -> Tensor:
        core, gate = silu_linear(gather_sum(parts, self.first),
                                 [self.core.weight, self.gate.weight],
                                 [self.core.bias, self.gate.bias])
        return gated_tail(core, gate, self.norm_core, self.norm_gate)


class FFN(nn.Module):
    """Lin(in→h)·φ·Lin(h→out) without biases (maps zero to zero)."""

    def __init__(self, in_dim: int, hidden: int, out: int):
        super().__init__()
        self.lin1 = nn.Linear(in_dim, hidden, bias=False)
        self.lin2 = nn.Linear(hidden, out, bias=False)

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        (y,) = silu_linear(linear(x, self.lin1.weight), [self.lin2.weight], [None])
        return y


MLPBuilder = Callable[[str, Sequence[int], int, int, ModelConfig, str], nn.Module]


def _dense(kind: str, in_dims: Sequence[int], hidden: int, out: int, config: ModelConfig,
           role: str) -> nn.Module:
    if kind == "gated":
        return GatedMLP(in_dims, hidden, out, config.norm)
    if kind == "ffn":
        (in_dim,) = in_dims
        return FFN(in_dim, hidden, out)
    raise ValueError(f"MLP kind must be 'gated' or 'ffn', got {kind!r}")


MLP_BUILDERS: dict[str, MLPBuilder] = {"dense": _dense}


def build_mlp(kind: str, in_dims: Sequence[int], hidden: int, out: int, config: ModelConfig,
              role: str) -> nn.Module:
    """Build one MLP of an interaction block.

    Args:
        kind: "gated" (called as ``mlp(parts, z)``) or "ffn" (called as ``mlp(x, z)``).
        in_dims: input part widths (one entry for "ffn").
        hidden, out: hidden and output widths.
        config: the model config; ``config.moe`` selects the ``"moe"`` builder.
        role: dotted name of the MLP in its block (e.g. "line_attention.message"),
            so an MoE builder can choose which MLPs become experts.
    """
    key = "dense" if config.moe is None else "moe"
    if key == "moe" and key not in MLP_BUILDERS:
        import matris.nn.moe  # noqa: F401  (registers the "moe" builder)
    if key not in MLP_BUILDERS:
        raise ValueError("config.moe is set but no 'moe' MLP builder is registered "
                         "(import the MoE module first)")
    return MLP_BUILDERS[key](kind, in_dims, hidden, out, config, role)
