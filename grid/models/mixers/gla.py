"""GLA: gated linear attention (Yang et al. 2024, arXiv 2312.06635).

Per head a matrix state S ([d_k, d_v]) decays channel-wise with a data-dependent gate:
    S_t = diag(a_t) S_{t-1} + k_t v_t^T,   o_t = S_t^T (q_t / sqrt(d_k)),
    log a_t = logsigmoid(W2 W1 x_t + b) / gate_logit_normalizer   (a low-rank gate projection),
followed by a per-head RMSNorm, a SiLU output gate (g_proj) and o_proj.

fused = `GLAFla`: fla's `GatedLinearAttention` training forward rebuilt around fla's kernels
(chunk_gla; fused_recurrent_gla for T <= 64, as fla's layer switches), so torch.compile can fuse the
rest; reference = `GLARef` below. All three have the same parameter names and shapes.
Shared with other families, and therefore not here: the recurrence `gla_chunked` (_recurrences.py), the
layer skeleton `LinearAttentionBase` it shares with RetNet (_linear_attention.py), head sizing (_heads.py).

Defaults follow fla's layer and flame's gla_340M config (4 heads, expand_k 0.5, expand_v 1, gate
low rank 16, normaliser 16, no short conv, swish output gate fused into the norm); norm_eps is the
value fla's GLA *model* passes (1e-6; the bare layer's default is 1e-5).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.errors import ConfigError
from grid.models.mixers._common import RMSNormGated
from grid.models.mixers._heads import check_dims, head_dims
from grid.models.mixers._linear_attention import (LinearAttentionBase, activation, matrix_state, output_norm_gate,
                                                  repeat_kv)
from grid.models.mixers._recurrences import gla_chunked
from grid.models.mixers.gla_ops import gla_chunk
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


# --------------------------------------------------------------------------------------------------
# the reference layer
# --------------------------------------------------------------------------------------------------

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


def _reference(d: int, layer_idx: int, kw: dict) -> GLARef:
    return GLARef(hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _fused(d: int, layer_idx: int, kw: dict) -> GLAFla:
    return GLAFla(hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


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
