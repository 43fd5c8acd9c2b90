"""HGRN: hierarchically gated recurrent network (Qin et al. 2023, arXiv 2311.04823).

An element-wise (vector-state) gated linear recurrence:
    f_t = sigmoid(W_f x_t),  i_t = silu(W_i x_t) * (1 - f_t),  h_t = f_t * h_{t-1} + i_t,
    o_t = W_o (RMSNorm(h_t) * silu(W_g x_t)).

fused = fla's `HGRNAttention` (mode='chunk'; fla takes the chunk kernel whenever grad is enabled);
reference = `HGRNRef` below, same parameter names and shapes; the recurrence is a log-depth
(Hillis-Steele) parallel scan over time, vectorised and stable (products of gates <= 1).

Not modelled (by either backend): fla's HGRN *model* feeds each layer a learned, layer-increasing
lower bound on the forget gate (`use_lower_bound`, a model-level parameter outside the mixer); the
layer alone, as built here, runs without it (lower_bound=None), which is the paper's ablation
without the hierarchy. Defaults: fla's (expand_ratio 1, no short conv) with norm_eps 1e-6 as fla's
HGRN model passes it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.errors import ConfigError
from grid.models.mixers._common import RMSNormGated, ShortConvolution
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


def linear_scan(a: torch.Tensor, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + x_t along `dim` with h_{-1} = 0, as an inclusive Hillis-Steele scan.

    ceil(log2 T) steps of elementwise ops; after the step with offset s, (A_t, X_t) is the composition
    of the maps t-2s+1 .. t. Gates a in [0, 1] keep every product bounded.
    """
    T = x.shape[dim]
    A, X = a, x
    s = 1
    while s < T:
        head_A, tail_A, prev_A = A.narrow(dim, 0, s), A.narrow(dim, s, T - s), A.narrow(dim, 0, T - s)
        head_X, tail_X, prev_X = X.narrow(dim, 0, s), X.narrow(dim, s, T - s), X.narrow(dim, 0, T - s)
        X = torch.cat([head_X, tail_A * prev_X + tail_X], dim)
        A = torch.cat([head_A, tail_A * prev_A], dim)
        s *= 2
    return X


class HGRNRef(nn.Module):
    """Plain-PyTorch twin of fla.layers.HGRNAttention (training forward, no lower bound/cache/mask)."""

    def __init__(self, hidden_size: int, expand_ratio: float = 1, use_short_conv: bool = False, conv_size: int = 4,
                 conv_bias: bool = False, elementwise_affine: bool = True, norm_eps: float = 1e-5,
                 layer_idx: int | None = None):
        super().__init__()
        self.hidden_size, self.layer_idx = hidden_size, layer_idx
        self.input_dim = int(hidden_size * expand_ratio)
        self.use_short_conv = use_short_conv
        self.i_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        self.f_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        self.g_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        if use_short_conv:
            self.f_conv1d = ShortConvolution(self.input_dim, conv_size, bias=conv_bias, activation=None)
            self.i_conv1d = ShortConvolution(self.input_dim, conv_size, bias=conv_bias, activation=None)
        self.g_norm = RMSNormGated(self.input_dim, elementwise_affine=elementwise_affine, eps=norm_eps)
        self.o_proj = nn.Linear(self.input_dim, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        i, f = self.i_proj(x), self.f_proj(x)
        if self.use_short_conv:
            i, f = self.i_conv1d(i), self.f_conv1d(f)
        log_f = F.logsigmoid(f.float())
        a = log_f.exp()
        i = F.silu(i.float()) * (1 - a)
        h = linear_scan(a, i).to(x.dtype)
        return self.o_proj(self.g_norm(h, self.g_proj(x)))


# --------------------------------------------------------------------------------------------------
# registry entry
# --------------------------------------------------------------------------------------------------

def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    if not isinstance(kw["expand_ratio"], (int, float)) or int(d * kw["expand_ratio"]) < 1:
        raise ConfigError("expand_ratio", kw["expand_ratio"], f"values with int(d_model * expand_ratio) >= 1 (d_model={d})")
    return kw


def _reference(d: int, layer_idx: int, kw: dict) -> HGRNRef:
    return HGRNRef(hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import HGRNAttention  # noqa: PLC0415

    return HGRNAttention(mode="chunk", hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _state(d: int, kw: dict, context: int) -> int:
    """Vector state (input_dim) plus the short-conv caches (conv_size-1 inputs of i and f)."""
    n = int(d * _resolve(d, kw)["expand_ratio"])
    return n + (2 * (kw["conv_size"] - 1) * n if kw["use_short_conv"] else 0)


def _flops(d: int, kw: dict, context: int) -> float:
    return 5.0 * int(d * _resolve(d, kw)["expand_ratio"])  # studies.md A.6: HGRN 5 * d (per recurrent channel)


register(MixerSpec(
    name="hgrn",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="gated-linear",
    description="HGRN: element-wise gated linear recurrence (forget gate f, input silu(i)*(1-f)), gated RMSNorm output",
    default_kwargs=dict(expand_ratio=1, use_short_conv=False, conv_size=4, conv_bias=False,
                        elementwise_affine=True, norm_eps=1e-6),
    kwarg_docs=dict(
        expand_ratio="recurrent width = int(d_model * expand_ratio)",
        use_short_conv="causal depthwise convs (no activation) on i and f", conv_size="short-conv kernel size",
        conv_bias="bias in the short convs", elementwise_affine="learned gain in the output RMSNorm",
        norm_eps="eps of the gated output RMSNorm (fla's model passes 1e-6; bare layer 1e-5)"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=_reference,
    gated_chunk_bwd=False,  # chunk_hgrn is its own kernel pair; no chunk_bwd_dqkwg
    size_knobs={"expand_ratio": (0.5, 0.75, 1, 1.25, 1.5, 2)},
    notes="the HGRN model's per-layer forget-gate lower bounds are model-level and not used by this mixer",
))
