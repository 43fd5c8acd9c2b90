"""Delta-rule family: deltanet and gated_deltanet (both backends), gated_deltaproduct, path_attn, mesa_net,
rwkv7 (fused only).

Parity runs the REAL fla layers on CPU through Triton's interpreter (conftest enables it). Two interpreter
workarounds live here, both test-only and neither touching the math:
* `tensor_loop_bounds`: fla's chunk kernels loop `for i_t in range(NT)` with NT a runtime value; the
  interpreter turns such a loop into python ints, and `i_t.to(tl.int64)` then fails with
  InterpreterError "'int' object has no attribute 'to'". We give the fla modules a `range` that yields
  interpreter tensors when its bounds are interpreter tensors (plain ints otherwise).
* fla's chunk delta-rule / delta-product entry points refuse fp32 (an assert in the python wrapper, not in
  the kernels); the interpreter's bf16 emulation breaks their chunk kernels (relative error ~1e10 while
  the same kernels in fp32 match the naive oracles to 1e-7), so parity calls the autograd Function behind
  the wrapper directly in fp32.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from grid.check import interpret
from grid.models.mixers._common import l2norm
from grid.models.mixers.deltanet import delta_rule_chunked, delta_rule_recurrent
from grid.models.registry import get_mixer

INTERP = interpret.active()
needs_interp = pytest.mark.skipif(not INTERP, reason="needs Triton's CPU interpreter (CPU-only run)")
TOL = 1e-3


def _fla_ok() -> bool:
    try:
        import fla.layers  # noqa: F401, PLC0415
        return True
    except Exception:  # pragma: no cover
        return False


needs_fla = pytest.mark.skipif(not _fla_ok(), reason="fla is not importable")


# ------------------------------------------------------------------------------------------------
# interpreter helpers
# ------------------------------------------------------------------------------------------------

def _fp32_chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                           cu_seqlens=None, use_qk_l2norm_in_kernel=False, **_):
    from fla.ops.delta_rule.chunk import ChunkDeltaRuleFunction  # noqa: PLC0415

    scale = k.shape[-1] ** -0.5 if scale is None else scale
    return ChunkDeltaRuleFunction.apply(q, k, v, beta, scale, initial_state, output_final_state,
                                        use_qk_l2norm_in_kernel, cu_seqlens, None, 64)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def _build(name: str, d: int, kw: dict, backend: str, layer_idx: int = 0):
    spec = get_mixer(name)
    kw = spec.resolve_kwargs(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (spec.fused if backend == "fused" else spec.reference)(d, layer_idx, kw)


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Weights large enough that every path matters (fla's layer init is left to the global init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------------------------------------
# 1. same parameters as fla
# ------------------------------------------------------------------------------------------------

KEY_CASES = [
    ("deltanet", 64, {}),
    ("deltanet", 64, dict(num_heads=2, use_gate=True, use_short_conv=False, expand_v=2.0)),
    ("deltanet", 64, dict(num_heads=4, qk_activation="relu", qk_norm="sum", conv_bias=True, use_beta=False)),
    ("gated_deltanet", 64, {}),
    ("gated_deltanet", 64, dict(num_heads=2, head_dim=16, num_v_heads=4, expand_v=2.0, use_gate=False)),
    ("gated_deltanet", 64, dict(num_heads=2, head_dim=32, use_short_conv=False, conv_bias=True)),
]


@needs_fla
@pytest.mark.parametrize("name,d,kw", KEY_CASES)
def test_state_dict_matches_fla(name, d, kw):
    fused, ref = _build(name, d, kw, "fused"), _build(name, d, kw, "reference")
    f_shapes = {k: tuple(v.shape) for k, v in fused.state_dict().items()}
    r_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert f_shapes == r_shapes
    ref.load_state_dict(fused.state_dict(), strict=True)
    fused.load_state_dict(ref.state_dict(), strict=True)


# ------------------------------------------------------------------------------------------------
# 2. parity with the real fla layer (Triton interpreter)
# ------------------------------------------------------------------------------------------------

PARITY_CASES = [
    # T=20: fla's DeltaNet takes its fused-recurrent kernel for T <= 64 (also in training)
    ("deltanet", 20, dict(num_heads=2, use_gate=True, allow_neg_eigval=True)),
    # T=70: the chunk kernel (2 chunks, ragged tail)
    ("deltanet", 70, dict(num_heads=2)),
    ("gated_deltanet", 20, dict(num_heads=2, head_dim=16)),
    ("gated_deltanet", 70, dict(num_heads=1, head_dim=16, num_v_heads=2, expand_v=2.0, allow_neg_eigval=True,
                                output_gate_activation="sigmoid")),
]


@needs_fla
@needs_interp
@pytest.mark.parametrize("name,T,kw", PARITY_CASES)
def test_parity_with_fla_interpreter(name, T, kw, monkeypatch):
    d = 32
    torch.manual_seed(0)
    fused = _build(name, d, kw, "fused")
    _randomise(fused)
    ref = _build(name, d, kw, "reference")
    ref.load_state_dict(fused.state_dict(), strict=True)
    if name == "deltanet":
        import fla.layers.delta_net as fla_dn  # noqa: PLC0415

        monkeypatch.setattr(fla_dn, "chunk_delta_rule", _fp32_chunk_delta_rule)
    x = torch.randn(2, T, d)
    xf, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    gy = torch.randn(2, T, d)
    with interpret.fixes():
        yf = fused(xf)[0]
        (yf * gy).sum().backward()
    yr = ref(xr)
    (yr * gy).sum().backward()
    errs = {"output": rel(yr, yf), "d input": rel(xr.grad, xf.grad)}
    ref_params = dict(ref.named_parameters())
    for pname, p in fused.named_parameters():
        errs[pname] = rel(ref_params[pname].grad, p.grad)
    worst = max(errs, key=errs.get)
    print(f"{name} T={T}: max rel err {errs[worst]:.2e} ({worst})")
    assert errs[worst] < TOL, errs


# oracle check of the shared recurrence (runs without the interpreter too)
@needs_fla
@pytest.mark.parametrize("gated", [False, True])
def test_core_recurrence_matches_fla_naive(gated):
    from fla.ops.delta_rule.naive import delta_rule_recurrence  # noqa: PLC0415
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule  # noqa: PLC0415

    torch.manual_seed(0)
    B, T, H, K, V = 2, 70, 3, 16, 8
    q, k, v = torch.randn(B, T, H, K), l2norm(torch.randn(B, T, H, K)), torch.randn(B, T, H, V)
    beta = 2 * torch.rand(B, T, H)
    if gated:
        g = -torch.rand(B, T, H)
        want, _ = naive_recurrent_gated_delta_rule(q, k, v, beta, g)
    else:
        g = None
        want, _ = delta_rule_recurrence(*(x.transpose(1, 2) for x in (q, k, v, beta)))
        want = want.transpose(1, 2)
    assert rel(delta_rule_chunked(q, k, v, beta, g), want) < 1e-5
    assert rel(delta_rule_recurrent(q, k, v, beta, g), want) < 1e-5


# ------------------------------------------------------------------------------------------------
# 3./4. reference causality, finite forward+backward, init
# ------------------------------------------------------------------------------------------------

REF_CASES = [("deltanet", {}), ("deltanet", dict(num_heads=2, use_gate=True, qk_norm="sum")),
             ("gated_deltanet", {}), ("gated_deltanet", dict(num_heads=2, head_dim=32, num_v_heads=4))]


@pytest.mark.parametrize("name,kw", REF_CASES)
def test_reference_causal(name, kw):
    torch.manual_seed(0)
    ref = _build(name, 64, kw, "reference")
    _randomise(ref)
    x = torch.randn(2, 70, 64)
    t = 40
    x2 = x.clone()
    x2[:, t + 1:] += torch.randn(2, 70 - t - 1, 64)
    with torch.no_grad():
        a, b = ref(x), ref(x2)
    assert (a[:, : t + 1] - b[:, : t + 1]).abs().max() <= 1e-6
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("name,kw", REF_CASES)
def test_reference_forward_backward_finite(name, kw):
    torch.manual_seed(0)
    ref = _build(name, 64, kw, "reference")
    x = torch.randn(2, 33, 64, requires_grad=True)
    y = ref(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for pname, p in ref.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_gated_deltanet_decay_init_like_fla():
    ref = _build("gated_deltanet", 64, dict(num_heads=64, head_dim=16), "reference")
    A = ref.A_log.exp()
    assert (A >= 0).all() and (A <= 16).all() and A.std() > 2  # U(0, 16)
    dt = torch.nn.functional.softplus(ref.dt_bias)
    assert (dt >= 1e-4 - 1e-7).all() and (dt <= 0.1 + 1e-6).all()


# ------------------------------------------------------------------------------------------------
# spec-level facts: defaults near 4*d^2, flags, accounting hooks
# ------------------------------------------------------------------------------------------------

ALL = ["deltanet", "gated_deltanet", "gated_deltaproduct", "path_attn", "mesa_net", "rwkv7"]


@needs_fla
@pytest.mark.parametrize("name", ALL)
def test_default_width_near_4d2(name):
    d = 1024
    spec = get_mixer(name)
    m = _build(name, d, {}, "reference" if spec.reference else "fused", layer_idx=1)
    ratio = sum(p.numel() for p in m.parameters()) / d ** 2
    assert 3.5 <= ratio <= 4.8, ratio  # RWKV-7 carries ~0.7*d^2 of LoRAs at d=1024


def test_flags_and_accounting():
    want_gated = {"deltanet": False, "gated_deltanet": True, "gated_deltaproduct": True, "path_attn": False,
                  "mesa_net": False, "rwkv7": False}
    for name in ALL:
        spec = get_mixer(name)
        assert spec.gated_chunk_bwd == want_gated[name], name
        assert spec.fused_needs_cuda and spec.fused is not None
        assert (spec.reference is None) == (name not in ("deltanet", "gated_deltanet")), name
        if spec.reference is None:
            assert spec.reference_unavailable
        kw = spec.resolve_kwargs({})
        assert spec.state_size(1024, kw, 4096) > 0 and spec.mix_flops(1024, kw, 4096) > 0
        assert set(spec.size_knobs) <= spec.kwargs_allowed()
    # the A.6 constant: DeltaNet 8 * d^2 / H
    assert get_mixer("deltanet").mix_flops(1024, get_mixer("deltanet").resolve_kwargs({}), 4096) == 8 * 1024 ** 2 / 8
    gdn = get_mixer("gated_deltanet").resolve_kwargs({})
    assert get_mixer("gated_deltanet").state_size(2048, gdn, 1) == 6 * 256 * 256 + 3 * (2 * 1536 + 1536)


# ------------------------------------------------------------------------------------------------
# fused-only entries: fla layer constructs on CPU with the defaults at d=64 and runs forward
# ------------------------------------------------------------------------------------------------

@needs_fla
@pytest.mark.parametrize("name", ["gated_deltaproduct", "path_attn", "mesa_net"])
def test_fused_only_constructs_and_runs(name):
    m = _build(name, 64, {}, "fused")
    assert get_mixer(name).reference is None
    if not INTERP:
        pytest.skip("forward needs Triton's CPU interpreter")
    torch.manual_seed(0)
    x = torch.randn(2, 20, 64)
    with interpret.fixes(), torch.no_grad():
        y = m.eval()(x)[0]  # eval + no grad: the inference paths (fused-recurrent for T <= 64 where fla has one)
    assert y.shape == x.shape and torch.isfinite(y).all()


@needs_fla
def test_rwkv7_own_init_and_value_residual():
    spec = get_mixer("rwkv7")
    kw = spec.resolve_kwargs({"num_hidden_layers": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        l0, l1 = spec.fused(64, 0, kw), spec.fused(64, 1, kw)
    assert l0._keep_own_init and l1._keep_own_init
    assert l0._v_first_bus is l1._v_first_bus
    assert not hasattr(l0, "v_lora") and hasattr(l1, "v_lora")
    assert (l0.o_proj.weight == 0).all()  # the paper's init: zero output projection
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = spec.fused(64, 0, kw)  # a new model starts a new side channel
    assert other._v_first_bus is not l0._v_first_bus
    if not INTERP:
        pytest.skip("forward needs Triton's CPU interpreter")
    torch.manual_seed(0)
    x = torch.randn(2, 20, 64)
    with interpret.fixes(), torch.no_grad():
        for layer in (l0, l1):
            torch.nn.init.normal_(layer.o_proj.weight, 0, 0.2)
        torch.nn.init.normal_(l1.v_lora.lora[2].bias, 0, 1)
        y0 = l0.eval()(x)[0]
        y1 = l1.eval()(y0 + x)[0]
        l0._v_first_bus.v = None  # no layer-0 values: fla's model would pass zeros
        y1_zero = l1(y0 + x)[0]
    assert torch.isfinite(y0).all() and torch.isfinite(y1).all()
    assert not torch.allclose(y1, y1_zero)  # layer 1 really mixes in layer 0's values


def test_rwkv7_depth_is_clamped_for_deep_stacks():
    pytest.importorskip("fla")
    spec = get_mixer("rwkv7")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = spec.fused(64, 30, spec.resolve_kwargs({}))  # layer 30 of a stack deeper than the default 24
    assert m.num_hidden_layers == 31 and math.isfinite(float(m.x_r.sum()))
