"""RWKV-7 "Goose" (Peng et al. 2025, arXiv 2503.14456): a generalized (diagonal-plus-low-rank) delta rule
with per-channel data-dependent decay, token-shift mixing, LoRA-parameterised gates and a value residual
that mixes every layer's values with layer 0's ("v_first"):

    S_t = S_{t-1} (diag(w_t) - kk_t^T (a_t * kk_t)) + v_t k_t^T,   o_t = S_t r_t   (per head)

then GroupNorm, the r*k*r_k bonus term, the output gate g and o_proj. fused only: fla's `RWKV7Attention`;
no reference backend.

Init: the paper prescribes a whole-layer init (token-shift ramps, decay/bias ramps, orthogonal projections,
zero o_proj), which fla's layer performs at construction; the built module is marked `_keep_own_init = True`
so the global init leaves it alone. That init needs the model depth (`num_hidden_layers`, ratios
layer_idx/(L-1) and 1 - layer_idx/L). Mixer builders do not see the depth, so it is a kwarg here with fla's
RWKV7Config default 24; set it to the model's n_layers for the paper's init. It is clamped to at least
layer_idx + 1 (and 2) so deeper stacks still get valid ratios.

Value residual: fla's layer returns v_first from layer 0 and expects it as an argument in later layers
(forward(..., v_first=...)); our Block calls mixer(x) only. The fused builder therefore returns a subclass
whose forward passes v_first through a per-model side channel: layer 0 publishes its values, later layers
of the same model read them (zeros when layer 0 is not an RWKV-7 layer, exactly like fla's model, which
starts from v_first = zeros). A model's layers are recognised by construction order (a new model starts
whenever a layer_idx is not larger than the previous one built).

Defaults: fla's layer (head_dim 64; LoRA ranks from its d-dependent formulas, which follow the official
RWKV-7 code -- fla's RWKV7Config instead fixes 64/128/64/16; value_dim = d; fused Triton GroupNorm as
RWKV7Config's fuse_norm=True; norm_eps 1e-5, scaled by head_dim inside the GroupNorm as fla does).
"""
from __future__ import annotations

import warnings

from grid.models.errors import ConfigError
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


class _VFirstBus:
    """Carries layer 0's values to the later RWKV-7 layers of one model during a forward pass."""

    def __init__(self):
        self.v = None
        self.last_idx = -1


_current_bus: _VFirstBus | None = None
_mixer_cls = None


def _bus_for(layer_idx: int) -> _VFirstBus:
    global _current_bus
    if _current_bus is None or layer_idx <= _current_bus.last_idx:
        _current_bus = _VFirstBus()
    _current_bus.last_idx = layer_idx
    return _current_bus


def _mixer_class():
    """fla's RWKV7Attention with v_first routed through the model's bus (created lazily: fla imports here)."""
    global _mixer_cls
    if _mixer_cls is None:
        from fla.layers import RWKV7Attention  # noqa: PLC0415

        class RWKV7Mixer(RWKV7Attention):
            def forward(self, hidden_states, *args, **kwargs):
                bus = self._v_first_bus
                if self.layer_idx == 0:
                    out = super().forward(hidden_states, *args, v_first=None, **kwargs)
                    bus.v = out[3]
                    return out
                vf = bus.v
                if vf is None or vf.shape[:2] != hidden_states.shape[:2] or vf.shape[-1] != self.value_dim:
                    vf = hidden_states.new_zeros(*hidden_states.shape[:2], self.value_dim)
                return super().forward(hidden_states, *args, v_first=vf, **kwargs)

        _mixer_cls = RWKV7Mixer
    return _mixer_cls


def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    if kw["num_heads"] is not None:  # fla: head_dim wins when both are given
        kw["head_dim"] = None
    h = kw["num_heads"] or (d // kw["head_dim"] if kw["head_dim"] else 0)
    if not h or d % h or (kw["head_dim"] and d % kw["head_dim"]):
        raise ConfigError("head_dim/num_heads", (kw["head_dim"], kw["num_heads"]),
                          f"a head_dim or num_heads dividing d_model={d}")
    vd = kw["value_dim"] or d
    if vd % h:
        raise ConfigError("value_dim", kw["value_dim"], f"multiples of num_heads={h}")
    if kw["num_hidden_layers"] < 1:
        raise ConfigError("num_hidden_layers", kw["num_hidden_layers"], "the model depth (>= 1)")
    return kw


def _dims(d: int, kw: dict) -> tuple[int, int, int]:
    kw = _resolve(d, kw)
    h = kw["num_heads"] or d // kw["head_dim"]
    return h, d // h, (kw["value_dim"] or d) // h


def _fused(d: int, layer_idx: int, kw: dict):
    kw = _resolve(d, kw)
    kw["num_hidden_layers"] = max(kw["num_hidden_layers"], layer_idx + 1, 2)
    cls = _mixer_class()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="According to Bo")  # printed once per layer by fla
        m = cls(mode="chunk", hidden_size=d, layer_idx=layer_idx, **kw)
    m._keep_own_init = True  # the paper's whole-layer init (done by fla's constructor) is kept
    m._v_first_bus = _bus_for(layer_idx)
    return m


def _state(d: int, kw: dict, context: int) -> int:
    """Matrix state H*dk*dv plus the token-shift cache (the previous input, d values)."""
    h, dk, dv = _dims(d, kw)
    return h * dk * dv + d


def _flops(d: int, kw: dict, context: int) -> float:
    """9 per state element: the DeltaNet constant of studies.md A.6 (8: k-read of S, rank-1 write, value
    write, read-out) plus 1 for RWKV-7's per-channel diagonal decay multiply."""
    h, dk, dv = _dims(d, kw)
    return 9.0 * h * dk * dv


register(MixerSpec(
    name="rwkv7",
    family="rnn",
    description="RWKV-7: generalized delta rule with per-channel decay, token shift, LoRA gates, value residual",
    default_kwargs=dict(head_dim=64, num_heads=None, decay_low_rank_dim=None, gate_low_rank_dim=None,
                        a_low_rank_dim=None, v_low_rank_dim=None, value_dim=None, norm_eps=1e-5, fuse_norm=True,
                        num_hidden_layers=24),
    kwarg_docs=dict(
        head_dim="head width (fla default 64); ignored when num_heads is given",
        num_heads="heads (overrides head_dim)",
        decay_low_rank_dim="LoRA rank of the decay w; null = fla's d-dependent formula",
        gate_low_rank_dim="LoRA rank of the output gate g; null = formula",
        a_low_rank_dim="LoRA rank of the in-context learning rate a; null = formula",
        v_low_rank_dim="LoRA rank of the value-residual mix; null = formula",
        value_dim="value width; null = d_model",
        norm_eps="GroupNorm eps (multiplied by head_dim, as fla does)",
        fuse_norm="fla's Triton GroupNorm and l2 norm (RWKV7Config default) instead of torch's",
        num_hidden_layers="model depth used by the paper's layer-position-dependent init (set to n_layers)"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=None,
    reference_unavailable="not implemented: fused-only entry (RWKV-7's update is fla's DPLR delta rule; "
                          "fla.ops.generalized_delta_rule.dplr.naive would be the oracle)",
    gated_chunk_bwd=False,  # chunk_rwkv7 -> chunk_dplr_delta_rule: its own backward, no chunk_bwd_dqkwg
    # no width knob: RWKV-7's r/k/v/o are d x d whatever the heads; its LoRAs make it ~4.7*d^2 at d=1024
    # (+5.7% non-embedding at 1024x24 vs attention). Iso-parameter sizing must vary depth or pass LoRA ranks.
    size_knobs={},
    notes="keeps its own (paper) init; set num_hidden_layers to the model depth; value residual via side channel",
))
