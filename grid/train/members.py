"""Per-member loss bookkeeping of a member-stacked training run (grid/models/stacked.py).

    tracker = MemberLosses(member_ids)
    train(..., reduce_losses=tracker.reduce)   # the loop hands it every step's member losses
    tracker.diverged     # {member id: (step, reason)} of members whose loss turned non-finite
    tracker.pop_window(member_id)   # that member's mean train loss since the last call
    tracker.keep(ids)    # the stack now holds these members, in this order

A member's loss turning non-finite ends that member only, at the first such step (the step and the
message are what grid.train.loop reports for a solo run); the loop goes on while any member is
finite, and stops as 'diverged' when none is. The loop's own number per step is the mean loss of
the finite members (what its progress line shows).
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence


class MemberLosses:
    def __init__(self, member_ids: Sequence[Hashable]):
        self.ids = list(member_ids)
        self.diverged: dict[Hashable, tuple[int, str]] = {}
        self._sum = {m: 0.0 for m in self.ids}
        self._n = {m: 0 for m in self.ids}

    def reduce(self, steps: list[int], values: list[list[float]]) -> list[float]:
        """Member losses of `steps` (one list per step, stack order) -> one loss per step for the loop."""
        out = []
        for step, row in zip(steps, values):
            if len(row) != len(self.ids):
                raise ValueError(f"{len(row)} member losses at step {step} for {len(self.ids)} stacked members")
            alive = []
            for m, v in zip(self.ids, row):
                if m in self.diverged:
                    continue
                if not math.isfinite(v):
                    self.diverged[m] = (step, f"non-finite loss {v} at step {step}")
                    continue
                self._sum[m] += v
                self._n[m] += 1
                alive.append(v)
            out.append(sum(alive) / len(alive) if alive else math.nan)
        return out

    def pop_window(self, member: Hashable) -> float:
        """Mean train loss of `member` since the previous call (nan if it took no finite step)."""
        s, n = self._sum[member], self._n[member]
        self._sum[member], self._n[member] = 0.0, 0
        return s / n if n else math.nan

    def keep(self, member_ids: Sequence[Hashable]) -> None:
        unknown = [m for m in member_ids if m not in self._sum]
        if unknown:
            raise ValueError(f"members {unknown} were never stacked")
        self.ids = list(member_ids)
