import pytest

from grid.models import ModelConfig
from grid.models.accounting import account
from grid.models.sizing import SizingError, size_to_target
from grid.models.stack import build_for_counting


def _n(cfg):
    return account(build_for_counting(cfg)).non_embedding_params


def test_sizes_gla_to_attention_within_2_percent():
    attn = ModelConfig(vocab_size=100, d_model=256, n_layers=4, mixer="attention", mixer_kwargs={"num_heads": 4})
    target = _n(attn)
    base = ModelConfig(vocab_size=100, d_model=256, n_layers=4, mixer="gla", mixer_kwargs={"expand_v": 2})
    res = size_to_target(base, target)
    assert abs(res.rel_error) <= 0.02
    assert _n(res.config) == res.achieved
    assert "gla" in res.report() and "target" in res.report()


def test_defaults_kept_when_already_within_tolerance():
    base = ModelConfig(vocab_size=100, d_model=256, n_layers=4, mixer="gla")
    res = size_to_target(base, _n(base))
    assert res.knobs == {} and res.rel_error == 0


def test_unreachable_target_refused_with_closest():
    base = ModelConfig(vocab_size=100, d_model=256, n_layers=4, mixer="gla")
    with pytest.raises(SizingError, match="cannot reach .* closest is"):
        size_to_target(base, 50 * _n(base))


def test_unknown_knob_refused():
    base = ModelConfig(vocab_size=100, d_model=256, n_layers=4, mixer="gla")
    with pytest.raises(SizingError, match="not kwargs of mixer 'gla'"):
        size_to_target(base, 10**6, knobs={"colour": (1, 2)})


def test_describe_cli(tmp_path, capsys):
    from grid.models.cli import main

    cfg = tmp_path / "m.yaml"
    cfg.write_text("vocab_size: 100\nd_model: 64\nn_layers: 4\nmixer: gla\nhybrid: '1:1'\n")
    assert main(["describe", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "non_embedding_params" in out and "attention layers [1, 3]" in out
    assert main(["describe", str(tmp_path / "missing.yaml")]) == 2
