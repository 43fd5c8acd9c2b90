"""LSTM token mixer: one torch LSTM layer recurring over TIME on [B, T, D], then an output projection.

    gates_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh  ->  i, f, g, o  (torch's order)
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g);   h_t = sigmoid(o) * tanh(c_t)
    out_t = o_proj(h_t)     (o_proj: Linear(hidden_size, d_model, bias=False))

* fused: `LSTMMixer`, a subclass of `nn.LSTM(batch_first=True)` (cuDNN on GPU, torch's fused kernel on CPU).
  batch_first matters: a batch-first tensor fed to a sequence-first LSTM recurs over the batch.
* reference: `LSTMReference`, an explicit loop over time with nn.LSTM's parameter names and shapes
  (weight_ih_l0 [4h, d], weight_hh_l0 [4h, h], bias_ih_l0 [4h], bias_hh_l0 [4h]) and nn.LSTM's init
  (all U(-1/sqrt(h), 1/sqrt(h)), which the global init leaves alone: only o_proj gets N(0, std)).

o_proj is present by default even when hidden_size == d_model (use_o_proj=True): every other mixer ends in a
learned output projection initialised N(0, std), so the residual branch starts equally small for all of them;
use_o_proj=False (only with hidden_size == d_model) gives the bare LSTM.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.mixers._recurrent_cells import HIDDEN_SIZES, add_recurrent_params, builder, hidden_width
from grid.models.registry import MixerSpec, register


class LSTMMixer(nn.LSTM):
    """torch's LSTM (batch_first) + o_proj; state_dict: weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, o_proj.*"""

    def __init__(self, d_model: int, hidden_size: int | None = None, bias: bool = True, use_o_proj: bool = True,
                 layer_idx: int | None = None):
        h = hidden_width(d_model, dict(hidden_size=hidden_size, use_o_proj=use_o_proj))
        super().__init__(d_model, h, num_layers=1, bias=bias, batch_first=True)
        self.layer_idx = layer_idx
        self.o_proj = nn.Linear(h, d_model, bias=False) if use_o_proj else None

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:  # noqa: D102
        out, _ = super().forward(x)  # zero initial (h, c)
        return self.o_proj(out) if self.o_proj is not None else out


class LSTMReference(nn.Module):
    """The same LSTM as an explicit python loop over time (input projections batched over T)."""

    def __init__(self, d_model: int, hidden_size: int | None = None, bias: bool = True, use_o_proj: bool = True,
                 layer_idx: int | None = None):
        super().__init__()
        h = hidden_width(d_model, dict(hidden_size=hidden_size, use_o_proj=use_o_proj))
        self.input_size, self.hidden_size, self.layer_idx = d_model, h, layer_idx
        add_recurrent_params(self, d_model, h, 4, bias, use_o_proj)

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        B, T, _ = x.shape
        gx = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # [B, T, 4h], all time steps at once
        h = x.new_zeros(B, self.hidden_size)
        c = x.new_zeros(B, self.hidden_size)
        outs = []
        for t in range(T):  # the recurrence runs over time (dim 1), batch rows stay independent
            gates = gx[:, t] + F.linear(h, self.weight_hh_l0, self.bias_hh_l0)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        out = torch.stack(outs, dim=1)
        return self.o_proj(out) if self.o_proj is not None else out


def _state(d: int, kw: dict, context: int) -> int:
    """h and c: 2 * hidden_size."""
    return 2 * hidden_width(d, kw)


def _flops(d: int, kw: dict, context: int) -> float:
    """13 * hidden_size per token. The matmuls (W_ih, W_hh) and bias adds are weights (2 x params, counted by
    accounting); the rest, 1 FLOP per elementwise op or nonlinearity: 4h to add the input and recurrent gate
    pre-activations, 5h for 3 sigmoids + 2 tanh, 4h for c = f*c + i*g and h = o*tanh(c)."""
    return 13.0 * hidden_width(d, kw)


register(MixerSpec(
    name="lstm",
    family="rnn",
    description="LSTM (one layer, batch_first, cuDNN/torch kernel) with an output projection",
    default_kwargs=dict(hidden_size=None, bias=True, use_o_proj=True),
    state_size=_state,
    mix_flops=_flops,
    fused=builder(LSTMMixer),
    reference=builder(LSTMReference),
    fused_needs_cuda=False,
    fused_needs_fla=False,
    size_knobs={"hidden_size": HIDDEN_SIZES},
    notes="fused = torch nn.LSTM (cuDNN on GPU, also runs on CPU); reference = python loop over time",
    kwarg_docs=dict(hidden_size="LSTM width (null = d_model)", bias="b_ih and b_hh",
                    use_o_proj="Linear(hidden_size, d_model) after the LSTM (required if hidden_size != d_model)"),
))
