"""The `madlab` MAD protocol: init rules, reference twins that start like fla's layers, trial keys and
tables per protocol, the MAD layer settings checked against lin-attn-bench's adapters (docs/mad.md)."""
from __future__ import annotations

import argparse
import math
import warnings

import pandas as pd
import pytest
import torch
import torch.nn as nn

import evals.mad.backbones as backbones
from evals.mad.arch import arch_entry, arch_model_config, arch_names
from evals.mad.protocols import PROTOCOLS, get_protocol
from evals.mad.scoring import by_protocol, mad_table, protocol_label
from grid.models.registry import all_mixers, get_mixer


def _linears(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def test_madlab_lm_backbone_keeps_pytorch_default_linear_init():
    """mad-lab's LanguageModel re-initialises only biases (zero) and embeddings (N(0, 0.02)): every Linear
    weight keeps PyTorch's kaiming-uniform default, std = 1 / sqrt(3 fan_in), mixers' layers included."""
    torch.manual_seed(0)
    cfg = arch_model_config("gla", vocab_size=256, seq_len=32, backend="reference")
    model = backbones.build_backbone(cfg, "M", 32, "madlab")
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)
    checked = 0
    for name, m in _linears(model):
        fan_in = m.weight.shape[1]
        if m.weight.numel() >= 4096:  # enough elements for a 5 % estimate of the spread
            assert m.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.06), name
            assert m.weight.abs().max().item() <= 1 / math.sqrt(fan_in) + 1e-7, name  # uniform(-b, b)
            checked += 1
        if m.bias is not None and not getattr(m.bias, "_no_reinit", False):
            assert torch.count_nonzero(m.bias) == 0, name
    assert checked >= 10 and model.lm_head.bias is not None and torch.count_nonzero(model.lm_head.bias) == 0
    mixer_proj = model.layers[0].mixer.q_proj.weight
    assert mixer_proj.std().item() > 0.04  # 1/sqrt(384) = 0.051, far from the project's 0.02


def test_cosine_protocol_keeps_the_project_init():
    torch.manual_seed(0)
    cfg = arch_model_config("gla", vocab_size=256, seq_len=32, backend="reference")
    model = backbones.build_backbone(cfg, "M", 32, "cosine")
    assert model.layers[0].mixer.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.layers[0].ffn.up_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_madlab_autoencoder_init_is_normal_002_everywhere():
    """mad-lab's AutoEncoder applies N(0, 0.02) to every Linear and Embedding weight, encoder mixers included,
    and zeroes every Linear bias."""
    torch.manual_seed(0)
    cfg = arch_model_config("deltanet", vocab_size=64, seq_len=64, backend="reference")
    ae = backbones.build_backbone(cfg, "C", 64, "madlab")
    for name, m in _linears(ae):
        if m.weight.numel() >= 4096:
            assert m.weight.std().item() == pytest.approx(0.02, rel=0.06), name
        if m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0, name
    assert ae.encoder.embed.weight.std().item() == pytest.approx(0.02, rel=0.1)
    convs = [m for m in ae.modules() if isinstance(m, nn.Conv1d)]
    assert convs and all(c.weight.std().item() > 0.1 for c in convs)  # kept: kaiming default, fan_in 4


def _pair(spec, kwargs, d=128):
    torch.manual_seed(0)
    fused = spec.fused(d, 0, kwargs)
    torch.manual_seed(0)
    ref = spec.reference(d, 0, kwargs)
    return fused, ref


MAD_KWARGS = {arch_entry(a)["mixer"]: arch_entry(a)["mixer_kwargs"] for a in arch_names()}


@pytest.mark.parametrize("spec", [s for s in all_mixers() if s.fused is not None and s.reference is not None],
                         ids=lambda s: s.name)
def test_reference_twins_start_like_the_fused_layers(spec):
    """Under madlab the layers keep their constructor's init, so a CPU (reference) run and a GPU (fused)
    run of one setting are comparable only if both constructors draw the same tensors: same seed, same
    parameters, bit for bit (fla's layers construct on CPU), at the registry defaults and the MAD settings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kw in ({}, MAD_KWARGS.get(spec.name, {})):
            fused, ref = _pair(spec, spec.resolve_kwargs(kw))
            fp, rp = dict(fused.named_parameters()), dict(ref.named_parameters())
            assert set(fp) == set(rp)
            for name in fp:
                assert torch.equal(fp[name].float(), rp[name].float()), f"{spec.name}.{name} differs ({kw})"


def test_mad_layer_settings_follow_lin_attn_bench_adapters():
    """The differences found in HassanJbara/lin-attn-bench@mad evals/mad/adapters (docs/mad.md lists each)."""
    gsa = get_mixer("gsa").resolve_kwargs(arch_entry("gsa")["mixer_kwargs"])
    assert gsa["num_slots"] is None and gsa["num_heads"] == 1 and gsa["expand_k"] == 1
    # fla's GatedSlotAttention: num_slots None -> head_k_dim = 128 slots
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = get_mixer("gsa").fused(128, 0, gsa)
    assert layer.num_slots == 128 and layer.f_proj.out_features == 128
    for arch in ("gla", "deltanet", "gated_deltanet", "gated_deltaproduct", "mesa_net"):
        assert arch_entry(arch)["mixer_kwargs"]["norm_eps"] == 1e-5, arch  # fla's layers / the adapters
    assert arch_entry("rwkv7")["mixer_kwargs"]["num_hidden_layers"] == 2
    assert arch_entry("transformer")["mixer_kwargs"].get("window_size") is None  # full attention
    assert arch_entry("transformer-window-128")["mixer_kwargs"]["window_size"] == 128


# --------------------------------------------------------------------------------- keys and tables

def _trial_keys(tmp_path, protocol):
    from evals.mad.run import build_parser, make_trials
    from evals.mad.settings import all_settings

    args = build_parser("transformer").parse_args(["--protocol", protocol, "--data-path", str(tmp_path)])
    args.model_id, args.gpus_found = "transformer", 0
    return make_trials(args, all_settings(["M"], which="baseline"))


def test_protocols_get_different_trial_keys(tmp_path):
    madlab, cosine = _trial_keys(tmp_path, "madlab"), _trial_keys(tmp_path, "cosine")
    assert len(madlab) == len(cosine) == 6
    assert not {t.trial_key for t in madlab} & {t.trial_key for t in cosine}
    assert all(t.columns["protocol"] == "madlab" for t in madlab)
    assert all(t.config["protocol"] == "cosine" for t in cosine)
    assert all(t.hashed()["protocol"] == "cosine" for t in cosine)  # every protocol is hashed (grid/keys.py)


def _rows(protocol, acc, model_id="gla", epochs=200, mte=0):
    out = []
    for lr in (1e-4, 5e-4, 1e-3):
        for wd in (0.0, 0.1):
            row = dict(model_id=model_id, task="M", setting="baseline", lr=lr, wd=wd, status="ok", acc=acc,
                       epochs=epochs, max_train_examples=mte)
            if protocol is not None:
                row["protocol"] = protocol
            out.append(row)
    return out


def test_tables_never_mix_protocols_and_say_which_they_show():
    df = pd.DataFrame(_rows("madlab", 0.7) + _rows("cosine", 0.9) + _rows(None, 0.8) + _rows("madlab", 0.1, mte=64))
    with pytest.raises(ValueError, match="mixes protocol"):
        mad_table(df)
    parts = by_protocol(df)
    labels = [protocol_label(k) for k, _ in parts]
    assert labels == ["protocol madlab, 200 epochs", "protocol cosine, 200 epochs",
                      "protocol madlab, 200 epochs, smoke run on 64 train examples"]
    assert [len(p) for _, p in parts] == [6, 12, 6]  # rows without the column are cosine rows
    assert [mad_table(p).loc["gla", "M"] for _, p in parts] == [0.7, 0.9, 0.1]


def test_leaderboard_prints_one_table_per_protocol(tmp_path, capsys):
    from evals.mad.__main__ import main
    from grid.results.store import ResultsStore

    store = ResultsStore(str(tmp_path / "store"))
    rows = _rows("madlab", 0.7) + _rows("cosine", 0.9)
    for i, r in enumerate(rows):
        store.write_row({**r, "trial_key": f"k{i}", "config_json": "{}"}, suite="mad", grid="mad")
    assert main(["leaderboard", "--results", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert out.index("protocol madlab") < out.index("protocol cosine") and out.count("| gla |") == 2
    assert main(["leaderboard", "--results", str(tmp_path / "store"), "--protocol", "cosine"]) == 0
    out = capsys.readouterr().out
    assert "protocol madlab" not in out and "| gla | - | - | - | 0.900 |" in out


def test_protocol_names_are_validated():
    assert set(PROTOCOLS) == {"madlab", "cosine"} and get_protocol("madlab").schedule == "constant"
    from grid.models import ConfigError

    with pytest.raises(ConfigError, match="madlab"):
        get_protocol("mad-lab")
    from evals.mad.run import build_parser

    with pytest.raises(SystemExit):
        build_parser("gla").parse_args(["--protocol", "linear"])
    assert isinstance(build_parser("gla").parse_args([]), argparse.Namespace)
    assert build_parser("gla").parse_args([]).protocol == "madlab"
