"""PaTH attention (Yang et al. 2025, "PaTH Attention: Position Encoding via Accumulating Householder
Transformations", arXiv 2505.16381): softmax attention whose relative position encoding is the product of
data-dependent Householder-like transforms (I - beta_s w_s w_s^T) between key and query, replacing RoPE:

    score(i, j) = q_i^T (prod_{j < s <= i} (I - beta_s w_s w_s^T)) k_j / sqrt(d),   beta in (0, 2)

optionally with a forgetting gate (FoX-style log-sigmoid bias). fused only: fla's `PaTHAttention` (fla's
Triton `parallel_path_attn`; no flash-attn needed). No reference backend.

Defaults: fla's PaTHAttentionConfig (num_heads 32 at d=2048, i.e. head_dim 64 -> num_heads = d/64 here;
low-rank w projection (rank 32) with a size-3 short conv; no forget gate; no q/k norm).
Quadratic attention, so `hybrid_ok=False` (fla's PaTH model has no hybrid `attn` field either).
"""
from __future__ import annotations

from grid.models.errors import ConfigError
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)

HEAD_DIM = 64


def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    h = kw["num_heads"] or max(1, d // HEAD_DIM)
    hkv = kw["num_kv_heads"] or h
    if d % h:
        raise ConfigError("num_heads", h, f"divisors of d_model={d}")
    if h % hkv:
        raise ConfigError("num_kv_heads", hkv, f"divisors of num_heads={h}")
    kw["num_heads"], kw["num_kv_heads"] = h, hkv
    return kw


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import PaTHAttention  # noqa: PLC0415

    return PaTHAttention(hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _avg_keys(context: int) -> float:
    return (context + 1) / 2  # mean number of keys a causal query sees over positions 1..context


def _state(d: int, kw: dict, context: int) -> int:
    """KV cache (keys are kept already transformed by the Householder products, updated per new token),
    the forget-gate cache (one value per query head and position) if enabled, and the w short-conv cache."""
    kw = _resolve(d, kw)
    hd = d // kw["num_heads"]
    kv = 2 * kw["num_kv_heads"] * hd * context
    gate = kw["num_heads"] * context if kw["use_forget_gate"] else 0
    conv = (kw["conv_size"] - 1) * kw["num_kv_heads"] * hd if kw["use_w_shortconv"] else 0
    return kv + gate + conv


def _flops(d: int, kw: dict, context: int) -> float:
    """Softmax attention's 4*d per visible key (QK^T and AV) plus ~4*d per visible key for carrying q through
    the Householder products of the key blocks (UT-transform form; in decoding the same cost appears as
    the rank-one update of every cached key). An estimate: 8 * H * head_dim * mean visible keys."""
    kw = _resolve(d, kw)
    return 8.0 * d * _avg_keys(context)


register(MixerSpec(
    name="path_attn",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="softmax",
    description="PaTH attention: softmax attention with data-dependent Householder position encoding (no RoPE)",
    default_kwargs=dict(num_heads=None, num_kv_heads=None, use_forget_gate=False, use_qk_norm=False,
                        use_low_rank_w=True, use_w_shortconv=True, conv_size=3, conv_bias=False),
    kwarg_docs=dict(
        num_heads="query heads; null = d_model // 64 (fla's config: 32 heads at d=2048)",
        num_kv_heads="key/value heads (GQA); null = num_heads",
        use_forget_gate="FoX-style forgetting gate (log-sigmoid, g_proj with bias)",
        use_qk_norm="per-head RMSNorm of q and k", use_low_rank_w="w projection through rank 32",
        use_w_shortconv="short conv + SiLU on w", conv_size="w short-conv kernel size",
        conv_bias="bias in the w short conv"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=None,
    reference_unavailable="not implemented: fused-only entry (fla.ops.path_attn.naive has an oracle for a "
                          "future reference)",
    gated_chunk_bwd=False,  # parallel_path_attn has its own backward; no chunk_bwd_dqkwg
    hybrid_ok=False,
    size_knobs={"num_kv_heads": (1, 2, 4, 8, 16, 32)},
    notes="quadratic (softmax) attention; mixer weights ~4*d^2 at any head count, so GQA is the width knob",
))
