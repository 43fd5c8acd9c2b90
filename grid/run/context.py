"""What a trial function gets and gives back: its context, its progress, its result row (the trial contract).

The Ray Tune function (grid/run/trainable.py) and packs (grid/run/pack.py) both run trial functions through it.

Contract of a trial function::

    def my_trial(config: dict, ctx: TrialContext) -> dict | None:
        ckpt = ctx.checkpoint_dir()            # restored checkpoint dir (retry / resume) or None
        ...
        ctx.report({"epoch": e, "loss": l}, checkpoint_dir=some_dir)   # optional, any number of times
        return {"test_acc": acc}               # final metrics; may set "status": "diverged" | "nan" | "skipped"

The final row's metrics are the last `ctx.report` metrics updated with the returned dict.
An exception marks the attempt failed; Tune retries it (FailureConfig.max_failures) from the
last checkpoint, and after the last attempt the driver writes a status="error" row. A
deterministic error (a config the model code refuses, a backend that cannot run on this worker:
`NOT_RETRIED`) is not retried: it ends the trial at once as an error row.

A trial's `wall_s` is the sum of its segments: every checkpoint carries the time spent so far
(SEGMENTS_FILE), so a trial resumed after a retry or a driver crash adds its new segment to it, and
`started_at` stays the first segment's start (`segments` counts them).

A restored experiment may hold trials the store already has (grid/run/ledger.py): those return at
once without running, and the driver writes nothing for them.

Only `ray.tune.*` APIs are used here (ray.train.report inside Tune is an error on Ray >= 2.52).
Model code (torch, fla, triton) is imported by the trial function, on the worker, never here.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from grid.results.schema import CURVE_PREFIX, RUNNER_COLUMNS, infer_type

# Lazy here: ray (heavy: never at import time on the driver); traceback (one code path)

# The progress block: every report to Tune carries exactly these keys (None until known), from the
# first report on, so progress.csv, TensorBoard and the progress display see one fixed set. The
# values come from what the trial function reports, by these names (a "curve/" prefix counts too);
# tokens and epochs are derived from the step and the trial's planned work (TrialSpec.work) when the
# trial does not report them.
PROGRESS_PREFIX = "progress/"


PROGRESS_SOURCES: dict[str, tuple[str, ...]] = {
    "step": ("step",),                                  # optimizer steps done
    "tokens": ("tokens", "tokens_seen"),                # training tokens seen
    "epoch": (),                                        # epochs done (fractional), from step and work
    "train_loss": ("train_loss",),
    "eval_loss": ("val_loss", "test_loss"),
    "eval_acc": ("test_acc", "val_acc"),
    "runs_done": (),                                    # packs: member runs finished
}


FN_STATUSES = ("ok", "diverged", "nan", "skipped")


SEGMENTS_FILE = "lingrid_segments.json"  # in each checkpoint: wall time and start of the segments so far


# deterministic failures, by qualified class name (no import of model code here): retrying cannot help
NOT_RETRIED = frozenset({"grid.models.errors.ConfigError", "grid.models.errors.BackendUnavailable",
                         "pydantic_core._pydantic_core.ValidationError", "grid.run.context.PermanentError"})


class PermanentError(Exception):
    """Raise from a trial function for a failure that another attempt cannot fix (not retried)."""


def not_retried(exc: BaseException) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in NOT_RETRIED for c in type(exc).__mro__)


def error_text(exc: BaseException) -> str:
    import traceback  # noqa: PLC0415

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class Segments:
    """Time spent on a trial over its segments (attempts, resumes), carried in its checkpoints."""

    def __init__(self, prior_s: float = 0.0, first_started_at: str | None = None, n: int = 1):
        self.t0 = time.time()
        self.prior_s, self.first_started_at, self.n = prior_s, first_started_at, n

    @classmethod
    def restore(cls, checkpoint_dir: str | None, started_at: str) -> "Segments":
        data: dict[str, Any] = {}
        if checkpoint_dir:
            try:
                data = json.loads((Path(checkpoint_dir) / SEGMENTS_FILE).read_text())
            except (OSError, ValueError):
                data = {}
        if not data:
            return cls(0.0, started_at, 1)
        return cls(float(data.get("wall_s", 0.0)), data.get("started_at") or started_at, int(data.get("segments", 1)) + 1)

    def wall_s(self) -> float:
        return self.prior_s + time.time() - self.t0

    def save(self, checkpoint_dir: str | os.PathLike[str]) -> None:
        (Path(checkpoint_dir) / SEGMENTS_FILE).write_text(json.dumps(
            {"wall_s": self.wall_s(), "started_at": self.first_started_at, "segments": self.n}))


# result keys Tune fills in itself: user metrics may not use them
TUNE_RESERVED = frozenset({
    "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s", "pid",
    "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name",
    "should_checkpoint", "experiment_tag", "timesteps_total", "episodes_total", "experiment_id",
})


def import_string(path: str) -> Callable[..., Any]:
    """'package.module:function' -> the function object."""
    module, _, name = path.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"cannot import trial module {module!r} (trainable={path!r}): {exc}") from exc
    try:
        return getattr(mod, name)
    except AttributeError:
        raise ImportError(f"module {module!r} has no function {name!r} (trainable={path!r})") from None


def _plain(name: str, value: Any) -> Any:
    """numpy / torch scalars -> Python values, checked against the store's metric types (fail early)."""
    return infer_type(name, value)[1]


def _clean_metrics(metrics: dict[str, Any] | None, where: str) -> dict[str, Any]:
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise TypeError(f"{where} must be a dict of metrics, got {type(metrics).__name__}")
    out = {}
    for k, v in metrics.items():
        if not isinstance(k, str) or not k:
            raise TypeError(f"{where}: metric names must be non-empty strings, got {k!r}")
        if k.startswith(("__", PROGRESS_PREFIX)) or k in TUNE_RESERVED or k in RUNNER_COLUMNS:
            raise ValueError(f"{where}: metric name {k!r} is reserved (by the lingrid runner or Ray Tune); rename it")
        out[k] = _plain(k, v)
    return out


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


class ProgressTracker:
    """The latest progress of one trial (PROGRESS_SOURCES), updated from each report's metrics."""

    def __init__(self, work=None):
        self.work = work
        self.values: dict[str, float | None] = dict.fromkeys(PROGRESS_SOURCES)

    def update(self, metrics: dict[str, Any]) -> None:
        for field, names in PROGRESS_SOURCES.items():
            for name in names:
                v = _number(metrics.get(name, metrics.get(CURVE_PREFIX + name)))
                if v is not None:
                    self.values[field] = v
                    break
        step, w = self.values["step"], self.work
        if step is not None and w is not None and w.steps:
            if "tokens" not in metrics and CURVE_PREFIX + "tokens" not in metrics and "tokens_seen" not in metrics:
                self.values["tokens"] = step * w.tokens / w.steps
            if w.epochs:
                self.values["epoch"] = step * w.epochs / w.steps

    def block(self) -> dict[str, float | None]:
        return {PROGRESS_PREFIX + k: v for k, v in self.values.items()}

    @classmethod
    def combined(cls, trackers: list["ProgressTracker"], work=None, runs_done: int = 0) -> "ProgressTracker":
        """A pack's progress: steps and tokens summed over its members, losses averaged over those that have one."""
        out = cls(work)
        for field in ("step", "tokens"):
            vals = [t.values[field] for t in trackers if t.values[field] is not None]
            out.values[field] = sum(vals) if vals else None
        for field in ("epoch", "train_loss", "eval_loss", "eval_acc"):
            vals = [t.values[field] for t in trackers if t.values[field] is not None]
            out.values[field] = sum(vals) / len(vals) if vals else None
        out.values["runs_done"] = float(runs_done)
        return out


class TrialContext:
    """Handed to the trial function: report intermediate metrics/checkpoints, find the restored checkpoint."""

    def __init__(self, spec, gpu_index: str | None, segments: Segments | None = None):
        self.spec = spec
        self.trial_key: str = spec.trial_key
        self.config: dict[str, Any] = spec.config
        self.gpu_index = gpu_index
        self.last_metrics: dict[str, Any] = {}
        self.progress = ProgressTracker(spec.work)
        self.segments = segments
        self._restored: str | None = None
        self._restored_checked = False

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | os.PathLike[str] | None = None) -> None:
        """Report intermediate metrics (and optionally persist `checkpoint_dir` as the trial's checkpoint).

        The directory is copied into the experiment storage by Tune; it may be deleted afterwards.
        Retries and resumed experiments restart from the latest reported checkpoint.
        """
        from ray import tune

        clean = _clean_metrics(metrics, "ctx.report()")
        self.last_metrics.update(clean)
        self.progress.update(clean)
        if checkpoint_dir is not None and self.segments is not None:
            self.segments.save(checkpoint_dir)  # the next segment adds its time to this one's
        checkpoint = tune.Checkpoint.from_directory(os.fspath(checkpoint_dir)) if checkpoint_dir is not None else None
        tune.report({**clean, **self.progress.block()}, checkpoint=checkpoint)

    def checkpoint_dir(self) -> str | None:
        """Directory of the checkpoint this attempt was restored from, or None on a fresh start."""
        if not self._restored_checked:
            from ray import tune

            self._restored_checked = True
            ckpt = tune.get_checkpoint()
            if ckpt is not None:
                fs_type = getattr(getattr(ckpt, "filesystem", None), "type_name", "local")
                self._restored = ckpt.path if fs_type == "local" else ckpt.to_directory()
        return self._restored


def utcnow_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def final_report(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics of a trial's final report to Tune: its row's scalar metrics without curve points
    (ctx.last_metrics keeps the "curve/*" keys of the latest report; re-sent, that stale point would
    land in progress.csv and TensorBoard a second time, at the final iteration)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) and not k.startswith(CURVE_PREFIX)}


def finish_row(spec, ctx, head: dict[str, Any], segments: Segments) -> dict[str, Any]:
    """Call the trial function of `spec` with `ctx`; the store-row payload of its outcome.

    A deterministic error (`not_retried`) becomes an error row here instead of an exception, so
    nobody retries it; any other exception propagates (Tune, or the pack's thread, retries it)."""
    fn = import_string(spec.trainable)
    try:
        returned = fn(spec.config, ctx)
    except Exception as exc:  # noqa: BLE001 - only the deterministic kinds are caught, see below
        if not not_retried(exc):
            raise
        return {**head, "status": "error", "error": "not retried (deterministic): " + error_text(exc),
                "wall_s": segments.wall_s(), "finished_at": utcnow_iso(), "metrics": dict(ctx.last_metrics)}
    return result_row(spec, ctx, head, segments, returned)


def result_row(spec, ctx, head: dict[str, Any], segments: Segments, returned: dict[str, Any] | None) -> dict[str, Any]:
    """The store-row payload of what the trial function of `spec` returned (a group function's
    result for one member too: grid/run/pack.py)."""
    if returned is not None and not isinstance(returned, dict):
        raise TypeError(f"trial function {spec.trainable} must return a dict of final metrics or None, got {type(returned).__name__}")
    returned = dict(returned or {})
    status = returned.pop("status", None) or "ok"
    if status not in FN_STATUSES:
        raise ValueError(f"trial function {spec.trainable} returned status={status!r}; allowed: {list(FN_STATUSES)} (raise for errors)")
    message = returned.pop("error", None)
    metrics = {**ctx.last_metrics, **_clean_metrics(returned, f"return value of {spec.trainable}")}
    return {
        **head,
        "status": status,
        "error": None if message is None else str(message),
        "wall_s": segments.wall_s(),
        "finished_at": utcnow_iso(),
        "metrics": metrics,
    }
