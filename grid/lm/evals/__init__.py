"""Recall evaluations of LM trials: in-context copy, associative recall (MQAR), needle retrieval by loss.

    spec.py   the grid's `evals` block (pydantic; imported by the driver, no torch)
    tasks.py  the evaluation sequences (numpy; deterministic)
    run.py    `run_evals(model, block, data_dir, ...)`: scores keyed by their store column

Only `spec` is imported here; `run_evals` (torch) is imported by the trial that needs it.
"""
from grid.lm.evals.spec import CopySpec, EvalsSpec, MQARSpec, NeedleSpec

__all__ = ["CopySpec", "EvalsSpec", "MQARSpec", "NeedleSpec"]
