"""Gated DeltaProduct (Siems et al. 2025, arXiv 2502.10297): each token applies `num_householder` delta-rule
steps (a product of generalized Householder transitions) with their own keys/values/betas, plus a Gated-
DeltaNet-style scalar forget gate on the first step:

    S <- alpha_t S;  for j in 1..n_h:  S <- (I - beta_tj k_tj k_tj^T) S + beta_tj k_tj v_tj^T;   o_t = S^T q_t

fused only: fla's `GatedDeltaProduct`. There is no reference backend (see `reference_unavailable`).

Defaults: fla's *layer* defaults for the architecture (num_householder 2, forget gate on, negative eigenvalues
allowed, output gate on) -- fla's GatedDeltaProductConfig defaults to n_h=1 without forget gate, i.e. a plain
DeltaNet with output gate, which is not what the paper studies. Width: like gated_deltanet.py, expand_v 1 and
head_dim = d/8 rounded to a power of two in [64, 256] (fla's layer: 6 x 256 with expand_v 2), num_heads =
the count whose mixer weights come closest to 4*d^2 (weights per unit key width: q 1, k n_h, v n_h*expand_v,
g and o expand_v each = 7 at the defaults, giving 5 heads: 4.4*d^2 at d=1024 and 2048).
fla quirk: its chunk kernel refuses fp32 activations (train under bf16/fp16 autocast).
"""
from __future__ import annotations

from grid.models.errors import ConfigError
from grid.models.mixers._heads import auto_head_dim, auto_heads
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    kw["head_dim"] = kw["head_dim"] or auto_head_dim(d)
    if kw["num_householder"] < 1:
        raise ConfigError("num_householder", kw["num_householder"], "integers >= 1")
    if kw["num_heads"] is None:
        nh, ev = kw["num_householder"], kw["expand_v"]
        kw["num_heads"] = auto_heads(d, kw["head_dim"], (1 + nh) + ev * (nh + 1 + int(kw["use_output_gate"])))
    return kw


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import GatedDeltaProduct  # noqa: PLC0415

    return GatedDeltaProduct(mode="chunk", hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _dims(d: int, kw: dict) -> tuple[int, int, int, int]:
    kw = _resolve(d, kw)
    return kw["num_heads"], kw["head_dim"], int(kw["head_dim"] * kw["expand_v"]), kw["num_householder"]


def _state(d: int, kw: dict, context: int) -> int:
    """Matrix state H*dk*dv plus short-conv caches (conv_size-1 past inputs of q, the n_h keys and n_h values)."""
    h, dk, dv, nh = _dims(d, kw)
    conv = (kw["conv_size"] - 1) * h * ((1 + nh) * dk + nh * dv) if kw["use_short_conv"] else 0
    return h * dk * dv + conv


def _flops(d: int, kw: dict, context: int) -> float:
    h, dk, dv, nh = _dims(d, kw)
    # studies.md A.6 DeltaNet constant (8 per state element) once per Householder step: an upper bound,
    # since the read-out o = S^T q happens once per token, not per step.
    return 8.0 * nh * h * dk * dv


register(MixerSpec(
    name="gated_deltaproduct",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="delta",
    description="Gated DeltaProduct: n_h delta-rule (Householder) steps per token + scalar forget gate",
    default_kwargs=dict(num_heads=None, head_dim=None, expand_v=1.0, num_householder=2, use_forget_gate=True,
                        allow_neg_eigval=True, use_output_gate=True, use_short_conv=True, conv_size=4,
                        conv_bias=False, norm_eps=1e-6),
    kwarg_docs=dict(
        num_heads="heads; null = closest to 4*d^2 mixer weights",
        head_dim="q/k head width; null = d_model/8 rounded to a power of two in [64, 256]",
        expand_v="value head width = head_dim * expand_v (fla's layer default 2)",
        num_householder="delta-rule steps per token (n_h)",
        use_forget_gate="scalar decay exp(-exp(A_log) softplus(a_proj x + dt_bias))",
        allow_neg_eigval="beta in (0, 2): Householder eigenvalues in (-1, 1]",
        use_output_gate="SiLU output gate inside the output RMSNorm",
        use_short_conv="causal depthwise convs on q, k, v", conv_size="short-conv kernel size",
        conv_bias="bias in the short convs", norm_eps="eps of the output norm (fla's model passes 1e-6)"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=None,
    reference_unavailable="not implemented: fused-only entry (fla.ops.gated_delta_product.naive has an oracle "
                          "for a future reference)",
    gated_chunk_bwd=True,  # with the forget gate (default) its backward is chunk_gated_delta_rule_bwd(g=...)
    # head_dim stays at its (power-of-two) default during sizing; pass it explicitly to change it
    size_knobs={"num_heads": (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 13, 14, 16), "expand_v": (1.0, 2.0)},
    notes="fla's chunk kernel rejects fp32 activations (bf16 autocast)",
))
