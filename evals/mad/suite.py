"""The MAD suite on the suite contract (grid/run/suites.py).

* Trials: evals/mad/run.py `make_trials` (one per setting x lr x wd); the hashed block is the run's
  MADRunConfig without RUNTIME_FIELDS, so it holds the model as it will be built (resolved from
  configs/mad/architectures.yaml), the protocol, the device class and compile where it takes effect.
* Entry points: `python -m evals.mad.mad_eval_<arch> [flags]` (one module per entry of
  configs/mad/architectures.yaml, tests/test_mad_shims.py checks that) and `python -m grid run SWEEP.yaml
  [flags]` for a sweep file (evals/mad/sweep.py: the same flags written down; configs/mad/sweeps/).
* Stores from before the current key rule: `upgrade_row` (python -m grid results rekey).
"""
from __future__ import annotations

import functools
from typing import Any

from evals.mad.sweep import run_sweep_file
from grid.keys import canonical_json, device_class_of

# Lazy here: evals.mad.backbones, evals.mad.protocol, grid.models (they import torch or Ray); json (one code path)

NAME = "mad"
TRAINABLE = "evals.mad.protocol:run_mad"
# the runtime block of a MAD run's config: where the data is, how it is read, CUDA graphs (bit-identical
# replays of the same kernels); everything else of MADRunConfig is the hashed block of its trial_key
RUNTIME_FIELDS = ("data_root", "num_workers", "cuda_graph")

__all__ = ["NAME", "RUNTIME_FIELDS", "TRAINABLE", "run_file", "upgrade_row"]


def run_file(path: str, argv: list[str]) -> int:
    """`python -m grid run SWEEP.yaml [flags]`: the sweep's fields as mad_eval flags, then the given flags."""

    return run_sweep_file(path, argv)


@functools.lru_cache(maxsize=256)
def _params(model_json: str, task: str, seq_len: int, protocol: str) -> int | None:
    import json  # noqa: PLC0415

    from evals.mad.backbones import backbone_params  # noqa: PLC0415
    from grid.models import ModelConfig  # noqa: PLC0415

    return backbone_params(ModelConfig.model_validate(json.loads(model_json)), task, seq_len, protocol)


def upgrade_row(config: dict[str, Any], row: dict[str, Any], renamed: dict[str, str]) -> tuple[dict[str, Any], dict]:
    """A stored MAD row's config under today's key rule (python -m grid results rekey):

    * `device`: the class the run used (its `device` column; an error row: whether it had a GPU);
    * `compile`: whether it compiled (its `compiled` column; else the flag where it took effect);
    * `resolved_model`: the model of its arch as configs/mad/architectures.yaml says NOW. A row whose
      parameter count differs from that model was made under an earlier entry: ValueError (the row keeps
      its old key, so no new trial counts it as done)."""
    from evals.mad.protocol import MADRunConfig  # noqa: PLC0415

    cfg = MADRunConfig.model_validate(config)
    device = device_class_of(cfg.device) or device_class_of(row.get("device"))
    if device is None:
        device = "cuda" if row.get("gpu_index") not in (None, "") else "cpu"
    compiled = row.get("compiled")
    if compiled is None:
        compiled = cfg.compile and device == "cuda" and row.get("exec_path") != "batched"
    setting = cfg.mad_setting()
    resolved = cfg.model_cfg(setting.seq_len)
    stored = row.get("n_params")
    if stored is not None and cfg.resolved_model is None:
        want = _params(canonical_json(resolved), setting.code, setting.seq_len, cfg.protocol)
        if want is not None and int(stored) != want:
            raise ValueError(f"n_params {int(stored)} but {cfg.arch or 'its model'} has {want} parameters under "
                             "configs/mad/architectures.yaml now: made under an earlier entry")
    new = cfg.model_copy(update={"device": device, "compile": bool(compiled),
                                 "resolved_model": resolved.model_dump(mode="json")})
    return new.model_dump(mode="json"), {}
