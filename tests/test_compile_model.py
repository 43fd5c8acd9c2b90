"""grid.models.compile: what is compiled and what stays eager (CPU: nothing is executed compiled here)."""
import pytest
import torch

from grid.models import build_model
from grid.models.compile import RECOMPILE_LIMIT, compile_model
from grid.models.config import ModelConfig


def _model(mixer="gla", **kw):
    return build_model(ModelConfig(vocab_size=32, d_model=32, n_layers=2, mixer=mixer, backend="reference",
                                   context=16, **kw))


def _disabled(fn) -> bool:
    return bool(getattr(fn, "_torchdynamo_disable", False))


@pytest.mark.parametrize("mixer,third_party", [("retnet", True), ("gla", False)])
def test_third_party_fused_mixers_stay_eager_ours_are_compiled(mixer, third_party):
    """retnet's fused layer is fla's; gla's is ours around fla's kernels (GLAFla), like attention."""
    model = _model(mixer, hybrid="1:1")
    kinds = [b.kind for b in model.layers]
    assert set(kinds) == {mixer, "attention"}
    for b in model.layers:  # pretend this machine built the fused backends
        b.backend = "fused"
    keys = list(model.state_dict())
    eager = compile_model(model)
    assert eager == [f"layers.{i}.mixer" for i, k in enumerate(kinds) if k == mixer and third_party]
    for b in model.layers:
        assert _disabled(b.mixer.forward) == (b.kind == mixer and third_party)
    assert list(model.state_dict()) == keys  # checkpoints unchanged
    assert torch._dynamo.config.recompile_limit >= RECOMPILE_LIMIT


def test_reference_backends_are_compiled_whole():
    model = _model()
    assert compile_model(model) == []
    assert not any(_disabled(b.mixer.forward) for b in model.layers)
