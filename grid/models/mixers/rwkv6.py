"""RWKV-6 "Finch" time mixing (Peng et al. 2024, arXiv 2404.05892). Fused backend only.

Data-dependent token shift (ddlerp through a 5-way low-rank projection) feeds r, w, k, v, g; per head
    S_t = diag(exp(-exp(w_t))) S_{t-1} + k_t v_t^T,   o_t = (S_{t-1} + diag(u) k_t v_t^T)^T r_t
(a per-channel decay and a "bonus" u for the current token, scale 1), then a per-head GroupNorm
(LayerNorm per head, with bias), a SiLU output gate and o_proj.

fused = fla's `RWKV6Attention` (mode='chunk'; fused-recurrent for T <= 64). No reference yet.
Initialisation: fla's layer initialises itself in its constructor (Linear: Xavier-uniform with gain
2^-2.5, LoRA: zero down-projection and 0.1-scaled orthogonal up-projection, mixing coefficients and
the bonus zero) and fla's RWKV6 model keeps that init; the built module is marked `_keep_own_init` so
grid.models.init leaves it alone. fla warns that its RWKV-6 may differ from the official
implementation (e.g. it does not use the paper's layer-dependent decay/bonus init).
Defaults: fla's RWKV6 config (expand_k 0.5, expand_v 1, 4 heads, ranks 32/64, norm_eps 1e-5).
"""
from __future__ import annotations

import math
import warnings

from grid.models.errors import ConfigError
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


def _dims(d: int, kw: dict) -> tuple[int, int, int]:
    h = kw["num_heads"]
    dims = []
    for name in ("expand_k", "expand_v"):
        dim = d * kw[name]
        if h < 1 or not math.isclose(dim, round(dim)) or round(dim) % h or round(dim) < h:
            raise ConfigError(name, kw[name], f"values with d_model*{name} an integer divisible by num_heads={h}")
        dims.append(round(dim) // h)
    for name in ("proj_low_rank_dim", "gate_low_rank_dim"):
        if kw[name] < 1:
            raise ConfigError(name, kw[name], "positive integers")
    return h, dims[0], dims[1]


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import RWKV6Attention  # noqa: PLC0415

    _dims(d, kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*potentially buggy FLA implementation of RWKV.*")
        layer = RWKV6Attention(mode="chunk", hidden_size=d, layer_idx=layer_idx, **kw)
    layer._keep_own_init = True  # the paper's / fla's own init, not the global N(0, std)
    return layer


def _state(d: int, kw: dict, context: int) -> int:
    """Matrix state H*dk*dv plus the token-shift state (the previous input, d_model values)."""
    h, dk, dv = _dims(d, kw)
    return h * dk * dv + d


def _flops(d: int, kw: dict, context: int) -> float:
    h, dk, dv = _dims(d, kw)
    return 7.0 * h * dk * dv  # studies.md A.6: RWKV-6 7 * d^2/H = 7 * H * dk * dv


register(MixerSpec(
    name="rwkv6",
    family="gated-linear",
    description="RWKV-6 time mixing: data-dependent token shift and per-channel decay, bonus for the current token",
    default_kwargs=dict(num_heads=4, expand_k=0.5, expand_v=1.0, proj_low_rank_dim=32, gate_low_rank_dim=64,
                        gate_fn="swish", elementwise_affine=True, norm_eps=1e-5),
    kwarg_docs=dict(
        num_heads="heads (fla default 4)", expand_k="key (r, w, k) width = d_model * expand_k",
        expand_v="value (v, g) width = d_model * expand_v",
        proj_low_rank_dim="rank of the 5-way ddlerp projection", gate_low_rank_dim="rank of the decay LoRA",
        gate_fn="output gate activation (fla/transformers ACT2FN name)",
        elementwise_affine="learned gain and bias in the per-head GroupNorm", norm_eps="GroupNorm eps"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=None,
    reference_unavailable="no reference implementation yet: fla layer only",
    gated_chunk_bwd=False,  # chunk_rwkv6 reuses GLA kernels (chunk_gla_bwd_*); no common chunk_bwd_dqkwg
    size_knobs={"expand_k": (0.25, 0.5, 1.0), "expand_v": (0.5, 1.0, 1.5, 2.0)},
    notes="built module carries _keep_own_init=True (fla's RWKV-6 init); fla warns its RWKV-6 is unofficial",
))
