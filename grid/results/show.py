"""What `python -m grid results show` prints: per suite, the columns a person reads first.

A results row has 30 to 60 columns (provenance, config, every metric). `show` prints one table per
suite with a curated set (identity, status, the main metrics, the error's last line) and leaves out
columns that are empty for every shown row; `--columns a,b,...` picks others, `--all` prints every
non-empty column. Tables fit the terminal (grid/textable.py); the line under a table names what did
not fit.
"""
from __future__ import annotations

from collections.abc import Sequence

from grid.textable import fmt, frame_text, is_missing

# per suite, in the order shown; the first KEEP always stay when the terminal is narrow
SHOW_COLUMNS: dict[str, tuple[str, ...]] = {
    "lm": ("trial_key", "status", "grid", "model_id", "mixer", "hybrid", "scale", "seed", "val_loss", "val_ppl",
           "tokens_per_s", "peak_mem_gib", "wall_s", "error"),
    "mad": ("trial_key", "status", "model_id", "mixer", "task", "setting", "lr", "wd", "epochs", "acc", "best_epoch",
            "epochs_run", "wall_s", "error"),
}
OTHER_COLUMNS = ("trial_key", "status", "suite", "grid", "model_id", "mixer", "task", "setting", "lr", "wd",
                 "seed", "wall_s", "error")
KEEP = 2  # trial_key, status
ERROR_CHARS = 60  # the last line of an error, cut to this; narrower terminals cut it down to ERROR_MIN
ERROR_MIN = 24
# identity columns with one value in every shown row go into the table's heading instead
FACTOR = ("suite", "grid", "model_id", "mixer", "hybrid", "scale", "seed", "task", "setting", "lr", "wd", "epochs")


def default_columns(suite: str | None) -> tuple[str, ...]:
    return SHOW_COLUMNS.get(suite or "", OTHER_COLUMNS)


def last_error_line(e) -> str | None:
    if not isinstance(e, str) or not e.strip():
        return None
    return e.strip().splitlines()[-1].strip()[:ERROR_CHARS]


def unknown_columns(df, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c not in df.columns]


def _without_repeats(df, cols: list[str]) -> list[str]:
    """Leave out a column that repeats an earlier one in every row (mixer = model_id when labels are mixer names)."""
    out: list[str] = []
    for c in cols:
        if c in df.columns and any(o in df.columns and df[c].astype(str).equals(df[o].astype(str)) for o in out):
            continue
        out.append(c)
    return out


def _constants(df, cols: list[str]) -> dict:
    """The FACTOR columns among `cols` that hold one and the same value in every row of `df`."""

    out = {}
    for c in cols:
        if c in FACTOR and c in df.columns:
            vals = df[c].tolist()
            if not any(is_missing(v) for v in vals) and len({repr(v) for v in vals}) == 1:
                out[c] = vals[0]
    return out


def show_tables(df, *, columns: Sequence[str] | None = None, every: bool = False, width: int | None = None,
                title: str = "") -> str:
    """The text of `show`: one table per suite of `df` (rows of the results view)."""

    if not len(df):
        return f"{title}: no rows" if title else "no rows"
    parts = []
    suites = sorted(df["suite"].dropna().unique().tolist()) if "suite" in df.columns else [None]
    for suite in suites:
        part = df[df["suite"] == suite] if suite is not None else df
        if "error" in part.columns:
            part = part.assign(error=part["error"].map(last_error_line))
        if columns:
            cols = list(columns)
        elif every:
            cols = [c for c in part.columns if c not in ("config_json",)]
        else:
            cols = _without_repeats(part, [c for c in default_columns(suite) if c != "suite"])
        consts = _constants(part, cols) if not columns and len(part) > 1 else {}
        cols = [c for c in cols if c not in consts]
        head = ", ".join([f"suite {suite}"] * (suite is not None) + [f"{c} {fmt(v)}" for c, v in consts.items()])
        n = len(part)
        drop = [c for c in cols[::-1] if c != "error"] + ["error"]  # an error's last line goes last
        body = frame_text(part, cols, width=None if every else width, keep=KEEP, cuttable={"error": ERROR_MIN},
                          drop_order=drop)
        parts.append(f"{head} ({n} row{'s' if n != 1 else ''}):\n{body}")
    return (f"{title}\n\n" if title else "") + "\n\n".join(parts)


__all__ = ["OTHER_COLUMNS", "SHOW_COLUMNS", "default_columns", "show_tables", "unknown_columns"]
