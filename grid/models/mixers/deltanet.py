"""DeltaNet: linear attention with the delta rule (Schlag et al. 2021; Yang et al. 2024, arXiv 2406.06484).

State S (per head, [d_k, d_v]) is updated by "erase what k points at, then write":
    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,      o_t = S_t^T (q_t / sqrt(d_k)).
fused = fla's `DeltaNet` layer; reference = `DeltaNetRef` below (same parameter names and shapes), which
runs the recurrence in the chunked WY form (chunk 64, one triangular solve per chunk, a python loop over
chunks only): `delta_rule_chunked` in _recurrences.py, shared with the gated variant (gated_deltanet.py),
which adds a per-token scalar decay exp(g_t) in front of S_{t-1}.

Defaults follow flame's delta_net_340M/1B configs (head_dim 128, i.e. 8 heads at d=1024 and 16 at d=2048;
short conv 4; SiLU q/k activation; L2 q/k norm; beta on; output RMSNorm; no output gate) and the norm eps
fla's DeltaNet *model* passes to the layer (1e-6; the bare layer's default is 1e-5).
fla quirks: its layer switches to the fused-recurrent kernel for T <= 64 even in training (same function);
its chunk kernel refuses fp32 inputs ("does not support float32"), so the fused layer needs bf16/fp16
activations (autocast) once T > 64.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.errors import ConfigError
from grid.models.mixers._common import RMSNorm, RMSNormGated, ShortConvolution, l2norm
# delta_rule_recurrent (the token-by-token oracle) stays importable from here, where tests look for it
from grid.models.mixers._recurrences import delta_rule_chunked, delta_rule_recurrent  # noqa: F401
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)

DEFAULT_HEAD_DIM = 128  # flame delta_net_340M / _1B: 1024/8 and 2048/16


# --------------------------------------------------------------------------------------------------
# q/k feature maps
# --------------------------------------------------------------------------------------------------

def sum_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / max(||x||_1, eps) over the last dim (fla's `sum_norm`)."""
    return F.normalize(x, p=1, dim=-1, eps=eps)


def elu_p1(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x, 1.0, False) + 1.0


# --------------------------------------------------------------------------------------------------
# the layer
# --------------------------------------------------------------------------------------------------

def default_heads(d_model: int) -> int:
    return max(1, d_model // DEFAULT_HEAD_DIM)


class DeltaNetRef(nn.Module):
    """Plain-PyTorch twin of fla.layers.DeltaNet (training forward: no cache, no mask, no varlen).
    `recurrence(q, k, v, beta)` is the delta rule on l2-normed q, k (a member-stacked model sets it
    to `fla_delta_rule` to run this twin on fla's kernels: grid/models/stacked.py)."""

    recurrence = staticmethod(delta_rule_chunked)

    def __init__(self, hidden_size: int, expand_k: float = 1.0, expand_v: float = 1.0, num_heads: int = 4,
                 use_beta: bool = True, use_gate: bool = False, use_short_conv: bool = True, conv_size: int = 4,
                 conv_bias: bool = False, allow_neg_eigval: bool = False, layer_idx: int | None = None,
                 qk_activation: str = "silu", qk_norm: str = "l2", norm_eps: float = 1e-5):
        super().__init__()
        if qk_activation not in ("silu", "relu", "elu", "identity"):
            raise ConfigError("qk_activation", qk_activation, ["silu", "relu", "elu", "identity"])
        if qk_norm not in ("l2", "sum"):
            raise ConfigError("qk_norm", qk_norm, ["l2", "sum"])
        self.hidden_size, self.num_heads, self.layer_idx = hidden_size, num_heads, layer_idx
        self.qk_activation, self.qk_norm = qk_activation, qk_norm
        self.use_beta, self.use_gate, self.use_short_conv = use_beta, use_gate, use_short_conv
        self.allow_neg_eigval = allow_neg_eigval
        self.key_dim, self.value_dim = round(hidden_size * expand_k), round(hidden_size * expand_v)
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads

        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        if use_beta:
            self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        if use_short_conv:
            qk_act = "silu" if qk_activation == "silu" else None
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation=qk_act)
            self.k_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation=qk_act)
            self.v_conv1d = ShortConvolution(self.value_dim, conv_size, bias=conv_bias, activation="silu")
        if use_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
            self.o_norm = RMSNormGated(self.head_v_dim, eps=norm_eps)
        else:
            self.o_norm = RMSNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        B, T, _ = x.shape
        if self.use_short_conv:
            q, k, v = self.q_conv1d(self.q_proj(x)), self.k_conv1d(self.k_proj(x)), self.v_conv1d(self.v_proj(x))
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), F.silu(self.v_proj(x))
            if self.qk_activation == "silu":
                q, k = F.silu(q), F.silu(k)
        q = q.view(B, T, self.num_heads, self.head_k_dim)
        k = k.view(B, T, self.num_heads, self.head_k_dim)
        v = v.view(B, T, self.num_heads, self.head_v_dim)
        if self.qk_activation == "relu":
            q, k = q.relu(), k.relu()
        elif self.qk_activation == "elu":
            q, k = elu_p1(q), elu_p1(k)
        if self.qk_norm == "sum":
            q, k = sum_norm(q).to(q.dtype), sum_norm(k).to(k.dtype)
        else:
            q, k = l2norm(q), l2norm(k)
        beta = self.b_proj(x).sigmoid() if self.use_beta else torch.ones_like(q[..., 0])
        if self.allow_neg_eigval:
            beta = beta * 2.0
        o = self.recurrence(q, k, v, beta)
        if self.use_gate:
            o = self.o_norm(o, self.g_proj(x).view(B, T, self.num_heads, self.head_v_dim))
        else:
            o = self.o_norm(o)
        return self.o_proj(o.reshape(B, T, self.value_dim))


def fla_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """`delta_rule_chunked(q, k, v, beta)` on fla's kernels, chosen as fla's DeltaNet layer chooses them
    (fused-recurrent for T <= 64, chunked above); q and k arrive l2-normed."""
    if q.shape[1] <= 64:
        from fla.ops.delta_rule import fused_recurrent_delta_rule as kernel  # noqa: PLC0415
    else:
        from fla.ops.delta_rule import chunk_delta_rule as kernel  # noqa: PLC0415
    return kernel(q=q, k=k, v=v, beta=beta, use_qk_l2norm_in_kernel=False)[0]


# --------------------------------------------------------------------------------------------------
# registry entry
# --------------------------------------------------------------------------------------------------

def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    kw["num_heads"] = kw["num_heads"] or default_heads(d)
    h = kw["num_heads"]
    for name in ("expand_k", "expand_v"):
        dim = d * kw[name]
        if not math.isclose(dim, round(dim)) or round(dim) % h:
            raise ConfigError(name, kw[name], f"values with d_model*{name} an integer divisible by num_heads={h}")
    return kw


def _dims(d: int, kw: dict) -> tuple[int, int, int]:
    kw = _resolve(d, kw)
    h = kw["num_heads"]
    return h, round(d * kw["expand_k"]) // h, round(d * kw["expand_v"]) // h


def _reference(d: int, layer_idx: int, kw: dict) -> DeltaNetRef:
    return DeltaNetRef(hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import DeltaNet  # noqa: PLC0415

    return DeltaNet(mode="chunk", hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _state(d: int, kw: dict, context: int) -> int:
    """Matrix state H*dk*dv plus the short-conv caches (conv_size-1 past inputs of q, k and v)."""
    h, dk, dv = _dims(d, kw)
    conv = (kw["conv_size"] - 1) * h * (2 * dk + dv) if kw["use_short_conv"] else 0
    return h * dk * dv + conv


def _flops(d: int, kw: dict, context: int) -> float:
    h, dk, dv = _dims(d, kw)
    return 8.0 * h * dk * dv  # studies.md A.6: DeltaNet 8 * d^2/H = 8 * H * dk * dv


register(MixerSpec(
    name="deltanet",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="delta",
    description="DeltaNet: delta-rule linear attention (erase along k, write v), short convs, L2 q/k norm",
    default_kwargs=dict(num_heads=None, expand_k=1.0, expand_v=1.0, use_beta=True, use_gate=False,
                        use_short_conv=True, conv_size=4, conv_bias=False, allow_neg_eigval=False,
                        qk_activation="silu", qk_norm="l2", norm_eps=1e-6),
    kwarg_docs=dict(
        num_heads="heads; null = d_model // 128 (flame's 340M/1B head_dim 128)",
        expand_k="key width = d_model * expand_k", expand_v="value width = d_model * expand_v",
        use_beta="learned per-head write strength sigmoid(b_proj x) (else 1)",
        use_gate="SiLU output gate inside the output RMSNorm (g_proj)",
        use_short_conv="causal depthwise convs on q, k, v", conv_size="short-conv kernel size",
        conv_bias="bias in the short convs",
        allow_neg_eigval="beta in (0, 2): eigenvalues of the transition in (-1, 1]",
        qk_activation="silu | relu | elu | identity", qk_norm="l2 | sum",
        norm_eps="eps of the output RMSNorm (fla's model passes 1e-6)"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=_reference,
    fla_kwargs=_resolve,
    gated_chunk_bwd=False,  # chunk_delta_rule calls chunk_bwd_dqkwg with g=None: not affected
    # num_heads is not a width knob here (it only resizes b_proj): sizing varies the key/value widths
    size_knobs={"expand_k": (0.5, 1.0), "expand_v": (0.5, 1.0, 2.0)},
    notes="fla's chunk kernel rejects fp32 activations (use bf16 autocast for T > 64)",
))
