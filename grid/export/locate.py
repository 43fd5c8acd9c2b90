"""A finished LM trial's model: its row in the results store and its last training checkpoint.

The row (`config_json`) holds the model config, the training length and the data dir (for the
tokenizer). The weights are in the trial's last checkpoint, which Ray Tune keeps under
`<ray-tmp-path>/<experiment>/<trial_key>/checkpoint_*/train_state.pt` (a data-parallel trial one
level deeper, under `ddp/`). `--checkpoint` names a train_state.pt (or its folder) directly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grid.results.store import ResultsStore
from grid.train.checkpoint import FILE_NAME

# Lazy here: torch (heavy: never at import time on the driver); pandas (optional or slow to import: only the paths
#   that use them)

SUITE = "lm"


class ExportError(RuntimeError):
    """The trial or its weights cannot be found or used; the message says what to do."""


@dataclass
class TrainedTrial:
    trial_key: str
    row: dict[str, Any]        # the store row (descriptive columns: model_id, mixer, hybrid, scale, seed, grid)
    config: dict[str, Any]     # the trial's config (model, train, recipe, data_hash, data_dir, ...)
    state_dict: dict[str, Any]  # our LM's parameters (grid/models/stack.py names)
    checkpoint: Path
    step: int


def trial_row(trial_key: str, results: str | Path) -> dict[str, Any]:
    """The LM row of `trial_key` (an ok row when the key is stored in several grids)."""

    df = ResultsStore(results).query("SELECT * FROM results WHERE trial_key = ? AND suite = ?", [trial_key, SUITE])
    if df.empty:
        raise ExportError(f"no LM trial with trial_key {trial_key!r} in the results store {str(results)!r} "
                          "(python -m grid results show --suite lm lists them; --results DIR picks the store)")
    ok = df[df["status"] == "ok"]
    if ok.empty:
        raise ExportError(f"trial {trial_key} ended with status {df['status'].iloc[0]!r}, not 'ok': "
                          "it has no trained model to export")
    return {k: (None if _missing(v) else v) for k, v in ok.iloc[0].to_dict().items()}


def _missing(v) -> bool:
    try:
        import pandas as pd  # noqa: PLC0415

        return not isinstance(v, (list, dict)) and bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def find_checkpoint(trial_key: str, ray_tmp: str | Path) -> Path:
    """The newest train_state.pt of the trial's Tune trial directories under `ray_tmp`."""
    root = Path(ray_tmp)
    found = [p for p in root.glob(f"*/{trial_key}/**/{FILE_NAME}") if p.is_file()] if root.is_dir() else []
    if not found:
        raise ExportError(f"no checkpoint of trial {trial_key} under {str(root)!r} (looked for "
                          f"*/{trial_key}/**/{FILE_NAME}); pass --ray-tmp-path (where `grid run` kept its "
                          "experiments) or --checkpoint PATH")
    return max(found, key=lambda p: (p.stat().st_mtime, str(p)))


def load_trained(trial_key: str, results: str | Path, ray_tmp: str | Path,
                 checkpoint: str | Path | None = None) -> TrainedTrial:
    """Row, config and final weights of a finished LM trial (ExportError when something is missing)."""
    import torch  # noqa: PLC0415

    row = trial_row(trial_key, results)
    config = json.loads(row["config_json"])
    path = Path(checkpoint) if checkpoint else find_checkpoint(trial_key, ray_tmp)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise ExportError(f"checkpoint {str(path)!r} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = state.get("model") if isinstance(state, dict) else None
    if model is None:
        raise ExportError(f"{path} is not a lingrid training checkpoint (no 'model' entry)")
    model = {k.removeprefix("module."): v for k, v in model.items()}  # a data-parallel run saved DDP's names
    step, steps = int(state.get("step", -1)), int(config["train"]["steps"])
    if step != steps:
        raise ExportError(f"{path} holds step {step}, but trial {trial_key} trained {steps} steps: not its final "
                          "model (pass --checkpoint with the last checkpoint)")
    return TrainedTrial(trial_key, row, config, model, path, step)


__all__ = ["ExportError", "TrainedTrial", "find_checkpoint", "load_trained", "trial_row"]
