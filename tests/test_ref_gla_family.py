"""GLA-family mixers: gla, retnet, hgrn, hgrn2 (reference + fused) and the fused-only gsa, lightnet,
linear_attn, rwkv6.

On a CPU the fla layers run through Triton's interpreter (conftest enables it). Three interpreter
gaps of triton 3.9 break fla kernels there, and `grid.check.interpret.fixes()` patches them for the duration of
each fla call (restored afterwards):
* loop variables of `for i in range(...)` are python ints in the interpreter but tensors when
  compiled, so fla's `i_t.to(tl.int64)` (chunk_h, i.e. every chunk-mode GLA/RetNet/HGRN2 kernel) fails
  with "'int' object has no attribute 'to'": the loop variable is wrapped into a tensor, as compiled;
* a bool mask combined with a scalar bool comes out with int64 data ("mask has unsupported dtype",
  chunk_hgrn): load/store masks are cast back to bool;
* libdevice functions are stubs returning None (LightNet's logaddexp uses libdevice.log1p): log1p is
  mapped to tl.log(1 + x).
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from grid.check import interpret
from grid.models.mixers._common import first
from grid.models.registry import get_mixer

HAS_FLA = importlib.util.find_spec("fla") is not None
CUDA = torch.cuda.is_available()
FLA_RUNS = HAS_FLA and (CUDA or interpret.active())
DEVICE = "cuda" if CUDA else "cpu"
needs_fla = pytest.mark.skipif(not HAS_FLA, reason="flash-linear-attention is not installed")
needs_fla_run = pytest.mark.skipif(not FLA_RUNS, reason="fla kernels need CUDA or the Triton interpreter")

BOTH = ["gla", "retnet", "hgrn", "hgrn2"]
FUSED_ONLY = ["gsa", "lightnet", "linear_attn", "rwkv6"]

# (mixer, kwargs) at d=32: fla-like defaults at T in {20, 70} (fla switches kernels at T=64; 70 is not a
# multiple of any chunk size), then structural variants (GQA, short convs, unfused norm, other gates) at
# T=20 only (the layer code around the kernel is the same for both kernel paths; interpreter time is short)
DEFAULT_CASES = [
    ("gla", dict(num_heads=2)),
    ("retnet", dict(num_heads=2)),
    ("hgrn", dict()),
    ("hgrn2", dict()),
]
VARIANT_CASES = [
    ("gla", dict(num_heads=2, num_kv_heads=1, use_short_conv=True, conv_bias=True, fuse_norm=False,
                 feature_map="relu", clamp_min=-0.05)),
    ("gla", dict(num_heads=2, use_output_gate=False, expand_k=1.0, gate_logit_normalizer=1)),
    ("retnet", dict(num_heads=4, num_kv_heads=2, expand_v=1.0, use_short_conv=True, gate_fn="sigmoid",
                    feature_map="relu")),
    ("hgrn", dict(expand_ratio=1.5, use_short_conv=True, conv_bias=True)),
    ("hgrn2", dict(expand_ratio=8, use_short_conv=True, conv_bias=True)),
]
PARITY_CASES = DEFAULT_CASES + VARIANT_CASES
PARITY_IDS = [f"{m}-{i}" for i, (m, _) in enumerate(PARITY_CASES)]
PARITY_RUNS = [(m, kw, T) for m, kw in DEFAULT_CASES for T in (20, 70)] + [(m, kw, 20) for m, kw in VARIANT_CASES]
PARITY_RUN_IDS = [f"{m}-T{T}-{i}" for i, (m, _, T) in enumerate(PARITY_RUNS)]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

def _build(name: str, backend: str, d: int, kw: dict | None = None, layer_idx: int = 0):
    spec = get_mixer(name)
    kw = spec.resolve_kwargs(kw)
    return (spec.fused if backend == "fused" else spec.reference)(d, layer_idx, kw)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter off its init (norm gains off 1, biases off 0) so parity covers all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g).to(p))


def _errors(module: torch.nn.Module, other: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Relative errors of `other` against `module` on the same input and output weights: the output,
    the input's gradient and every parameter's gradient (fla calls under the interpreter fixes)."""
    x_m, x_o = x.clone().requires_grad_(), x.clone().requires_grad_()
    with interpret.fixes():
        out_m = first(module(x_m))
        w = torch.randn_like(out_m)
        (out_m * w).sum().backward()
        out_o = first(other(x_o))
        (out_o * w).sum().backward()
    errs = {"output": _rel(out_o, out_m), "d_input": _rel(x_o.grad, x_m.grad)}
    params = dict(other.named_parameters())
    for name, p in module.named_parameters():
        errs[f"d_{name}"] = _rel(params[name].grad, p.grad)
    return errs


# --------------------------------------------------------------------------------------------------
# 1. same parameters; 2. same function (forward and all gradients)
# --------------------------------------------------------------------------------------------------

@needs_fla
@pytest.mark.parametrize("name,kw", PARITY_CASES, ids=PARITY_IDS)
def test_state_dict_keys_shapes_and_strict_load_both_ways(name, kw):
    torch.manual_seed(0)
    fused, ref = _build(name, "fused", 32, kw), _build(name, "reference", 32, kw)
    sf, sr = fused.state_dict(), ref.state_dict()
    assert sorted(sf) == sorted(sr)
    assert {k: tuple(v.shape) for k, v in sf.items()} == {k: tuple(v.shape) for k, v in sr.items()}
    _perturb(fused)
    ref.load_state_dict(fused.state_dict(), strict=True)
    fused.load_state_dict(ref.state_dict(), strict=True)
    for k, v in fused.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k


@needs_fla_run
@pytest.mark.parametrize("name,kw,T", PARITY_RUNS, ids=PARITY_RUN_IDS)
def test_parity_with_fla_forward_and_gradients(name, kw, T):
    torch.manual_seed(0)
    fused = _build(name, "fused", 32, kw).to(DEVICE)
    _perturb(fused)
    ref = _build(name, "reference", 32, kw).to(DEVICE)
    ref.load_state_dict(fused.state_dict(), strict=True)
    errs = _errors(fused, ref, torch.randn(2, T, 32, device=DEVICE))
    worst = max(errs, key=errs.get)
    tol = 5e-3 if CUDA else 1e-3  # fla's Triton matmuls use TF32 on GPUs even for fp32 inputs
    assert errs[worst] < tol, f"{worst}: {errs[worst]:.2e} (all: {errs})"


GLA_LAYER_RUNS = [(kw, T) for m, kw in DEFAULT_CASES if m == "gla" for T in (20, 70)] + [
    (kw, 20) for m, kw in VARIANT_CASES if m == "gla"]


@needs_fla_run
@pytest.mark.parametrize("kw,T", GLA_LAYER_RUNS, ids=[f"T{T}-{i}" for i, (_, T) in enumerate(GLA_LAYER_RUNS)])
def test_gla_fused_layer_computes_what_flas_layer_computes(kw, T):
    """gla's fused backend is our GLAFla around fla's kernels; it must be fla's GatedLinearAttention
    (strict state-dict load, same outputs and gradients), or the parity above would not cover fla."""
    from fla.layers import GatedLinearAttention  # noqa: PLC0415

    from grid.models.mixers.gla import GLAFla, _resolve  # noqa: PLC0415

    torch.manual_seed(0)
    ours = _build("gla", "fused", 32, kw).to(DEVICE)
    assert isinstance(ours, GLAFla)
    _perturb(ours)
    theirs = GatedLinearAttention(mode="chunk", hidden_size=32, layer_idx=0,
                                  **_resolve(32, get_mixer("gla").resolve_kwargs(kw))).to(DEVICE)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    errs = _errors(ours, theirs, torch.randn(2, T, 32, device=DEVICE))
    worst = max(errs, key=errs.get)
    assert errs[worst] < 1e-4, f"{worst}: {errs[worst]:.2e} (all: {errs})"


@needs_fla_run
@pytest.mark.parametrize("kw", [dict(num_heads=2), dict(num_heads=2, use_output_gate=False, expand_k=1.0)])
def test_gla_fused_layer_traced_path_computes_the_eager_one(kw, monkeypatch):
    """What torch.compile traces of GLAFla (plain-PyTorch norm-gate instead of fla's kernel, and any
    other compile-only path) computes what its eager path computes; run eagerly with dynamo's
    `is_compiling` forced on, so no compiler is needed here."""
    torch.manual_seed(0)
    layer = _build("gla", "fused", 32, kw).to(DEVICE)
    _perturb(layer)
    x = torch.randn(2, 70, 32, device=DEVICE)
    outs, grads = [], []
    for traced in (False, True):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda traced=traced: traced)
        layer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        with interpret.fixes():
            out = first(layer(xi))
            (out * torch.ones_like(out).cumsum(1)).sum().backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
    assert _rel(outs[1], outs[0]) < 1e-5
    for a, b in zip(grads[1], grads[0]):
        assert _rel(a, b) < 1e-5


@needs_fla_run
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gla_chunk_custom_ops_are_flas_chunk_gla_exactly(dtype):
    """GLAFla's chunked kernels run as custom ops (gla_ops) so that torch.compile need not break its
    graph; they make fla's calls, so outputs and every gradient are bit-identical to chunk_gla's."""
    from fla.ops.gla import chunk_gla  # noqa: PLC0415

    from grid.models.mixers.gla_ops import gla_chunk  # noqa: PLC0415

    torch.manual_seed(0)
    B, T, H, K, V = 2, 70, 2, 16, 32
    q, k = (torch.randn(B, T, H, K, device=DEVICE, dtype=dtype) for _ in range(2))
    v = torch.randn(B, T, H, V, device=DEVICE, dtype=dtype)
    g = (F.logsigmoid(torch.randn(B, T, H, K, device=DEVICE)) / 16).to(dtype)
    do = torch.randn(B, T, H, V, device=DEVICE, dtype=dtype)
    results = []
    for fn in (lambda *a: chunk_gla(*a, state_v_first=True)[0], gla_chunk):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
        with interpret.fixes():
            o = fn(*leaves)
            o.backward(do)
        results.append([o.detach()] + [t.grad for t in leaves])
    for name, ours, theirs in zip(("o", "dq", "dk", "dv", "dg"), results[1], results[0]):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), name


@needs_fla_run
def test_gla_chunk_is_one_graph_under_torch_compile():
    """No graph break at the chunked kernels (fla's own chunk_gla is compiler-disabled)."""
    from grid.models.mixers.gla_ops import gla_chunk  # noqa: PLC0415

    def step(q, k, v, g):
        return (gla_chunk(q * 2, k, v, g) + 1).sum()

    q, k, g = (torch.randn(1, 70, 1, 16, device=DEVICE) for _ in range(3))
    with interpret.fixes():  # explain runs the traced graph once
        explained = torch._dynamo.explain(step)(q, k, torch.randn(1, 70, 1, 32, device=DEVICE), g)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


# --------------------------------------------------------------------------------------------------
# the recurrences against fla's plain-torch oracles (run without any Triton kernel)
# --------------------------------------------------------------------------------------------------

@needs_fla
@pytest.mark.parametrize("T", [20, 70])
def test_gla_core_matches_fla_naive_oracle(T):
    from fla.ops.gla.naive import naive_recurrent_gla  # noqa: PLC0415

    from grid.models.mixers.gla import gla_chunked  # noqa: PLC0415

    torch.manual_seed(0)
    q, k = torch.randn(2, T, 3, 8), torch.randn(2, T, 3, 8)
    v = torch.randn(2, T, 3, 6)
    g = F.logsigmoid(3 * torch.randn(2, T, 3, 8))  # strong gates: exp(-cumsum) would overflow a naive chunk form
    want, _ = naive_recurrent_gla(q, k, v, g)
    assert _rel(gla_chunked(q, k, v, g), want) < 1e-5


@needs_fla
@pytest.mark.parametrize("T", [20, 70])
def test_retention_core_matches_fla_naive_oracle(T):
    from fla.ops.retention.naive import naive_retention  # noqa: PLC0415

    from grid.models.mixers.gla import gla_chunked  # noqa: PLC0415
    from grid.models.mixers.retnet import retention_log_decay  # noqa: PLC0415

    torch.manual_seed(0)
    H = 4
    q, k, v = torch.randn(2, T, H, 8), torch.randn(2, T, H, 8), torch.randn(2, T, H, 6)
    g = retention_log_decay(H).view(1, 1, H, 1).expand(2, T, H, 1)
    want = naive_retention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)  # head-first layout
    assert _rel(gla_chunked(q, k, v, g), want) < 1e-5


@needs_fla
@pytest.mark.parametrize("T", [1, 20, 70])
def test_hgrn_scan_matches_fla_naive_oracle(T):
    from fla.ops.hgrn.naive import naive_recurrent_hgrn  # noqa: PLC0415

    from grid.models.mixers.hgrn import linear_scan  # noqa: PLC0415

    torch.manual_seed(0)
    x, g = torch.randn(2, T, 16), F.logsigmoid(2 * torch.randn(2, T, 16))
    want, _ = naive_recurrent_hgrn(x, g)
    assert _rel(linear_scan(g.exp(), x), want) < 1e-5


# --------------------------------------------------------------------------------------------------
# 3. causality and 4. finite forward/backward of the reference, defaults at d=64
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BOTH)
def test_reference_is_causal(name):
    torch.manual_seed(0)
    ref = _build(name, "reference", 64)
    _perturb(ref)
    x = torch.randn(2, 40, 64)
    t = 17
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn(2, 40 - t - 1, 64)
    with torch.no_grad():
        a, b = ref(x), ref(x2)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("name", BOTH)
def test_reference_forward_backward_finite(name):
    torch.manual_seed(0)
    ref = _build(name, "reference", 64)
    x = torch.randn(2, 33, 64, requires_grad=True)
    out = ref(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 33, 64)
    out.square().mean().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    for pname, p in ref.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


# --------------------------------------------------------------------------------------------------
# fused-only entries: the fla layer builds with the defaults at d=64 and runs
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FUSED_ONLY)
def test_fused_only_entry_declares_why(name):
    spec = get_mixer(name)
    assert spec.reference is None and "no reference implementation yet" in spec.reference_unavailable
    assert spec.fused is not None and spec.fused_needs_cuda
    kw = spec.resolve_kwargs({})
    assert spec.state_size(64, kw, 128) > 0 and spec.mix_flops(64, kw, 128) > 0


@needs_fla
@pytest.mark.parametrize("name", FUSED_ONLY)
def test_fused_only_layer_constructs_on_cpu(name):
    torch.manual_seed(0)
    layer = _build(name, "fused", 64)
    assert sum(p.numel() for p in layer.parameters()) > 0
    assert getattr(layer, "_keep_own_init", False) == (name == "rwkv6")


@needs_fla_run
@pytest.mark.parametrize("name", FUSED_ONLY)
def test_fused_only_layer_forward_finite(name):
    """T=70 > 64: the chunk kernels, i.e. the training path (T <= 64 takes fused-recurrent ones)."""
    T = 70
    torch.manual_seed(0)
    layer = _build(name, "fused", 64).to(DEVICE)
    x = torch.randn(1, T, 64, device=DEVICE)
    with torch.no_grad(), interpret.fixes():
        out = first(layer(x))
    assert out.shape == (1, T, 64) and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------
# accounting hooks agree with fla's own state_size() where fla has one
# --------------------------------------------------------------------------------------------------

@needs_fla
@pytest.mark.parametrize("name,kw", [
    ("hgrn", {}), ("hgrn", dict(use_short_conv=True, expand_ratio=2)),
    ("hgrn2", {}), ("hgrn2", dict(num_heads=4, use_short_conv=True)),
    ("lightnet", {}), ("lightnet", dict(expand_ratio=16, use_short_conv=True)),
])
def test_state_size_matches_fla(name, kw):
    """fla's count keeps conv_size inputs per short-conv channel (its cache layout); ours the conv_size - 1
    that the next step needs (the registry's convention), hence one channel-width less per conv."""
    spec = get_mixer(name)
    layer = _build(name, "fused", 64, kw)
    conv_channels = sum(m.weight.shape[0] for m in layer.modules() if type(m).__name__ == "ShortConvolution")
    assert spec.state_size(64, spec.resolve_kwargs(kw), 128) == layer.state_size() - conv_channels
