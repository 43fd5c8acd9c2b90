"""The parity gate (grid/check/gate.py): a fused mixer trains only after it matched its reference here."""
from __future__ import annotations

import json

import pytest
import torch

import grid.check.parity as parity
from evals.mad.protocol import run_mad
from evals.mad.settings import MADSetting
from grid.check.gate import GateDecision, ParityGateError, cache_root, gate_model
from grid.models import ModelConfig

CPU = torch.device("cpu")


def attention_model(backend="auto"):
    return ModelConfig(vocab_size=16, d_model=32, n_layers=2, mixer="attention", mixer_kwargs={"num_heads": 2},
                       backend=backend)


def fake_check(status, calls=None, **errs):
    def check(name, shapes=None, dtypes=("fp32",), device="cuda", kwargs=None, seed=0):
        if calls is not None:
            calls.append((name, tuple(shapes[0]), dtypes[0], device))
        B, T, D = shapes[0]
        return [parity.ParityRow(name, dtypes[0], f"{B}x{T}x{D}", status, detail="fake", **errs)]
    return check


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LINGRID_PARITY_CACHE", str(tmp_path / "parity"))
    return tmp_path / "parity"


def test_real_check_passes_and_is_cached(cache, monkeypatch):
    """attention's fused backend (SDPA) runs on CPU: the real check runs once, then the cache answers."""
    cfg, d = gate_model(attention_model(), seq_len=16, batch=4, device=CPU, precision="bf16", policy="fallback")
    assert d.status == "passed" and cfg.backend == "auto" and "attention fp32 4x16x32" in d.detail
    files = list(cache.rglob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["row"]["status"] == "PASS"
    monkeypatch.setattr(parity, "check_mixer", lambda *a, **k: pytest.fail("the cache should have answered"))
    assert gate_model(attention_model(), 16, 4, CPU, "bf16", "fallback")[1].status == "passed"
    # another shape is another check
    with pytest.raises(pytest.fail.Exception):
        gate_model(attention_model(), 17, 4, CPU, "bf16", "fallback")


def test_failed_check_falls_back_to_reference_with_the_reason(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(parity, "check_mixer", fake_check("FAIL", calls, out_err=1e-3, dx_err=0.53, dw_err=0.6))
    cfg, d = gate_model(attention_model(), 64, 128, CPU, "fp32", "fallback")
    assert cfg.backend == "reference" and d.status == "fallback"
    assert "attention fp32 128x64x32: FAIL" in d.detail and "dx_err=0.53" in d.detail
    assert calls == [("attention", (128, 64, 32), "fp32", "cpu")]  # the trial's own shape (batch capped)
    with pytest.raises(ParityGateError, match="attention fp32 128x64x32: FAIL"):
        gate_model(attention_model(), 64, 128, CPU, "fp32", "stop")


def test_gate_off_not_needed_and_unchecked(cache, monkeypatch):
    monkeypatch.setattr(parity, "check_mixer", fake_check("NO-REFERENCE"))
    assert gate_model(attention_model(), 8, 2, CPU, "fp32", "off")[1] == GateDecision("auto", "off", "parity gate off")
    assert gate_model(attention_model("reference"), 8, 2, CPU, "fp32", "fallback")[1].status == "not-needed"
    cfg, d = gate_model(attention_model(), 8, 2, CPU, "fp32", "fallback")
    assert d.status == "unchecked" and cfg.backend == "auto" and "smoke test only" in d.detail


def test_batch_of_the_check_is_capped_for_long_sequences(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(parity, "check_mixer", fake_check("PASS", calls))
    gate_model(attention_model(), 4096, 64, CPU, "fp32", "fallback")
    assert calls[0][1] == (4, 4096, 32)


def test_mad_run_row_says_which_backend_ran_and_why(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(parity, "check_mixer", fake_check("FAIL", dx_err=0.5))
    setting = MADSetting(task="compression", vocab_size=16, seq_len=16, num_train_examples=16, num_test_examples=16)
    out = run_mad(dict(setting=setting.model_dump(), arch="transformer", epochs=1, batch_size=8,
                       data_root=str(tmp_path / "data"), device="cpu"))
    assert out["status"] == "ok" and out["backend"] == "attention=reference"
    assert out["parity_gate"] == "fallback" and "FAIL" in out["parity_detail"]
    monkeypatch.setenv("LINGRID_PARITY", "stop")
    with pytest.raises(ParityGateError):
        run_mad(dict(setting=setting.model_dump(), arch="transformer", epochs=1, batch_size=8,
                     data_root=str(tmp_path / "data"), device="cpu"))


def test_policy_env_is_validated(monkeypatch):
    monkeypatch.setenv("LINGRID_PARITY", "maybe")
    with pytest.raises(ValueError, match="allowed: fallback, stop, off"):
        gate_model(attention_model(), 8, 2, CPU, "fp32")


def test_cache_lives_where_the_env_says(cache):
    assert cache_root() == cache


@pytest.mark.gpu
def test_retnet_at_mad_compression_length_is_gated_on_this_gpu(cache):
    """fla 0.6.0's chunked retention had wrong gradients at T = 64 (H100, H200). Whatever this GPU does, the
    gate's decision must agree with a direct parity check at the trial's shape."""
    from evals.mad.arch import arch_model_config

    cfg = arch_model_config("retnet", vocab_size=16, seq_len=64)
    gated, d = gate_model(cfg, 64, 128, torch.device("cuda"), "bf16", "fallback")
    row = parity.check_mixer("retnet", shapes=[(128, 64, 128)], dtypes=("bf16",), device="cuda",
                             kwargs=cfg.resolved_mixer_kwargs())[0]
    assert (d.status == "passed") == (row.status == "PASS")
    assert (gated.backend == "reference") == (row.status != "PASS")
