"""MesaNet (von Oswald et al. 2025, "MesaNet: Sequence Modeling by Locally Optimal Test-Time Training",
arXiv 2506.05233): per head it keeps two decayed statistics and answers each query with the ridge-regression
optimum, solved by conjugate gradients:

    H_kk <- gamma_t H_kk + beta_t k_t k_t^T,   H_kv <- gamma_t H_kv + beta_t k_t v_t^T,
    o_t = H_kv^T (H_kk + diag(lambda))^{-1} q_t       (CG, at most max_cg_step_training iterations)

gamma = sigmoid(a_proj x) (log-sigmoid gate), beta = sigmoid(b_proj x), lambda = softplus(lambda_params) +
lambda_lower_bound; q, k get short convs + SiLU and L2 norm. fused only: fla's `MesaNet`; no reference.

Defaults: fla's layer/config (head_dim 128, 16 heads at d=2048 -> num_heads = d/head_dim here, so key and
value width = d and the mixer has ~4*d^2 weights; no output gate; conv 4; lambda lower bound 0.25; 30 CG
steps), norm eps as fla's model passes it (1e-6). fla's layer ignores `use_short_conv` (always builds the
q/k convs), so that knob is not offered.
"""
from __future__ import annotations

from grid.models.errors import ConfigError
from grid.models.registry import MixerSpec, register

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


def _resolve(d: int, kw: dict) -> dict:
    kw = dict(kw)
    if kw["num_heads"] is None:
        # weights per unit key width: q, k, v, o (4) + g (1, if output gate)
        kw["num_heads"] = max(1, round(4 * d / ((4 + int(kw["use_output_gate"])) * kw["head_dim"])))
    if kw["max_cg_step_training"] < 1 or kw["max_cg_step_decoding"] < 1:
        raise ConfigError("max_cg_step_training", kw["max_cg_step_training"], "integers >= 1")
    return kw


def _fused(d: int, layer_idx: int, kw: dict):
    from fla.layers import MesaNet  # noqa: PLC0415

    return MesaNet(mode="chunk", hidden_size=d, layer_idx=layer_idx, **_resolve(d, kw))


def _state(d: int, kw: dict, context: int) -> int:
    """H_kk (H*dk*dk) and H_kv (H*dk*dv, dv = dk) plus the q/k short-conv caches."""
    kw = _resolve(d, kw)
    h, dk = kw["num_heads"], kw["head_dim"]
    return h * (dk * dk + dk * dk) + (kw["conv_size"] - 1) * 2 * h * dk


def _flops(d: int, kw: dict, context: int) -> float:
    """Per head: H_kv decay + write + read-out as RetNet/Mamba-2 (studies.md A.6 c=5 per dk*dv element),
    H_kk decay + write (3 per dk^2 element) and the CG solve, 2*dk^2 per iteration (matrix-vector product),
    counted at max_cg_step_training iterations (the kernel runs a fixed iteration count)."""
    kw = _resolve(d, kw)
    h, dk = kw["num_heads"], kw["head_dim"]
    return float(h * (5 * dk * dk + (3 + 2 * kw["max_cg_step_training"]) * dk * dk))


register(MixerSpec(
    name="mesa_net",
    fused_input_feeds_linears_only=True,  # fla 0.6: the layer's input feeds only its nn.Linear projections
    family="delta",
    description="MesaNet: decayed key/value statistics + per-token ridge-regression read-out solved by CG",
    default_kwargs=dict(num_heads=None, head_dim=128, use_output_gate=False, conv_size=4, conv_bias=False,
                        norm_eps=1e-6, lambda_lower_bound=0.25, max_cg_step_training=30, max_cg_step_decoding=30),
    kwarg_docs=dict(
        num_heads="heads; null = closest to 4*d^2 mixer weights (d/head_dim without output gate)",
        head_dim="q/k/v head width (fla default 128)",
        use_output_gate="SiLU output gate inside the output RMSNorm",
        conv_size="q/k short-conv kernel size", conv_bias="bias in the short convs",
        norm_eps="eps of the output norm (fla's model passes 1e-6)",
        lambda_lower_bound="minimum ridge regulariser lambda",
        max_cg_step_training="CG iterations in training/prefill", max_cg_step_decoding="CG iterations per decoded token"),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=None,
    reference_unavailable="not implemented: fused-only entry (fla.ops.mesa_net.naive has an oracle for a future "
                          "reference)",
    gated_chunk_bwd=False,  # chunk_mesa_net's backward does not call chunk_bwd_dqkwg
    size_knobs={"num_heads": (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32)},
))
