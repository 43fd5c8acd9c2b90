"""Driver-side Tune callbacks: the results-store writer and the one-line progress reporter.

Both run in the driver process (Tune calls callbacks there), so the store has a single writer.
Neither lets an exception escape: a failure to write one row must not stop the grid (the metrics
also stay in Tune's own result.json under the experiment directory).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
import sys
import time
from typing import Any

from ray.tune import Callback

from grid.run.ledger import STORED_FLAG
from grid.run.trainable import MEMBER_ROW_KEY, PROV_KEY, ROW_KEY, SPEC_KEY, TRIAL_KEY

log = logging.getLogger(__name__)

# intermediate reports with metrics named "curve/<column>" are curve points: on completion they go to
# the curves table (one row per step, the last report of a step wins: retries and resumes re-report),
# and never into the trial's results row
CURVE_PREFIX = "curve/"

MAX_ERROR_CHARS = 20_000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def spec_of(trial):
    from grid.run.spec import TrialSpec

    return TrialSpec.from_json(trial.config[TRIAL_KEY][SPEC_KEY])


def trial_key_of(trial) -> str:
    return trial.config[TRIAL_KEY]["trial_key"]


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def build_row(spec, payload: dict[str, Any], *, attempt: int | None, experiment: str | None) -> dict[str, Any]:
    """Store row = metrics, then the spec's descriptive columns (they win), then runner-owned columns."""
    from grid.results.schema import PROVENANCE_COLUMNS

    row: dict[str, Any] = dict(payload.get("metrics") or {})
    row.update(spec.columns)
    row.update({
        "trial_key": spec.trial_key,
        "suite": spec.suite,
        "grid": spec.grid,
        "status": payload.get("status", "error"),
        "error": payload.get("error"),
        "config_json": spec.config_json,
        "wall_s": payload.get("wall_s"),
        "started_at": payload.get("started_at"),
        "finished_at": payload.get("finished_at") or _now_iso(),
        "attempt": attempt,
        "segments": payload.get("segments"),
        "gpu_index": payload.get("gpu_index"),
        "experiment": experiment,
    })
    for col in PROVENANCE_COLUMNS:
        row[col] = payload.get(col)
    return row


class StoreCallback(Callback):
    """Writes one results row per trial: on completion (its final metrics) or on final failure (status=error).

    `written` maps trial_key -> status of every row written by this callback instance.
    """

    def __init__(self, store, experiment: str | None = None):
        self.store = store
        self.experiment = experiment
        self.written: dict[str, str] = {}
        self.already_stored: set[str] = set()  # trials a restored experiment held that the store had (ledger.py)
        self.write_errors: dict[str, str] = {}
        self._prov: dict[str, dict[str, Any]] = {}
        self._curves: dict[str, dict[Any, dict[str, Any]]] = {}  # trial_id -> step -> curve row
        self._early: dict[str, set[str]] = {}  # trial_id -> packed members whose row is already written

    # per-attempt provenance arrives with the first report of every attempt
    def on_trial_result(self, iteration, trials, trial, result, **info):
        blob = result.get(PROV_KEY)
        if blob:
            try:
                self._prov[trial.trial_id] = json.loads(blob)
            except ValueError:
                pass
        point = {k[len(CURVE_PREFIX):]: v for k, v in result.items() if k.startswith(CURVE_PREFIX)}
        if point:
            self._curves.setdefault(trial.trial_id, {})[point.get("step")] = point
        if result.get(MEMBER_ROW_KEY):
            self._write_member(trial, result[MEMBER_ROW_KEY])

    def _write_member(self, trial, blob: str) -> None:
        """A packed member finished: its row goes to the store now, so a later crash of the pack's
        process cannot take it along (grid/run/pack.py)."""
        try:
            spec, row = spec_of(trial), json.loads(blob)
        except Exception as exc:  # noqa: BLE001
            log.error("lingrid: cannot read a member row of trial %s: %s", trial, exc)
            return
        member = next((m for m in spec.members if m.trial_key == row.get("trial_key")), None)
        if member is None:
            log.error("lingrid: trial %s reported a row for %s, not one of its members", trial, row.get("trial_key"))
            return
        self._write(member, row, attempt=row.get("attempt") or trial.num_failures + 1)
        self._early.setdefault(trial.trial_id, set()).add(member.trial_key)

    def on_trial_complete(self, iteration, trials, trial, **info):
        try:
            spec = spec_of(trial)
        except Exception as exc:  # noqa: BLE001 - not one of ours; nothing to write
            log.error("lingrid: cannot read the spec of trial %s: %s", trial, exc)
            return
        result = trial.last_result or {}
        blob = result.get(ROW_KEY)
        if blob:
            payload = json.loads(blob)
            if payload.get(STORED_FLAG):  # the store already has it: this attempt ran nothing
                self._curves.pop(trial.trial_id, None)
                self.already_stored.add(spec.trial_key)
                return
        else:
            payload = dict(self._prov.get(trial.trial_id, {}))
            payload.update(status="error", error="the trial finished without reporting its final result "
                                                 "(the trial function returned early through Tune?)")
        self._write_curve(spec, trial)
        self._early.pop(trial.trial_id, None)  # the final payload holds every member's row: written again
        self._write_all(spec, payload, attempt=trial.num_failures + 1)

    def _write_all(self, spec, payload: dict[str, Any], attempt: int | None, keep: frozenset | set = frozenset()) -> None:
        """The trial's row, or for a pack one row per member (its own payload, or the pack's error);
        members in `keep` already have their row."""
        if not spec.members:
            self._write(spec, payload, attempt=attempt)
            return
        by_key = {r.get("trial_key"): r for r in payload.get("members") or [] if isinstance(r, dict)}
        for member in spec.members:
            if member.trial_key in keep:
                continue
            row = by_key.get(member.trial_key)
            if row is not None and row.get(STORED_FLAG):
                self.already_stored.add(member.trial_key)
                continue
            if row is None:
                row = {k: v for k, v in payload.items() if k != "members"}
                if row.get("status", "ok") != "error":
                    row.update(status="error", error="the pack finished without a row for this member")
            self._write(member, row, attempt=row.get("attempt") or attempt)

    def on_trial_error(self, iteration, trials, trial, **info):
        try:
            spec = spec_of(trial)
        except Exception as exc:  # noqa: BLE001
            log.error("lingrid: cannot read the spec of trial %s: %s", trial, exc)
            return
        payload = dict(self._prov.get(trial.trial_id, {}))
        last = trial.last_result or {}
        if not payload and last.get(PROV_KEY):
            try:
                payload = json.loads(last[PROV_KEY])
            except ValueError:
                payload = {}
        payload["status"] = "error"
        payload["error"] = self._error_text(trial)
        payload["finished_at"] = _now_iso()
        self._write_curve(spec, trial)
        started = payload.get("attempt_started_at") or payload.get("started_at")
        if started:
            try:  # this attempt's time, plus the segments its checkpoint carried
                t0 = _dt.datetime.fromisoformat(started)
                payload["wall_s"] = ((_dt.datetime.now(_dt.timezone.utc) - t0).total_seconds()
                                     + float(payload.get("prior_wall_s") or 0.0))
            except ValueError:
                pass
        # packed members that finished before the process died keep their own rows
        self._write_all(spec, payload, attempt=max(trial.num_failures, 1), keep=self._early.pop(trial.trial_id, set()))

    @staticmethod
    def _error_text(trial) -> str:
        text = None
        try:
            text = trial.get_error()
        except Exception:  # noqa: BLE001
            text = None
        if not text and getattr(trial, "error_file", None):
            try:
                with open(trial.error_file, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                text = None
        text = _ANSI.sub("", text or f"trial {trial.trial_id} failed (no error text was recorded by Ray Tune)")
        if len(text) > MAX_ERROR_CHARS:
            text = "...[truncated]...\n" + text[-MAX_ERROR_CHARS:]
        return text

    def _write_curve(self, spec, trial) -> None:
        points = self._curves.pop(trial.trial_id, None)
        if not points:
            return
        rows = [points[k] for k in sorted(points, key=lambda s: (s is None, s if s is not None else 0))]
        try:
            self.store.write_curve(spec.trial_key, rows, suite=spec.suite, grid=spec.grid)
        except Exception as exc:  # noqa: BLE001 - the row still gets written
            log.error("lingrid: could not store the curve of trial %s: %s", spec.trial_key, exc)

    def _write(self, spec, payload: dict[str, Any], attempt: int | None) -> None:
        if isinstance(payload.get("metrics"), dict):
            payload = {**payload, "metrics": {k: v for k, v in payload["metrics"].items()
                                              if not k.startswith(CURVE_PREFIX)}}
        row = build_row(spec, payload, attempt=attempt, experiment=self.experiment)
        try:
            self.store.write_row(row, suite=spec.suite, grid=spec.grid)
            self.written[spec.trial_key] = row["status"]
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a metric of a type the store rejects
            msg = f"{type(exc).__name__}: {exc}"
            log.error("lingrid: could not store the row of trial %s: %s", spec.trial_key, msg)
            self.write_errors[spec.trial_key] = msg
        # keep the trial visible: an error row without the offending metrics
        fallback = build_row(spec, {k: v for k, v in payload.items() if k != "metrics"}, attempt=attempt,
                             experiment=self.experiment)
        fallback["status"] = "error"
        fallback["error"] = f"storing the trial's row failed: {msg}" + (f"\n{payload['error']}" if payload.get("error") else "")
        try:
            self.store.write_row(fallback, suite=spec.suite, grid=spec.grid)
            self.written[spec.trial_key] = "error"
        except Exception as exc2:  # noqa: BLE001
            log.error("lingrid: could not store the fallback row of trial %s: %s", spec.trial_key, exc2)

    def __getstate__(self):  # pickled into tuner.pkl: keep only the configuration
        return {"store": self.store, "experiment": self.experiment, "written": {}, "already_stored": set(),
                "write_errors": {}, "_prov": {},
                "_curves": {}, "_early": {}}


def _fmt_s(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class ProgressCallback(Callback):
    """One progress line (done / failed / running / pending / ETA), at most every `interval_s`, and at the end."""

    def __init__(self, n_total: int, *, experiment: str = "", n_skipped: int = 0, interval_s: float = 5.0,
                 stream=None, enabled: bool = True, n_runs: int | None = None):
        self.n_total = n_total
        self.n_runs = n_runs  # packs (grid/run/pack.py): runs in all trials; the line adds their outcome
        self.experiment = experiment
        self.n_skipped = n_skipped
        self.interval_s = interval_s
        self.stream = stream
        self.enabled = enabled
        self._reset()

    def _reset(self):
        self.t0 = time.time()
        self.running: set[str] = set()
        self.started: dict[str, float] = {}
        self.statuses: dict[str, str] = {}
        self.n_retried = 0
        self.walls: list[float] = []
        self.max_running = 0
        self.run_statuses: dict[str, list[str]] = {}  # trial_id -> statuses of its runs (with n_runs)
        self.early_runs: dict[str, dict[str, str]] = {}  # trial_id -> packed member -> status, as they finish
        self._last_print = 0.0
        self._last_line = ""

    def __getstate__(self):
        state = dict(self.__dict__)
        state["stream"] = None  # streams do not pickle (tuner.pkl)
        return state

    # ----------------------------------------------------------- tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self.started[trial.trial_id] = time.time()
        self.max_running = max(self.max_running, len(self.running))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.n_retried += 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        res = trial.last_result or {}
        self.statuses[trial.trial_id] = res.get("status", "ok") if isinstance(res.get("status"), str) else "ok"
        wall = res.get("wall_s")
        # a trial that failed fast says nothing about how long a working one takes
        if isinstance(wall, (int, float)) and math.isfinite(wall) and self.statuses[trial.trial_id] != "error":
            self.walls.append(float(wall))
        if self.n_runs is not None:
            self.run_statuses[trial.trial_id] = self._member_statuses(trial, res)
        self._maybe_print(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.n_runs is None or not result.get(MEMBER_ROW_KEY):
            return
        try:
            row = json.loads(result[MEMBER_ROW_KEY])
        except ValueError:
            return
        early = self.early_runs.setdefault(trial.trial_id, {})
        early[str(row.get("trial_key"))] = str(row.get("status", "error"))
        self.run_statuses[trial.trial_id] = list(early.values())
        self._maybe_print()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.statuses[trial.trial_id] = "error"
        if self.n_runs is not None:
            try:
                n = max(len(spec_of(trial).members), 1)
            except Exception:  # noqa: BLE001 - not one of ours
                n = 1
            early = list(self.early_runs.get(trial.trial_id, {}).values())  # packed runs that finished first
            self.run_statuses[trial.trial_id] = early + ["error"] * max(n - len(early), 0)
        self._maybe_print(force=True)

    @staticmethod
    def _member_statuses(trial, res: dict[str, Any]) -> list[str]:
        try:
            payload = json.loads(res.get(ROW_KEY) or "{}")
        except ValueError:
            payload = {}
        if isinstance(payload, dict) and isinstance(payload.get("members"), list):
            return [str(r.get("status", "error")) for r in payload["members"] if isinstance(r, dict)]
        return [res.get("status", "ok") if isinstance(res.get("status"), str) else "ok"]

    def on_step_end(self, iteration, trials, **info):
        self._maybe_print()

    def on_experiment_end(self, trials, **info):
        self._maybe_print(force=True, final=True)

    # -------------------------------------------------------------- output
    def line(self, final: bool = False) -> str:
        n_failed = sum(1 for s in self.statuses.values() if s == "error")
        n_done = len(self.statuses) - n_failed
        by = {}
        for s in self.statuses.values():
            if s != "error":
                by[s] = by.get(s, 0) + 1
        running = len(self.running)
        pending = max(self.n_total - len(self.statuses) - running, 0)
        detail = ", ".join(f"{n} {s}" for s, n in sorted(by.items())) if by else ""
        parts = [f"{n_done}/{self.n_total} done" + (f" ({detail})" if detail and set(by) != {"ok"} else ""),
                 f"{n_failed} failed", f"{running} running", f"{pending} pending"]
        if self.n_runs is not None:
            runs = [st for sts in self.run_statuses.values() for st in sts]
            parts.append(f"runs: {sum(st != 'error' for st in runs)}/{self.n_runs} done, "
                         f"{sum(st == 'error' for st in runs)} failed")
        if self.n_retried:
            parts.append(f"{self.n_retried} retried")
        if self.n_skipped:
            parts.append(f"{self.n_skipped} skipped (already in store)")
        elapsed = time.time() - self.t0
        tail = f"elapsed {_fmt_s(elapsed)}"
        if not final and self.walls and (pending or running):
            conc = max(self.max_running, running, 1)
            mean = sum(self.walls) / len(self.walls)
            now = time.time()  # a running trial has already used part of its (mean) wall time
            lefts = [max(mean - (now - self.started.get(t, now)), 0.0) for t in self.running]
            left = sum(lefts)
            # running trials run side by side: never sooner than the longest of them
            eta = max(max(lefts, default=0.0), (left + mean * pending) / conc)
            if pending == 0 and left == 0.0:  # every running trial is past the mean: no honest estimate
                tail += f", ETA ? (running past the {_fmt_s(mean)} mean of finished trials)"
            else:
                tail += f", ETA ~{_fmt_s(eta)}"
        name = f"[{self.experiment}] " if self.experiment else ""
        return f"{name}{' | '.join(parts)} | {tail}"

    def _maybe_print(self, force: bool = False, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.time()
        if not force and now - self._last_print < self.interval_s:
            return
        if force and not final and now - self._last_print < min(1.0, self.interval_s):
            return  # bursts of completions: still at most ~1 line per second
        line = self.line(final=final)
        if line == self._last_line and not final:
            return
        self._last_print, self._last_line = now, line
        print(("done: " if final else "") + line, file=self.stream or sys.stderr, flush=True)
