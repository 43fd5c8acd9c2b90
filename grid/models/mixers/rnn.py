"""Elman RNN token mixer: one torch RNN layer recurring over TIME on [B, T, D], then an output projection.

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)    act = tanh (default) or relu
    out_t = o_proj(h_t)     (o_proj: Linear(hidden_size, d_model, bias=False))

* fused: `RNNMixer`, a subclass of `nn.RNN(batch_first=True)` (cuDNN on GPU, torch's kernel on CPU).
* reference: `RNNReference`, an explicit loop over time with nn.RNN's parameter names and shapes
  (weight_ih_l0 [h, d], weight_hh_l0 [h, h], bias_ih_l0 [h], bias_hh_l0 [h]) and its init
  (U(-1/sqrt(h), 1/sqrt(h)), left alone by the global init; o_proj gets N(0, std)).

o_proj is there by default even when hidden_size == d_model, for the same reason as in lstm.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.errors import ConfigError
from grid.models.mixers._recurrent_cells import HIDDEN_SIZES, add_recurrent_params, builder, hidden_width
from grid.models.registry import MixerSpec, register

NONLINEARITIES = ("tanh", "relu")


def _hidden(d_model: int, kw: dict) -> int:
    if kw.get("nonlinearity", "tanh") not in NONLINEARITIES:
        raise ConfigError("nonlinearity", kw.get("nonlinearity"), NONLINEARITIES)
    return hidden_width(d_model, kw)


class RNNMixer(nn.RNN):
    """torch's RNN (batch_first) + o_proj; state_dict: weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, o_proj.*"""

    def __init__(self, d_model: int, hidden_size: int | None = None, nonlinearity: str = "tanh", bias: bool = True,
                 use_o_proj: bool = True, layer_idx: int | None = None):
        h = _hidden(d_model, dict(hidden_size=hidden_size, use_o_proj=use_o_proj, nonlinearity=nonlinearity))
        super().__init__(d_model, h, num_layers=1, nonlinearity=nonlinearity, bias=bias, batch_first=True)
        self.layer_idx = layer_idx
        self.o_proj = nn.Linear(h, d_model, bias=False) if use_o_proj else None

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:  # noqa: D102
        out, _ = super().forward(x)  # zero initial h
        return self.o_proj(out) if self.o_proj is not None else out


class RNNReference(nn.Module):
    """The same RNN as an explicit python loop over time (input projections batched over T)."""

    def __init__(self, d_model: int, hidden_size: int | None = None, nonlinearity: str = "tanh", bias: bool = True,
                 use_o_proj: bool = True, layer_idx: int | None = None):
        super().__init__()
        h = _hidden(d_model, dict(hidden_size=hidden_size, use_o_proj=use_o_proj, nonlinearity=nonlinearity))
        self.input_size, self.hidden_size, self.nonlinearity, self.layer_idx = d_model, h, nonlinearity, layer_idx
        add_recurrent_params(self, d_model, h, 1, bias, use_o_proj)

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        B, T, _ = x.shape
        act = torch.tanh if self.nonlinearity == "tanh" else torch.relu
        gx = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # [B, T, h], all time steps at once
        h = x.new_zeros(B, self.hidden_size)
        outs = []
        for t in range(T):  # the recurrence runs over time (dim 1), batch rows stay independent
            h = act(gx[:, t] + F.linear(h, self.weight_hh_l0, self.bias_hh_l0))
            outs.append(h)
        out = torch.stack(outs, dim=1)
        return self.o_proj(out) if self.o_proj is not None else out


def _state(d: int, kw: dict, context: int) -> int:
    """h: hidden_size."""
    return _hidden(d, kw)


def _flops(d: int, kw: dict, context: int) -> float:
    """2 * hidden_size per token: adding the input and recurrent pre-activations (h) and the nonlinearity (h),
    1 FLOP each; the matmuls and bias adds are weights (2 x params, counted by accounting)."""
    return 2.0 * _hidden(d, kw)


register(MixerSpec(
    name="rnn",
    family="rnn",
    description="Elman RNN (tanh/relu, one layer, batch_first, cuDNN/torch kernel) with an output projection",
    default_kwargs=dict(hidden_size=None, nonlinearity="tanh", bias=True, use_o_proj=True),
    state_size=_state,
    mix_flops=_flops,
    fused=builder(RNNMixer),
    reference=builder(RNNReference),
    fused_needs_cuda=False,
    fused_needs_fla=False,
    size_knobs={"hidden_size": HIDDEN_SIZES},
    notes="fused = torch nn.RNN (cuDNN on GPU, also runs on CPU); reference = python loop over time",
    kwarg_docs=dict(hidden_size="RNN width (null = d_model)", nonlinearity="tanh or relu",
                    bias="b_ih and b_hh",
                    use_o_proj="Linear(hidden_size, d_model) after the RNN (required if hidden_size != d_model)"),
))
