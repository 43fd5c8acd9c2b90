"""How Triton's autotuner picks kernel configs: `full` (Triton's default) or `first`.

fla decorates most kernels with dozens of candidate configs (block sizes x warps x stages) and
Triton compiles and times every candidate the first time a kernel meets a new shape key: minutes
per layer type on one CPU core. The math does not depend on the config, only the speed does, so
work that measures correctness or learning (parity checks, MAD runs at width 128, CPU-side
debugging) can take the first candidate that compiles and runs instead (`first`): one compile per
kernel. Timings (`grid bench mixers`, LM throughput and MFU) need `full`.

The policy comes from the environment variable LINGRID_AUTOTUNE (`full` when unset), so Ray
workers inherit it; the runner may set it per trial (TrialSpec.env: grid/run/resources.py picks
`first` for tiny models that share a GPU), so a reused worker process can switch between trials.
Every results row records the policy it ran with (grid.env.provenance). `first` never writes
Triton's on-disk autotuning cache, so a later timed run on the same host still tunes for real,
and an in-memory choice made under `first` is dropped when the process returns to `full`.
"""
from __future__ import annotations

import math
import os

# Lazy here: triton (heavy: never at import time on the driver)

ENV = "LINGRID_AUTOTUNE"
MODES = ("full", "first")


def mode() -> str:
    value = os.environ.get(ENV, "full").strip().lower() or "full"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def apply() -> str:
    """Install the policy of LINGRID_AUTOTUNE in this process (idempotent). Returns the mode."""
    m = mode()
    if m == "first":
        first_config_only()
    return m


def first_config_only() -> None:
    """Patch Triton's Autotuner once: under mode `first` (read at every launch, so it can change between
    trials of one process) time candidates in order and stop at the first one that runs."""
    from triton.runtime import autotuner  # noqa: PLC0415

    cls = autotuner.Autotuner
    if getattr(cls, "_lingrid_first", False):
        return
    run, bench = cls.run, cls._bench

    def run_policy(self, *args, **kwargs):
        m = mode()
        if m == "full" and getattr(self, "_lingrid_mode", "full") == "first":
            self.cache = {}  # choices made without timing: tune for real now
        self._lingrid_mode = m
        if m != "first":
            return run(self, *args, **kwargs)
        self._lingrid_found = False
        keep, self.cache_results = self.cache_results, False  # never persist a choice that was not timed
        try:
            return run(self, *args, **kwargs)
        finally:
            self.cache_results = keep

    def bench_policy(self, *args, config, **meta):
        if getattr(self, "_lingrid_mode", "full") != "first":
            return bench(self, *args, config=config, **meta)
        if getattr(self, "_lingrid_found", False):
            return [math.inf, math.inf, math.inf]
        timing = bench(self, *args, config=config, **meta)
        self._lingrid_found = all(math.isfinite(t) for t in timing)
        return timing

    cls.run, cls._bench, cls._lingrid_first = run_policy, bench_policy, True
