"""HGRN-2: HGRN with state expansion (Qin et al. 2024, arXiv 2404.07904).

GLA with the key tied to the forget gate: per head (forget width = expand_ratio, value width d/H)
    f_t = sigmoid(W_f x_t),  k_t = 1 - f_t,  q_t = silu(W_q x_t),  v_t = W_i x_t,
    S_t = diag(f_t) S_{t-1} + k_t v_t^T,   o_t = S_t^T (q_t / sqrt(expand_ratio)),
then one RMSNorm over all heads and o_proj.

fused = fla's `HGRN2Attention` (mode='chunk'; fla runs its fused-recurrent kernel for T <= 64, same
function); reference = `HGRN2Ref` below, same parameter names and shapes, recurrence by `gla_chunked`
(_recurrences.py).

Heads: fla takes either expand_ratio (then num_heads = d // expand_ratio) or num_heads (then
expand_ratio = d // num_heads). With both null this entry uses flame's rule, head forget width 128
(`heads_and_ratio` in _heads.py, shared with LightNet):
num_heads = max(1, d // 128) (hgrn2_340M: 8 heads x 128 at d=1024), which also works below d=128.
fla quirk mirrored here: the output RMSNorm is applied by `rms_norm_linear` with its default eps 1e-5,
whatever norm_eps the layer was built with, so this entry has no norm_eps knob. Not modelled (by
either backend): the HGRN-2 model's learned per-layer forget-gate lower bounds (model-level).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.mixers._common import RMSNorm, ShortConvolution
from grid.models.mixers._heads import heads_and_ratio
from grid.models.mixers._recurrences import gla_chunked
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)

FLA_RMS_NORM_LINEAR_EPS = 1e-5  # eps fla's rms_norm_linear uses in HGRN2Attention.forward


class HGRN2Ref(nn.Module):
    """Plain-PyTorch twin of fla.layers.HGRN2Attention (training forward, no lower bound/cache/mask)."""

    def __init__(self, hidden_size: int, num_heads: int | None = None, expand_ratio: int | None = 128,
                 use_short_conv: bool = False, conv_size: int = 4, conv_bias: bool = False,
                 elementwise_affine: bool = True, layer_idx: int | None = None):
        super().__init__()
        self.hidden_size, self.layer_idx = hidden_size, layer_idx
        self.num_heads, self.expand_ratio = heads_and_ratio(hidden_size, num_heads, expand_ratio)
        self.use_short_conv = use_short_conv
        self.forget_dim = self.num_heads * self.expand_ratio
        self.input_dim = hidden_size
        self.head_f_dim, self.head_i_dim = self.expand_ratio, hidden_size // self.num_heads
        self.q_proj = nn.Linear(hidden_size, self.forget_dim, bias=False)
        self.f_proj = nn.Linear(hidden_size, self.forget_dim, bias=False)
        self.i_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.forget_dim, conv_size, bias=conv_bias, activation=None)
            self.f_conv1d = ShortConvolution(self.forget_dim, conv_size, bias=conv_bias, activation=None)
            self.i_conv1d = ShortConvolution(self.input_dim, conv_size, bias=conv_bias, activation=None)
        self.g_norm = RMSNorm(hidden_size, elementwise_affine=elementwise_affine, eps=FLA_RMS_NORM_LINEAR_EPS)
        self.o_proj = nn.Linear(self.input_dim, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        B, T, _ = x.shape
        q, f, i = self.q_proj(x), self.f_proj(x), self.i_proj(x)
        if self.use_short_conv:
            q, f, i = self.q_conv1d(q), self.f_conv1d(f), self.i_conv1d(i)
        q = F.silu(q)
        g = F.logsigmoid(f.float())
        k = (1 - g.exp()).to(i.dtype)
        H, Df = self.num_heads, self.head_f_dim
        q, k, g = q.view(B, T, H, Df), k.view(B, T, H, Df), g.view(B, T, H, Df)
        o = gla_chunked(q, k, i.view(B, T, H, self.head_i_dim), g)  # scale 1/sqrt(expand_ratio) (chunk_gla default)
        return self.o_proj(self.g_norm(o.reshape(B, T, self.input_dim)))


# --------------------------------------------------------------------------------------------------
# registry entry
# --------------------------------------------------------------------------------------------------

def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    kw["num_heads"], kw["expand_ratio"] = heads_and_ratio(d, kw["num_heads"], kw["expand_ratio"])
    return kw


def _reference(d: int, layer_idx: int, kw: dict) -> HGRN2Ref:
    return HGRN2Ref(hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import HGRN2Attention  # noqa: PLC0415

    kw = _resolve(d, kw)
    kw["num_heads"] = None  # fla derives the heads from expand_ratio (same value)
    return HGRN2Attention(mode="chunk", hidden_size=d, layer_idx=layer_idx, **kw)


def _state(d: int, kw: dict, context: int) -> int:
    """Matrix state H * expand_ratio * (d/H) plus the short-conv caches (conv_size-1 inputs of q, f, i)."""
    h, er = heads_and_ratio(d, kw["num_heads"], kw["expand_ratio"])
    conv = (kw["conv_size"] - 1) * (2 * h * er + d) if kw["use_short_conv"] else 0
    return h * er * (d // h) + conv


def _flops(d: int, kw: dict, context: int) -> float:
    h, er = heads_and_ratio(d, kw["num_heads"], kw["expand_ratio"])
    return 7.0 * h * er * (d // h)  # studies.md A.6: HGRN-2 7 * d^2/H = 7 * H * dk * dv


register(MixerSpec(
    name="hgrn2",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="gated-linear",
    description="HGRN-2: GLA with the key tied to the forget gate (k = 1 - f), SiLU queries, state expansion",
    default_kwargs=dict(num_heads=None, expand_ratio=None, use_short_conv=False, conv_size=4, conv_bias=False,
                        elementwise_affine=True),
    kwarg_docs=dict(
        num_heads="heads (then expand_ratio = d_model // num_heads); null with expand_ratio null = d_model // 128",
        expand_ratio="per-head forget/key width (then num_heads = d_model // expand_ratio); flame: 128",
        use_short_conv="causal depthwise convs (no activation) on q, f, i", conv_size="short-conv kernel size",
        conv_bias="bias in the short convs", elementwise_affine="learned gain in the output RMSNorm"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=_reference,
    gated_chunk_bwd=False,  # chunk_gla has its own backward; it never calls common chunk_bwd_dqkwg
    size_knobs={},  # ~4 d^2 weights whatever the head split: heads only trade state size
    notes="output RMSNorm eps is fla's rms_norm_linear default 1e-5; model-level forget lower bounds not used",
))
