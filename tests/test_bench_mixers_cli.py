"""`grid bench mixers` on a machine without a GPU: a clear refusal, and rows that say how kernels were tuned."""
from __future__ import annotations

import pytest
import torch

from grid.bench.cli import mixers_main
from grid.bench.mixers import bench_mixer


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_refuses_without_a_gpu(capsys, monkeypatch):
    monkeypatch.setenv("LINGRID_AUTOTUNE", "full")  # the CLI sets it for its mixers: restored after the test
    assert mixers_main(["--mixers", "attention", "--autotune", "first"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fused gla layer builds on a GPU")
@pytest.mark.parametrize("policy", ["first", "full"])
def test_every_row_records_the_autotune_policy(monkeypatch, policy):
    monkeypatch.setenv("LINGRID_AUTOTUNE", policy)
    row = bench_mixer("gla", d_model=64, seq_len=64, tokens=128)
    assert (row.status, row.autotune, row.batch) == ("UNAVAILABLE", policy, 2)
    assert row.tokens_per_s is None and row.detail  # the reason the fused backend cannot run here
