"""Where lingrid keeps its files by default: one place for every CLI (grid, evals.mad, scripts).

Defaults do not depend on the working directory: everything lives under the benchmark root,
`<repository>/benchmark` (the folder next to `grid/` and `configs/`), so `python -m grid run` from
another folder finds the data, the results and the Tune experiments of earlier runs instead of
starting a new ./benchmark. Environment variables move them:

    LINGRID_BENCHMARK   the benchmark root (default <repository>/benchmark)
    LINGRID_STORE       the parquet results store (default <root>/results)

    <root>/results      results store (one parquet file per trial)
    <root>/data         MAD data (mad-lab's layout) and LM token shards under data/lm/<name>
    <root>/ray          Ray Tune experiments (restore, progress.csv, TensorBoard)
    <root>/cache/<host> compiled-kernel caches of this host (Triton, Inductor), shared by its workers

A path given on the command line or in a config file is used as given (relative to the working
directory, as usual for command-line paths); only the defaults come from here.
Nothing here imports more than the standard library (the CLIs import it to build their parsers).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOT_ENV = "LINGRID_BENCHMARK"
STORE_ENV = "LINGRID_STORE"


def benchmark_root() -> Path:
    value = os.environ.get(ROOT_ENV)
    return Path(value).expanduser().resolve() if value else REPO / "benchmark"


def store() -> str:
    """The results store: $LINGRID_STORE, else <root>/results."""
    value = os.environ.get(STORE_ENV)
    return str(Path(value).expanduser().resolve()) if value else str(benchmark_root() / "results")


def data_root() -> str:
    """MAD data root (mad-lab's on-disk layout); LM shards go under lm_data_dir()."""
    return str(benchmark_root() / "data")


def lm_data_dir(name: str) -> str:
    """Default token-shard directory of an LM data spec called `name`."""
    return str(benchmark_root() / "data" / "lm" / name)


def ray_tmp() -> str:
    """Ray Tune experiment storage."""
    return str(benchmark_root() / "ray")


def host_cache(host: str | None = None) -> Path:
    """This host's kernel caches: compiled kernels and autotuning choices depend on its GPU and versions."""
    return benchmark_root() / "cache" / (host or socket.gethostname() or "localhost")


# compiler caches the workers of one host share (set only where the user has not chosen one)
KERNEL_CACHE_VARS = {"TRITON_CACHE_DIR": "triton", "TORCHINDUCTOR_CACHE_DIR": "inductor"}


def use_host_kernel_cache(environ=None) -> dict[str, str]:
    """Point Triton's and Inductor's on-disk caches at host_cache() unless already set; returns what it set.

    Triton keeps compiled kernels there and, because fla asks it to (FLA_CACHE_RESULTS, on by
    default), the autotuner's timed choices: a second run on the host neither compiles nor tunes
    again. Call it in the worker before the first kernel is built (Triton reads the variable lazily).
    """
    env = os.environ if environ is None else environ
    out = {}
    for var, sub in KERNEL_CACHE_VARS.items():
        if not env.get(var):
            path = host_cache() / sub
            path.mkdir(parents=True, exist_ok=True)
            env[var] = out[var] = str(path)
    return out


__all__ = ["KERNEL_CACHE_VARS", "REPO", "ROOT_ENV", "STORE_ENV", "benchmark_root", "data_root", "host_cache",
           "lm_data_dir", "ray_tmp", "store", "use_host_kernel_cache"]
