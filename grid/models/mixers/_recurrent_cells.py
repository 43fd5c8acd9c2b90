"""What the torch recurrent-layer mixers (lstm.py, rnn.py) share: the width rule, nn.LSTM/nn.RNN's
single-layer parameters for the reference loops, the registry builder and the sizing candidates.

It lives here, not in one of the families, so that no family file imports a sibling family.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from grid.models.errors import ConfigError

# iso-parameter sizing candidates (at d=1024 an LSTM matches attention's 4d^2 near 576, an RNN near 1280)
HIDDEN_SIZES = (32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 576, 640, 704, 768, 896,
                1024, 1152, 1280, 1536, 1792, 2048, 2560, 3072, 4096)


def hidden_width(d_model: int, kw: dict) -> int:
    """The recurrent width: hidden_size, null = d_model; without o_proj it must be d_model."""
    h = kw.get("hidden_size") or d_model
    if not isinstance(h, int) or h <= 0:
        raise ConfigError("hidden_size", kw.get("hidden_size"), "null (= d_model) or a positive integer")
    if not kw.get("use_o_proj", True) and h != d_model:
        raise ConfigError("use_o_proj", False, "true when hidden_size != d_model",
                          hint=f"hidden_size={h} must be projected back to d_model={d_model}")
    return h


def add_recurrent_params(module: nn.Module, d_model: int, h: int, gates: int, bias: bool, use_o_proj: bool) -> None:
    """nn.LSTM/nn.RNN's single-layer parameters (same names and shapes) with their uniform init, plus o_proj."""
    module.weight_ih_l0 = nn.Parameter(torch.empty(gates * h, d_model))
    module.weight_hh_l0 = nn.Parameter(torch.empty(gates * h, h))
    if bias:
        module.bias_ih_l0 = nn.Parameter(torch.empty(gates * h))
        module.bias_hh_l0 = nn.Parameter(torch.empty(gates * h))
    else:
        module.register_parameter("bias_ih_l0", None)
        module.register_parameter("bias_hh_l0", None)
    bound = 1.0 / math.sqrt(h)  # U(-1/sqrt(hidden), 1/sqrt(hidden)) on every weight and bias, as torch
    for p in (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0):
        if p is not None:
            nn.init.uniform_(p, -bound, bound)
    module.o_proj = nn.Linear(h, d_model, bias=False) if use_o_proj else None


def builder(cls):
    """The registry builder (d_model, layer_idx, kwargs) -> cls(d_model, layer_idx=..., **kwargs)."""

    def build(d_model: int, layer_idx: int, kw: dict):
        return cls(d_model, layer_idx=layer_idx, **kw)
    return build
