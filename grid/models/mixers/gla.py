"""GLA: gated linear attention (Yang et al. 2024, arXiv 2312.06635).

Per head a matrix state S ([d_k, d_v]) decays channel-wise with a data-dependent gate:
    S_t = diag(a_t) S_{t-1} + k_t v_t^T,   o_t = S_t^T (q_t / sqrt(d_k)),
    log a_t = logsigmoid(W2 W1 x_t + b) / gate_logit_normalizer   (a low-rank gate projection),
followed by a per-head RMSNorm, a SiLU output gate (g_proj) and o_proj.

fused = `GLAFla`: fla's `GatedLinearAttention` training forward rebuilt around fla's kernels
(chunk_gla; fused_recurrent_gla for T <= 64, as fla's layer switches), so torch.compile can fuse the
rest; reference = `GLARef` below. All three have the same parameter names and shapes.
`gla_chunked` (the chunked recurrence with a per-channel or per-head log-decay) is shared with
retnet.py (scalar decay gamma) and hgrn2.py (k = 1 - a).

Defaults follow fla's layer and flame's gla_340M config (4 heads, expand_k 0.5, expand_v 1, gate
low rank 16, normaliser 16, no short conv, swish output gate fused into the norm); norm_eps is the
value fla's GLA *model* passes (1e-6; the bare layer's default is 1e-5).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.errors import ConfigError
from grid.models.mixers._common import RMSNorm, RMSNormGated, ShortConvolution
from grid.models.mixers.gla_ops import gla_chunk
from grid.models.registry import MixerSpec, register

CHUNK = 16  # intra-chunk decays are materialised as [C, C, d_k]: 16 is the fastest and leanest on CPU

# --------------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------------

# activations for feature maps / output gates on which fla's ACT2FN and transformers' ACT2FN agree
_ACTS = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "swish": F.silu,
}


def activation(name: str | None, field: str):
    """The activation called `name` (None = identity); ConfigError for names we do not mirror."""
    if name is None:
        return None
    if name not in _ACTS:
        raise ConfigError(field, name, ["null", *_ACTS])
    return _ACTS[name]


def gla_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                scale: float | None = None, chunk_size: int = CHUNK) -> torch.Tensor:
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


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, T, Hkv, D] -> [B, T, Hkv * groups, D], each kv head repeated `groups` times in a row (fla's GQA)."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=2)


def check_dims(d: int, kw: dict, heads: int, kv_heads: int | None) -> tuple[int, int]:
    """key_dim, value_dim for expand_k / expand_v; ConfigError where fla would assert."""
    kv_heads = kv_heads or heads
    if heads < 1 or heads % kv_heads:
        raise ConfigError("num_kv_heads", kv_heads, f"divisors of num_heads={heads}")
    dims = []
    for name in ("expand_k", "expand_v"):
        dim = d * kw[name]
        if not math.isclose(dim, round(dim)) or round(dim) % heads or round(dim) < heads:
            raise ConfigError(name, kw[name], f"values with d_model*{name} an integer divisible by num_heads={heads}")
        dims.append(round(dim))
    return dims[0], dims[1]


# --------------------------------------------------------------------------------------------------
# the reference layer
# --------------------------------------------------------------------------------------------------

class LinearAttentionBase(nn.Module):
    """What fla's GatedLinearAttention and MultiScaleRetention layers share: q/k/v (GQA-grouped k/v),
    optional short convs, the output gate and the per-head output norm (fused swish gate or not)."""

    def __init__(self, hidden_size: int, expand_k: float, expand_v: float, num_heads: int, num_kv_heads: int | None,
                 feature_map: str | None, use_short_conv: bool, conv_size: int, conv_bias: bool,
                 use_output_gate: bool, gate_fn: str, elementwise_affine: bool, norm_eps: float, fuse_norm: bool,
                 layer_idx: int | None):
        super().__init__()
        self.hidden_size, self.layer_idx = hidden_size, layer_idx
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        self.num_kv_groups = num_heads // self.num_kv_heads
        self.feature_map_fn = activation(feature_map, "feature_map")
        self.use_short_conv, self.use_output_gate = use_short_conv, use_output_gate
        self.key_dim, self.value_dim = round(hidden_size * expand_k), round(hidden_size * expand_v)
        self.key_dim_per_group = self.key_dim // self.num_kv_groups
        self.value_dim_per_group = self.value_dim // self.num_kv_groups
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads

        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim_per_group, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim_per_group, bias=False)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation="silu")
            self.k_conv1d = ShortConvolution(self.key_dim_per_group, conv_size, bias=conv_bias, activation="silu")
            self.v_conv1d = ShortConvolution(self.value_dim_per_group, conv_size, bias=conv_bias, activation="silu")
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.fuse_norm_and_gate = gate_fn == "swish" and fuse_norm and use_output_gate
        if self.fuse_norm_and_gate:
            self.g_norm_swish_gate = RMSNormGated(self.head_v_dim, elementwise_affine=elementwise_affine, eps=norm_eps)
        else:
            self.g_norm = RMSNorm(self.head_v_dim, elementwise_affine=elementwise_affine, eps=norm_eps)
            self.gate_fn = activation(gate_fn, "gate_fn")

    def project_qkv(self, x: torch.Tensor):
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.use_short_conv:
            q, k, v = self.q_conv1d(q), self.k_conv1d(k), self.v_conv1d(v)
        return q, k, v


class GLARef(LinearAttentionBase):
    """Plain-PyTorch twin of fla.layers.GatedLinearAttention (training forward: no cache/mask/varlen)."""

    def __init__(self, hidden_size: int, expand_k: float = 0.5, expand_v: float = 1.0, num_heads: int = 4,
                 num_kv_heads: int | None = None, feature_map: str | None = None, use_short_conv: bool = False,
                 conv_size: int = 4, conv_bias: bool = False, use_output_gate: bool = True, gate_fn: str = "swish",
                 elementwise_affine: bool = True, norm_eps: float = 1e-5, gate_logit_normalizer: int = 16,
                 gate_low_rank_dim: int = 16, clamp_min: float | None = None, fuse_norm: bool = True,
                 layer_idx: int | None = None):
        super().__init__(hidden_size, expand_k, expand_v, num_heads, num_kv_heads, feature_map, use_short_conv,
                         conv_size, conv_bias, use_output_gate, gate_fn, elementwise_affine, norm_eps, fuse_norm,
                         layer_idx)
        self.gate_logit_normalizer, self.clamp_min = gate_logit_normalizer, clamp_min
        self.gk_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, self.key_dim_per_group, bias=True))

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v, gk, g = self.project(x)
        q = q.view(B, T, self.num_heads, self.head_k_dim)
        k = repeat_kv(k.view(B, T, self.num_kv_heads, self.head_k_dim), self.num_kv_groups)
        gk = repeat_kv(gk.view(B, T, self.num_kv_heads, self.head_k_dim), self.num_kv_groups)
        v = repeat_kv(v.view(B, T, self.num_kv_heads, self.head_v_dim), self.num_kv_groups)
        gk = F.logsigmoid(self.decay_input(gk)) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        if self.feature_map_fn is not None:
            q, k = self.feature_map_fn(q), self.feature_map_fn(k)
        o = self.recurrence(q, k, v, gk)  # scale 1/sqrt(head_k_dim), as chunk_gla's default
        return self.o_proj(output_norm_gate(self, o, x, g))

    def project(self, x: torch.Tensor):
        """q, k, v, the gate's logits and the output gate's input (None without output gate)."""
        q, k, v = self.project_qkv(x)
        return q, k, v, self.gk_proj(x), self.g_proj(x) if self.use_output_gate else None

    @staticmethod
    def decay_input(gk: torch.Tensor) -> torch.Tensor:
        return gk.float()

    @staticmethod
    def recurrence(q, k, v, gk) -> torch.Tensor:
        return gla_chunked(q, k, v, gk)


def fla_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gk: torch.Tensor) -> torch.Tensor:
    """fla's GLA kernels, as fla's layer calls them: fused-recurrent for T <= 64, chunked above. The
    chunked ones are custom ops inside the compiled graph (gla_ops); the fused-recurrent one runs behind
    a graph break: dynamo must not trace fla's Triton launchers (grid/models/compile.py)."""
    if q.shape[1] <= 64:
        return fla_recurrent_gla(q, k, v, gk)
    return gla_chunk(q, k, v, gk)


@torch.compiler.disable
def fla_recurrent_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gk: torch.Tensor) -> torch.Tensor:
    from fla.ops.gla import fused_recurrent_gla  # noqa: PLC0415

    return fused_recurrent_gla(q=q, k=k, v=v, gk=gk, state_v_first=True)[0]


class RMSNormGatedFla(RMSNormGated):
    """RMSNormGated that runs fla's fused norm-gate kernel when eager. Under torch.compile it stays
    plain PyTorch, which Inductor fuses with its neighbours (the same math; fla's kernel would be a
    graph break)."""

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return super().forward(x, g)
        from fla.modules.fused_norm_gate import rms_norm_gated  # noqa: PLC0415

        return rms_norm_gated(x=x, g=g, weight=self.weight, bias=self.bias, activation=self.activation, eps=self.eps)


class GLAFla(GLARef):
    """The fused gla layer: fla.layers.GatedLinearAttention's training forward with fla's kernels
    (GLA recurrence; fused norm-gate when eager) inside our module, so that torch.compile fuses
    everything else (projections' casts, the gate's logsigmoid, rearranges, the norm-gate and their
    backward) instead of running fla's layer eagerly behind a graph break. Same parameters as fla's
    layer and as GLARef. The gate's log decay is computed in the projection's dtype, as fla's layer
    does. On an H100, with the one-GEMM projections below, a compiled gla MAD step at T = 1024 went
    from 6.94 to 6.65 ms of GPU time, at T = 32 from 1.05 to 0.91 ms (docs/gpu.md, session 8)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        if self.fuse_norm_and_gate:
            old = self.g_norm_swish_gate
            self.g_norm_swish_gate = RMSNormGatedFla(self.head_v_dim, elementwise_affine=old.weight is not None,
                                                     eps=old.eps)

    def project(self, x: torch.Tensor):
        """Compiled (and without short convs): the five projections of x as one GEMM with their weights
        concatenated, so that x is read once forward and its gradient is one GEMM backward, not five
        GEMMs and four sums. Same parameters; eager keeps fla's five."""
        if not torch.compiler.is_compiling() or self.use_short_conv:
            return super().project(x)
        linears = [self.q_proj, self.k_proj, self.v_proj, *([self.g_proj] if self.use_output_gate else []),
                   self.gk_proj[0]]
        parts = F.linear(x, torch.cat([m.weight for m in linears])).split([m.out_features for m in linears], -1)
        g = parts[3] if self.use_output_gate else None
        # contiguous here, in the compiled graph: fla's kernels would copy the strided views eagerly
        return (parts[0].contiguous(), parts[1].contiguous(), parts[2].contiguous(), self.gk_proj[1](parts[-1]), g)

    @staticmethod
    def decay_input(gk: torch.Tensor) -> torch.Tensor:
        return gk

    @staticmethod
    def recurrence(q, k, v, gk) -> torch.Tensor:
        return fla_gla(q, k, v, gk)


def output_norm_gate(layer: nn.Module, o: torch.Tensor, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
    """fla's GLA/RetNet output block on o [B, T, H, Dv]: per-head RMSNorm and the output gate g_proj(x)
    (or `g`, where the caller projected it already)."""
    B, T = o.shape[:2]
    if layer.use_output_gate:
        g = layer.g_proj(x) if g is None else g
        if layer.fuse_norm_and_gate:
            return layer.g_norm_swish_gate(o, g.view(B, T, layer.num_heads, layer.head_v_dim)).reshape(B, T, -1)
        return layer.g_norm(o).reshape(B, T, -1) * layer.gate_fn(g)
    return layer.g_norm(o).reshape(B, T, -1)


# --------------------------------------------------------------------------------------------------
# registry entry
# --------------------------------------------------------------------------------------------------

def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    check_dims(d, kw, kw["num_heads"], kw["num_kv_heads"])
    activation(kw["feature_map"], "feature_map")
    activation(kw["gate_fn"], "gate_fn")
    if kw["gate_low_rank_dim"] < 1:
        raise ConfigError("gate_low_rank_dim", kw["gate_low_rank_dim"], "positive integers")
    return kw


def head_dims(d: int, kw: dict) -> tuple[int, int, int]:
    """(heads, head key dim, head value dim) of a multi-head linear-attention layer (GLA, RetNet)."""
    h = kw["num_heads"]
    key_dim, value_dim = check_dims(d, kw, h, kw["num_kv_heads"])
    return h, key_dim // h, value_dim // h


def _reference(d: int, layer_idx: int, kw: dict) -> GLARef:
    return GLARef(hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _fused(d: int, layer_idx: int, kw: dict) -> GLAFla:
    return GLAFla(hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def matrix_state(d: int, kw: dict, context: int) -> int:
    """Matrix state H*dk*dv (per query head) plus the short-conv caches (conv_size-1 inputs of q, k, v)."""
    h, dk, dv = head_dims(d, kw)
    conv = 0
    if kw["use_short_conv"]:
        groups = h // (kw["num_kv_heads"] or h)
        conv = (kw["conv_size"] - 1) * (h * dk + (h * dk + h * dv) // groups)
    return h * dk * dv + conv


def _flops(d: int, kw: dict, context: int) -> float:
    h, dk, dv = head_dims(d, kw)
    return 7.0 * h * dk * dv  # studies.md A.6: GLA 7 * d^2/H = 7 * H * dk * dv


register(MixerSpec(
    name="gla",
    family="gated-linear",
    fused_input_feeds_linears_only=True,  # GLAFla: the layer's input feeds only its nn.Linear projections
    fused_traceable=True,  # GLAFla: fla's kernels sit behind their own graph breaks
    description="GLA: linear attention with a data-dependent per-channel decay (low-rank gate), swish output gate",
    default_kwargs=dict(num_heads=4, num_kv_heads=None, expand_k=0.5, expand_v=1.0, feature_map=None,
                        use_short_conv=False, conv_size=4, conv_bias=False, use_output_gate=True, gate_fn="swish",
                        elementwise_affine=True, norm_eps=1e-6, gate_logit_normalizer=16, gate_low_rank_dim=16,
                        clamp_min=None, fuse_norm=True),
    kwarg_docs=dict(
        num_heads="heads (flame gla_340M: 4)", num_kv_heads="key/value heads for GQA (null = num_heads)",
        expand_k="key width = d_model * expand_k", expand_v="value width = d_model * expand_v",
        feature_map="activation on q and k: null | relu | sigmoid | silu | swish",
        use_short_conv="causal depthwise convs (+SiLU) on q, k, v", conv_size="short-conv kernel size",
        conv_bias="bias in the short convs", use_output_gate="output gate g_proj (else norm only)",
        gate_fn="output gate activation: swish | silu | sigmoid | relu",
        elementwise_affine="learned gain in the output RMSNorm",
        norm_eps="eps of the output RMSNorm (fla's model passes 1e-6; bare layer 1e-5)",
        gate_logit_normalizer="decay log a = logsigmoid(.) / this", gate_low_rank_dim="rank of the decay projection",
        clamp_min="lower clamp of the log decay (null = none)",
        fuse_norm="norm and swish gate in one module (g_norm_swish_gate) vs g_norm + gate_fn (changes names)"),
    state_size=matrix_state,
    mix_flops=_flops,
    fused=_fused,
    reference=_reference,
    fla_kwargs=_resolve,
    gated_chunk_bwd=False,  # chunk_gla has its own backward; it never calls common chunk_bwd_dqkwg
    size_knobs={"expand_k": (0.25, 0.5, 0.75, 1.0), "expand_v": (0.5, 0.75, 1.0, 1.5, 2.0)},
    notes="fla runs its fused-recurrent kernel for T <= 64 and the chunk kernel above (same function)",
))
