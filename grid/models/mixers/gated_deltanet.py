"""Gated DeltaNet (Yang, Kautz, Hatamizadeh 2024, arXiv 2412.06464): the delta rule plus a Mamba-2-style
data-dependent scalar decay per head and token.

    alpha_t = exp(g_t),  g_t = -exp(A_log) * softplus(a_proj(x_t) + dt_bias)
    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = S_t^T q_t / sqrt(d_k)
then a per-head RMSNorm gated by SiLU(g_proj(x)) and o_proj. fused = fla's `GatedDeltaNet`; reference =
`GatedDeltaNetRef` (same parameter names/shapes; the chunked delta rule of _recurrences.py, DeltaNet's
too). A_log and dt_bias are initialised as fla does (A ~ U(0, 16); dt log-uniform in [1e-3, 0.1], stored
as inverse softplus).

Default width (deviation from fla/flame, on purpose): flame's gated_deltanet_340M/1B use 6 heads x head_dim
256 with expand_v 2, which makes the mixer ~6*d^2 at d=2048 and 12*d^2 at d=1024 (~40% more model than its
siblings; studies.md A.4). For an iso-parameter default we keep expand_v = 1 and choose
  head_dim  = d_model/8 rounded to a power of two, clamped to [64, 256]  (256 at d=2048: flame's head shape)
  num_heads = the count whose mixer weights come closest to 4*d^2       (6 at d=1024 and at d=2048)
(`auto_head_dim`, `auto_heads` in _heads.py, shared with gated_deltaproduct.py)
i.e. 6 x 128 at d=1024 (3.75*d^2 + small) and 6 x 256 at d=2048. Pass head_dim / num_heads / expand_v to
replicate flame exactly, or let iso-parameter sizing (`size_knobs`) adjust them.
The norm eps is the one fla's model passes (config.norm_eps = 1e-6; the bare layer's default is 1e-5).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.errors import ConfigError
from grid.models.mixers._common import RMSNorm, RMSNormGated, ShortConvolution, l2norm
from grid.models.mixers._heads import auto_head_dim, auto_heads
from grid.models.mixers._recurrences import delta_rule_chunked
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


def init_decay_params(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fla's GatedDeltaNet/GatedDeltaProduct init: A_log = log U(0, 16); dt_bias = softplus^-1(dt),
    dt log-uniform in [1e-3, 1e-1] (floored at 1e-4)."""
    A = torch.empty(n, dtype=torch.float32).uniform_(0, 16)
    dt = torch.exp(torch.rand(n) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)).clamp(min=1e-4)
    return torch.log(A), dt + torch.log(-torch.expm1(-dt))


class GatedDeltaNetRef(nn.Module):
    """Plain-PyTorch twin of fla.layers.GatedDeltaNet (training forward: no cache, no mask, no varlen).
    `recurrence(q, k, v, beta, g, scale=)` is the gated delta rule on l2-normed q, k (a member-stacked
    model sets it to `fla_gated_delta_rule` to run this twin on fla's kernel: grid/models/stacked.py)."""

    recurrence = staticmethod(delta_rule_chunked)

    def __init__(self, hidden_size: int, expand_v: float = 2, head_dim: int = 256, num_heads: int = 6,
                 num_v_heads: int | None = None, use_gate: bool = True, use_short_conv: bool = True,
                 allow_neg_eigval: bool = False, conv_size: int = 4, conv_bias: bool = False,
                 layer_idx: int | None = None, norm_eps: float = 1e-5, output_gate_activation: str = "swish"):
        super().__init__()
        self.hidden_size, self.layer_idx = hidden_size, layer_idx
        self.use_gate, self.use_short_conv, self.allow_neg_eigval = use_gate, use_short_conv, allow_neg_eigval
        self.num_heads = num_heads
        self.num_v_heads = num_v_heads if num_v_heads is not None else num_heads
        self.head_k_dim = head_dim
        self.head_v_dim = int(head_dim * expand_v)
        self.key_dim = num_heads * head_dim
        self.value_dim = self.num_v_heads * self.head_v_dim
        if not math.isclose(head_dim * expand_v, self.head_v_dim, rel_tol=1e-5):
            raise ConfigError("expand_v", expand_v, f"values with head_dim*expand_v an integer (head_dim={head_dim})")
        if self.num_v_heads % num_heads:
            raise ConfigError("num_v_heads", num_v_heads, f"multiples of num_heads={num_heads}")
        if output_gate_activation not in ("swish", "silu", "sigmoid"):
            raise ConfigError("output_gate_activation", output_gate_activation, ["swish", "silu", "sigmoid"])

        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.a_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        A_log, dt_bias = init_decay_params(self.num_v_heads)
        self.A_log = nn.Parameter(A_log)
        self.A_log._no_weight_decay = True
        self.dt_bias = nn.Parameter(dt_bias)
        self.dt_bias._no_weight_decay = True
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation="silu")
            self.k_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation="silu")
            self.v_conv1d = ShortConvolution(self.value_dim, conv_size, bias=conv_bias, activation="silu")
        if use_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
            self.o_norm = RMSNormGated(self.head_v_dim, eps=norm_eps, activation=output_gate_activation)
        else:
            self.o_norm = RMSNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        B, T, _ = x.shape
        if self.use_short_conv:
            q, k, v = self.q_conv1d(self.q_proj(x)), self.k_conv1d(self.k_proj(x)), self.v_conv1d(self.v_proj(x))
        else:
            q, k, v = F.silu(self.q_proj(x)), F.silu(self.k_proj(x)), F.silu(self.v_proj(x))
        q = l2norm(q.view(B, T, self.num_heads, self.head_k_dim))
        k = l2norm(k.view(B, T, self.num_heads, self.head_k_dim))
        v = v.view(B, T, self.num_v_heads, self.head_v_dim)
        if self.num_v_heads > self.num_heads:  # GVA: value head i reads q/k head i // (HV / H)
            rep = self.num_v_heads // self.num_heads
            q, k = q.repeat_interleave(rep, dim=2), k.repeat_interleave(rep, dim=2)
        beta = self.b_proj(x).float().sigmoid()
        if self.allow_neg_eigval:
            beta = beta * 2.0
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias.float())
        o = self.recurrence(q, k, v, beta, g, scale=self.head_k_dim ** -0.5)
        if self.use_gate:
            o = self.o_norm(o, self.g_proj(x).view(B, T, self.num_v_heads, self.head_v_dim))
        else:
            o = self.o_norm(o)
        return self.o_proj(o.reshape(B, T, self.value_dim))


def fla_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor,
                         scale: float) -> torch.Tensor:
    """`delta_rule_chunked(q, k, v, beta, g, scale)` on fla's kernels, chosen as fla's layer chooses them
    (chunked whenever gradients are on; fused-recurrent for T <= 64 without them, i.e. at evaluation).
    q, k arrive l2-normed, beta after its sigmoid, g as the log decay: the twin computes in PyTorch
    what fla's layer computes inside the kernel (the same formulas, fp32)."""
    if not torch.is_grad_enabled() and q.shape[1] <= 64:
        from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule as kernel  # noqa: PLC0415
    else:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as kernel  # noqa: PLC0415
    return kernel(q=q, k=k, v=v, g=g, beta=beta, scale=scale, use_qk_l2norm_in_kernel=False, state_v_first=True)[0]


# --------------------------------------------------------------------------------------------------
# registry entry
# --------------------------------------------------------------------------------------------------

def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    kw["head_dim"] = kw["head_dim"] or auto_head_dim(d)
    if kw["num_heads"] is None:
        ev = kw["expand_v"]
        # weights per unit of key width: q, k (2) + v, o (2 * expand_v) + g (expand_v, if gated)
        kw["num_heads"] = auto_heads(d, kw["head_dim"], 2 + ev * (2 + int(kw["use_gate"])))
    return kw


def _dims(d: int, kw: dict) -> tuple[int, int, int]:
    kw = _resolve(d, kw)
    hv = kw["num_v_heads"] or kw["num_heads"]
    return hv, kw["head_dim"], int(kw["head_dim"] * kw["expand_v"])


def _reference(d: int, layer_idx: int, kw: dict) -> GatedDeltaNetRef:
    return GatedDeltaNetRef(hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import GatedDeltaNet  # noqa: PLC0415

    return GatedDeltaNet(mode="chunk", hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _state(d: int, kw: dict, context: int) -> int:
    """Matrix state HV*dk*dv plus the short-conv caches (conv_size-1 past inputs of q, k and v)."""
    hv, dk, dv = _dims(d, kw)
    h = _resolve(d, kw)["num_heads"]
    conv = (kw["conv_size"] - 1) * (2 * h * dk + hv * dv) if kw["use_short_conv"] else 0
    return hv * dk * dv + conv


def _flops(d: int, kw: dict, context: int) -> float:
    hv, dk, dv = _dims(d, kw)
    return 8.0 * hv * dk * dv  # studies.md A.6: Gated DeltaNet 8 * d^2/H = 8 * H * dk * dv


register(MixerSpec(
    name="gated_deltanet",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="delta",
    description="Gated DeltaNet: delta rule + data-dependent scalar decay (Mamba-2 style), short convs, "
                "SiLU-gated output norm",
    default_kwargs=dict(num_heads=None, head_dim=None, expand_v=1.0, num_v_heads=None, use_gate=True,
                        use_short_conv=True, allow_neg_eigval=False, conv_size=4, conv_bias=False,
                        norm_eps=1e-6, output_gate_activation="swish"),
    kwarg_docs=dict(
        num_heads="q/k heads; null = closest to 4*d^2 mixer weights (6 at d=1024/2048)",
        head_dim="q/k head width; null = d_model/8 rounded to a power of two in [64, 256]",
        expand_v="value head width = head_dim * expand_v (flame uses 2; default 1 for iso-parameter)",
        num_v_heads="value heads (GVA when > num_heads); null = num_heads",
        use_gate="output gate act(g_proj x) inside the output RMSNorm",
        use_short_conv="causal depthwise convs on q, k, v", conv_size="short-conv kernel size",
        conv_bias="bias in the short convs", allow_neg_eigval="beta in (0, 2)",
        norm_eps="eps of the output norm (fla's model passes 1e-6)",
        output_gate_activation="swish | silu | sigmoid"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=_reference,
    fla_kwargs=_resolve,
    gated_chunk_bwd=True,  # chunk_gated_delta_rule_bwd -> chunk_bwd_dqkwg(..., g=g)
    # head_dim stays at its (power-of-two) default during sizing; pass it explicitly to change it
    size_knobs={"num_heads": (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 13, 14, 16), "expand_v": (1.0, 2.0)},
    notes="defaults keep expand_v=1 (flame's 340M file is ~40% larger than its siblings)",
))
