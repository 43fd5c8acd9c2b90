"""Packed trials: several member trials run at once inside one Ray trial, one thread each.

Why: a MAD run (width 128) launches hundreds of small kernels per step, each too small to fill an
H100, so runs share a GPU. Separate processes on one GPU are time-sliced (no MPS on the workers):
their kernels take turns. Threads of one process share one CUDA context, so kernels that the
members launch on their own CUDA streams can run side by side. Measured gain for gla: 1.4-1.6x,
because a graphed step is mostly kernel time already (docs/gpu.md, session 4).

* `make_pack(members)` builds the pack: a TrialSpec whose `members` are ordinary TrialSpecs of one
  suite and grid; its trial_key is derived from the member keys. The pack never gets a row of its
  own: the store gets one row per member, exactly the row the member would get alone.
* The runner deduplicates per member: a resubmitted pack runs only the members that have no done
  row yet (grid/run/runner.py).
* On the worker, `run_members` starts one thread per member with its own CUDA stream (when torch
  sees a GPU), calls the member's trial function with a `MemberContext`, and returns one row
  payload per member. A member that raises is run again in its thread, up to `retries` times (MAD
  passes --max-failures); after the last attempt it gets an error row with its traceback (the row's
  `attempt` says which), and the others go on.
  Each finished member's row goes to the driver at once (`MEMBER_ROW_KEY`, written to the store
  right away) together with a checkpoint of every finished member. If the whole process dies,
  the finished members keep their rows, and Tune's retry (or `Tuner.restore`) runs only the members
  without a finished row (a member that ended in error gets another chance).
* Trial functions must be thread-safe to be packed: MAD's seeds and builds its model under a lock,
  and the training loop serialises everything that is not a CUDA-graph replay
  (grid/train/graphed.py, EAGER_LOCK).
* `MemberContext.report` keeps the latest metrics for the final row; intermediate reports do not
  go to Tune (its session belongs to the trial's main thread), and there is no checkpoint to
  restore (`checkpoint_dir()` is None).
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from grid.keys import content_hash

log = logging.getLogger(__name__)

PACK_TRAINABLE = "grid.run.pack:run_members"
MEMBERS_FILE = "finished_members.json"  # in the pack's checkpoint: {member trial_key: row payload}
PROGRESS_EVERY_S = 10.0  # a pack reports its members' combined progress this often


def make_pack(members: list, *, resources=None, retries: int = 0):
    """A TrialSpec that runs `members` (TrialSpecs of one suite and grid) together in one trial;
    a member whose function raises is run again in its thread up to `retries` times."""
    from grid.run.spec import TrialSpec, Work  # noqa: PLC0415

    if not members:
        raise ValueError("a pack needs at least one member trial")
    keys = [m.trial_key for m in members]
    first = members[0]
    if any(m.env != first.env for m in members):  # one process: one environment
        raise ValueError(f"pack members need the same env; {first.trial_key} has {first.env}, others differ")
    return TrialSpec(trial_key=pack_key_of(keys), suite=first.suite, grid=first.grid,
                     trainable=PACK_TRAINABLE, config={"members": keys, "retries": int(retries)},
                     resources=resources if resources is not None else first.resources, members=list(members),
                     env=dict(first.env), work=Work.total([m.work for m in members]))


def leaves(spec) -> list:
    """The trials that get rows: the members of a pack, or the trial itself."""
    return list(spec.members) if spec.members else [spec]


class MemberContext:
    """The TrialContext of one packed member (see the module docstring for what differs)."""

    def __init__(self, spec, gpu_index: str | None):
        from grid.run.trainable import ProgressTracker  # noqa: PLC0415

        self.spec, self.trial_key, self.config, self.gpu_index = spec, spec.trial_key, spec.config, gpu_index
        self.last_metrics: dict[str, Any] = {}
        self.progress = ProgressTracker(spec.work)

    def report(self, metrics: dict[str, Any], checkpoint_dir=None) -> None:
        from grid.run.trainable import _clean_metrics  # noqa: PLC0415

        clean = _clean_metrics(metrics, "ctx.report()")
        self.last_metrics.update(clean)
        self.progress.update(clean)

    def checkpoint_dir(self) -> None:
        return None


def _member_stream():
    """A fresh CUDA stream context for this thread when torch is loaded and sees a GPU, else a no-op."""
    import contextlib  # noqa: PLC0415
    import sys  # noqa: PLC0415

    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch  # noqa: PLC0415
        except ImportError:
            return contextlib.nullcontext()
    if not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.Stream())


def run_members(spec, head: dict[str, Any], on_finished: Callable[[dict[str, Any]], None] | None = None,
                done: dict[str, dict[str, Any]] | None = None, on_progress: Callable[[Any], None] | None = None,
                progress_every_s: float = PROGRESS_EVERY_S) -> list[dict[str, Any]]:
    """Run every member of the pack `spec` in its own thread; one row payload per member, in order.

    Members whose key is in `done` (rows restored from a checkpoint) are not run again: their rows
    are returned as they are. `on_finished(row)` is called in the calling thread (Tune's session
    belongs to it) as each member finishes; `on_progress(tracker)`, also there, every
    `progress_every_s` seconds with the pack's combined progress (grid.run.trainable.ProgressTracker)."""
    from grid.run.trainable import ProgressTracker, Segments, finish_row, utcnow_iso  # noqa: PLC0415

    done = done or {}
    rows: list[dict[str, Any] | None] = [done.get(m.trial_key) for m in spec.members]
    todo = [i for i, r in enumerate(rows) if r is None]
    finished: queue.Queue[int] = queue.Queue()
    trackers: dict[int, ProgressTracker] = {}
    for i, m in enumerate(spec.members):  # finished members count with all their planned work
        if rows[i] is not None:
            trackers[i] = _finished_tracker(m, rows[i])

    retries = int(spec.config.get("retries", 0))

    def one(i: int, member) -> None:
        try:
            attempts(i, member)
        finally:
            finished.put(i)

    def attempts(i: int, member) -> None:
        for attempt in range(1, retries + 2):
            t0, started = time.time(), utcnow_iso()
            mhead = {**head, "started_at": started, "trial_key": member.trial_key, "attempt": attempt,
                     "prior_wall_s": 0.0, "segments": 1}
            ctx = MemberContext(member, head.get("gpu_index"))
            trackers[i] = ctx.progress
            try:
                with _member_stream():  # a deterministic error comes back as an error row: no retry
                    rows[i] = finish_row(member, ctx, mhead, Segments(0.0, started, 1))
                return
            except Exception as exc:  # noqa: BLE001 - one member's failure must not take the pack down
                rows[i] = {**mhead, "status": "error", "wall_s": time.time() - t0, "finished_at": utcnow_iso(),
                           "metrics": dict(ctx.last_metrics),
                           "error": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}

    threads = [threading.Thread(target=one, args=(i, spec.members[i]), name=f"member-{spec.members[i].trial_key}",
                                daemon=True) for i in todo]
    for t in threads:
        t.start()
    def combined() -> ProgressTracker:
        n_done = sum(r is not None for r in rows)
        return ProgressTracker.combined(list(trackers.values()), spec.work, runs_done=n_done)

    left = len(todo)
    while left:
        try:
            i = finished.get(timeout=progress_every_s)
        except queue.Empty:
            if on_progress is not None:
                try:
                    on_progress(combined())
                except Exception:  # noqa: BLE001 - progress must never stop the runs
                    log.exception("lingrid: could not report the progress of pack %s", spec.trial_key)
            continue
        left -= 1
        if rows[i] is not None:
            trackers[i] = _finished_tracker(spec.members[i], rows[i], trackers.get(i))
        if on_progress is not None:
            try:
                on_progress(combined())
            except Exception:  # noqa: BLE001
                log.exception("lingrid: could not report the progress of pack %s", spec.trial_key)
        if on_finished is not None and rows[i] is not None:
            try:
                on_finished(rows[i])
            except Exception:  # noqa: BLE001 - the final report still carries the row
                log.exception("lingrid: could not hand member %s's row over early", spec.members[i].trial_key)
    for t in threads:
        t.join()
    return [r for r in rows if r is not None]


def _finished_tracker(member, row: dict[str, Any], live=None):
    """A finished member's progress: its last values, and all of its planned work done (a run that stopped
    early has no work left)."""
    from grid.run.trainable import ProgressTracker  # noqa: PLC0415

    t = ProgressTracker(member.work)
    if live is not None:
        t.values.update(live.values)
    t.update(row.get("metrics") or {})
    if member.work is not None:
        t.values.update(step=float(member.work.steps), tokens=float(member.work.tokens),
                        epoch=float(member.work.epochs) if member.work.epochs else t.values["epoch"])
    return t


def checkpoint_rows(directory: str | Path, done: dict[str, dict[str, Any]]) -> None:
    """Write the finished members' rows into a checkpoint directory."""
    Path(directory, MEMBERS_FILE).write_text(json.dumps(done, default=str))


def restored_rows(directory: str | Path) -> dict[str, dict[str, Any]]:
    """The finished members' rows of a pack checkpoint directory ({} when it holds none)."""
    path = Path(directory, MEMBERS_FILE)
    return json.loads(path.read_text()) if path.exists() else {}


def pack_status(rows: list[dict[str, Any]]) -> str:
    """The pack's status on the progress line (its runs are counted there too): ok when every member
    is ok, error when every member failed, else partial."""
    statuses = [r.get("status") for r in rows if r.get("status") != "stored"]  # stored: not run (ledger.py)
    if not statuses or all(s == "error" for s in statuses):
        return "error"
    return "ok" if all(s == "ok" for s in statuses) else "partial"


def pack_key_of(keys: list[str]) -> str:
    return f"pack-{content_hash(sorted(keys), length=16)}"
