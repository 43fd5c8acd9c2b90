"""Block(cast_input=True): under autocast the mixer gets its input once in the autocast dtype; the
forward is unchanged for a mixer whose input only feeds nn.Linear layers (CPU autocast, bf16)."""
import copy

import pytest
import torch
import torch.nn as nn

from grid.models import build_model
from grid.models.config import ModelConfig
from grid.models.registry import get_mixer, mixer_names
from grid.models.stack import Block


class LinearsOnly(nn.Module):
    """A stand-in for fla's GLA layer: the input feeds three projections and nothing else."""

    def __init__(self, d):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.dtype)
        return self.q(x) * torch.sigmoid(self.k(x)) + self.v(x)


def _pair(d=16):
    torch.manual_seed(0)
    plain = Block(d, LinearsOnly(d), None, 1e-6, "gla", "fused", cast_input=False)
    cast = copy.deepcopy(plain)
    cast.cast_input = True
    return plain, cast


def test_the_mixer_sees_the_autocast_dtype_only_under_autocast():
    _, cast = _pair()
    x = torch.randn(2, 5, 16)
    cast(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast(x)
    assert cast.mixer.seen == [torch.float32, torch.bfloat16]


def test_same_forward_and_nearly_the_same_gradients_under_autocast():
    plain, cast = _pair()
    x = torch.randn(4, 7, 16)
    outs, grads = [], []
    for block in (plain, cast):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(xi)
        out.float().square().sum().backward()
        outs.append(out.detach())
        grads.append(xi.grad)
    assert plain.mixer.seen == [torch.float32] and cast.mixer.seen == [torch.bfloat16]
    assert torch.equal(outs[0], outs[1])  # each projection cast the same fp32 values to bf16 before
    # the input gradient: three bf16 terms summed in bf16 before the cast back, not in fp32 after it
    torch.testing.assert_close(grads[1], grads[0], rtol=2e-2, atol=2e-2)


def test_only_fused_layers_of_mixers_that_declare_it_cast():
    assert get_mixer("gla").fused_input_feeds_linears_only
    assert not get_mixer("rwkv6").fused_input_feeds_linears_only  # token shift works on the input itself
    model = build_model(ModelConfig(vocab_size=32, d_model=32, n_layers=2, mixer="gla", backend="reference",
                                    context=16))
    assert not any(b.cast_input for b in model.layers)  # the reference backend is compiled whole instead


DECLARED = sorted(n for n in mixer_names() if get_mixer(n).fused_input_feeds_linears_only)


def test_declared_layers_have_only_linear_input_projections():
    """The declaration is read from fla's sources; this catches an fla release that adds, e.g., a
    convolution or a token shift on the input: every *_proj child is nn.Linear (or a low-rank pair)."""
    assert "gla" in DECLARED and "rwkv6" not in DECLARED  # rwkv's token shift works on the input itself
    for name in DECLARED:
        spec = get_mixer(name)
        layer = spec.fused(64, 0, dict(spec.default_kwargs))  # fla's layers construct on the CPU
        projs = {n: m for n, m in layer.named_children() if n.endswith("_proj")}
        assert projs, name
        for n, m in projs.items():
            parts = list(m.children()) if isinstance(m, nn.Sequential) else [m]
            assert all(isinstance(x, nn.Linear) for x in parts), (name, n, m)
        # short convs act on a projection's output (q_conv1d on q_proj's, w_conv1d on w_proj's), not the input
        convs = [n for n, m in layer.named_children() if "conv" in type(m).__name__.lower()
                 and f"{n.split('_')[0]}_proj" not in projs]
        assert not convs, (name, convs)


@pytest.mark.gpu
@pytest.mark.parametrize("mixer", DECLARED)
def test_cast_input_keeps_the_fused_forward_on_the_gpu(mixer):
    """Same bf16 forward with and without the cast (fla's kernels; exact unless the plain forward itself
    varies between two calls), gradients within bf16 rounding."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.manual_seed(0)
    try:
        model = build_model(ModelConfig(vocab_size=32, d_model=64, n_layers=2, mixer=mixer, backend="fused",
                                        context=128)).cuda()
    except Exception as exc:  # noqa: BLE001 - e.g. fla refusing gated kernels on this triton
        pytest.skip(f"{mixer}: fused backend not usable here: {exc}")
    assert all(b.cast_input for b in model.layers)
    x = torch.randint(0, 32, (2, 128), device="cuda")

    def run(cast: bool):
        for b in model.layers:
            b.cast_input = cast
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
        out.float().square().mean().backward()
        return out.detach().float(), model.embed.weight.grad.detach().clone()

    try:
        (plain, g_plain), (again, _), (cast, g_cast) = run(False), run(False), run(True)
    except RuntimeError as exc:
        if "triton" in str(exc).lower():
            pytest.skip(f"{mixer}: {exc}")
        raise
    noise = (plain - again).abs().max().item()
    assert (cast - plain).abs().max().item() <= 2 * noise, (mixer, noise)
    torch.testing.assert_close(g_cast, g_plain, rtol=5e-2, atol=5e-2 * g_plain.abs().max().item())
