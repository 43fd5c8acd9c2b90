"""Noisy in-context recall (NR), spec mad.md §3.2: the recall generator with noise tokens (frac_noise > 0).
mad-lab runs both tasks through one generator, so this module registers that one (in_context_recall.py)."""
from __future__ import annotations

from evals.mad.tasks.in_context_recall import check_recall, in_context_recall
from evals.mad.tasks.registry import Task, register

TASK = register(Task("noisy-in-context-recall", "NR", 1, in_context_recall, check_recall, noise=True))
