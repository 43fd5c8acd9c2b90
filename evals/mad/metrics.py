"""MAD evaluation metrics, reproducing mad-lab's logging rule (spec/mad.md §5.2) without torchmetrics.

Per batch (positions whose target is -100 are dropped first):
* macro accuracy = torchmetrics `MulticlassAccuracy(num_classes=V, ignore_index=-100)` (average
  "macro"): per-class recall tp / (tp + fn), averaged over the classes that occur in the batch's
  targets OR predictions. A class that is predicted but never a target has recall 0 and counts.
  A batch with no valid target scores 0 (torchmetrics' safe divide).
* loss = mean cross-entropy over the valid positions; perplexity = exp(loss) (torchmetrics
  `Perplexity(ignore_index=-100)` per batch).
The epoch value of each is the batch-size-weighted mean of the per-batch values (Lightning's
epoch aggregation of `self.log`). Batches without any valid target are left out of the loss and
perplexity means (torchmetrics would log NaN for them; MAD data never has such batches).

Secondary: micro accuracy = correct / valid positions over the whole split (not per batch).

Everything stays on the device until `compute()`, which syncs once (thousands of runs: no
per-batch host round trips).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _class_counts(values: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Histogram over num_classes + 1 bins (the last bin collects ignored positions); no host sync."""
    out = torch.zeros(num_classes + 1, dtype=torch.int64, device=values.device)
    return out.scatter_add_(0, values, torch.ones_like(values))


def batch_macro_accuracy(preds: torch.Tensor, targets: torch.Tensor, num_classes: int,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """torchmetrics-style macro multiclass accuracy of one batch (0-d float tensor)."""
    preds, targets = preds.reshape(-1), targets.reshape(-1)
    valid = targets != ignore_index
    t = torch.where(valid, targets, num_classes)
    p = torch.where(valid, preds, num_classes)
    support = _class_counts(t, num_classes)[:num_classes]
    predicted = _class_counts(p, num_classes)[:num_classes]
    tp = _class_counts(torch.where(p == t, t, num_classes), num_classes)[:num_classes]
    present = (support > 0) | (predicted > 0)
    recall = tp.double() / support.clamp(min=1).double()
    return ((recall * present).sum() / present.sum().clamp(min=1)).float()


@torch.no_grad()
def batch_row(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """One batch's contribution to the split sums (a float64 [7] tensor, no host sync): weighted macro
    accuracy, weight, weighted loss, weighted perplexity, weight of batches with targets, correct, valid.
    Logits [B, ..., V], targets [B, ...]; the batch's weight is its size B."""
    w = float(targets.shape[0])
    num_classes = logits.shape[-1]
    logits = logits.float().reshape(-1, num_classes)
    targets = targets.reshape(-1)
    valid = targets != ignore_index
    n_valid = valid.sum()
    ce_sum = F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")
    preds = logits.argmax(-1)
    acc = batch_macro_accuracy(preds, targets, num_classes, ignore_index)
    correct = ((preds == targets) & valid).sum()
    has = (n_valid > 0).double()
    loss = ce_sum.double() / n_valid.clamp(min=1).double()
    return torch.stack([acc.double() * w, has * 0 + w, loss * has * w, loss.exp() * has * w, has * w,
                        correct.double(), n_valid.double()])


@torch.no_grad()
def member_batch_rows(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """`batch_row` of each member of a member-stacked model: logits [M, B, ..., V] (member m's are
    logits[m]), targets [B, ...] shared -> [M, 7]. Each member's row is computed exactly as a solo
    run's (the same calls, one member at a time)."""
    return torch.stack([batch_row(member, targets, ignore_index) for member in logits])


def split_metrics(sums) -> dict[str, float]:
    """acc, loss, ppl, acc_micro, n_targets from a split's summed batch rows (7 numbers)."""
    acc_w, w, loss_w, ppl_w, wl, correct, valid = (float(v) for v in sums)
    nan = float("nan")
    return {"acc": acc_w / w, "loss": loss_w / wl if wl else nan, "ppl": ppl_w / wl if wl else nan,
            "acc_micro": correct / valid if valid else nan, "n_targets": int(valid)}


class MADMetrics:
    """Accumulates per-batch metrics of one split; `compute()` returns python floats."""

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = ignore_index
        self._sums: torch.Tensor | None = None  # running sum of batch_row()s

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch: logits [B, ..., V], targets [B, ...]; its weight is the batch size B."""
        self.add(batch_row(logits, targets, self.ignore_index))

    def add(self, row: torch.Tensor) -> None:
        self._sums = row if self._sums is None else self._sums + row

    def compute(self) -> dict[str, float]:
        if self._sums is None:
            raise ValueError("no batch was added")
        if self._sums.is_cuda:  # wait with the GIL released (packed runs: other threads keep launching)
            torch.cuda.current_stream(self._sums.device).synchronize()
        return split_metrics(self._sums.cpu().tolist())


def evaluate_batches(model, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
                     row_fn=None) -> dict[str, float]:
    """Metrics of `model` over (inputs, targets) in order, in batches of `batch_size` (no shuffle, no drop).
    `row_fn(x, y)` computes a batch's row (default: batch_row(model(x), y); MAD passes a CUDA-graphed one)."""
    m = MADMetrics()
    for i in range(0, inputs.shape[0], batch_size):
        x, y = inputs[i:i + batch_size], targets[i:i + batch_size]
        m.add(row_fn(x, y) if row_fn is not None else batch_row(model(x), y))
    return m.compute()
