"""Head sizing rules that several mixer families share: how many heads of which width a layer gets.

* `auto_head_dim`, `auto_heads`: the iso-parameter defaults of the gated delta family (gated_deltanet.py,
  gated_deltaproduct.py): a power-of-two head width near d/8 and the head count closest to 4*d^2 weights.
* `heads_and_ratio`: fla's (num_heads, expand_ratio) rule of HGRN-2 and LightNet (hgrn2.py, lightnet.py).
* `check_dims`, `head_dims`: key/value widths from expand_k/expand_v with GQA (gla.py, retnet.py).

They live here, not in one of the families, so that no family file imports a sibling family.
"""
from __future__ import annotations

import math

from grid.models.errors import ConfigError

DEFAULT_HEAD_F_DIM = 128  # flame hgrn2_340M: expand_ratio 128 (and fla LightNet's default head key width)


# --------------------------------------------------------------------------------------------------
# the gated delta family: head width near d/8, heads for ~4*d^2 weights
# --------------------------------------------------------------------------------------------------

def auto_head_dim(d_model: int) -> int:
    """d_model/8 rounded to a power of two, within [64, 256]."""
    return int(min(256, max(64, 2 ** round(math.log2(max(d_model, 1) / 8)))))


def auto_heads(d_model: int, head_dim: int, weights_per_key_width: float) -> int:
    """Heads whose mixer weight count (weights_per_key_width * d_model * H * head_dim) is closest to 4*d^2."""
    return max(1, round(4 * d_model / (weights_per_key_width * head_dim)))


# --------------------------------------------------------------------------------------------------
# HGRN-2 and LightNet: num_heads or expand_ratio
# --------------------------------------------------------------------------------------------------

def heads_and_ratio(d: int, num_heads: int | None, expand_ratio: int | None) -> tuple[int, int]:
    """(num_heads, expand_ratio) as fla resolves them, with flame's rule when both are null."""
    if expand_ratio is not None:
        if expand_ratio < 1 or d // expand_ratio < 1:
            raise ConfigError("expand_ratio", expand_ratio, f"integers in 1..d_model={d}")
        heads = d // expand_ratio
        if num_heads is not None and num_heads != heads:
            raise ConfigError("num_heads", num_heads, f"null or d_model // expand_ratio = {heads} (give one of the two)")
    else:
        heads = num_heads if num_heads is not None else max(1, d // DEFAULT_HEAD_F_DIM)
        if heads < 1 or d % heads:
            raise ConfigError("num_heads", num_heads, f"divisors of d_model={d}")
        expand_ratio = d // heads
    if d % heads:
        raise ConfigError("expand_ratio", expand_ratio, f"values with d_model={d} divisible by d_model // expand_ratio")
    return heads, expand_ratio


# --------------------------------------------------------------------------------------------------
# GLA and RetNet: expand_k / expand_v with grouped key/value heads
# --------------------------------------------------------------------------------------------------

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


def head_dims(d: int, kw: dict) -> tuple[int, int, int]:
    """(heads, head key dim, head value dim) of a multi-head linear-attention layer (GLA, RetNet)."""
    h = kw["num_heads"]
    key_dim, value_dim = check_dims(d, kw, h, kw["num_kv_heads"])
    return h, key_dim // h, value_dim // h
