"""Linear attention (Katharopoulos et al. 2020) with a learnable feature map. Fused backend only.

No decay: per head S_t = S_{t-1} + phi(k_t) v_t^T, o_t = S_t^T phi(q_t) / sqrt(d_k) (optionally divided by
phi(q_t) . sum phi(k)), then a per-head RMSNorm and o_proj. fla's default feature map
'elementwise_product' is Hadamard: phi(x) = (W1 x + b1) * (W2 x + b2) with per-head-dim weights shared
across heads (separate maps for q and k unless tied).

fused = fla's `LinearAttention` (mode='chunk'; fla uses the chunk kernel whenever grad is enabled).
No reference yet. Defaults: fla's LinearAttention *model* config (4 heads, expand_k = expand_v = 1,
elementwise_product map, no q/k sum-norm, no feature-map normalisation, norm_eps 1e-6).
"""
from __future__ import annotations

import math

from grid.models.errors import ConfigError
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)

FEATURE_MAPS = ("elementwise_product", "hedgehog", "t2r", "dpfp", "elu", "relu", "identity")


def _dims(d: int, kw: dict) -> tuple[int, int, int, int]:
    """(heads, kv heads, head_k_dim, head_v_dim); ConfigError where fla would assert."""
    h = kw["num_heads"]
    hkv = kw["num_kv_heads"] or h
    if h < 1 or h % hkv:
        raise ConfigError("num_kv_heads", kw["num_kv_heads"], f"divisors of num_heads={h}")
    dims = []
    for name in ("expand_k", "expand_v"):
        dim = d * kw[name]
        if not math.isclose(dim, round(dim)) or round(dim) % h or round(dim) < h:
            raise ConfigError(name, kw[name], f"values with d_model*{name} an integer divisible by num_heads={h}")
        dims.append(round(dim) // h)
    if kw["feature_map"] not in FEATURE_MAPS:
        raise ConfigError("feature_map", kw["feature_map"], FEATURE_MAPS)
    if kw["output_norm"] not in ("rmsnorm", "identity"):
        raise ConfigError("output_norm", kw["output_norm"], ["rmsnorm", "identity"])
    return h, hkv, dims[0], dims[1]


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import LinearAttention  # noqa: PLC0415

    _dims(d, kw)
    return LinearAttention(mode="chunk", hidden_size=d, layer_idx=layer_idx, **kw)


def _feature_dim(kw: dict, dk: int) -> int:
    """Width of phi(q), phi(k): hedgehog concatenates [softmax(y), softmax(-y)], DPFP (nu=4) gives 8 dk."""
    return {"hedgehog": 2 * dk, "dpfp": 8 * dk}.get(kw["feature_map"], dk)


def _state(d: int, kw: dict, context: int) -> int:
    """Matrix state H * phi_dim * dv, plus the running key sum H * phi_dim when outputs are normalised."""
    h, _, dk, dv = _dims(d, kw)
    f = _feature_dim(kw, dk)
    return h * f * dv + (h * f if kw["do_feature_map_norm"] else 0)


def _flops(d: int, kw: dict, context: int) -> float:
    h, hkv, dk, dv = _dims(d, kw)
    f = _feature_dim(kw, dk)
    # no decay: write phi(k) v^T (2 f dv) + read S^T phi(q) (2 f dv) per head; c = 4 vs RetNet's 5 (studies.md A.6)
    flops = 4.0 * h * f * dv
    if kw["do_feature_map_norm"]:
        flops += 4.0 * h * f  # running key sum and the normaliser dot product
    if kw["feature_map"] in ("elementwise_product", "hedgehog", "t2r"):
        # per-head-dim maps are weights of (dk x dk) shared across heads, applied to H query heads and to
        # H key heads (after the GQA repeat); accounting counts 2 x weights once per map, add the rest
        per_map = 2.0 * dk * dk * (2 if kw["feature_map"] == "elementwise_product" else 1)
        maps = 1 if kw["tie_feature_map_qk"] else 2
        flops += per_map * (2 * h - maps)
    return flops


register(MixerSpec(
    name="linear_attn",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="linear",
    description="linear attention without decay, learnable feature map (Hadamard by default), per-head RMSNorm",
    default_kwargs=dict(num_heads=4, num_kv_heads=None, expand_k=1.0, expand_v=1.0,
                        feature_map="elementwise_product", tie_feature_map_qk=False, output_norm="rmsnorm",
                        norm_q=False, norm_k=False, do_feature_map_norm=False, elementwise_affine=True,
                        norm_eps=1e-6),
    kwarg_docs=dict(
        num_heads="heads (fla's model default 4; bare layer 8)", num_kv_heads="key/value heads for GQA",
        expand_k="key width = d_model * expand_k", expand_v="value width = d_model * expand_v",
        feature_map="elementwise_product | hedgehog | t2r | dpfp | elu | relu | identity",
        tie_feature_map_qk="one learnable feature map for q and k", output_norm="rmsnorm | identity",
        norm_q="divide phi(q) by its sum", norm_k="divide phi(k) by its sum",
        do_feature_map_norm="divide outputs by phi(q) . sum phi(k)",
        elementwise_affine="learned gain in the output RMSNorm", norm_eps="eps of the output RMSNorm"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=None,
    reference_unavailable="no reference implementation yet: fla layer only",
    gated_chunk_bwd=False,  # chunk_simple_gla without g (no decay) calls chunk_bwd_dqkwg with g=None
    size_knobs={"num_heads": (2, 4, 8, 16), "expand_k": (0.5, 0.75, 1.0), "expand_v": (0.5, 0.75, 1.0, 1.5, 2.0)},
))
