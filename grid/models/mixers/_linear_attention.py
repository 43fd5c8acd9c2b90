"""What fla's multi-head linear-attention layers GLA (gla.py) and RetNet (retnet.py) share: the layer
skeleton (`LinearAttentionBase`: q/k/v with GQA-grouped k/v, short convs, output gate and per-head output
norm), its output block, the activations both accept by name, and their state size for accounting.

It lives here, not in one of the families, so that no family file imports a sibling family.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.errors import ConfigError
from grid.models.mixers._common import RMSNorm, RMSNormGated, ShortConvolution
from grid.models.mixers._heads import head_dims

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


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, T, Hkv, D] -> [B, T, Hkv * groups, D], each kv head repeated `groups` times in a row (fla's GQA)."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=2)


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


def matrix_state(d: int, kw: dict, context: int) -> int:
    """Matrix state H*dk*dv (per query head) plus the short-conv caches (conv_size-1 inputs of q, k, v)."""
    h, dk, dv = head_dims(d, kw)
    conv = 0
    if kw["use_short_conv"]:
        groups = h // (kw["num_kv_heads"] or h)
        conv = (kw["conv_size"] - 1) * (h * dk + (h * dk + h * dv) // groups)
    return h * dk * dv + conv
