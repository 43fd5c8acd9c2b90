"""MAD scores from result rows (spec/mad.md §5.3, with the NaN pitfall fixed).

Input: a pandas DataFrame with one row per run and at least the columns
`model_id, task, setting, status, acc, epochs` (plus `lr`, `wd` when present; extra columns are
ignored). `task` is a short code (CR, NR, FR, M, C, SC) or a registry name.

1. Runs without a score, by the rows' protocol (evals/mad/protocols.py), are counted in `n_nan`:
   `madlab` drops them as mad-lab's analysis does (a diverged run that had a finite epoch already
   reports its pre-divergence best with status 'ok'; a setting whose runs were all dropped vanishes
   from its task mean, and `n_settings` shows it); `cosine` scores them 0 (never dropped).
2. Per (model_id, task, setting): the best score of its runs (the 3 x 2 lr/wd sweep).
3. Per task: the mean of its settings' best scores. `avg`: the plain mean of the six task scores
   (NaN unless all six tasks are present; `n_settings` shows how complete a row is: 66 for the
   full benchmark).
A model_id whose rows disagree on a protocol column (PROTOCOL_COLUMNS) is refused: numbers from
different protocols are not comparable. `by_protocol(df)` splits a store's rows into one part per
protocol (what the leaderboards print, one table each, headed by `protocol_label`). Rows written
before the `protocol` column existed are `cosine` rows.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from evals.mad.tasks import TASKS
from grid.textable import table as render

# Lazy here: evals.mad.protocols (they import torch or Ray)

TASK_COLUMNS = tuple(t.code for t in TASKS.values())  # table columns, in mad-lab's registry order
REQUIRED = ("model_id", "task", "setting", "status", "acc", "epochs")
# columns whose values define the protocol a row was produced under; one table never mixes them
PROTOCOL_COLUMNS = ("protocol", "epochs", "max_train_examples", "batch_size", "min_lr", "seed", "metric")


def _task_code(t) -> str:
    s = str(t)
    code = TASKS[s].code if s in TASKS else s.upper()
    if code not in TASK_COLUMNS:
        raise ValueError(f"task={t!r} is not allowed; allowed: {', '.join(TASK_COLUMNS)} or {', '.join(TASKS)}")
    return code


def with_protocol(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with a `protocol` value on every row (rows that predate the column are `cosine`)."""
    from evals.mad.protocols import LEGACY_PROTOCOL  # noqa: PLC0415

    out = df.copy()
    out["protocol"] = out["protocol"].fillna(LEGACY_PROTOCOL) if "protocol" in out.columns else LEGACY_PROTOCOL
    if "max_train_examples" in out.columns:
        out["max_train_examples"] = out["max_train_examples"].fillna(0).astype(int)
    return out


def by_protocol(df: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """[(protocol values, rows)] with one part per distinct protocol, full runs before smoke runs."""
    d = with_protocol(df)
    cols = [c for c in PROTOCOL_COLUMNS if c in d.columns]
    parts = []
    for values, part in d.groupby(cols, dropna=False, sort=False):
        key = dict(zip(cols, values if isinstance(values, tuple) else (values,)))
        parts.append((key, part))
    from evals.mad.protocols import DEFAULT_PROTOCOL  # noqa: PLC0415

    return sorted(parts, key=lambda kv: (int(kv[0].get("max_train_examples", 0) or 0) > 0,
                                         kv[0]["protocol"] != DEFAULT_PROTOCOL, str(kv[0]["protocol"]),
                                         -int(kv[0].get("epochs", 0) or 0)))


def protocol_label(key: dict) -> str:
    """e.g. 'protocol madlab, 200 epochs' or '... , smoke: 256 train examples'."""
    label = f"protocol {key.get('protocol')}, {int(key['epochs'])} epochs" if "epochs" in key else \
        f"protocol {key.get('protocol')}"
    mte = int(key.get("max_train_examples", 0) or 0)
    return label + (f", smoke run on {mte} train examples" if mte else "")


def check_protocol(df: pd.DataFrame) -> None:
    """Raise if one model_id mixes protocol values (e.g. 200-epoch and 20-epoch runs)."""
    problems = []
    for col in PROTOCOL_COLUMNS:
        if col not in df.columns:
            continue
        for model_id, values in df.groupby("model_id")[col]:
            distinct = sorted(values.dropna().unique().tolist(), key=str)
            if len(distinct) > 1:
                problems.append(f"model_id {model_id!r} mixes {col} values {distinct}")
    if problems:
        raise ValueError("refusing to score rows from different MAD protocols: " + "; ".join(problems)
                         + " (score each protocol separately, e.g. give the runs distinct model_ids)")


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"MAD rows lack column(s) {missing}; required: {list(REQUIRED)}")
    out = with_protocol(df)
    check_protocol(out)
    out["task"] = out["task"].map(_task_code)
    acc = pd.to_numeric(out["acc"], errors="coerce")
    failed = (out["status"].astype(str) != "ok") | ~np.isfinite(acc.to_numpy(dtype=float))
    out["failed"] = failed
    # madlab: an unscored run is dropped (NaN never wins a max); cosine: it scores 0
    out["score"] = acc.where(~failed, np.where(out["protocol"] == "madlab", np.nan, 0.0)).astype(float)
    return out


def best_per_setting(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model_id, task, setting): best score (NaN if no run has one), the lr/wd that
    gave it, n_runs, n_nan."""
    d = _prepare(df).reset_index(drop=True)
    keys = ["model_id", "task", "setting"]
    counts = d.groupby(keys, sort=False).agg(n_runs=("score", "size"), n_nan=("failed", "sum")).reset_index()
    scored = d[d["score"].notna()]
    best_idx = scored.groupby(keys, sort=False)["score"].idxmax()
    cols = keys + ["score"] + [c for c in ("lr", "wd") if c in d.columns]
    best = d.loc[best_idx.values, cols].rename(columns={"score": "acc"}).reset_index(drop=True)
    # a setting none of whose runs has a score keeps a row with acc NaN: its task mean skips it
    # (mad-lab's analysis), and n_nan shows why
    best = best.merge(counts, on=keys, how="right")
    best["n_nan"] = best["n_nan"].astype(int)
    best["task"] = pd.Categorical(best["task"], categories=list(TASK_COLUMNS), ordered=True)
    return best.sort_values(["model_id", "task", "setting"]).reset_index(drop=True)


def mad_table(df: pd.DataFrame) -> pd.DataFrame:
    """Index model_id; columns CR, NR, FR, M, C, SC (task scores), avg, n_settings (settings with a
    score), n_runs, n_nan."""
    best = best_per_setting(df)
    task_scores = (best.groupby(["model_id", "task"], observed=True)["acc"].mean()
                   .unstack("task").reindex(columns=list(TASK_COLUMNS)))
    table = task_scores.copy()
    table["avg"] = task_scores.mean(axis=1, skipna=False)
    agg = best.groupby("model_id").agg(n_settings=("acc", "count"), n_runs=("n_runs", "sum"), n_nan=("n_nan", "sum"))
    table = table.join(agg)
    table.columns.name = None
    return table.sort_values("avg", ascending=False, na_position="last")


def _cell(v, digits: int) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.{digits}f}"
    if hasattr(v, "item"):  # numpy scalars
        return _cell(v.item(), digits)
    return str(v)


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-markdown table of `table` (its index becomes the first column); NaN prints as '-'."""

    t = table.reset_index() if table.index.name is not None or not isinstance(table.index, pd.RangeIndex) else table
    numeric = [pd.api.types.is_numeric_dtype(t[c]) for c in t.columns]
    cells = [[_cell(v, digits) for v in row] for row in t.itertuples(index=False)]
    return render([str(c) for c in t.columns], cells, markdown=True, right=numeric) + "\n"


def mad_tables(parts: list[tuple[dict, pd.DataFrame]], heading: str, sep: str = ",") -> tuple[str, bool]:
    """The MAD table of each protocol part (from by_protocol) as text: a heading line per part
    ("<heading>, <protocol label> (<n> runs<sep> best of lr x wd per setting, mean per task):") and its
    markdown table; a part that cannot be scored says why. Returns (text, every part scored)."""
    out, ok = [], True
    for key, part in parts:
        out.append(f"\n{heading}, {protocol_label(key)} ({len(part)} runs{sep} best of lr x wd per setting, mean per task):\n")
        try:
            out.append(to_markdown(mad_table(part)))
        except ValueError as exc:  # rows that cannot be scored (e.g. without acc): say so, never a traceback
            out.append(f"cannot score these rows: {exc}")
            ok = False
    return "\n".join(out), ok

