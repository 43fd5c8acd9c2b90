"""lm-eval rows on the suite contract (grid/run/suites.py): rows of `python -m grid eval lm-eval`, one per
(LM trial, harness task), keyed by grid.keys.trial_key of their config (grid/harness/run.py). Nothing to
run from a file; rekey follows the LM trial a row evaluated when that trial got a new key."""
from __future__ import annotations

from typing import Any

from grid.results.schema import LM_EVAL_SUITE, SOURCE_TRIAL_KEY

NAME = LM_EVAL_SUITE
RUNTIME_FIELDS: tuple[str, ...] = ()  # an evaluation's config is all hashed

__all__ = ["NAME", "RUNTIME_FIELDS", "upgrade_row"]


def upgrade_row(config: dict[str, Any], row: dict[str, Any], renamed: dict[str, str]) -> tuple[dict[str, Any], dict]:
    """The row's config (and source_trial_key column) pointing at its LM trial's new key, if it has one."""
    new = renamed.get(config.get(SOURCE_TRIAL_KEY))
    if new is None:
        return config, {}
    return {**config, SOURCE_TRIAL_KEY: new}, {SOURCE_TRIAL_KEY: new}
