"""LM loss and recall against the fraction of softmax-attention layers, per linear variant.

The question of the hybrid-linear-attention study (spec/studies.md A): how do loss and recall move
with the linear-to-attention ratio, for each linear variant? The x axis is the attention fraction
(attention layers / layers: pure linear 0, 3:1 0.25, the transformer 1). A variant is an arch label
of the grid (model_id) whose mixer is not attention; the softmax transformer rows are the baseline,
drawn at fraction 1 on every plot. Seeds are averaged; only 'ok' trials count.

    table = recall_table(results_df)               # one row per (variant, layout)
    print(table_text(table, markdown=True))
    (grid/analysis/plots.py: plot_recall draws one PNG per metric from this table)

The metrics: val_loss, the recall summaries (schema.RECALL_COLUMNS) and every per-setting recall
column present (copy_acc_k16_g64, mqar_acc_n8, needle_loss_d50, ...).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from grid.analysis.data import is_missing, lm_rows, numeric
from grid.results.schema import RECALL_COLUMNS, is_recall_setting_column

ATTENTION = "attention"
BASELINE = "transformer"  # label of the softmax rows in tables and legends


def _n_layers(config_json) -> int | None:
    try:
        return int(json.loads(config_json)["model"]["n_layers"])
    except (TypeError, ValueError, KeyError):
        return None


def attention_fraction(mixer, attention_layers, config_json) -> float:
    """Share of softmax-attention layers of one trial (NaN when the row does not say)."""
    if mixer == ATTENTION:
        return 1.0
    n = _n_layers(config_json)
    if not n:
        return float("nan")
    layers = "" if is_missing(attention_layers) else str(attention_layers)
    return len([x for x in layers.split(",") if x.strip()]) / n


def metric_columns(results: pd.DataFrame) -> list[str]:
    """val_loss, then the recall summaries and per-setting columns that hold at least one value."""
    cols = ["val_loss"] + [c for c in RECALL_COLUMNS if c in results.columns]
    cols += sorted(c for c in results.columns if is_recall_setting_column(c))
    return [c for c in cols if c in results.columns and np.isfinite(numeric(results[c])).any()]


def _ok_rows(results: pd.DataFrame) -> pd.DataFrame:
    df = lm_rows(results)
    df = df[df["status"].astype(object) == "ok"].copy()
    df["variant"] = [BASELINE if m == ATTENTION else (str(a) if not is_missing(a) else str(m))
                     for a, m in zip(df["model_id"], df["mixer"])]
    df["attn_frac"] = [attention_fraction(m, a, c) for m, a, c in
                       zip(df["mixer"], df["attention_layers"], df["config_json"])]
    df["layout"] = ["pure" if m == ATTENTION else ("pure" if is_missing(h) else str(h))
                    for m, h in zip(df["mixer"], df["hybrid"])]
    return df


def recall_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, layout): attention fraction, number of seeds, mean of each metric.

    Sorted by variant (the baseline last) and attention fraction."""
    df = _ok_rows(results)
    metrics = metric_columns(df)
    rows = []
    for (variant, layout), part in df.groupby(["variant", "layout"], sort=False):
        row = {"variant": variant, "layout": layout, "attn_frac": float(np.nanmean(part["attn_frac"])),
               "seeds": int(part["seed"].nunique(dropna=True)) or len(part)}
        for c in metrics:
            vals = numeric(part[c])
            row[c] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        rows.append(row)
    out = pd.DataFrame(rows, columns=["variant", "layout", "attn_frac", "seeds", *metrics])
    if len(out):
        out["_base"] = out["variant"] == BASELINE
        out = out.sort_values(["_base", "variant", "attn_frac"], kind="stable").drop(columns="_base")
    return out.reset_index(drop=True)


def table_text(table: pd.DataFrame, summaries_only: bool = True, markdown: bool = False) -> str:
    """The table as aligned text or GitHub markdown (by default the summaries, not every setting)."""
    cols = ["variant", "layout", "attn_frac", "seeds"] + [
        c for c in table.columns[4:] if not summaries_only or not is_recall_setting_column(c)]

    def cell(c, v) -> str:
        if c in ("variant", "layout"):
            return str(v)
        if c == "seeds":
            return str(int(v))
        if isinstance(v, float) and not np.isfinite(v):
            return "-"
        return f"{float(v):.3f}" if c != "val_loss" else f"{float(v):.4f}"

    body = [[cell(c, r[c]) for c in cols] for _, r in table.iterrows()]
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body]) + "\n"
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(cols)]
    fmt = lambda vals: "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))  # noqa: E731
    return "\n".join([fmt(cols), fmt(["-" * w for w in widths])] + [fmt(r) for r in body]).rstrip() + "\n"


__all__ = ["BASELINE", "attention_fraction", "metric_columns", "recall_table", "table_text"]
