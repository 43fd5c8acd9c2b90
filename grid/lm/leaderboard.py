"""The small LM leaderboard `python -m grid run` prints when grid.analysis is not available.

Per scale: architecture, hybrid, validation loss and perplexity, tokens/s, MFU, peak memory and
non-embedding parameters; ok trials by validation loss, then the others with their status.
"""
from __future__ import annotations

import math


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _fmt(v, kind: str) -> str:
    f = _num(v)
    if f is None:
        return "-"
    return {"loss": f"{f:.4f}", "ppl": f"{f:.2f}", "tps": f"{f:,.0f}", "mfu": f"{100 * f:.1f}%",
            "mem": f"{f:.2f}", "params": f"{f / 1e6:.3g}M" if f >= 1e6 else f"{f / 1e3:.3g}K"}[kind]


def leaderboard_text(df) -> str:
    """Plain-text leaderboards (one per scale) from LM result rows (a pandas frame of the `results` view)."""
    from grid.textable import table  # noqa: PLC0415

    if df is None or len(df) == 0:
        return "(no results)"
    out = []
    for scale in sorted(df["scale"].dropna().unique(), key=str) if "scale" in df else [None]:
        part = df[df["scale"] == scale] if scale is not None else df
        rows = part.to_dict("records")
        rows.sort(key=lambda r: (r.get("status") != "ok", _num(r.get("val_loss")) is None,
                                 _num(r.get("val_loss")) or 0.0, str(r.get("model_id"))))
        body = [[r.get("model_id"), r.get("hybrid"), _fmt(r.get("val_loss"), "loss"), _fmt(r.get("val_ppl"), "ppl"),
                 _fmt(r.get("tokens_per_s"), "tps"), _fmt(r.get("mfu"), "mfu"), _fmt(r.get("peak_mem_gib"), "mem"),
                 _fmt(r.get("non_embedding_params"), "params"), r.get("status")] for r in rows]
        out.append(f"scale {scale}:\n" + table(["arch", "hybrid", "val loss", "ppl", "tokens/s", "MFU",
                                                  "peak mem GiB", "non-emb params", "status"], body))
    return "\n\n".join(out)
