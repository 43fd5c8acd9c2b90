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
* A pack made with `group="module:function"` trains its members through that group function in
  one call instead of one thread each (MAD's batched runs: evals/mad/batched.py):
      fn(configs: list[dict], contexts: list[MemberContext], on_done: (i, result) -> None) -> list[result]
  where a result is what a trial function returns; `on_done` hands member i's result over as soon
  as it exists (its row then goes to the driver at once), the returned list covers the rest. It
  runs in the calling thread. If it raises, or leaves members without a result, those members
  run in threads as above and their rows say why (`exec_fallback`).
* Every row says how its run was executed: `exec_path` ('solo' for a trial of its own, 'pack' for
  a thread of a pack, 'batched' for a member of a group function) and `exec_members` (how many runs
  shared that execution).
"""
from __future__ import annotations

# Lazy here: torch (a pack runs on a worker that may have no torch loaded yet, and the driver imports this module).

import contextlib
import json
import logging
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from grid.keys import content_hash
from grid.run.context import (ProgressTracker, Segments, _clean_metrics, finish_row, import_string, result_row,
                              utcnow_iso)
from grid.run.spec import TrialSpec, Work

log = logging.getLogger(__name__)

MEMBERS_FILE = "finished_members.json"  # in the pack's checkpoint: {member trial_key: row payload}
PROGRESS_EVERY_S = 10.0  # a pack reports its members' combined progress this often


def make_pack(members: list, *, resources=None, retries: int = 0, group: str | None = None):
    """A TrialSpec that runs `members` (TrialSpecs of one suite and grid) together in one trial;
    a member whose function raises is run again in its thread up to `retries` times. With `group`
    ("module:function") the members train together through that group function (module docstring)."""

    if not members:
        raise ValueError("a pack needs at least one member trial")
    keys = [m.trial_key for m in members]
    first = members[0]
    if any(m.env != first.env for m in members):  # one process: one environment
        raise ValueError(f"pack members need the same env; {first.trial_key} has {first.env}, others differ")
    config: dict[str, Any] = {"members": keys, "retries": int(retries)}
    if group is not None:
        config["group"] = group
    return TrialSpec(trial_key=pack_key_of(keys), suite=first.suite, grid=first.grid,
                     trainable=group or first.trainable, config=config,
                     resources=resources if resources is not None else first.resources, members=list(members),
                     env=dict(first.env), work=Work.total([m.work for m in members]))


def leaves(spec) -> list:
    """The trials that get rows: the members of a pack, or the trial itself."""
    return list(spec.members) if spec.members else [spec]


class MemberContext:
    """The TrialContext of one packed member (see the module docstring for what differs).
    `on_report()` (a group's members: all report in the calling thread) runs after each report."""

    def __init__(self, spec, gpu_index: str | None, on_report: Callable[[], None] | None = None):
        self.spec, self.trial_key, self.config, self.gpu_index = spec, spec.trial_key, spec.config, gpu_index
        self.last_metrics: dict[str, Any] = {}
        self.progress = ProgressTracker(spec.work)
        self.on_report = on_report

    def report(self, metrics: dict[str, Any], checkpoint_dir=None) -> None:
        clean = _clean_metrics(metrics, "ctx.report()")
        self.last_metrics.update(clean)
        self.progress.update(clean)
        if self.on_report is not None:
            self.on_report()

    def checkpoint_dir(self) -> None:
        return None


def _member_stream():
    """A fresh CUDA stream context for this thread when torch is loaded and sees a GPU, else a no-op."""
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
    """Run every member of the pack `spec` (through its group function, or in its own thread); one row
    payload per member, in order.

    Members whose key is in `done` (rows restored from a checkpoint) are not run again: their rows
    are returned as they are. `on_finished(row)` is called in the calling thread (Tune's session
    belongs to it) as each member finishes; `on_progress(tracker)`, also there, every
    `progress_every_s` seconds with the pack's combined progress (grid.run.context.ProgressTracker)."""
    done = done or {}
    rows: list[dict[str, Any] | None] = [done.get(m.trial_key) for m in spec.members]
    trackers: dict[int, Any] = {}
    for i, m in enumerate(spec.members):  # finished members count with all their planned work
        if rows[i] is not None:
            trackers[i] = _finished_tracker(m, rows[i])
    pack = _PackState(spec, rows, trackers, on_finished, on_progress)
    todo = [i for i, r in enumerate(rows) if r is None]
    fallback = None
    if spec.config.get("group") and todo:
        fallback = _run_group(pack, spec.config["group"], todo, head, progress_every_s)
        todo = [i for i in todo if rows[i] is None]
    if todo:
        _run_threads(pack, todo, head, progress_every_s, fallback)
    return [r for r in rows if r is not None]


class _PackState:
    """The rows and progress of a pack's members, and the calls that hand them to the runner."""

    def __init__(self, spec, rows: list, trackers: dict[int, Any], on_finished, on_progress):
        self.spec, self.rows, self.trackers = spec, rows, trackers
        self.on_finished, self.on_progress = on_finished, on_progress

    def progress(self) -> None:
        if self.on_progress is None:
            return
        n_done = sum(r is not None for r in self.rows)
        try:
            self.on_progress(ProgressTracker.combined(list(self.trackers.values()), self.spec.work, runs_done=n_done))
        except Exception:  # noqa: BLE001 - progress must never stop the runs
            log.exception("lingrid: could not report the progress of pack %s", self.spec.trial_key)

    def finished(self, i: int) -> None:
        """Member i is done (with or without a row): progress, then its row to the driver."""
        if self.rows[i] is not None:
            self.trackers[i] = _finished_tracker(self.spec.members[i], self.rows[i], self.trackers.get(i))
        self.progress()
        if self.on_finished is not None and self.rows[i] is not None:
            try:
                self.on_finished(self.rows[i])
            except Exception:  # noqa: BLE001 - the final report still carries the row
                log.exception("lingrid: could not hand member %s's row over early", self.spec.members[i].trial_key)


def _run_group(pack: _PackState, group: str, todo: list[int], head: dict[str, Any],
               progress_every_s: float) -> str | None:
    """Members `todo` through the group function `group`; None, or why some got no result."""
    members = [pack.spec.members[i] for i in todo]
    started = utcnow_iso()
    segments = Segments(0.0, started, 1)  # the group's time so far is each member's
    heads = [{**head, "started_at": started, "trial_key": m.trial_key, "attempt": 1, "prior_wall_s": 0.0,
              "segments": 1, "exec_path": "batched", "exec_members": len(members)} for m in members]
    last = [time.time()]

    def tick() -> None:  # members report in this thread: the pack's progress every progress_every_s
        if time.time() - last[0] >= progress_every_s:
            last[0] = time.time()
            pack.progress()

    ctxs = [MemberContext(m, head.get("gpu_index"), on_report=tick) for m in members]
    for i, ctx in zip(todo, ctxs):
        pack.trackers[i] = ctx.progress

    def on_done(j: int, returned: dict[str, Any] | None) -> None:
        i = todo[j]
        if pack.rows[i] is None:
            pack.rows[i] = result_row(members[j], ctxs[j], heads[j], segments, returned)
            pack.finished(i)

    try:
        for j, r in enumerate(import_string(group)([m.config for m in members], ctxs, on_done) or []):
            on_done(j, r)
    except Exception as exc:  # noqa: BLE001 - the members without a row yet run in threads instead
        log.warning("lingrid: group function %s failed; its unfinished members run in threads: %s", group, exc)
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        return f"{group}: {type(exc).__name__}: {first}"
    if any(pack.rows[i] is None for i in todo):
        return f"{group} returned no result for some members"
    return None


def _run_threads(pack: _PackState, todo: list[int], head: dict[str, Any], progress_every_s: float,
                 fallback: str | None = None) -> None:
    """Members `todo` in one thread each (see the module docstring); `fallback` says why they did not
    run through the pack's group function (None: they were never meant to)."""
    spec, rows = pack.spec, pack.rows
    finished: queue.Queue[int] = queue.Queue()
    retries = int(spec.config.get("retries", 0))
    how = {"exec_path": "pack", "exec_members": len(todo)}

    def one(i: int, member) -> None:
        try:
            attempts(i, member)
        finally:
            finished.put(i)

    def attempts(i: int, member) -> None:
        for attempt in range(1, retries + 2):
            t0, started = time.time(), utcnow_iso()
            mhead = {**head, "started_at": started, "trial_key": member.trial_key, "attempt": attempt,
                     "prior_wall_s": 0.0, "segments": 1, **how}
            ctx = MemberContext(member, head.get("gpu_index"))
            pack.trackers[i] = ctx.progress
            try:
                with _member_stream():  # a deterministic error comes back as an error row: no retry
                    row = finish_row(member, ctx, mhead, Segments(0.0, started, 1))
                if fallback is not None:
                    row["metrics"]["exec_fallback"] = fallback
                rows[i] = row
                return
            except Exception as exc:  # noqa: BLE001 - one member's failure must not take the pack down
                rows[i] = {**mhead, "status": "error", "wall_s": time.time() - t0, "finished_at": utcnow_iso(),
                           "metrics": dict(ctx.last_metrics),
                           "error": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}

    threads = [threading.Thread(target=one, args=(i, spec.members[i]), name=f"member-{spec.members[i].trial_key}",
                                daemon=True) for i in todo]
    for t in threads:
        t.start()
    left = len(todo)
    while left:
        try:
            i = finished.get(timeout=progress_every_s)
        except queue.Empty:
            pack.progress()
            continue
        left -= 1
        pack.finished(i)
    for t in threads:
        t.join()


def _finished_tracker(member, row: dict[str, Any], live=None):
    """A finished member's progress: its last values, and all of its planned work done (a run that stopped
    early has no work left)."""
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
