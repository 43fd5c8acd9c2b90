"""Registry-wide behaviour of the model zoo (every entry that can run on this machine)."""
from __future__ import annotations

import pytest
import torch

from grid.models import BackendUnavailable, ModelConfig, build_model
from grid.models.accounting import account, n_params
from grid.models.hybrid import layout
from grid.models.registry import all_mixers, get_mixer, reference_status
from grid.models.stack import build_for_counting

D, V, T = 64, 37, 24
REF_MIXERS = [s.name for s in all_mixers() if reference_status(s)[0]]


def tiny(mixer: str, **kw) -> ModelConfig:
    base = dict(vocab_size=V, d_model=D, n_layers=2, mixer=mixer, backend="reference", context=T)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("mixer", REF_MIXERS)
def test_reference_builds_forward_backward_finite(mixer):
    torch.manual_seed(0)
    model = build_model(tiny(mixer))
    ids = torch.randint(0, V, (2, T))
    logits = model(ids)
    assert logits.shape == (2, T, V)
    logits.float().logsumexp(-1).mean().backward()
    assert torch.isfinite(logits).all()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("mixer", REF_MIXERS)
def test_causality(mixer):
    """Changing tokens after position t changes no output at or before t."""
    torch.manual_seed(0)
    model = build_model(tiny(mixer)).eval()
    ids = torch.randint(0, V, (1, T))
    t = T // 2
    ids2 = ids.clone()
    ids2[:, t + 1:] = (ids2[:, t + 1:] + 1 + torch.randint(0, V - 1, (1, T - t - 1))) % V
    with torch.no_grad():
        a, b = model(ids), model(ids2)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-5)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])  # the perturbation is visible later


@pytest.mark.parametrize("mixer", REF_MIXERS)
def test_accounting_equals_real_parameter_count(mixer):
    model = build_model(tiny(mixer, hybrid="pure"))
    acc = account(model)
    assert acc.total_params == n_params(model)
    assert acc.non_embedding_params == n_params(model) - model.embed.weight.numel() - model.lm_head.weight.numel()
    assert acc.mixer_params + acc.ffn_params + acc.norm_params == acc.non_embedding_params
    assert acc.fwd_flops_per_token > 2 * acc.non_embedding_params
    # the meta-device counting model agrees with the real one
    assert account(build_for_counting(tiny(mixer))).total_params == acc.total_params


def test_tied_embeddings_counted_once():
    model = build_model(tiny("attention", tie_embeddings=True))
    acc = account(model)
    assert acc.head_params == 0
    assert acc.total_params == n_params(model)  # parameters() yields the shared tensor once


@pytest.mark.parametrize("n_layers,hybrid,expected", [
    (8, "3:1", (3, 7)),
    (24, "3:1", (3, 7, 11, 15, 19, 23)),
    (24, "6:1", (6, 13, 20)),
    (24, "12:1", (12,)),
    (10, "3:1", (3, 7)),  # 10 = 2*(3+1) + 2 leftover mixer layers on top
    (6, "pure", ()),
    (6, [0, 5], (0, 5)),
])
def test_hybrid_placement(n_layers, hybrid, expected):
    lay = layout(hybrid, n_layers)
    assert lay.attention_layers == expected
    assert len(lay.mixer_layers) + len(expected) == n_layers


def test_hybrid_effective_ratio_recorded():
    lay = layout("6:1", 24)
    assert lay.nominal == "6:1" and lay.effective == "7:1"
    assert layout("3:1", 24).effective == "3:1"


@pytest.mark.parametrize("hybrid", ["24:1", "0:1", "3:2", "three", [24], [1, 1]])
def test_bad_hybrid_rejected_with_field_and_allowed(hybrid):
    with pytest.raises(ValueError, match="hybrid"):
        tiny(next((m for m in REF_MIXERS if m != "attention"), "attention"), n_layers=24, hybrid=hybrid)


def test_hybrid_model_places_attention_layers():
    mixer = next(m for m in REF_MIXERS if m != "attention") if len(REF_MIXERS) > 1 else None
    if mixer is None:
        pytest.skip("no non-attention reference mixer registered")
    model = build_model(tiny(mixer, n_layers=4, hybrid="1:1"))
    assert [b.kind for b in model.layers] == [mixer, "attention", mixer, "attention"]
    acc = account(model)
    assert acc.attention_layers == [1, 3] and acc.effective_ratio == "1:1"
    assert set(acc.per_mixer_params) == {mixer, "attention"}


def test_unknown_mixer_error_lists_allowed():
    with pytest.raises(ValueError, match=r"mixer='nope' is not allowed; allowed: .*attention"):
        tiny("nope")


def test_unknown_kwarg_error_names_field_and_allowed():
    with pytest.raises(ValueError, match=r"mixer_kwargs\.bogus=1 is not allowed; allowed: .*num_heads"):
        tiny("attention", mixer_kwargs={"bogus": 1})


def test_unknown_config_field_forbidden():
    with pytest.raises(ValueError, match="extra"):
        ModelConfig(vocab_size=V, d_model=D, n_layers=2, mixer="attention", colour="red")


def test_attention_cannot_be_hybridised():
    with pytest.raises(ValueError, match="allowed: pure"):
        tiny("attention", n_layers=4, hybrid="1:1")


def test_fused_only_mixer_on_cpu_raises_clear_error():
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    fused_only = [s.name for s in all_mixers() if s.reference is None]
    if not fused_only:
        pytest.skip("no fused-only mixer registered")
    with pytest.raises(BackendUnavailable, match="cannot run here"):
        build_model(tiny(fused_only[0], backend="auto"))


def test_moe_ffn_counts_active_params():
    model = build_model(tiny("attention", ffn={"kind": "moe", "n_experts": 4, "top_k": 2, "intermediate_size": 32}))
    ids = torch.randint(0, V, (2, T))
    model(ids).sum().backward()
    assert float(model.aux_loss.detach()) > 0
    acc = account(model)
    row = acc.layers[0]
    assert row.ffn_active_params < row.ffn_params


def test_attention_window_and_gqa_match_math_backend():
    torch.manual_seed(0)
    kw = dict(num_heads=4, num_kv_heads=2, window_size=5)
    ref = get_mixer("attention").reference(D, 0, get_mixer("attention").resolve_kwargs(kw))
    fused = get_mixer("attention").fused(D, 0, get_mixer("attention").resolve_kwargs(kw))
    fused.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 17, D)
    torch.testing.assert_close(fused(x), ref(x), rtol=1e-4, atol=1e-5)


def test_rope_table_matches_computed_angles_and_stays_out_of_checkpoints():
    from grid.models.mixers._common import rope_table, rotary
    from grid.models.mixers.attention import Attention

    x = torch.randn(2, 50, 3, 16)
    table = rope_table(40, 16)  # shorter than the sequence: computed on the fly
    assert torch.equal(rotary(x, table=table), rotary(x))
    short = rope_table(64, 16)
    assert torch.equal(rotary(x, table=short), rotary(x)) and torch.equal(rotary(x, offset=9, table=short),
                                                                            rotary(x, offset=9))
    attn = Attention(32, num_heads=2)
    assert {"rope_cos", "rope_sin"} <= {n for n, _ in attn.named_buffers()}
    assert not any("rope" in k for k in attn.state_dict())  # fla-compatible checkpoints
    assert not any(k.startswith("rope") for k, _ in attn.named_parameters())
