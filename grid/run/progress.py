"""What a run's progress display knows and shows: counts, per-trial progress, an ETA from work done.

One implementation for every suite. grid/run/callbacks.py:ProgressCallback feeds a `Board` from
Tune's callbacks; the Board renders either a rich live table (on a terminal) or sparse plain lines.

ETA. Every trial of lingrid's suites declares its planned work (TrialSpec.work: steps and tokens)
and reports its progress block (grid/run/trainable.py: step, tokens, losses). The ETA is

    (planned tokens of the unfinished trials - what they have done) / (tokens trained per second,
    over all trials, since the first progress report)

so it leaves out the run's start-up (Ray, imports, first kernels), includes the later trials'
start-up costs in proportion and knows how many trials run side by side. When trials may stop early (MAD stops at 99.9 %
accuracy) it is an upper bound, shown as "ETA <=". Trials without declared work fall back to the
mean wall time of finished trials.

Mode: LINGRID_PROGRESS = auto (default: live on a terminal, plain otherwise) | live | plain | off.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

# Lazy here: rich (optional or slow to import: only the paths that use them)

MODE_ENV = "LINGRID_PROGRESS"
MODES = ("auto", "live", "plain", "off")
PLAIN_EVERY_S = 30.0  # plain lines (logs, CI): one every this often, plus one per finished trial
LIVE_EVERY_S = 0.5    # live display: redraw at most this often

# columns that name a trial in tables and TensorBoard, in this order (those equal for every trial are left out)
LABEL_COLUMNS = ("model_id", "hybrid", "scale", "task", "setting", "lr", "wd", "seed")


def progress_mode(stream=None) -> str:
    """The display to use on `stream`: live, plain or off (LINGRID_PROGRESS, else auto)."""
    value = (os.environ.get(MODE_ENV) or "auto").strip().lower()
    if value not in MODES:  # a display setting never stops a run: say so once and show the default
        if not getattr(progress_mode, "_warned", False):
            progress_mode._warned = True
            print(f"warning: {MODE_ENV}={value!r} is not one of {', '.join(MODES)}; using auto", file=sys.stderr)
        value = "auto"
    if value != "auto":
        return value
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    return "live" if tty and os.environ.get("TERM", "") != "dumb" else "plain"


def fmt_s(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_count(n: float) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def _label_value(col: str, v) -> str:
    if col == "seed":
        return f"s{v}"
    if col in ("lr", "wd"):
        return f"{col}={v:g}" if isinstance(v, (int, float)) else f"{col}={v}"
    return str(v)


def trial_labels(specs) -> dict[str, str]:
    """trial_key -> a short name: model_id plus the LABEL_COLUMNS that differ between `specs`.

    A pack is named by what its members share, plus its number of runs."""
    def cols(spec) -> dict[str, Any]:
        if not spec.members:
            return spec.columns
        shared = dict(spec.members[0].columns)
        for m in spec.members[1:]:
            shared = {k: v for k, v in shared.items() if m.columns.get(k) == v}
        return shared

    specs = list(specs)
    all_cols = [cols(s) for s in specs]
    varying = [c for c in LABEL_COLUMNS
               if c == "model_id" or len({repr(a.get(c)) for a in all_cols}) > 1]
    out: dict[str, str] = {}
    for s, c in zip(specs, all_cols):
        parts = [_label_value(k, c[k]) for k in varying if c.get(k) is not None]
        label = " ".join(parts) or s.trial_key[:10]
        if s.members:
            label += f" ({len(s.members)} runs)"
        out[s.trial_key] = label
    seen: dict[str, int] = {}
    for key, label in out.items():  # two trials that differ only where labels do not look: add the key
        seen[label] = seen.get(label, 0) + 1
    return {k: (f"{v} {k[:8]}" if seen[v] > 1 else v) for k, v in out.items()}


@dataclass
class TrialState:
    key: str
    label: str
    work: Any = None                 # grid.run.spec.Work or None
    started: float | None = None
    values: dict[str, float | None] = field(default_factory=dict)  # the trial's latest progress block
    finished: bool = False

    def fraction(self) -> float | None:
        if self.finished:
            return 1.0
        if self.work is None or not self.work.tokens:
            return None
        return min(max((self.values.get("tokens") or 0.0) / self.work.tokens, 0.0), 1.0)


class Board:
    """The state of one experiment's progress and its renderings (see the module docstring)."""

    def __init__(self, n_total: int, *, experiment: str = "", n_skipped: int = 0, n_runs: int | None = None,
                 specs=None):
        self.n_total = n_total
        self.n_runs = n_runs  # packs (grid/run/pack.py): runs in all trials; the line adds their outcome
        self.experiment = experiment
        self.n_skipped = n_skipped
        specs = list(specs or [])
        labels = trial_labels(specs) if specs else {}
        self.planned = {s.trial_key: TrialState(s.trial_key, labels[s.trial_key], s.work) for s in specs}
        # work-based ETA only when every trial of the experiment declared its work
        self.by_work = bool(specs) and len(specs) == n_total and all(s.work is not None for s in specs)
        self.may_stop_early = any(s.work is not None and s.work.may_stop_early for s in specs)
        self.reset()

    def reset(self):
        self.t0 = time.time()
        self.first_start: float | None = None
        self.first_report: tuple[float, float] | None = None  # (time, tokens trained) at the first progress
        self.running: set[str] = set()
        self.started: dict[str, float] = {}
        self.statuses: dict[str, str] = {}
        self.n_retried = 0
        self.walls: list[float] = []
        self.max_running = 0
        self.run_statuses: dict[str, list[str]] = {}  # trial_id -> statuses of its runs (with n_runs)
        self.early_runs: dict[str, dict[str, str]] = {}  # trial_id -> packed member -> status, as they finish
        self.keys: dict[str, str] = {}  # trial_id -> trial_key
        for st in self.planned.values():
            st.started, st.values, st.finished = None, {}, False

    # ------------------------------------------------------------------ state changes
    def state(self, trial_id: str) -> TrialState | None:
        key = self.keys.get(trial_id)
        return self.planned.get(key) if key else None

    def start(self, trial_id: str, key: str | None) -> None:
        now = time.time()
        self.running.add(trial_id)
        self.started[trial_id] = now
        self.max_running = max(self.max_running, len(self.running))
        self.first_start = now if self.first_start is None else self.first_start
        if key is not None:
            self.keys[trial_id] = key
            st = self.planned.get(key)
            if st is not None:
                st.started = st.started or now

    def progress(self, trial_id: str, values: dict[str, float | None]) -> None:
        st = self.state(trial_id)
        if st is not None:
            st.values.update({k: v for k, v in values.items() if v is not None})
            if self.first_report is None and st.values.get("tokens"):
                # the rate is measured from here: start-up before the first step (Ray, imports, the
                # first kernels) is not training speed
                self.first_report = (time.time(), self.work_totals()[1])

    def recover(self, trial_id: str) -> None:
        self.running.discard(trial_id)
        self.n_retried += 1

    def finish(self, trial_id: str, status: str, wall: float | None = None) -> None:
        self.running.discard(trial_id)
        self.statuses[trial_id] = status
        # a trial that failed fast says nothing about how long a working one takes
        if wall is not None and math.isfinite(wall) and status != "error":
            self.walls.append(float(wall))
        st = self.state(trial_id)
        if st is not None:
            st.finished = True

    # ------------------------------------------------------------------ numbers
    def counts(self) -> dict[str, int]:
        n_failed = sum(1 for s in self.statuses.values() if s == "error")
        running = len(self.running)
        return {"done": len(self.statuses) - n_failed, "failed": n_failed, "running": running,
                "pending": max(self.n_total - len(self.statuses) - running, 0)}

    def work_totals(self) -> tuple[float, float, float]:
        """(planned tokens, tokens trained so far, planned tokens still to train)."""
        planned = trained = left = 0.0
        for st in self.planned.values():
            total = float(st.work.tokens) if st.work is not None else 0.0
            done = min(float(st.values.get("tokens") or 0.0), total) if total else 0.0
            planned += total
            trained += done
            left += 0.0 if st.finished else max(total - done, 0.0)
        return planned, trained, left

    def eta(self) -> tuple[str, float | None]:
        """("", None) at the end; else (text, seconds or None)."""
        c = self.counts()
        if not (c["pending"] or c["running"]):
            return "", None
        if self.by_work:
            _, trained, left = self.work_totals()
            if self.first_report is None:
                return "ETA after the first progress reports", None
            t_ref, trained_ref = self.first_report
            since, done = time.time() - t_ref, trained - trained_ref
            if done <= 0 or since <= 0:
                return "ETA after the first progress reports", None
            s = left / (done / since)
            return f"ETA {'<=' if self.may_stop_early else '~'}{fmt_s(s)}", s
        if not self.walls:
            return "", None
        conc = max(self.max_running, c["running"], 1)
        mean = sum(self.walls) / len(self.walls)
        now = time.time()  # a running trial has already used part of its (mean) wall time
        lefts = [max(mean - (now - self.started.get(t, now)), 0.0) for t in self.running]
        left = sum(lefts)
        if c["pending"] == 0 and left == 0.0:  # every running trial is past the mean: no honest estimate
            return f"ETA ? (running past the {fmt_s(mean)} mean of finished trials)", None
        # running trials run side by side: never sooner than the longest of them
        s = max(max(lefts, default=0.0), (left + mean * c["pending"]) / conc)
        return f"ETA ~{fmt_s(s)}", s

    # ------------------------------------------------------------------ renderings
    def summary(self, final: bool = False) -> str:
        """The one-line summary (plain mode prints it; the live display heads its table with it)."""
        c = self.counts()
        by: dict[str, int] = {}
        for s in self.statuses.values():
            if s != "error":
                by[s] = by.get(s, 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in sorted(by.items())) if by else ""
        parts = [f"{c['done']}/{self.n_total} done" + (f" ({detail})" if detail and set(by) != {"ok"} else ""),
                 f"{c['failed']} failed", f"{c['running']} running", f"{c['pending']} pending"]
        if self.n_runs is not None:
            runs = [st for sts in self.run_statuses.values() for st in sts]
            parts.append(f"runs: {sum(st != 'error' for st in runs)}/{self.n_runs} done, "
                         f"{sum(st == 'error' for st in runs)} failed")
        if self.n_retried:
            parts.append(f"{self.n_retried} retried")
        if self.n_skipped:
            parts.append(f"{self.n_skipped} skipped (already in store)")
        if self.by_work:
            planned, trained, _ = self.work_totals()
            parts.append(f"tokens {fmt_count(trained)}/{fmt_count(planned)}")
        tail = f"elapsed {fmt_s(time.time() - self.t0)}"
        if not final:
            eta, _ = self.eta()
            tail += f", {eta}" if eta else ""
        name = f"[{self.experiment}] " if self.experiment else ""
        return f"{name}{' | '.join(parts)} | {tail}"

    def running_states(self) -> list[TrialState]:
        out = [self.state(t) for t in self.running]
        return sorted((s for s in out if s is not None), key=lambda s: s.started or 0.0)

    @staticmethod
    def trial_text(st: TrialState) -> str:
        """One trial's progress in words (plain lines, the live table's cells)."""
        v, w = st.values, st.work
        bits = []
        if w is not None and w.epochs and v.get("epoch") is not None:
            bits.append(f"epoch {v['epoch']:.0f}/{w.epochs}")
        elif w is not None and v.get("step") is not None:
            bits.append(f"step {v['step']:.0f}/{w.steps}")
        if v.get("runs_done") is not None and st.label.endswith("runs)"):
            bits.append(f"{v['runs_done']:.0f} runs done")
        for name, col in (("loss", "train_loss"), ("eval loss", "eval_loss"), ("acc", "eval_acc")):
            if v.get(col) is not None:
                bits.append(f"{name} {v[col]:.4g}")
        return ", ".join(bits)

    def table(self):
        """A rich renderable: the summary and one row per running trial."""
        from rich.console import Group  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        t = Table(box=None, pad_edge=False, header_style="bold", expand=False)
        for col, kw in (("trial", {"overflow": "ellipsis", "max_width": 40}), ("progress", {}),
                        ("steps", {"justify": "right"}), ("loss", {"justify": "right"}),
                        ("eval", {"justify": "right"}), ("time", {"justify": "right"})):
            t.add_column(col, no_wrap=True, **kw)
        now = time.time()
        for st in self.running_states():
            frac = st.fraction()
            bar = "" if frac is None else f"{'#' * int(frac * 20):<20} {100 * frac:3.0f}%"
            v, w = st.values, st.work
            if w is not None and w.epochs and v.get("epoch") is not None:
                steps = f"epoch {v['epoch']:.0f}/{w.epochs}"
            elif w is not None and v.get("step") is not None:
                steps = f"{v['step']:.0f}/{w.steps}"
            else:
                steps = ""
            if v.get("runs_done") is not None and st.label.endswith("runs)"):
                steps += f" ({v['runs_done']:.0f} done)"
            ev = v.get("eval_acc") if v.get("eval_acc") is not None else v.get("eval_loss")
            ev_text = "" if ev is None else (f"acc {ev:.3f}" if v.get("eval_acc") is not None else f"{ev:.4g}")
            loss = v.get("train_loss")
            t.add_row(st.label, bar, steps, "" if loss is None else f"{loss:.4g}", ev_text,
                      fmt_s(now - (st.started or now)))
        return Group(Text(self.summary()), t)


__all__ = ["Board", "LABEL_COLUMNS", "MODES", "MODE_ENV", "TrialState", "fmt_count", "fmt_s", "progress_mode",
           "trial_labels"]
