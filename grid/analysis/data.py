"""Reading LM trials out of the results store, and the small helpers every analysis shares.

Only pandas / numpy / duckdb are imported (never torch), so `python -m grid analyze` starts fast.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

SUITE = "lm"

from grid.paths import store
from grid.results.schema import RECALL_COLUMNS
from grid.results.store import ResultsStore

# result columns the analyses read; a store written before a column existed gets it as all-null
RESULT_COLUMNS = [
    "trial_key", "grid", "status", "error", "model_id", "mixer", "hybrid", "effective_ratio", "scale", "seed",
    "non_embedding_params", "total_params", "state_size", "train_flops_per_token", "tokens_seen", "val_loss",
    "val_ppl", "train_loss", "tokens_per_s", "mfu", "peak_mem_gib", "backend", "gpu_name", "diverged_step",
    "attention_layers", "config_json", *RECALL_COLUMNS,
]
CURVE_COLUMNS = ["trial_key", "step", "tokens", "train_loss", "val_loss", "lr", "flops"]


class NoResults(LookupError):
    """The store holds no LM trials (for the grid asked for)."""


def default_store() -> str:
    return store()


def ensure_columns(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`df` with every column of `columns` present (missing ones added as all-null); a copy."""
    df = df.copy()
    for col in columns:
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), index=df.index, dtype=object)
    return df


def is_missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def arch_label(model_id, hybrid=None, mixer=None) -> str:
    """The architecture an LM trial belongs to: its arch label, plus the hybrid layout unless it is pure.

    `gla` / `pure` -> "gla"; `gla` / `3:1` -> "gla [3:1]". Trials of one architecture at several
    scales form one scaling ladder.
    """
    name = model_id if not is_missing(model_id) and str(model_id) else mixer
    name = "?" if is_missing(name) or not str(name) else str(name)
    if is_missing(hybrid) or str(hybrid) in ("", "pure"):
        return name
    return f"{name} [{hybrid}]"


def lm_rows(df: pd.DataFrame) -> pd.DataFrame:
    """LM rows of a results frame (suite='lm' when the frame has a suite column), one per trial_key.

    A trial_key found twice (the same trial listed in two grids) is kept once, preferring an 'ok' row.
    """
    if "suite" in df.columns:
        df = df[df["suite"].astype(object).eq(SUITE).fillna(False).astype(bool)]
    df = ensure_columns(df, RESULT_COLUMNS)
    if len(df):
        ok_first = (df["status"].astype(object) != "ok").astype(int)
        df = df.assign(_ok_first=ok_first).sort_values("_ok_first", kind="stable")
        df = df.drop_duplicates("trial_key", keep="first").drop(columns="_ok_first")
    return df.reset_index(drop=True)


def load_lm(store_root: str | os.PathLike[str], grid: str | None = None,
            curves: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, curves) of the LM trials in the store, optionally of one grid.

    Raises NoResults (with a message naming the store and grid) when there is no LM trial.
    """

    store = ResultsStore(store_root)
    where, params = "suite = ?", [SUITE]
    if grid is not None:
        where += " AND grid = ?"
        params.append(grid)
    results = store.query(f"SELECT * FROM results WHERE {where}", params)
    if results.empty:
        what = f"grid {grid!r} of " if grid is not None else ""
        hint = "" if Path(store_root).exists() else " (the directory does not exist)"
        raise NoResults(f"no LM trials in {what}the results store {str(store_root)!r}{hint}; "
                        "run a grid first (python -m grid run GRID.yaml) or pass --results DIR")
    results = lm_rows(results)
    curve_df = pd.DataFrame(columns=CURVE_COLUMNS)
    if curves:
        raw = store.query("SELECT * FROM curves")
        if len(raw) and "suite" in raw.columns:
            raw = raw[raw["suite"].astype(object).eq(SUITE).fillna(False).astype(bool)]
        if len(raw):
            raw = raw[raw["trial_key"].isin(set(results["trial_key"]))]
        curve_df = ensure_columns(raw, CURVE_COLUMNS).reset_index(drop=True)
    return results, curve_df


def numeric(s: pd.Series) -> np.ndarray:
    """A column as float64 (nulls -> NaN)."""
    return pd.to_numeric(s, errors="coerce").astype(float).to_numpy()


__all__ = ["NoResults", "arch_label", "default_store", "ensure_columns", "is_missing", "lm_rows",
           "load_lm", "numeric"]
