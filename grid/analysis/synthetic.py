"""Synthetic LM trials written to a results store, for tests and for checking the analysis end to end.

The rows follow the LM trial's data contract (results columns + per-step curves with cumulative
`flops`); losses follow a Chinchilla-form law L(N, D) = E + A/N^a + B/D^b, so the fitted envelope
has a known shape. Nothing here trains anything.

    write_synthetic_ladder("/tmp/store", archs={"gla": 1.0, "transformer": 1.03})
    python -m grid analyze scaling --results /tmp/store
"""
from __future__ import annotations

import os

import numpy as np

from grid.results.store import ResultsStore

CHINCHILLA = dict(E=1.69, A=406.4, a=0.34, B=410.7, b=0.28)
SIZES = {"s1": 2e6, "s2": 8e6, "s3": 3.2e7, "s4": 1.28e8}


def chinchilla_loss(n, d, params: dict[str, float] = CHINCHILLA):
    """E + A/N^a + B/D^b (Hoffmann et al. 2022, approach 3 constants by default)."""
    p = params
    return p["E"] + p["A"] / np.asarray(n, float) ** p["a"] + p["B"] / np.asarray(d, float) ** p["b"]


def write_synthetic_ladder(store_root: str | os.PathLike[str], archs: dict[str, float] | None = None,
                           sizes: dict[str, float] | None = None, grid: str = "synthetic", steps: int = 50,
                           tokens_per_param: float = 20.0, seeds: tuple[int, ...] = (0,),
                           hybrids: tuple[str, ...] = ("pure",)) -> list[str]:
    """Write one 'ok' trial per (architecture, hybrid, size, seed) with a full curve; returns the trial_keys.

    `archs` maps an arch label to a loss multiplier (1.0 = the Chinchilla law). Each trial trains
    tokens_per_param x N tokens with 6N training FLOPs per token; seed s adds 0.01*s to the loss and
    the i-th hybrid layout 0.02*i.
    """

    store = ResultsStore(store_root)
    archs = archs or {"gla": 1.0}
    sizes = sizes or SIZES
    keys = []
    for arch, mult in archs.items():
        for scale, n in sizes.items():
            fpt = 6.0 * n
            total = int(tokens_per_param * n)
            st = np.arange(1, steps + 1)
            tokens = (st * total // steps).astype(np.int64)
            for seed, (h, hybrid) in ((s, hh) for s in seeds for hh in enumerate(hybrids)):
                loss = mult * chinchilla_loss(n, tokens) + 0.01 * seed + 0.02 * h
                key = f"{arch}-{scale}-s{seed}" + ("" if hybrid == "pure" else f"-{hybrid.replace(':', 'to')}")
                store.write_row(dict(
                    trial_key=key, status="ok", model_id=arch, mixer=arch, hybrid=hybrid, effective_ratio=hybrid,
                    scale=scale, seed=seed, non_embedding_params=int(n), total_params=int(1.3 * n), state_size=0,
                    train_flops_per_token=fpt, tokens_seen=int(tokens[-1]), val_loss=float(loss[-1] + 0.02),
                    val_ppl=float(np.exp(loss[-1] + 0.02)), train_loss=float(loss[-1]),
                    tokens_per_s=1.0e5 / (1 + n / 1e7),
                    mfu=None, peak_mem_gib=0.5 + n / 1e8, backend="reference", gpu_name=None), "lm", grid)
                store.write_curve(key, [dict(step=int(s), tokens=int(t), train_loss=float(v), val_loss=None, lr=1e-3,
                                             flops=float(t) * fpt) for s, t, v in zip(st, tokens, loss)], "lm", grid)
                keys.append(key)
    return keys


__all__ = ["CHINCHILLA", "SIZES", "chinchilla_loss", "write_synthetic_ladder"]
