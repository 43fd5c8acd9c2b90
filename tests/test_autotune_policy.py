"""LINGRID_AUTOTUNE=first: Triton's autotuner stops at the first config that runs (and caches nothing)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

KERNEL = r'''
import json, math, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch, triton, triton.language as tl
from triton.runtime import autotuner

calls = []
def fake_bench(self, *a, config, **m):  # block 8 "fails to compile"; otherwise time = block size
    calls.append(config.kwargs["BLOCK"])
    return [math.inf] * 3 if config.kwargs["BLOCK"] == 8 else [float(config.kwargs["BLOCK"])] * 3
autotuner.Autotuner._bench = fake_bench

from grid.models import autotune
mode = autotune.apply()

@triton.autotune(configs=[triton.Config({"BLOCK": b}) for b in (8, 64, 16, 32)], key=["n"],
                 cache_results=sys.argv[1] == "first")
@triton.jit
def copy(x, y, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y + i, tl.load(x + i, mask=i < n), mask=i < n)

x = torch.arange(100.0); y = torch.zeros_like(x)
copy[lambda m: (triton.cdiv(100, m["BLOCK"]),)](x, y, 100)
assert torch.equal(x, y)
print(json.dumps({"mode": mode, "calls": calls, "chosen": list(copy.cache.values())[0].kwargs["BLOCK"],
                  "cache_results": copy.cache_results}))
'''


def _run(mode: str) -> dict:
    env = {**os.environ, "LINGRID_AUTOTUNE": mode}
    p = subprocess.run([sys.executable, "-c", KERNEL, mode], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_first_stops_at_the_first_config_that_runs_and_caches_nothing():
    out = _run("first")
    assert out["mode"] == "first"
    assert out["calls"] == [8, 64]  # 8 failed, 64 ran: 16 and 32 were never compiled or timed
    assert out["chosen"] == 64 and out["cache_results"] is False


def test_full_times_every_candidate():
    out = _run("full")
    assert out["calls"] == [8, 64, 16, 32] and out["chosen"] == 16


def test_unknown_mode_is_a_clear_error(monkeypatch):
    from grid.models import autotune

    monkeypatch.setenv("LINGRID_AUTOTUNE", "fastest")
    with pytest.raises(ValueError, match="LINGRID_AUTOTUNE='fastest': expected one of full, first"):
        autotune.mode()
