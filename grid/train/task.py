"""What one training run hands THE loop (grid/train/loop.py): a `TrainTask`.

A suite subclasses TrainTask once (grid/lm/trial.py: LMTask, evals/mad/protocol.py: MADTask,
evals/mad/batched.py: BatchedMADTask) and overrides what its runs have; the defaults do nothing:

    batch(step) -> (x, y)           the whole batch of optimizer step `step` (0-based), required
    loss(model, x, y) -> tensor     the mean loss of a micro-batch (one per member for a stacked model), required
    lr(step) -> float | None        written into every param group before the step (None: left alone)
    evaluate(step) -> dict          the evaluation metrics (a task without it is never evaluated)
    on_eval(record) -> bool         each evaluation's history record; True ends training early
    after_eval(record) -> bool      when training goes on: True says model/optimizer tensors were replaced
    on_step(steps_done)             after every optimizer step (host side, no device sync)
    on_sync(info)                   after each read-back of the step losses (step, loss, lr, tokens, wall_s, graphs)
    reduce_losses(steps, values)    a stacked model's per-member step losses -> one number per step

`run_fields(result, ...)` is the one helper that turns a TrainResult into the row fields every suite shares
(what ran and how far it got); a suite adds its own scores to them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the loop imports torch; this module stays importable without it
    import torch
    import torch.nn as nn

    from grid.train.loop import TrainResult


class TrainTask:
    """Base class of a training run's task (module docstring)."""

    def batch(self, step: int) -> tuple["torch.Tensor", "torch.Tensor"]:
        raise NotImplementedError(f"{type(self).__name__}.batch(step)")

    def loss(self, model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError(f"{type(self).__name__}.loss(model, x, y)")

    def lr(self, step: int) -> float | None:
        return None

    def evaluate(self, step: int) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} has no evaluation")

    @property
    def evaluates(self) -> bool:
        return type(self).evaluate is not TrainTask.evaluate

    def on_eval(self, record: dict[str, Any]) -> bool:
        return False

    def after_eval(self, record: dict[str, Any]) -> bool:
        return False

    def on_step(self, steps_done: int) -> None:
        pass

    def on_sync(self, info: dict[str, Any]) -> None:
        pass

    def reduce_losses(self, steps: list[int], values: list[list[float]]) -> list[float]:
        raise ValueError(f"{type(self).__name__}.loss returned one loss per member: the task needs reduce_losses")


class SimpleTask(TrainTask):
    """Batches from a function of the step and a loss function; no evaluation (tests, benchmark scripts)."""

    def __init__(self, batch: Callable[[int], Any], loss: Callable[..., Any], lr: Callable[[int], float] | None = None):
        self._batch, self._loss, self._lr = batch, loss, lr

    def batch(self, step):
        return self._batch(step)

    def loss(self, model, x, y):
        return self._loss(model, x, y)

    def lr(self, step):
        return self._lr(step) if self._lr is not None else None


def run_fields(result: "TrainResult", *, backends: dict[str, str], device: str, compiled: bool,
               gate_row: dict[str, Any], tokens_scale: int = 1) -> dict[str, Any]:
    """The row fields every suite's run shares: what ran (backend per layer kind, device, compile, parity
    gate, precision) and how far it got (steps, tokens, the step it diverged at). `tokens_scale`: data-
    parallel ranks whose tokens the result counts once."""
    return {
        "backend": ",".join(f"{k}={v}" for k, v in backends.items()),
        "device": device,
        "compiled": compiled,
        **gate_row,
        "precision": result.precision,
        "steps": int(result.steps),
        "tokens_seen": int(result.tokens_seen) * tokens_scale,
        "diverged_step": result.diverged_step,
    }


__all__ = ["SimpleTask", "TrainTask", "run_fields"]
