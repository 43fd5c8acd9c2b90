"""GSA: gated slot attention (Zhang et al. 2024, arXiv 2409.07146). Fused backend only.

Two GLA passes through M memory slots per head that share one forget gate a_t = exp(logsigmoid(W_f x)/8):
keys write into slot keys K~_t = diag(a_t) K~_{t-1} + k_t (1-a_t)^T, the query reads a softmax over
slots, which then reads slot values V~_t = diag(a_t) V~_{t-1} + (1-a_t) v_t^T; swish feature map on
q and k, SiLU on v and on the read-out, one RMSNorm over all heads, o_proj.

fused = fla's `GatedSlotAttention` (mode='chunk'; fused-recurrent for T <= 64). No reference yet.
Defaults follow fla's GSA *model* config (4 heads, 64 slots, expand_k 1, gate normaliser 8, swish
feature map). fla quirks: the layer's output RMSNorm has d_model channels but is applied to the value
width, so only expand_v = 1 works (not a knob here); its use_output_gate / use_norm arguments are
stored but unused by forward (not knobs either); the output RMSNorm runs through rms_norm_linear with
its default eps 1e-5, whatever norm_eps the layer was given (so no norm_eps knob either).
"""
from __future__ import annotations

import math

from grid.models.errors import ConfigError
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


def _dims(d: int, kw: dict) -> tuple[int, int, int, int, int]:
    """(heads, kv heads, head_k_dim, head_v_dim, slots); ConfigError where fla would assert or break."""
    h = kw["num_heads"]
    hkv = kw["num_kv_heads"] or h
    if h < 1 or h % hkv:
        raise ConfigError("num_kv_heads", kw["num_kv_heads"], f"divisors of num_heads={h}")
    key_dim = d * kw["expand_k"]
    if not math.isclose(key_dim, round(key_dim)) or round(key_dim) % h or round(key_dim) < h:
        raise ConfigError("expand_k", kw["expand_k"], f"values with d_model*expand_k an integer divisible by num_heads={h}")
    if d % h:
        raise ConfigError("num_heads", h, f"divisors of d_model={d}")
    if kw["feature_map"] not in ("swish", "relu", "t2r"):
        raise ConfigError("feature_map", kw["feature_map"], ["swish", "relu", "t2r"])
    slots = kw["num_slots"] or round(key_dim) // h
    if slots < 1:
        raise ConfigError("num_slots", kw["num_slots"], "null (= head_k_dim) or a positive integer")
    return h, hkv, round(key_dim) // h, d // h, slots


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import GatedSlotAttention  # noqa: PLC0415

    _dims(d, kw)
    return GatedSlotAttention(mode="chunk", hidden_size=d, layer_idx=layer_idx, expand_v=1.0, **kw)


def _state(d: int, kw: dict, context: int) -> int:
    """Per head slot keys [dk, M] and slot values [M, dv], plus the short-conv caches of q, k, v."""
    h, hkv, dk, dv, m = _dims(d, kw)
    conv = (kw["conv_size"] - 1) * (h * dk + hkv * (dk + dv)) if kw["use_short_conv"] else 0
    return h * m * (dk + dv) + conv


def _flops(d: int, kw: dict, context: int) -> float:
    h, _, dk, dv, m = _dims(d, kw)
    # two gated (GLA-like, c = 7 of studies.md A.6) passes of sizes dk x M and M x dv, plus a softmax over M
    return 7.0 * h * m * (dk + dv) + 3.0 * h * m


register(MixerSpec(
    name="gsa",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="gated-linear",
    description="GSA: gated slot attention, two gated linear-attention passes through M softmax-read memory slots",
    default_kwargs=dict(num_heads=4, num_kv_heads=None, expand_k=1.0, num_slots=64, use_short_conv=False,
                        conv_size=4, conv_bias=False, feature_map="swish", gate_logit_normalizer=8,
                        elementwise_affine=True),
    kwarg_docs=dict(
        num_heads="heads (fla default 4)", num_kv_heads="key/value heads for GQA (null = num_heads)",
        expand_k="key width = d_model * expand_k (the value width is d_model)",
        num_slots="memory slots per head (null = head_k_dim; fla's model: 64)",
        use_short_conv="causal depthwise convs (+SiLU) on q, k, v", conv_size="short-conv kernel size",
        conv_bias="bias in the short convs", feature_map="q/k feature map: swish | relu | t2r",
        gate_logit_normalizer="log forget gate = logsigmoid(.) / this",
        elementwise_affine="learned gain in the output RMSNorm"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=None,
    reference_unavailable="no reference implementation yet: fla layer only",
    gated_chunk_bwd=False,  # chunk_gsa has its own kernels (gsa/chunk_bwd.py); no common chunk_bwd_dqkwg
    size_knobs={"num_slots": (16, 32, 64, 128), "expand_k": (0.5, 0.75, 1.0)},
))
