"""MAD scores from result rows (spec/mad.md §5.3, with the NaN pitfall fixed).

Input: a pandas DataFrame with one row per run and at least the columns
`model_id, task, setting, status, acc, epochs` (plus `lr`, `wd` when present; extra columns are
ignored). `task` is a short code (CR, NR, FR, M, C, SC) or a registry name.

1. A run whose status is not 'ok' or whose acc is NaN scores 0 and is counted in `n_nan`: it is
   never dropped (mad-lab drops NaN rows, so an all-NaN setting vanished from its task mean).
2. Per (model_id, task, setting): the best score of its runs (the 3 x 2 lr/wd sweep).
3. Per task: the mean of its settings' best scores. `avg`: the plain mean of the six task scores
   (NaN unless all six tasks are present; `n_settings` shows how complete a row is: 66 for the
   full benchmark).
A model_id whose rows disagree on a protocol column (`epochs`, and where present `batch_size`,
`min_lr`, `seed`, `metric`, `max_train_examples`) is refused: numbers from different protocols are
not comparable. Tables of a whole store split it with `by_protocol` first, one table per protocol.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

TASKS = ("CR", "NR", "FR", "M", "C", "SC")  # mad-lab's registry order
EXPECTED_SETTINGS = {"CR": 11, "NR": 14, "FR": 11, "M": 6, "C": 11, "SC": 13}
_NAMES = {"in-context-recall": "CR", "noisy-in-context-recall": "NR", "fuzzy-in-context-recall": "FR",
          "memorization": "M", "compression": "C", "selective-copying": "SC"}
REQUIRED = ("model_id", "task", "setting", "status", "acc", "epochs")
PROTOCOL_COLUMNS = ("epochs", "batch_size", "min_lr", "seed", "metric", "max_train_examples")


def _task_code(t) -> str:
    s = str(t)
    code = _NAMES.get(s, s.upper())
    if code not in TASKS:
        raise ValueError(f"task={t!r} is not allowed; allowed: {', '.join(TASKS)} or {', '.join(_NAMES)}")
    return code


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


# protocol columns that a missing value means the default of (rows written before the column existed)
PROTOCOL_DEFAULTS = {"max_train_examples": 0}


def protocol_label(protocol: dict) -> str:
    """A protocol in words, e.g. "epochs 200" or "epochs 2, first 256 training examples (smoke run)"."""
    parts = []
    for col, v in protocol.items():
        if col == "max_train_examples":
            if v:
                parts.append(f"first {int(v)} training examples (smoke run)")
            continue
        parts.append(f"{col} {int(v) if isinstance(v, float) and v.is_integer() else v}")
    return ", ".join(parts) or "one protocol"


def by_protocol(df: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """`df` split into one part per MAD protocol (the PROTOCOL_COLUMNS values that vary in it), most runs first.

    Every part can be scored by mad_table; numbers from different protocols are never mixed."""
    out = df.copy()
    for col, default in PROTOCOL_DEFAULTS.items():
        if col in out.columns:
            out[col] = out[col].fillna(default)
    cols = [c for c in PROTOCOL_COLUMNS if c in out.columns and out[c].nunique(dropna=False) > 1]
    if "epochs" in out.columns and "epochs" not in cols:
        cols.insert(0, "epochs")  # always named: it is the first thing a reader asks
    if not cols:
        return [({}, out)]
    parts = []
    for values, part in out.groupby(cols, dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        parts.append((dict(zip(cols, (v.item() if hasattr(v, "item") else v for v in values))), part))
    return sorted(parts, key=lambda kv: -len(kv[1]))


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"MAD rows lack column(s) {missing}; required: {list(REQUIRED)}")
    check_protocol(df)
    out = df.copy()
    out["task"] = out["task"].map(_task_code)
    acc = pd.to_numeric(out["acc"], errors="coerce")
    failed = (out["status"].astype(str) != "ok") | ~np.isfinite(acc.to_numpy(dtype=float))
    out["failed"] = failed
    out["score"] = acc.where(~failed, 0.0).astype(float)
    return out


def best_per_setting(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model_id, task, setting): best score, the lr/wd that gave it, n_runs, n_nan."""
    d = _prepare(df).reset_index(drop=True)
    keys = ["model_id", "task", "setting"]
    g = d.groupby(keys, sort=False)
    best_idx = g["score"].idxmax()
    cols = keys + ["score"] + [c for c in ("lr", "wd") if c in d.columns]
    best = d.loc[best_idx.values, cols].rename(columns={"score": "acc"}).reset_index(drop=True)
    counts = g.agg(n_runs=("score", "size"), n_nan=("failed", "sum")).reset_index()
    best = best.merge(counts, on=keys)
    best["n_nan"] = best["n_nan"].astype(int)
    best["task"] = pd.Categorical(best["task"], categories=list(TASKS), ordered=True)
    return best.sort_values(["model_id", "task", "setting"]).reset_index(drop=True)


def mad_table(df: pd.DataFrame) -> pd.DataFrame:
    """Index model_id; columns CR, NR, FR, M, C, SC (task scores), avg, n_settings, n_runs, n_nan."""
    best = best_per_setting(df)
    task_scores = (best.groupby(["model_id", "task"], observed=True)["acc"].mean()
                   .unstack("task").reindex(columns=list(TASKS)))
    table = task_scores.copy()
    table["avg"] = task_scores.mean(axis=1, skipna=False)
    agg = best.groupby("model_id").agg(n_settings=("acc", "size"), n_runs=("n_runs", "sum"), n_nan=("n_nan", "sum"))
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
    from grid.textable import table as render  # noqa: PLC0415

    t = table.reset_index() if table.index.name is not None or not isinstance(table.index, pd.RangeIndex) else table
    numeric = [pd.api.types.is_numeric_dtype(t[c]) for c in t.columns]
    cells = [[_cell(v, digits) for v in row] for row in t.itertuples(index=False)]
    return render([str(c) for c in t.columns], cells, markdown=True, right=numeric) + "\n"
