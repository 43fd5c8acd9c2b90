"""The six MAD tasks (spec mad.md §3), one module each; each registers itself in `registry`.

Adding a task is one module here (its generator, its setting checks, `register(Task(...))`) and its
settings file configs/tasks/<name>.yaml; tests/test_mad_data.py checks that the two agree.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import numpy as np

from evals.mad.tasks.registry import IGNORE, Instance, Task, registered

# every task module of this package registers itself on import
for _m in pkgutil.iter_modules(__path__):
    if _m.name != "registry" and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

TASKS: dict[str, Task] = registered()  # name -> Task, mad-lab's registry order
TASK_CODES: dict[str, str] = {name: t.code for name, t in TASKS.items()}
GENERATORS = {name: t.generate for name, t in TASKS.items()}

from evals.mad.tasks.compression import compression  # noqa: E402  (the generators by name, for tests and tools)
from evals.mad.tasks.fuzzy_in_context_recall import fuzzy_in_context_recall  # noqa: E402
from evals.mad.tasks.in_context_recall import in_context_recall  # noqa: E402
from evals.mad.tasks.memorization import memorization, memorization_map  # noqa: E402
from evals.mad.tasks.selective_copying import selective_copying  # noqa: E402


def get_task(name_or_code: str) -> Task:
    """The task of a registry name or short code (case-insensitive code); ValueError naming the allowed ones."""
    if name_or_code in TASKS:
        return TASKS[name_or_code]
    for t in TASKS.values():
        if t.code == str(name_or_code).upper():
            return t
    allowed = ", ".join(f"{n} ({t.code})" for n, t in TASKS.items())
    raise ValueError(f"unknown MAD task {name_or_code!r}; allowed: {allowed}")


# the setting fields that reach the generators (spec §2.2)
_KWARG_FIELDS = (
    "vocab_size", "seq_len", "frac_noise", "noise_vocab_size", "num_tokens_to_copy",
    "k_motif_size", "v_motif_size", "multi_query", "seed",
)


def generate_split(setting: Any, rng: np.random.Generator, n: int, is_training: bool,
                   legacy_rng: Any = None) -> Instance:
    """`n` instances of `setting` (any object with the MADSetting fields), stacked to [n, width] int64.

    Train then test must come from the same `rng` (and the same `legacy_rng` for SC) to match mad-lab.
    """
    task = TASKS[setting.task]
    kwargs = {f: getattr(setting, f) for f in _KWARG_FIELDS}
    if task.legacy_rng:
        kwargs["legacy_rng"] = legacy_rng
    pairs = [task.generate(rng, is_training, **kwargs) for _ in range(n)]
    inputs = np.stack([p[0] for p in pairs]) if pairs else np.empty((0, 0), dtype=np.int64)
    targets = np.stack([p[1] for p in pairs]) if pairs else np.empty((0, 0), dtype=np.int64)
    return inputs, targets


__all__ = ["GENERATORS", "IGNORE", "TASKS", "TASK_CODES", "Task", "compression", "fuzzy_in_context_recall",
           "generate_split", "get_task", "in_context_recall", "memorization", "memorization_map",
           "selective_copying"]
