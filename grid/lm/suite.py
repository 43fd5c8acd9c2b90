"""The LM suite on the suite contract (grid/run/suites.py): grid files (configs/grids/*.yaml) in, trials out.

Its trials are planned by grid/lm/gridspec.py (`expand`: the hashed block) and grid/lm/prepare_grid.py
(`lm_trial_specs`: the runtime block and resources), trained by grid/lm/trial.py; its commands live
in grid/lm/cli.py (`plan`, `run`, `submit`).
"""
from __future__ import annotations

from typing import Any

from grid.keys import device_class_of
from grid.lm.cli import run_main
from grid.lm.gridspec import RUNTIME_FIELDS, SUITE

NAME = SUITE
__all__ = ["NAME", "RUNTIME_FIELDS", "run_file", "upgrade_row"]


def run_file(path: str | None, argv: list[str]) -> int:
    """`python -m grid run GRID.yaml [flags]` (grid/lm/cli.py: run_main)."""

    return run_main(argv)


def row_device(config: dict[str, Any], row: dict[str, Any]) -> str:
    """The device class a stored LM row ran on: its `device` column, else (an error row) a data-parallel
    trial's use_gpu, else whether the runner gave it a GPU (`gpu_index`)."""
    dev = device_class_of(row.get("device"))
    if dev is not None:
        return dev
    ddp = config.get("ddp") or {}
    if int(ddp.get("workers", 1)) > 1:
        return "cuda" if ddp.get("use_gpu") else "cpu"
    return "cuda" if row.get("gpu_index") not in (None, "") else "cpu"


def upgrade_row(config: dict[str, Any], row: dict[str, Any], renamed: dict[str, str]) -> tuple[dict[str, Any], dict]:
    """A stored row's config under today's key rule: rows made before the device class was hashed get the
    class they ran on (grid/results/rekey.py)."""
    if "device" in config:
        return config, {}
    return {**config, "device": row_device(config, row)}, {}
