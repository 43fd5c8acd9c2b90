"""The MAD task registry: each task module of this package registers one `Task` (as mixers register in
grid/models/registry.py), so a task's name, code, generator, setting checks and backbone live in its one file.

Generators (spec mad.md §3) are pure numpy, bit-exact to mad-lab's RNG streams. Every generator returns
one instance `(inputs, targets)` as int64 arrays and draws only from the `rng` it is given (plus numpy's
legacy RNG for selective copying, as mad-lab does).

RNG equivalences the generators rely on (checked against numpy 2.x, asserted in the tests):
- `rng.choice(n)` and `rng.choice(array_of_len_n)` draw exactly `rng.integers(0, n)`;
  `rng.choice(a, size=k)` draws `rng.integers(0, len(a), size=k)`. So we index with integers.
- `rng.shuffle` runs the same Fisher-Yates loop (one bounded draw per position, last to first) for a
  Python list and for an ndarray, and `rng.permutation(n)` is `shuffle(arange(n))`; so a shuffled
  index array reproduces mad-lab's shuffled list of tuples and leaves the stream in the same state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

IGNORE = -100  # target ignore index (spec §1)

Instance = tuple[np.ndarray, np.ndarray]
# need(ok, field, allowed): records "field=value is not allowed for task: allowed" when not ok
Need = Callable[[bool, str, str], None]


def as_arrays(inputs: list, targets: list) -> Instance:
    return np.asarray(inputs, dtype=np.int64), np.asarray(targets, dtype=np.int64)


@dataclass(frozen=True)
class Task:
    """One MAD task as its module registers it."""

    name: str                                  # mad-lab's registry name, e.g. "in-context-recall"
    code: str                                  # the short code of tables and results, e.g. "CR"
    order: int                                 # position in mad-lab's registry (sweep and table order)
    generate: Callable[..., Instance]          # (rng, is_training, **setting fields) -> one instance
    check: Callable[[Any, Need], None]         # the task's own setting constraints (settings.py adds the common ones)
    noise: bool = False                        # frac_noise is allowed (recall tasks)
    legacy_rng: bool = False                   # the generator also draws from numpy's legacy RNG
    autoencoder: bool = False                  # trained as mad-lab's AutoEncoder, not the LM backbone


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Called once by each task module at import."""
    for other in _TASKS.values():
        if other.name != task.name and (other.code == task.code or other.order == task.order):
            raise ValueError(f"MAD task {task.name}: code {task.code} / order {task.order} already used by {other.name}")
    _TASKS[task.name] = task
    return task


def registered() -> dict[str, Task]:
    """name -> Task, in mad-lab's registry order."""
    return dict(sorted(_TASKS.items(), key=lambda kv: kv[1].order))


__all__ = ["IGNORE", "Instance", "Need", "Task", "as_arrays", "register", "registered"]
