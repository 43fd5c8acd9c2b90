"""Driver-side Tune callbacks: the results-store writer, the progress display, progress.csv and TensorBoard.

Both run in the driver process (Tune calls callbacks there), so the store has a single writer.
Neither lets an exception escape: a failure to write one row must not stop the grid (the metrics
also stay in Tune's own result.json under the experiment directory).
"""
from __future__ import annotations

import atexit
import datetime as _dt
import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, TBXLoggerCallback

from grid.results.schema import CURVE_PREFIX, PROVENANCE_COLUMNS
from grid.run.context import PROGRESS_PREFIX, PROGRESS_SOURCES
from grid.run.ledger import STORED_FLAG
from grid.run.progress import Board, LIVE_EVERY_S, PLAIN_EVERY_S, fmt_s, progress_mode, trial_labels
from grid.run.spec import TrialSpec
from grid.run.trainable import MEMBER_ROW_KEY, PROV_KEY, ROW_KEY, SPEC_KEY, TRIAL_KEY

# Lazy here: rich (optional or slow to import: only the paths that use them)

log = logging.getLogger(__name__)

# intermediate reports with metrics named "curve/<column>" (CURVE_PREFIX) are curve points: on completion
# they go to the curves table (one row per step, the last report of a step wins: retries and resumes
# re-report), and never into the trial's results row

MAX_ERROR_CHARS = 20_000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def spec_of(trial):
    return TrialSpec.from_json(trial.config[TRIAL_KEY][SPEC_KEY])


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def build_row(spec, payload: dict[str, Any], *, attempt: int | None, experiment: str | None) -> dict[str, Any]:
    """Store row = metrics, then the spec's descriptive columns (they win), then runner-owned columns."""

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
        "exec_path": payload.get("exec_path"),
        "exec_members": payload.get("exec_members"),
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


class ProgressCallback(Callback):
    """The run's progress display (grid/run/progress.py): a rich live table on a terminal, sparse plain
    lines otherwise (one every `interval_s`, one per finished trial), nothing with LINGRID_PROGRESS=off.

    `specs` (the TrialSpecs of this experiment) give each trial its label and planned work, so the
    ETA comes from work done; without them it falls back to the wall time of finished trials."""

    def __init__(self, n_total: int, *, experiment: str = "", n_skipped: int = 0, interval_s: float | None = None,
                 stream=None, enabled: bool = True, n_runs: int | None = None, specs=None):
        self.board = Board(n_total, experiment=experiment, n_skipped=n_skipped, n_runs=n_runs, specs=specs)
        self.interval_s = PLAIN_EVERY_S if interval_s is None else interval_s
        self.stream = stream
        self.enabled = enabled
        self._mode: str | None = None
        self._live = None
        self._last_print = 0.0
        self._last_line = ""

    def __getstate__(self):  # pickled into tuner.pkl: streams and the live display do not pickle
        state = dict(self.__dict__)
        state.update(stream=None, _live=None, _mode=None)
        return state

    @property
    def n_total(self) -> int:
        return self.board.n_total

    def line(self, final: bool = False) -> str:
        return self.board.summary(final=final)

    # ----------------------------------------------------------- tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self.board.start(trial.trial_id, self._key(trial))
        self._show()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.board.recover(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        values = {k[len(PROGRESS_PREFIX):]: v for k, v in result.items() if k.startswith(PROGRESS_PREFIX)}
        if values:
            self.board.progress(trial.trial_id, values)
        if self.board.n_runs is not None and result.get(MEMBER_ROW_KEY):
            try:
                row = json.loads(result[MEMBER_ROW_KEY])
            except ValueError:
                row = None
            if isinstance(row, dict):
                early = self.board.early_runs.setdefault(trial.trial_id, {})
                early[str(row.get("trial_key"))] = str(row.get("status", "error"))
                self.board.run_statuses[trial.trial_id] = list(early.values())
        self._show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        res = trial.last_result or {}
        status = res.get("status", "ok") if isinstance(res.get("status"), str) else "ok"
        wall = res.get("wall_s")
        self.on_trial_result(iteration, trials, trial, {k: v for k, v in res.items() if k != MEMBER_ROW_KEY})
        self.board.finish(trial.trial_id, status, float(wall) if isinstance(wall, (int, float)) else None)
        if self.board.n_runs is not None:
            self.board.run_statuses[trial.trial_id] = self._member_statuses(res)
        self._finished(trial, status)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.board.finish(trial.trial_id, "error")
        if self.board.n_runs is not None:
            try:
                n = max(len(spec_of(trial).members), 1)
            except Exception:  # noqa: BLE001 - not one of ours
                n = 1
            early = list(self.board.early_runs.get(trial.trial_id, {}).values())  # packed runs that finished first
            self.board.run_statuses[trial.trial_id] = early + ["error"] * max(n - len(early), 0)
        self._finished(trial, "error")

    def on_step_end(self, iteration, trials, **info):
        self._show()

    def on_experiment_end(self, trials, **info):
        self.close()

    # -------------------------------------------------------------- output
    @staticmethod
    def _key(trial) -> str | None:
        try:
            return trial.config[TRIAL_KEY]["trial_key"]
        except (AttributeError, KeyError, TypeError):
            return None

    @staticmethod
    def _member_statuses(res: dict[str, Any]) -> list[str]:
        try:
            payload = json.loads(res.get(ROW_KEY) or "{}")
        except ValueError:
            payload = {}
        if isinstance(payload, dict) and isinstance(payload.get("members"), list):
            return [str(r.get("status", "error")) for r in payload["members"] if isinstance(r, dict)]
        return [res.get("status", "ok") if isinstance(res.get("status"), str) else "ok"]

    def _out(self):
        return self.stream or sys.stderr

    def mode(self) -> str:
        if self._mode is None:
            self._mode = progress_mode(self._out()) if self.enabled else "off"
        return self._mode

    def _show(self, force: bool = False) -> None:
        mode = self.mode()
        if mode == "off":
            return
        now = time.time()
        if mode == "live":
            if force or now - self._last_print >= LIVE_EVERY_S:
                self._last_print = now
                self._live_update()
            return
        if not force and now - self._last_print < self.interval_s:
            return
        line = self.line()
        if line != self._last_line:
            self._last_print, self._last_line = now, line
            print(line, file=self._out(), flush=True)

    def _finished(self, trial, status: str) -> None:
        """One line per finished trial (above the live table, or in the plain log), then the display."""
        mode = self.mode()
        if mode == "off":
            return
        st = self.board.state(trial.trial_id)
        label = st.label if st is not None else str(self._key(trial) or trial.trial_id)
        detail = self.board.trial_text(st) if st is not None else ""
        wall = time.time() - self.board.started.get(trial.trial_id, time.time())
        name = f"[{self.board.experiment}] " if self.board.experiment else ""
        text = f"{name}{label}: {status} after {_fmt_s(wall)}" + (f" ({detail})" if detail else "")
        if mode == "live":
            self._live_start()
            self._live.console.print(text, highlight=False)
            self._show(force=True)
            return
        print(text, file=self._out(), flush=True)
        self._show(force=True)

    def _live_start(self) -> None:
        if self._live is None:
            from rich.console import Console  # noqa: PLC0415
            from rich.live import Live  # noqa: PLC0415

            self._live = Live(self.board.table(), console=Console(file=self._out()), auto_refresh=False,
                              transient=True, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
            atexit.register(self.close)  # an interrupted run still gives the terminal back

    def _live_update(self) -> None:
        self._live_start()
        self._live.update(self.board.table(), refresh=True)

    def close(self) -> None:
        """End the display: stop the live table and print the final summary line."""
        if self._live is not None:
            live, self._live = self._live, None
            try:
                live.stop()
            except Exception:  # noqa: BLE001 - never fail a run over its display
                pass
        if self.mode() != "off" and not getattr(self, "_closed", False):
            self._closed = True
            print("done: " + self.line(final=True), file=self._out(), flush=True)


def _fmt_s(s: float) -> str:
    return fmt_s(s)


# ------------------------------------------------------------------------------------- Tune's artefacts
# Tune's own loggers name TensorBoard runs by trial directory (the trial_key hash) on an iteration axis,
# and its progress.csv takes its header from the first report. These replace them (Tune adds its
# defaults only for the kinds of logger it is not given); result.json stays Tune's.

PROGRESS_CSV_COLUMNS = ("training_iteration", "time_total_s", *PROGRESS_SOURCES, "status")


class ProgressCSVCallback(CSVLoggerCallback):
    """progress.csv with one fixed header (PROGRESS_CSV_COLUMNS) from the first report on."""

    def log_trial_result(self, iteration: int, trial, result: dict):
        row = {}
        for col in PROGRESS_CSV_COLUMNS:
            v = result.get(col, result.get(PROGRESS_PREFIX + col))
            row[col] = v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None
        super().log_trial_result(iteration, trial, row)


class TensorBoardCallback(TBXLoggerCallback):
    """TensorBoard scalars per trial under <experiment>/tensorboard/<trial label>, against tokens (LM),
    or epochs for trials that count epochs (MAD). `labels`: trial_key -> label (progress.trial_labels)."""

    SCALARS = ("train_loss", "eval_loss", "eval_acc")

    def __init__(self, labels: dict[str, str] | None = None):
        super().__init__()
        self.labels = dict(labels or {})

    def log_trial_start(self, trial):
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        trial.init_local_path()
        key = trial.config.get(TRIAL_KEY, {}).get("trial_key", trial.trial_id)
        label = self.labels.get(key)
        if label is None:
            try:
                label = trial_labels([spec_of(trial)])[key]
            except Exception:  # noqa: BLE001 - not one of ours
                label = str(key)
        logdir = Path(trial.local_path).parent / "tensorboard" / re.sub(r"[^A-Za-z0-9._=+-]+", "_", label)
        self._trial_writer[trial] = self._summary_writer_cls(str(logdir), flush_secs=30)
        self._trial_result[trial] = {}

    def log_trial_result(self, iteration: int, trial, result: dict):
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        p = {k[len(PROGRESS_PREFIX):]: v for k, v in result.items() if k.startswith(PROGRESS_PREFIX)}
        epoch, tokens = p.get("epoch"), p.get("tokens")
        x = epoch if isinstance(epoch, (int, float)) else tokens
        if not isinstance(x, (int, float)) or not math.isfinite(x):
            return
        point = {name: p[name] for name in self.SCALARS
                 if isinstance(p.get(name), (int, float)) and math.isfinite(p[name])}
        if self._trial_result.get(trial) == {"x": x, **point}:  # a report that repeats the last point (the final one)
            return
        self._trial_result[trial] = {"x": x, **point}
        for name, v in point.items():
            self._trial_writer[trial].add_scalar(name, v, global_step=int(round(x)))
        self._trial_writer[trial].flush()

    def log_trial_end(self, trial, failed: bool = False):
        if trial in self._trial_writer:  # no hparams: the config is one JSON blob, the store has it
            self._trial_writer.pop(trial).close()
            self._trial_result.pop(trial, None)


def artefact_callbacks(specs=None) -> list:
    """progress.csv and TensorBoard loggers for an experiment of `specs` (TensorBoard only with tensorboardX)."""

    out: list = [ProgressCSVCallback()]
    try:
        out.append(TensorBoardCallback(trial_labels(specs) if specs else None))
    except ImportError:  # tensorboardX comes with ray[tune]; without it there is just no TensorBoard
        pass
    return out
