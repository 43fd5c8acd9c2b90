"""Mamba-2 (SSD, state-space duality): fla's `Mamba2` layer and our chunked-SSD reference.

Layer (fla.layers.mamba2.Mamba2, parameter names and shapes identical in both backends):

    in_proj: d -> [z (I) | xBC (I + 2GN) | dt (H)]            I = expand * d, H = I / head_dim
    xBC    = silu(causal depthwise conv1d(xBC))  (conv1d: nn.Conv1d [I+2GN, 1, K] + bias)
    x, B, C = split(xBC)                          x: [H, P], B/C: [G, N] (head h reads group h // (H/G))
    dt     = softplus(dt + dt_bias)  (clamped to dt_limit if set);   A = -exp(A_log)   (one per head)
    h_t    = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T      (h: [H, P, N] per sequence)
    y_t    = h_t C_t + D x_t
    out    = out_proj(RMSNormGated(y, z))   grouped RMSNorm (group = I / G) of y * silu(z), times weight
             (norm_before_gate=True: rmsnorm(y) * weight * silu(z); rmsnorm=False: y * silu(z))

Backends
* fused: fla's layer. Its fast path is mamba_ssm's SSD Triton kernels + causal_conv1d's CUDA conv, used
  only when both packages are installed and the input is on a GPU. Without them fla silently runs its
  `torch_forward`, a plain-torch SSD that materialises [B, T/cs, cs, cs, H, N] tensors (chunk_size cs=256),
  plus fla's Triton gated RMSNorm and swish. Measured on an H100 (d=1024, defaults, fp32 fwd+bwd): 33 GiB
  peak at B=2, T=2048 and out of memory at B=8, T=4096, where this reference needs 10.6 GiB. That is
  neither fused nor feasible at benchmark scale, so the fused layer built here refuses to run on a GPU
  without mamba_ssm (BackendUnavailable naming the fix); on CPU (tests, Triton interpreter) the torch
  fallback is allowed, and that is what the parity tests compare against (it also matched on an H100).
* reference: `Mamba2Reference`, our chunked SSD (chunk = `chunk_size`): intra-chunk quadratic form with the
  decay mask exp(segsum(dt A)), chunk states, a closed-form inter-chunk recurrence, and the D skip. Plain
  PyTorch, fp32 scan math, no materialisation over the state dimension.

fla 0.6 notes (checked): `fla.modules.convolution` (imported by Mamba/Mamba2 when causal_conv1d is missing)
no longer exists as a file but is an alias module that fla.modules registers, so construction works; the
Triton conv is used only on the mamba_ssm path. fla's torch fallback expands B/C over heads with
`repeat` (head h reads group h % G) while mamba_ssm's kernels and fla's own decode path use h // (H/G):
for n_groups > 1 the fallback computes a different function. We follow mamba_ssm (h // (H/G)); with the
default n_groups=1 all agree.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.errors import ConfigError
from grid.models.mixers._mamba_fast_path import guarded_fla_class
from grid.models.registry import MixerSpec, register

# ---------------------------------------------------------------------------------------------------
# geometry and validation


def _dims(d_model: int, kw: dict) -> dict:
    """intermediate size I, heads H, head_dim P, groups G, state N, conv channels; validated like fla."""
    inter = int(kw["expand"] * d_model)
    p, g, n = kw["head_dim"], kw["n_groups"], kw["state_size"]
    if p <= 0 or inter % p:
        raise ConfigError("head_dim", p, f"divisors of expand*d_model = {inter}")
    heads = inter // p
    if kw.get("num_heads") not in (None, 0) and kw["num_heads"] != heads:
        raise ConfigError("num_heads", kw["num_heads"], f"null or expand*d_model/head_dim = {heads}",
                          hint="fla requires num_heads * head_dim == expand * d_model")
    if g <= 0 or heads % g:
        raise ConfigError("n_groups", g, f"divisors of num_heads = {heads}")
    if n <= 0:
        raise ConfigError("state_size", n, "a positive integer")
    return dict(inter=inter, heads=heads, head_dim=p, groups=g, state=n, conv_dim=inter + 2 * g * n)


def _dt_limit(kw: dict) -> tuple[float, float] | None:
    lim = kw.get("dt_limit")
    if lim is None:
        return None
    if len(lim) != 2 or not lim[0] < lim[1]:
        raise ConfigError("dt_limit", lim, "null (no clamp) or [low, high] with low < high")
    return float(lim[0]), float(lim[1])


# ---------------------------------------------------------------------------------------------------
# reference building blocks


class GroupRMSNormGated(nn.Module):
    """fla.modules.layernorm_gated.RMSNormGated (Mamba-2's norm): weight [I], no bias, fp32 math.

    norm_before_gate=False: rmsnorm_g(x * silu(z)) * weight; True: rmsnorm_g(x) * weight * silu(z);
    rmsnorm_g normalises each group of `group_size` channels separately.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, group_size: int | None = None,
                 norm_before_gate: bool = False):
        super().__init__()
        self.eps, self.group_size, self.norm_before_gate = eps, group_size or hidden_size, norm_before_gate
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        if z is not None and not self.norm_before_gate:
            x = x * F.silu(z.float())
        xg = x.unflatten(-1, (-1, self.group_size))
        y = (xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2) * self.weight.float()
        if z is not None and self.norm_before_gate:
            y = y * F.silu(z.float())
        return y.to(dtype)


def segsum(a: torch.Tensor) -> torch.Tensor:
    """[..., L] -> [..., L, L] with out[i, j] = a[j+1] + ... + a[i] for i >= j and -inf above the diagonal.

    Built from masked cumulative sums (no differences of large prefix sums), so exp() of it is an exact
    decay mask and its gradient is finite (exp(-inf) = 0).
    """
    L = a.shape[-1]
    x = a.unsqueeze(-1).expand(*a.shape, L)  # x[..., i, j] = a[i]
    strict = torch.ones(L, L, dtype=torch.bool, device=a.device).tril(-1)
    s = x.masked_fill(~strict, 0.0).cumsum(-2)  # s[i, j] = sum_{j < k <= i} a[k]
    return s.masked_fill(~torch.ones(L, L, dtype=torch.bool, device=a.device).tril(), float("-inf"))


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int = 64) -> torch.Tensor:
    """The Mamba-2 scan h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t (no D), zero initial state.

    x: [b, t, H, P]; dt: [b, t, H] (after softplus); A: [H] (negative); B, C: [b, t, G, N] with head h
    reading group h // (H / G). Returns y: [b, t, H, P] in x's dtype (math in x's dtype: pass fp32).
    """
    b, t, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise ValueError(f"{h} heads do not split into {g} groups")
    B = B.repeat_interleave(h // g, dim=2)  # [b, t, H, N]
    C = C.repeat_interleave(h // g, dim=2)
    cs = chunk_size
    pad = (-t) % cs
    if pad:  # zero dt => no decay and no input on the padded (future) positions
        x, B, C = (F.pad(v, (0, 0, 0, 0, 0, pad)) for v in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    nc = (t + pad) // cs
    xdt = (x * dt.unsqueeze(-1)).view(b, nc, cs, h, p)
    B = B.view(b, nc, cs, h, n)
    C = C.view(b, nc, cs, h, n)
    a = (dt * A).view(b, nc, cs, h).permute(0, 3, 1, 2)  # [b, H, c, l]  log-decay per step
    acum = a.cumsum(-1)

    # 1. within chunks: y_l = sum_{s<=l} (C_l . B_s) exp(a_{s+1} + ... + a_l) dt_s x_s
    scores = torch.einsum("bclhn,bcshn->bhcls", C, B) * torch.exp(segsum(a))
    y = torch.einsum("bhcls,bcshp->bclhp", scores, xdt)

    # 2. each chunk's contribution to the state at its end: sum_s exp(acum_last - acum_s) dt_s x_s B_s^T
    decay_to_end = torch.exp(acum[..., -1:] - acum)  # [b, H, c, s]
    states = torch.einsum("bcshn,bcshp->bchpn", B * decay_to_end.permute(0, 2, 3, 1).unsqueeze(-1), xdt)

    # 3. states entering each chunk: S_c = sum_{c' < c} exp(sum of chunk log-decays c'+1..c-1) states_c'
    chunk_log_decay = F.pad(acum[..., -1], (1, 0))  # [b, H, c+1]
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)  # [b, c+1, H, P, N]
    carry = torch.einsum("bhzc,bchpn->bzhpn", torch.exp(segsum(chunk_log_decay)), states)[:, :-1]

    # 4. read the entering state out inside each chunk, decayed to position l
    y = y + torch.einsum("bclhn,bchpn->bclhp", C, carry) * torch.exp(acum).permute(0, 2, 3, 1).unsqueeze(-1)
    return y.reshape(b, nc * cs, h, p)[:, :t]


def ssd_recurrent(x, dt, A, B, C) -> torch.Tensor:
    """Token-by-token form of `ssd_chunked` (a test oracle; same arguments and result)."""
    b, t, h, p = x.shape
    g = B.shape[2]
    B = B.repeat_interleave(h // g, dim=2)
    C = C.repeat_interleave(h // g, dim=2)
    state = x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for i in range(t):
        decay = torch.exp(dt[:, i] * A)[..., None, None]  # [b, H, 1, 1]
        state = decay * state + (dt[:, i, :, None] * x[:, i]).unsqueeze(-1) * B[:, i].unsqueeze(-2)
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, i]))
    return torch.stack(ys, dim=1)


# ---------------------------------------------------------------------------------------------------
# the reference layer


class Mamba2Reference(nn.Module):
    """Plain-PyTorch Mamba-2 with fla's parameter names, shapes and initialisation (see module docstring)."""

    def __init__(self, hidden_size: int, num_heads: int | None = None, head_dim: int = 64, state_size: int = 128,
                 expand: float = 2, n_groups: int = 1, conv_kernel: int = 4, conv_init: float | None = None,
                 use_conv_bias: bool = True, A_init_range=(1, 16), D_has_hdim: bool = False,
                 rmsnorm: bool = True, norm_before_gate: bool = False, dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, dt_limit=None, use_bias: bool = False,
                 norm_eps: float = 1e-5, chunk_size: int = 256, layer_idx: int | None = None):
        super().__init__()
        kw = dict(expand=expand, head_dim=head_dim, n_groups=n_groups, state_size=state_size, num_heads=num_heads,
                  dt_limit=dt_limit)
        dims = _dims(hidden_size, kw)
        if chunk_size <= 0:
            raise ConfigError("chunk_size", chunk_size, "a positive integer")
        self.hidden_size, self.layer_idx = hidden_size, layer_idx
        self.intermediate_size, self.num_heads, self.head_dim = dims["inter"], dims["heads"], dims["head_dim"]
        self.n_groups, self.ssm_state_size, self.conv_dim = dims["groups"], dims["state"], dims["conv_dim"]
        self.conv_kernel_size, self.chunk_size = conv_kernel, chunk_size
        self.D_has_hdim, self.rmsnorm = D_has_hdim, rmsnorm
        self.dt_limit = _dt_limit(kw)
        # same construction order as fla, so the same seed gives the same initial weights
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, conv_kernel, groups=self.conv_dim,
                                padding=conv_kernel - 1, bias=use_conv_bias)
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)
        self.in_proj = nn.Linear(hidden_size, self.intermediate_size + self.conv_dim + self.num_heads, bias=use_bias)
        # dt = softplus(dt_bias) log-uniform in [dt_min, dt_max] (floored), stored as its inverse softplus
        dt = torch.exp(torch.rand(self.num_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = torch.clamp(dt, min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.dt_bias._no_weight_decay = True
        # S4D-real: A = -exp(A_log), A ~ U(A_init_range) per head
        A = torch.empty(self.num_heads, dtype=torch.float32).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.norm = None
        if rmsnorm:
            self.norm = GroupRMSNormGated(self.intermediate_size, eps=norm_eps,
                                          group_size=self.intermediate_size // self.n_groups,
                                          norm_before_gate=norm_before_gate)
        self.D = nn.Parameter(torch.ones(self.intermediate_size if D_has_hdim else self.num_heads))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.intermediate_size, hidden_size, bias=use_bias)

    def forward(self, hidden_states: torch.Tensor, **_) -> torch.Tensor:
        b, t, _ = hidden_states.shape
        dtype = hidden_states.dtype
        inter, gn, h, p = self.intermediate_size, self.n_groups * self.ssm_state_size, self.num_heads, self.head_dim
        z, xbc, dt = self.in_proj(hidden_states).split([inter, self.conv_dim, h], dim=-1)
        xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :t].transpose(1, 2))  # causal: keep the first t
        x, B, C = xbc.split([inter, gn, gn], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        if self.dt_limit is not None:
            dt = dt.clamp(*self.dt_limit)
        A = -torch.exp(self.A_log.float())
        x = x.float().reshape(b, t, h, p)
        y = ssd_chunked(x, dt, A, B.float().reshape(b, t, self.n_groups, -1),
                        C.float().reshape(b, t, self.n_groups, -1), self.chunk_size)
        D = self.D.float().view(h, p) if self.D_has_hdim else self.D.float()[:, None]
        y = (y + x * D).reshape(b, t, inter)
        y = self.norm(y, z) if self.rmsnorm else y * F.silu(z.float())
        return self.out_proj(y.to(dtype))


# ---------------------------------------------------------------------------------------------------
# registry


def _layer_kwargs(kw: dict) -> dict:
    """Our kwargs -> the keyword arguments of fla's Mamba2 (same names except dt_limit's encoding)."""
    out = {k: v for k, v in kw.items() if k != "dt_limit"}
    out["A_init_range"] = tuple(kw["A_init_range"])
    lim = _dt_limit(kw)
    out["dt_limit"] = lim if lim is not None else (0.0, float("inf"))
    return out


def _fused(d_model: int, layer_idx: int, kw: dict):
    _dims(d_model, kw)  # fail with a ConfigError before fla's own ValueError
    cls = guarded_fla_class("fla.layers.mamba2", "Mamba2")
    return cls(hidden_size=d_model, layer_idx=layer_idx, **_layer_kwargs(kw))


def _reference(d_model: int, layer_idx: int, kw: dict) -> Mamba2Reference:
    return Mamba2Reference(d_model, layer_idx=layer_idx, **kw)


def _state(d: int, kw: dict, context: int) -> int:
    """SSM state H*P*N plus the conv state conv_dim*(K-1) (the last K-1 inputs of x, B and C)."""
    g = _dims(d, kw)
    return g["heads"] * g["head_dim"] * g["state"] + g["conv_dim"] * (kw["conv_kernel"] - 1)


def _flops(d: int, kw: dict, context: int) -> float:
    """studies.md A.6: Mamba-2 costs 5 FLOPs per state element per token (c=5 x H x P x N: decay, the
    B x outer product and its add, the C read-out). Conv, gate and norm are O(I) and not counted."""
    g = _dims(d, kw)
    return 5.0 * g["heads"] * g["head_dim"] * g["state"]


DEFAULTS = dict(
    num_heads=None,          # derived: expand * d_model / head_dim (4 heads at d=128, 32 at d=1024)
    head_dim=64,             # fla / Mamba2Config default
    state_size=128,          # fla / Mamba2Config default N (the Mamba-2 paper's large-model value)
    expand=2,
    n_groups=1,
    conv_kernel=4,
    conv_init=None,
    use_conv_bias=True,
    A_init_range=(1, 16),
    D_has_hdim=False,
    rmsnorm=True,
    norm_before_gate=False,
    dt_min=0.001,
    dt_max=0.1,
    dt_init_floor=1e-4,
    dt_limit=None,           # null = no clamp (fla's (0, inf); kept JSON-clean); else [low, high]
    use_bias=False,
    norm_eps=1e-5,
    chunk_size=256,          # fla / mamba_ssm default; the reference scans with the same chunk length
)

register(MixerSpec(
    fused_requires=("mamba_ssm",),  # fla's fallback without it is a slow torch path: not 'fused'
    name="mamba2",
    family="ssm",
    description="Mamba-2 (SSD): scalar-decay selective SSM per head, short conv, gated grouped RMSNorm",
    default_kwargs=DEFAULTS,
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=_reference,
    gated_chunk_bwd=False,  # trains through mamba_ssm's kernels, not fla.ops.common.chunk_o
    size_knobs={"expand": (0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 4), "state_size": (16, 32, 64, 128, 256)},
    notes=("fused = fla Mamba2 on mamba_ssm + causal_conv1d (refuses on GPU without them); "
           "reference = chunked SSD in plain PyTorch"),
    kwarg_docs=dict(
        num_heads="null: expand*d_model/head_dim (fla requires num_heads*head_dim == expand*d_model)",
        head_dim="channels per head P", state_size="SSM state N per head", expand="I = expand * d_model",
        n_groups="groups of B/C (head h reads group h // (H/G))", conv_kernel="short conv length K",
        conv_init="uniform conv weight init range (the global init overwrites conv weights)",
        A_init_range="A = -U(range) per head", D_has_hdim="D per channel instead of per head",
        rmsnorm="gated grouped RMSNorm before out_proj (else y * silu(z))",
        norm_before_gate="rmsnorm(y)*silu(z) instead of rmsnorm(y*silu(z))",
        dt_min="dt init range low", dt_max="dt init range high", dt_init_floor="dt init floor",
        dt_limit="clamp of dt after softplus, null = none", use_bias="bias in in_proj/out_proj",
        norm_eps="RMSNorm eps", chunk_size="scan chunk length (both backends)",
        use_conv_bias="bias in the short conv",
    ),
))
