"""DeltaNet: linear attention with the delta rule (Schlag et al. 2021; Yang et al. 2024, arXiv 2406.06484).

State S (per head, [d_k, d_v]) is updated by "erase what k points at, then write":
    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,      o_t = S_t^T (q_t / sqrt(d_k)).
fused = fla's `DeltaNet` layer; reference = `DeltaNetRef` below (same parameter names and shapes), which
runs the recurrence in the chunked WY form (chunk 64, one triangular solve per chunk, a python loop over
chunks only). `delta_rule_chunked` is shared with the gated variants (gated_deltanet.py), which add a
per-token scalar decay exp(g_t) in front of S_{t-1}.

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
from grid.models.registry import MixerSpec, register

CHUNK = 64
DEFAULT_HEAD_DIM = 128  # flame delta_net_340M / _1B: 1024/8 and 2048/16


# --------------------------------------------------------------------------------------------------
# the shared recurrence
# --------------------------------------------------------------------------------------------------

def delta_rule_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                       g: torch.Tensor | None = None, scale: float | None = None,
                       chunk_size: int = CHUNK) -> torch.Tensor:
    """(Gated) delta rule, chunked; fp32 math, returns o in v's dtype.

    q, k: [B, T, H, K]; v: [B, T, H, V]; beta: [B, T, H]; g: [B, T, H] log-decay (<= 0) or None.
    Per head: S_t = exp(g_t) (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T, o_t = scale * S_t^T q_t, S_0 = 0.

    Within a chunk with cumulative log-decay G (G_i = g_1 + ... + g_i) the state is
    S_i = e^{G_i} S_0 + sum_{j<=i} e^{G_i - G_j} k_j u_j^T, where the pseudo-values u solve the unit
    lower-triangular system (I + A) U = beta * (V - e^G K S_0), A_ij = beta_i e^{G_i - G_j} k_i.k_j (j < i).
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    out_dtype = v.dtype
    scale = K ** -0.5 if scale is None else scale
    C = chunk_size
    N = max(1, math.ceil(T / C))
    pad = N * C - T

    def prep(x: torch.Tensor) -> torch.Tensor:  # [B, T, H, ...] -> [B, H, N, C, ...] fp32, zero-padded
        x = x.float().transpose(1, 2)
        if pad:
            x = F.pad(x, (0, 0, 0, pad) if x.dim() == 4 else (0, pad))
        return x.reshape(B, H, N, C, *x.shape[3:])

    q, k, v, beta = prep(q), prep(k), prep(v), prep(beta)  # padded steps: k = v = beta = 0 (no effect)
    G = prep(g).cumsum(-1) if g is not None else torch.zeros_like(beta)
    idx = torch.arange(C, device=k.device)
    strict = idx[:, None] > idx[None, :]
    causal = idx[:, None] >= idx[None, :]
    diff = G[..., :, None] - G[..., None, :]  # G_i - G_j
    decay_strict = diff.masked_fill(~strict, float("-inf")).exp()
    decay_causal = diff.masked_fill(~causal, float("-inf")).exp()

    A = beta[..., :, None] * (k @ k.transpose(-1, -2)) * decay_strict  # strictly lower
    eye = torch.eye(C, device=k.device, dtype=k.dtype)
    rhs = torch.cat([beta[..., None] * v, beta[..., None] * G.exp()[..., None] * k], dim=-1)
    sol = torch.linalg.solve_triangular(A + eye, rhs, upper=False, unitriangular=True)
    u0, w = sol[..., :V], sol[..., V:]  # U = u0 - w @ S_0

    qk = (q @ k.transpose(-1, -2)) * decay_causal * scale  # [B, H, N, C, C]
    q_dec = q * (G.exp()[..., None] * scale)
    G_last = G[..., -1:]  # [B, H, N, 1]
    k_dec = k * (G_last - G).exp()[..., None]  # e^{G_C - G_j} k_j

    S = q.new_zeros(B, H, K, V)
    outs = []
    for n in range(N):
        u = u0[:, :, n] - w[:, :, n] @ S
        outs.append(q_dec[:, :, n] @ S + qk[:, :, n] @ u)
        S = G_last[:, :, n, :, None].exp() * S + k_dec[:, :, n].transpose(-1, -2) @ u
    o = torch.stack(outs, dim=2).reshape(B, H, N * C, V)[:, :, :T]
    return o.transpose(1, 2).to(out_dtype)


def delta_rule_recurrent(q, k, v, beta, g=None, scale=None) -> torch.Tensor:
    """Token-by-token form of `delta_rule_chunked` (same arguments); slow, for tests."""
    B, T, H, K = k.shape
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, v.shape[-1], dtype=torch.float32)
    outs = []
    for t in range(T):
        qt, kt, vt, bt = q[:, t].float(), k[:, t].float(), v[:, t].float(), beta[:, t].float()
        if g is not None:
            S = S * g[:, t].float().exp()[..., None, None]
        err = vt - torch.einsum("bhk,bhkv->bhv", kt, S)
        S = S + torch.einsum("bhk,bhv->bhkv", kt, bt[..., None] * err)
        outs.append(torch.einsum("bhk,bhkv->bhv", qt * scale, S))
    return torch.stack(outs, dim=1).to(v.dtype)


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
    """Plain-PyTorch twin of fla.layers.DeltaNet (training forward: no cache, no mask, no varlen)."""

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
        o = delta_rule_chunked(q, k, v, beta)
        if self.use_gate:
            o = self.o_norm(o, self.g_proj(x).view(B, T, self.num_heads, self.head_v_dim))
        else:
            o = self.o_norm(o)
        return self.o_proj(o.reshape(B, T, self.value_dim))


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
