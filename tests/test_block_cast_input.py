"""Block(cast_input=True): under autocast the mixer gets its input once in the autocast dtype; the
forward is unchanged for a mixer whose input only feeds nn.Linear layers (CPU autocast, bf16)."""
import copy

import pytest
import torch
import torch.nn as nn

from grid.models import build_model
from grid.models.config import ModelConfig
from grid.models.registry import get_mixer
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


@pytest.mark.gpu
def test_fused_gla_blocks_cast_their_input_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    model = build_model(ModelConfig(vocab_size=32, d_model=64, n_layers=2, mixer="gla", backend="fused", context=128))
    assert all(b.cast_input for b in model.layers)
