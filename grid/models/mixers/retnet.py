"""RetNet: multi-scale retention (Sun et al. 2023, arXiv 2307.08621).

Linear attention with a fixed, position-independent scalar decay per head and RoPE on q and k:
    S_t = gamma_h S_{t-1} + k_t v_t^T,   o_t = S_t^T (q_t / sqrt(d_k)),   gamma_h = 1 - 2^(-5 - h),
followed by a per-head RMSNorm, a SiLU output gate (g_proj) and o_proj.

fused = fla's `MultiScaleRetention` (mode='chunk'; fla's chunk_retention = chunk_simple_gla with
g_gamma = log gamma_h); reference = `RetNetRef` below, same parameter names and shapes (its skeleton,
`LinearAttentionBase` in _linear_attention.py, is GLA's too), computing the recurrence with
`gla_chunked` (_recurrences.py) and a per-head decay. gamma depends on the head index among *all* query
heads (fla computes it from q.shape[2] after the GQA repeat).

Defaults are fla's layer defaults (expand_k 1, expand_v 2, 8 heads: the RetNet paper's d_v = 2d, so the
mixer has 8 d^2 weights; iso-parameter sizing shrinks expand_v when needed) with norm_eps 1e-6 as fla's
RetNet *model* passes it (bare layer 1e-5).
"""
from __future__ import annotations

import torch

from grid.models.errors import ConfigError
from grid.models.mixers._common import rotary
from grid.models.mixers._heads import check_dims, head_dims
from grid.models.mixers._linear_attention import (LinearAttentionBase, activation, matrix_state, output_norm_gate,
                                                  repeat_kv)
from grid.models.mixers._recurrences import gla_chunked
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


def retention_log_decay(num_heads: int, device=None) -> torch.Tensor:
    """log gamma_h = log(1 - 2^(-5 - h)), h = 0 .. num_heads-1 (fla's chunk_retention)."""
    h = torch.arange(num_heads, dtype=torch.float32, device=device)
    return torch.log(1 - 2.0 ** (-5.0 - h))


class RetNetRef(LinearAttentionBase):
    """Plain-PyTorch twin of fla.layers.MultiScaleRetention (training forward: no cache/mask/varlen)."""

    def __init__(self, hidden_size: int, expand_k: float = 1.0, expand_v: float = 2.0, num_heads: int = 8,
                 num_kv_heads: int | None = None, feature_map: str | None = None, use_short_conv: bool = False,
                 conv_size: int = 4, conv_bias: bool = False, use_output_gate: bool = True, gate_fn: str = "swish",
                 elementwise_affine: bool = True, norm_eps: float = 1e-5, fuse_norm: bool = True,
                 layer_idx: int | None = None):
        super().__init__(hidden_size, expand_k, expand_v, num_heads, num_kv_heads, feature_map, use_short_conv,
                         conv_size, conv_bias, use_output_gate, gate_fn, elementwise_affine, norm_eps, fuse_norm,
                         layer_idx)

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project_qkv(x)
        q = q.view(B, T, self.num_heads, self.head_k_dim)
        k = k.view(B, T, self.num_kv_heads, self.head_k_dim)
        if self.feature_map_fn is not None:
            q, k = self.feature_map_fn(q), self.feature_map_fn(k)
        q, k = rotary(q), rotary(k)  # fla RotaryEmbedding(dim=head_k_dim): base 10000, halves not interleaved
        k = repeat_kv(k, self.num_kv_groups)
        v = repeat_kv(v.view(B, T, self.num_kv_heads, self.head_v_dim), self.num_kv_groups)
        g = retention_log_decay(self.num_heads, x.device).view(1, 1, -1, 1).expand(B, T, -1, 1)
        o = gla_chunked(q, k, v, g)  # scale 1/sqrt(head_k_dim), as chunk_retention's default
        return self.o_proj(output_norm_gate(self, o, x))


# --------------------------------------------------------------------------------------------------
# registry entry
# --------------------------------------------------------------------------------------------------

def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    key_dim, _ = check_dims(d, kw, kw["num_heads"], kw["num_kv_heads"])
    head_k = key_dim // kw["num_heads"]
    if head_k % 2 or head_k > 256:
        raise ConfigError("expand_k", kw["expand_k"], f"values giving an even head_k_dim <= 256 (RoPE); got {head_k}")
    activation(kw["feature_map"], "feature_map")
    activation(kw["gate_fn"], "gate_fn")
    return kw




def _reference(d: int, layer_idx: int, kw: dict) -> RetNetRef:
    return RetNetRef(hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import MultiScaleRetention  # noqa: PLC0415

    return MultiScaleRetention(mode="chunk", hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))




def _flops(d: int, kw: dict, context: int) -> float:
    h, dk, dv = head_dims(d, kw)
    return 5.0 * h * dk * dv  # studies.md A.6: RetNet 5 * d^2/H = 5 * H * dk * dv


register(MixerSpec(
    name="retnet",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="linear",
    description="RetNet multi-scale retention: linear attention with a fixed per-head decay, RoPE, swish output gate",
    default_kwargs=dict(num_heads=8, num_kv_heads=None, expand_k=1.0, expand_v=2.0, feature_map=None,
                        use_short_conv=False, conv_size=4, conv_bias=False, use_output_gate=True, gate_fn="swish",
                        elementwise_affine=True, norm_eps=1e-6, fuse_norm=True),
    kwarg_docs=dict(
        num_heads="heads (fla default 8); decay gamma_h = 1 - 2^(-5-h)",
        num_kv_heads="key/value heads for GQA (null = num_heads)",
        expand_k="key width = d_model * expand_k (head_k_dim even, <= 256)",
        expand_v="value width = d_model * expand_v (paper and fla: 2)",
        feature_map="activation on q and k before RoPE: null | relu | sigmoid | silu | swish",
        use_short_conv="causal depthwise convs (+SiLU) on q, k, v", conv_size="short-conv kernel size",
        conv_bias="bias in the short convs", use_output_gate="output gate g_proj (else norm only)",
        gate_fn="output gate activation: swish | silu | sigmoid | relu",
        elementwise_affine="learned gain in the output RMSNorm",
        norm_eps="eps of the output RMSNorm (fla's model passes 1e-6; bare layer 1e-5)",
        fuse_norm="norm and swish gate in one module (g_norm_swish_gate) vs g_norm + gate_fn (changes names)"),
    state_size=matrix_state,
    mix_flops=_flops,
    fused=_fused,
    reference=_reference,
    gated_chunk_bwd=False,  # chunk_simple_gla calls chunk_bwd_dqkwg with g=None (g_gamma only): not affected
    size_knobs={"expand_k": (0.5, 0.75, 1.0), "expand_v": (0.5, 0.75, 1.0, 1.5, 2.0)},
    notes="fla's layer: chunk kernel whenever grad is enabled, fused-recurrent for T <= 64 in inference",
))
