"""LightNet (Qin et al. 2024, "You only scan once", arXiv 2405.21022). Fused backend only.

GLA whose decay comes from a running log-normaliser of the keys (an "additive" recurrence):
z_t = logcumsumexp(k_1..t), key k~_t = exp(k_t - z_t), log-decay g_t = z_{t-1} - z_t; per head
S_t = diag(exp(g_t)) S_{t-1} + k~_t v_t^T, o_t = S_t^T (silu(q_t)/sqrt(d_k)); then RMSNorm gated by a
low-rank SiLU gate (g_proj) and o_proj.

fused = fla's `LightNetAttention` (mode='chunk'; fused-recurrent for T <= 64). No reference yet.
Heads: fla takes expand_ratio (per-head key width; num_heads = d // expand_ratio) or num_heads;
with both null this entry uses head key width 128 like fla's default (num_heads = max(1, d // 128)),
which also works below d=128. Defaults otherwise fla's (gate rank 128, no short conv). fla quirk:
the gated output norm runs through rms_norm_swish_gate_linear with its default eps 1e-6, whatever
norm_eps says, so there is no norm_eps knob.
"""
from __future__ import annotations

from grid.models.errors import ConfigError
from grid.models.mixers._heads import heads_and_ratio
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    kw["num_heads"], kw["expand_ratio"] = heads_and_ratio(d, kw["num_heads"], kw["expand_ratio"])
    if kw["gate_low_rank_dim"] < 1:
        raise ConfigError("gate_low_rank_dim", kw["gate_low_rank_dim"], "positive integers")
    return kw


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import LightNetAttention  # noqa: PLC0415

    kw = _resolve(d, kw)
    kw["num_heads"] = None  # fla derives the heads from expand_ratio (same value)
    return LightNetAttention(mode="chunk", hidden_size=d, layer_idx=layer_idx, **kw)


def _state(d: int, kw: dict, context: int) -> int:
    """Matrix state H * dk * (d/H), the key log-normaliser z (H*dk), short-conv caches of q, k, v."""
    kw = _resolve(d, kw)
    h, dk = kw["num_heads"], kw["expand_ratio"]
    conv = (kw["conv_size"] - 1) * (2 * h * dk + d) if kw["use_short_conv"] else 0
    return h * dk * (d // h) + h * dk + conv


def _flops(d: int, kw: dict, context: int) -> float:
    kw = _resolve(d, kw)
    h, dk = kw["num_heads"], kw["expand_ratio"]
    # a GLA pass (c = 7, studies.md A.6) plus the running logsumexp normaliser of the keys (~5 per key channel)
    return 7.0 * h * dk * (d // h) + 5.0 * h * dk


register(MixerSpec(
    name="lightnet",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="gated-linear",
    description="LightNet: GLA whose decay and key normalisation come from a running logsumexp of the keys",
    default_kwargs=dict(num_heads=None, expand_ratio=None, use_short_conv=False, conv_size=4, conv_bias=False,
                        gate_low_rank_dim=128, elementwise_affine=True),
    kwarg_docs=dict(
        num_heads="heads (then expand_ratio = d_model // num_heads); null with expand_ratio null = d_model // 128",
        expand_ratio="per-head key width (then num_heads = d_model // expand_ratio); fla default 128",
        use_short_conv="causal depthwise convs (no activation) on q, k, v", conv_size="short-conv kernel size",
        conv_bias="bias in the short convs", gate_low_rank_dim="rank of the output-gate projection g_proj",
        elementwise_affine="learned gain in the gated output RMSNorm"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=None,
    reference_unavailable="no reference implementation yet: fla layer only",
    gated_chunk_bwd=False,  # chunk_lightnet = fused_additive_gate + chunk_gla: no common chunk_bwd_dqkwg
    size_knobs={"gate_low_rank_dim": (32, 64, 128, 256)},
))
