"""LINGRID_AUTOTUNE=first: Triton's autotuner stops at the first config that runs (and caches nothing)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

KERNEL = r"""
import json, math, os, pathlib, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch, triton, triton.language as tl
from triton.runtime import autotuner

calls, seen = [], []
def fake_bench(self, *a, config, **m):  # block 8 "fails to compile"; otherwise time = block size
    calls.append(config.kwargs["BLOCK"])
    seen.append(self.cache_results)
    return [math.inf] * 3 if config.kwargs["BLOCK"] == 8 else [float(config.kwargs["BLOCK"])] * 3
autotuner.Autotuner._bench = fake_bench

from grid.models import autotune
autotune.first_config_only()  # what building a fused layer under `first` installs (once per process)

@triton.autotune(configs=[triton.Config({"BLOCK": b}) for b in (8, 64, 16, 32)], key=["n"], cache_results=True)
@triton.jit
def copy(x, y, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y + i, tl.load(x + i, mask=i < n), mask=i < n)

out = []
for mode in sys.argv[1].split(","):  # one process, trials with different policies (a reused Ray worker)
    os.environ["LINGRID_AUTOTUNE"] = mode
    calls.clear(); seen.clear()
    # Triton's interpreter never caches on disk; under `first` pretend it would, to see the policy turn it off
    copy.cache_results = mode == "first"
    x = torch.arange(100.0); y = torch.zeros_like(x)
    copy[lambda m: (triton.cdiv(100, m["BLOCK"]),)](x, y, 100)
    assert torch.equal(x, y)
    out.append({"mode": autotune.mode(), "calls": list(calls), "chosen": copy.best_config.kwargs["BLOCK"],
                "caching_while_tuning": sorted(set(seen)), "caching_after": copy.cache_results})
print(json.dumps(out))
"""


def _run(modes: str, tmp_path) -> list[dict]:
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    p = subprocess.run([sys.executable, "-c", KERNEL, modes], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_first_stops_at_the_first_config_that_runs_and_caches_nothing(tmp_path):
    (out,) = _run("first", tmp_path)
    assert out["mode"] == "first"
    assert out["calls"] == [8, 64]  # 8 failed, 64 ran: 16 and 32 were never compiled or timed
    assert out["chosen"] == 64
    # an untimed choice never reaches Triton's disk cache; the kernel's own setting is back afterwards
    assert out["caching_while_tuning"] == [False] and out["caching_after"] is True


def test_full_times_every_candidate(tmp_path):
    (out,) = _run("full", tmp_path)
    assert out["calls"] == [8, 64, 16, 32] and out["chosen"] == 16


def test_one_process_switches_policy_between_trials(tmp_path):
    """A reused worker runs a tiny trial (`first`) and then a timed one (`full`): the timed one tunes
    for real instead of inheriting the untimed choice."""
    first, full, again = _run("first,full,first", tmp_path)
    assert (first["calls"], first["chosen"]) == ([8, 64], 64)
    assert (full["calls"], full["chosen"]) == ([8, 64, 16, 32], 16)
    assert (again["calls"], again["chosen"]) == ([], 16)  # a tuned choice is kept: better than the first


def test_unknown_mode_is_a_clear_error(monkeypatch):
    from grid.models import autotune

    monkeypatch.setenv("LINGRID_AUTOTUNE", "fastest")
    with pytest.raises(ValueError, match="LINGRID_AUTOTUNE='fastest': expected one of full, first"):
        autotune.mode()
