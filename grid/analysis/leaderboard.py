"""LM leaderboard: one table per scale, ranked by validation loss; failed trials are listed, never dropped.

    tables = lm_leaderboard(results_df)          # {scale: DataFrame}
    print(to_markdown(tables["340M"]))
    print(leaderboard_text("benchmark/results", grid="hybrid-340M", markdown=True))

Order inside a table: 'ok' trials by val_loss (ascending; an ok trial without val_loss after them),
then every other trial (diverged, nan, error, skipped) grouped by status, with a `note` saying at
which step it diverged or the last line of its error. Scales are ordered by their median
non-embedding parameter count, then by name.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from grid.analysis.data import is_missing, lm_rows, load_lm, numeric
from grid.results.schema import COPY_ACC, COPY_ACC_BEYOND, MQAR_ACC, NEEDLE_LOSS, RECALL_COLUMNS
from grid.textable import fit, table as render, terminal_width

# the recall columns (grid/lm/evals) appear only in tables where some trial has them
TABLE_COLUMNS = ["rank", "arch", "model_id", "mixer", "hybrid", "effective_ratio", "val_loss", "val_ppl",
                 *RECALL_COLUMNS, "tokens_per_s", "mfu", "peak_mem_gib", "non_embedding_params", "seed", "status",
                 "note", "trial_key"]

# header of each column in the rendered tables (model_id is folded into `arch`, not printed)
HEADERS = {
    "rank": "#", "arch": "arch", "mixer": "mixer", "hybrid": "hybrid", "effective_ratio": "eff. ratio",
    "val_loss": "val loss", "val_ppl": "ppl", "tokens_per_s": "tokens/s", "mfu": "MFU",
    "peak_mem_gib": "peak mem GiB", "non_embedding_params": "non-emb params", "seed": "seed", "grid": "grid",
    "status": "status", "note": "note", "trial_key": "trial",
    COPY_ACC: "copy", COPY_ACC_BEYOND: "copy >ctx", MQAR_ACC: "MQAR", NEEDLE_LOSS: "needle loss",
}
_RIGHT = {"rank", "val_loss", "val_ppl", "tokens_per_s", "mfu", "peak_mem_gib", "non_embedding_params", "seed",
          *RECALL_COLUMNS}
UNKNOWN_SCALE = "(no scale)"


def _note(row) -> str:
    status = row["status"]
    if status == "ok":
        return _reference_on_gpu(row)
    if status in ("diverged", "nan") and not is_missing(row.get("diverged_step")):
        return f"at step {int(row['diverged_step'])}"
    err = row.get("error")
    if not is_missing(err) and str(err).strip():
        last = str(err).strip().splitlines()[-1].strip()
        return last if len(last) <= 70 else last[:67] + "..."
    return ""


def _reference_on_gpu(row) -> str:
    """Backend `auto` falls back to the plain-torch reference where a fused kernel is missing: on a GPU
    that row's tokens/s and MFU are not what the architecture's kernels do, so the table says so."""
    backend, gpu = row.get("backend"), row.get("gpu_name")
    if is_missing(backend) or is_missing(gpu):
        return ""
    ref = [part.split("=", 1)[0] for part in str(backend).split(",") if part.endswith("=reference")]
    return f"reference backend on GPU ({', '.join(ref)}): not fused-kernel speed" if ref else ""


def _scale_order(df: pd.DataFrame) -> list:
    keys = []
    for scale, part in df.groupby("_scale", sort=False, dropna=False):
        n = numeric(part["non_embedding_params"])
        med = float(np.nanmedian(n)) if np.isfinite(n).any() else math.inf
        keys.append((med, str(scale), scale))
    return [k[2] for k in sorted(keys)]


def _one_table(part: pd.DataFrame, with_grid: bool) -> pd.DataFrame:
    part = part.copy()
    part["_loss"] = numeric(part["val_loss"])
    ok = part[part["status"].astype(object) == "ok"].copy()
    bad = part[part["status"].astype(object) != "ok"].copy()
    ok["_nan"] = ~np.isfinite(ok["_loss"].to_numpy(dtype=float))
    ok = ok.sort_values(["_nan", "_loss", "arch", "seed"], kind="stable", na_position="last")
    bad["_st"] = bad["status"].astype(object).fillna("?").astype(str)
    bad = bad.sort_values(["_st", "arch", "seed"], kind="stable", na_position="last")
    ranked = (~ok["_nan"]).to_numpy()
    ok["rank"] = pd.array([i + 1 if r else None for i, r in enumerate(ranked)], dtype="Int64")
    bad["rank"] = pd.array([None] * len(bad), dtype="Int64")
    out = pd.concat([ok, bad], ignore_index=True) if len(bad) else ok.reset_index(drop=True)
    cols = [c for c in TABLE_COLUMNS if c not in RECALL_COLUMNS or out[c].notna().any()]
    if with_grid:
        cols.insert(cols.index("status"), "grid")
    return out[cols].reset_index(drop=True)


def lm_leaderboard(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One leaderboard per scale from LM result rows (`results` view rows; other suites are ignored).

    Each table has TABLE_COLUMNS (plus `grid` when the rows come from several grids): `rank` is
    1, 2, ... for ok trials with a val_loss and null otherwise; `arch` is the arch label (model_id,
    or the mixer when model_id is missing). Diverged / failed trials stay, at the bottom, with
    their status and a note. Rows without a scale go to the table keyed "(no scale)".
    """
    df = lm_rows(df)
    if df.empty:
        return {}
    df["arch"] = [m if not is_missing(m) else (x if not is_missing(x) else "?")
                  for m, x in zip(df["model_id"], df["mixer"])]
    df["note"] = [_note(r) for _, r in df.iterrows()]
    df["_scale"] = df["scale"].astype(object).where(df["scale"].notna(), UNKNOWN_SCALE).astype(str)
    with_grid = df["grid"].nunique(dropna=True) > 1
    tables = {}
    for scale in _scale_order(df):
        tables[str(scale)] = _one_table(df[df["_scale"] == scale], with_grid)
    return tables


# ---------------------------------------------------------------------------------- rendering
def _human(n: float, digits: int = 3) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.{digits}g}{suffix}"
    return f"{n:.{digits}g}"


def format_cell(col: str, v) -> str:
    """A table value as text ('-' for missing)."""
    if is_missing(v):
        return "-"
    if col == "val_loss":
        return f"{float(v):.4f}"
    if col == "val_ppl":
        return f"{float(v):.2f}"
    if col in RECALL_COLUMNS:  # accuracies in [0, 1], the needle's loss in nats
        return f"{float(v):.3f}"
    if col == "tokens_per_s":
        return f"{float(v):,.0f}"
    if col == "mfu":  # stored as a fraction; a value above 1 is taken to be a percentage already
        v = float(v)
        return f"{100 * v if v <= 1 else v:.1f}%"
    if col == "peak_mem_gib":
        return f"{float(v):.2f}"
    if col == "non_embedding_params":
        return _human(float(v))
    if col in ("rank", "seed"):
        return str(int(v))
    if col == "trial_key":
        return str(v)[:10]
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _printed_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c in HEADERS]


# when a terminal is narrow, columns are left out in this order (rank and arch always stay)
# (the first DROP_BEFORE_CUT go before a long note is cut)
DROP_ORDER = ["trial_key", "seed", "grid", "peak_mem_gib", "mfu", "val_ppl", "effective_ratio", "mixer",
              "non_embedding_params", "tokens_per_s", "hybrid", "note", "status", "val_loss"]
DROP_BEFORE_CUT = 6


def _cells(table: pd.DataFrame, compact: bool) -> tuple[list[str], list[list[str]]]:
    """Printed columns and their cells; `compact` leaves out columns that are empty in every row or
    repeat an earlier column (eff. ratio = hybrid, mixer = arch)."""
    cols = _printed_columns(table)
    cells = [[format_cell(c, row[c]) for c in cols] for _, row in table.iterrows()]
    if compact and cells:
        keep = []
        for i, c in enumerate(cols):
            col = [r[i] for r in cells]
            if all(v in ("-", "") for v in col) or any(col == [r[j] for r in cells] for j in keep):
                continue
            keep.append(i)
        cols, cells = [cols[i] for i in keep], [[r[i] for i in keep] for r in cells]
    return cols, cells


def to_markdown(table: pd.DataFrame) -> str:
    """A leaderboard table (from lm_leaderboard) as a GitHub markdown table (every column)."""

    cols, cells = _cells(table, compact=False)
    return render([HEADERS[c] for c in cols], cells, markdown=True, right=[c in _RIGHT for c in cols])


def to_text(table: pd.DataFrame, width: int | None = None) -> str:
    """A leaderboard table as aligned plain text: columns that say nothing left out, fitted to `width`
    (default: the terminal's)."""

    cols, cells = _cells(table, compact=True)
    heads = [HEADERS[c] for c in cols]
    names = dict(zip(heads, cols))
    order = [c for c in DROP_ORDER if c in cols]
    heads, cells, dropped = fit(heads, cells, terminal_width() if width is None else width, keep=2,
                                cuttable={HEADERS["note"]: 24}, drop_order=[HEADERS[c] for c in order],
                                drop_first=sum(c in cols for c in DROP_ORDER[:DROP_BEFORE_CUT]))
    text = render(heads, cells, right=[names[h] in _RIGHT for h in heads])
    if dropped:
        text += f"\n({', '.join(dropped)}: left out to fit the terminal; --markdown prints every column)"
    return text


def leaderboard_text(store_root: str | os.PathLike[str], grid: str | None = None, markdown: bool = False) -> str:
    """Every scale's leaderboard of the LM trials in the store, as text (or markdown).

    Raises grid.analysis.data.NoResults when the store has no LM trial (for `grid`).
    """
    results, _ = load_lm(store_root, grid, curves=False)
    tables = lm_leaderboard(results)
    render = to_markdown if markdown else to_text
    parts = []
    where = f"grid {grid}" if grid else "all grids"
    for scale, table in tables.items():
        n_ok = int((table["status"] == "ok").sum())
        title = f"scale {scale} ({where}): {n_ok} ok of {len(table)} trials"
        parts.append((f"### {title}" if markdown else f"{title}\n") + ("\n\n" if markdown else "") + render(table))
    return "\n\n".join(parts) + "\n"


__all__ = ["TABLE_COLUMNS", "format_cell", "lm_leaderboard", "leaderboard_text", "to_markdown", "to_text"]
