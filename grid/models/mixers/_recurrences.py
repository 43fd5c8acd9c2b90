"""Chunked reference recurrences that several mixer families share (plain PyTorch, fp32 math).

* `gla_chunked`: gated linear attention with a per-channel or per-head log-decay. GLA (gla.py) uses it as
  it is, RetNet (retnet.py) with a fixed per-head decay gamma_h, HGRN-2 (hgrn2.py) with k = 1 - forget gate.
* `delta_rule_chunked`: the (gated) delta rule in the chunked WY form. DeltaNet (deltanet.py) runs it
  without decay, Gated DeltaNet (gated_deltanet.py) with a per-token scalar decay.
  `delta_rule_recurrent` is its token-by-token form, the oracle of the tests.

They live here, not in one of the families, so that no family file imports a sibling family.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GLA_CHUNK = 16  # intra-chunk decays are materialised as [C, C, d_k]: 16 is the fastest and leanest on CPU
DELTA_CHUNK = 64


# --------------------------------------------------------------------------------------------------
# gated linear attention (GLA, RetNet, HGRN-2)
# --------------------------------------------------------------------------------------------------

def gla_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                scale: float | None = None, chunk_size: int = GLA_CHUNK) -> torch.Tensor:
    """Gated linear attention, chunked; fp32 math, returns o in v's dtype.

    q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H, K] (per-channel) or [B, T, H, 1] (per-head)
    natural-log decay (<= 0). Per head: S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = scale * S_t^T q_t.

    Inside a chunk with cumulative decay b_i = g_1 + ... + g_i, o_i = sum_{j<=i} (q_i . e^{b_i - b_j} k_j) v_j
    + (q_i e^{b_i})^T S_0; every exponent is <= 0 (pairwise decays are formed explicitly, never as
    e^{b_i} e^{-b_j}), so the form is stable for any gate strength. States pass between chunks in a
    python loop of elementwise ops only. Autocast is switched off inside: the math stays fp32 (like the
    fp32 accumulators of fla's kernels) also when the model trains under bf16 autocast.
    """
    with torch.autocast(q.device.type, enabled=False):
        return _gla_chunked(q, k, v, g, scale, chunk_size)


def _gla_chunked(q, k, v, g, scale, chunk_size):
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    C = chunk_size
    N = max(1, math.ceil(T / C))
    pad = N * C - T

    def prep(x: torch.Tensor) -> torch.Tensor:  # [B, T, H, D] -> [B, H, N, C, D] fp32, zero-padded
        x = x.float().transpose(1, 2)
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        return x.reshape(B, H, N, C, x.shape[-1])

    q, k, vv, g = prep(q) * scale, prep(k), prep(v), prep(g)
    b = g.cumsum(-2)  # [B, H, N, C, K or 1]
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    diff = b[..., :, None, :] - b[..., None, :, :]  # [B, H, N, C(i), C(j), K or 1]: b_i - b_j
    decay = diff.masked_fill(~causal[..., None], float("-inf")).exp()
    if g.shape[-1] == 1:
        A = (q @ k.transpose(-1, -2)) * decay[..., 0]
    else:
        A = torch.einsum("bhnik,bhnjk,bhnijk->bhnij", q, k, decay)
    o = A @ vv
    b_last = b[..., -1:, :]
    U = (k * (b_last - b).exp()).transpose(-1, -2) @ vv  # [B, H, N, K, V]: what each chunk writes
    D = b_last.exp().squeeze(-2)  # [B, H, N, K or 1]: how much each chunk keeps
    S = q.new_zeros(B, H, K, V)
    starts = []
    for n in range(N):
        starts.append(S)
        S = D[:, :, n, :, None] * S + U[:, :, n]
    o = o + (q * b.exp()) @ torch.stack(starts, 2)
    return o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2).to(v.dtype)


# --------------------------------------------------------------------------------------------------
# the delta rule (DeltaNet, Gated DeltaNet)
# --------------------------------------------------------------------------------------------------

def delta_rule_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                       g: torch.Tensor | None = None, scale: float | None = None,
                       chunk_size: int = DELTA_CHUNK) -> torch.Tensor:
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
