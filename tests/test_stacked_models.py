"""Member-stacked models (grid/models/stacked.py): every STACKABLE mixer, member by member against the
solo model (forward and gradients bit for bit on CPU), keep(), and the refusals."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.mad.backbones import build_backbone, mad_model_config
from grid.models.stacked import FLA_TWINS, STACKABLE, NotStackable, stack_model, stackable

# tiny MAD-shaped models (width 32) of each stackable mixer; deltanet and gated_deltanet carry short
# convolutions, gated_deltanet direct parameters (A_log, dt_bias), attention a window shorter than T
TINY_KWARGS = {
    "attention": {"num_heads": 2, "window_size": 5},
    "gla": {"num_heads": 1, "expand_k": 0.5, "expand_v": 1, "use_short_conv": True},
    "deltanet": {"num_heads": 1},
    "gated_deltanet": {"num_heads": 1, "head_dim": 32},
    "retnet": {"num_heads": 1},
    "hgrn": {},
    "hgrn2": {"expand_ratio": 16},
}
V, T, B, M = 16, 12, 3, 3


def tiny(mixer: str, task: str = "CR", protocol: str = "madlab"):
    cfg = mad_model_config(mixer, TINY_KWARGS[mixer], V, T, backend="reference", d_model=32)
    torch.manual_seed(0)
    return build_backbone(cfg, task, T, protocol)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def perturbed_stack(solo, m=M):
    stacked = stack_model(solo, m)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # members must differ, or a mix-up between them could not show
        for p in stacked.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return stacked


def test_the_tested_list_is_the_stackable_list():
    assert set(TINY_KWARGS) == set(STACKABLE)
    assert set(FLA_TWINS) <= set(STACKABLE)


@pytest.mark.parametrize("task", ["CR", "C"])  # the LM backbone and the AutoEncoder
@pytest.mark.parametrize("mixer", STACKABLE)
def test_members_compute_exactly_what_their_solo_models_compute(mixer, task):
    solo = tiny(mixer, task)
    start = {k: v.clone() for k, v in solo.state_dict().items()}
    stacked = stack_model(solo, M)
    for i in range(M):  # every member starts as the solo model is
        assert all(torch.equal(v, start[k]) for k, v in stacked.member_state_dict(i).items())
    stacked = perturbed_stack(solo)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, V, (B, T), generator=g)
    y = torch.randint(0, V, (B, T), generator=g)
    out = stacked(x)
    assert out.shape == (M, B, T, V)
    sum(F.cross_entropy(out[i].reshape(-1, V), y.reshape(-1)) for i in range(M)).backward()
    grads = dict(stacked.model.named_parameters())
    for i in range(M):
        solo.load_state_dict(stacked.member_state_dict(i))
        solo.zero_grad()
        ref = solo(x)
        F.cross_entropy(ref.reshape(-1, V), y.reshape(-1)).backward()
        assert torch.equal(out[i], ref), f"member {i}: forward differs"
        for name, p in solo.named_parameters():
            assert torch.equal(grads[name].grad[i], p.grad), f"member {i}: gradient of {name} differs"


def test_keep_drops_members_and_reorders():
    solo = tiny("gated_deltanet")
    stacked = perturbed_stack(solo)
    before = [stacked.member_state_dict(i) for i in range(M)]
    x = torch.randint(0, V, (B, T))
    out = stacked(x)
    stacked.keep([2, 0])
    assert stacked.count == 2
    for new, old in ((0, 2), (1, 0)):
        assert all(torch.equal(v, before[old][k]) for k, v in stacked.member_state_dict(new).items())
    again = stacked(x)
    assert torch.equal(again[0], out[2]) and torch.equal(again[1], out[0])
    assert all(p.grad is None and p.shape[0] == 2 for p in stacked.parameters())


@pytest.mark.parametrize("mixer", ["deltanet", "gated_deltanet"])  # short convs, one-output linears
def test_one_kernel_paths_of_gpus_compute_the_same_values(mixer, monkeypatch):
    # all members' channels in one conv, one bmm for a one-output linear: what a GPU runs; forced on
    # CPU, the same values and gradients as the solo models up to rounding
    import grid.models.stacked as st

    monkeypatch.setattr(st, "EXACT_ON_CPU", False)
    solo = tiny(mixer)
    stacked = perturbed_stack(solo)
    x = torch.randint(0, V, (B, T))
    out = stacked(x)
    out.square().mean().mul(M).backward()
    grads = dict(stacked.model.named_parameters())
    for i in range(M):
        solo.load_state_dict(stacked.member_state_dict(i))
        solo.zero_grad()
        ref = solo(x)
        ref.square().mean().backward()
        assert rel(out[i], ref) < 1e-6
        for name, p in solo.named_parameters():
            assert rel(grads[name].grad[i], p.grad) < 1e-5, name


def test_refusals_name_the_reason():
    assert stackable("gla", "fused") and stackable("deltanet", "fused") and stackable("attention", "fused")
    assert stackable("retnet", "reference") and not stackable("retnet", "fused")  # fla's own layer, no twin
    assert not stackable("lstm", "reference")
    cfg = mad_model_config("lstm", {}, V, T, backend="reference", d_model=32)
    with pytest.raises(NotStackable, match="'lstm'.*not stackable"):
        stack_model(build_backbone(cfg, "CR", T), 2)

    class Foreign(nn.Module):  # a third-party module with a parameter that its own code uses directly
        def __init__(self):
            super().__init__()
            self.act = nn.PReLU()

        def forward(self, x):
            return self.act(x)

    with pytest.raises(NotStackable, match="PReLU"):
        stack_model(Foreign(), 2)
    tied = nn.Sequential(nn.Embedding(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    with pytest.raises(NotStackable, match="tied"):
        stack_model(tied, 2)


def test_fla_twin_kernels_compute_the_reference_recurrences():
    # the fla kernels the stacked deltanet / gated_deltanet twins run on a GPU, here through Triton's CPU
    # interpreter in fp32: fused-recurrent (T <= 64) for both, chunked for gated_deltanet with gradients on
    from grid.check import interpret

    if not interpret.active():
        pytest.skip("needs Triton's CPU interpreter (CPU-only run)")
    pytest.importorskip("fla.ops.gated_delta_rule")
    from grid.models.mixers._common import l2norm
    from grid.models.mixers.deltanet import delta_rule_chunked, fla_delta_rule
    from grid.models.mixers.gated_deltanet import fla_gated_delta_rule

    g = torch.Generator().manual_seed(0)
    q, k = (l2norm(torch.randn(2, 16, 1, 32, generator=g)) for _ in range(2))
    v = torch.randn(2, 16, 1, 32, generator=g)
    beta, decay = torch.rand(2, 16, 1, generator=g), -torch.rand(2, 16, 1, generator=g) * 0.2
    with interpret.fixes():
        assert rel(fla_delta_rule(q, k, v, beta), delta_rule_chunked(q, k, v, beta)) < 1e-5
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                out = fla_gated_delta_rule(q, k, v, beta, decay, scale=32 ** -0.5)
            assert rel(out.detach(), delta_rule_chunked(q, k, v, beta, decay, scale=32 ** -0.5)) < 1e-5
