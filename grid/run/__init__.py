"""Ray Tune runner: trial specs, resources, the worker-side trainable, store/progress callbacks, run_trials.

Importing `grid.run` (or `grid.run.spec`) does not import Ray or torch; `run_trials` imports Ray when called.
"""
from __future__ import annotations

__all__ = ["TrialSpec", "Resources", "make_trial", "trial_resources", "run_trials", "RunSummary"]


def __getattr__(name: str):
    if name in ("TrialSpec", "Resources", "make_trial"):
        from grid.run import spec
        return getattr(spec, name)
    if name == "trial_resources":
        from grid.run.resources import trial_resources
        return trial_resources
    if name in ("run_trials", "RunSummary"):
        from grid.run import runner
        return getattr(runner, name)
    raise AttributeError(f"module 'grid.run' has no attribute {name!r}")
