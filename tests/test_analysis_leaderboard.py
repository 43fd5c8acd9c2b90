"""LM leaderboard: per-scale tables, val_loss order, failed trials kept at the bottom, rendering."""
from __future__ import annotations

import pandas as pd
import pytest

from grid.analysis.data import NoResults
from grid.analysis.leaderboard import leaderboard_text, lm_leaderboard, to_markdown, to_text
from grid.results.store import ResultsStore


def _row(key, model, loss, scale="340M", status="ok", n=3.4e8, **kw):
    return {"trial_key": key, "suite": "lm", "grid": "g", "status": status, "model_id": model, "mixer": model.lower(),
            "hybrid": "pure", "effective_ratio": "pure", "scale": scale, "seed": 0, "non_embedding_params": int(n),
            "val_loss": loss, "val_ppl": None if loss is None else 2.718 ** loss, "tokens_per_s": 5.0e4,
            "mfu": 0.38, "peak_mem_gib": 21.5, **kw}


ROWS = [
    _row("a", "GLA", 3.20),
    _row("b", "Transformer", 3.00),
    _row("c", "DeltaNet", 1.50, status="diverged", diverged_step=420),  # low loss before diverging: still at the bottom
    _row("d", "Mamba", None, status="error",
         error="Traceback (most recent call last):\n...\nRuntimeError: CUDA out of memory"),
    _row("e", "GLA", 2.90, hybrid="3:1", effective_ratio="3:1"),
    _row("f", "GLA", 2.50, scale="1.3B", n=1.2e9),
    _row("g", "GLA", 2.80, scale="1.3B", n=1.2e9, status="nan", diverged_step=12),
    {"trial_key": "mad1", "suite": "mad", "grid": "m", "status": "ok", "model_id": "XXX", "scale": "340M"},
]


def test_tables_per_scale_order_and_failed_rows_kept():
    tables = lm_leaderboard(pd.DataFrame(ROWS))
    assert list(tables) == ["340M", "1.3B"]  # ordered by size
    t = tables["340M"]
    assert list(t["trial_key"]) == ["e", "b", "a", "c", "d"]
    assert list(t["status"]) == ["ok", "ok", "ok", "diverged", "error"]
    assert list(t["rank"].astype("object").where(t["rank"].notna(), None)) == [1, 2, 3, None, None]
    assert t.loc[3, "note"] == "at step 420" and t.loc[4, "note"] == "RuntimeError: CUDA out of memory"
    assert "XXX" not in set(t["arch"])  # MAD rows ignored
    for col in ("arch", "mixer", "hybrid", "effective_ratio", "val_loss", "val_ppl", "tokens_per_s", "mfu",
                "peak_mem_gib", "non_embedding_params", "status"):
        assert col in t.columns
    big = tables["1.3B"]
    assert list(big["status"]) == ["ok", "nan"] and big.loc[1, "note"] == "at step 12"


def test_rendering():
    t = lm_leaderboard(pd.DataFrame(ROWS))["340M"]
    md = to_markdown(t).splitlines()
    assert md[0].startswith("| # | arch |") and "val loss" in md[0] and "non-emb params" in md[0]
    assert len(md) == 2 + len(t)
    assert "| 1 | GLA | gla | 3:1 |" in md[2] and "2.9000" in md[2] and "38.0%" in md[2] and "340M" in md[2]
    assert "diverged" in md[5] and "at step 420" in md[5]
    txt = to_text(t)
    assert "Transformer" in txt and "error" in txt and "CUDA out of memory" in txt


def test_leaderboard_text_from_store(tmp_path):
    store = ResultsStore(tmp_path)
    for r in ROWS:
        r = dict(r)
        suite, grid = r.pop("suite"), r.pop("grid")
        store.write_row({k: v for k, v in r.items() if v is not None}, suite, grid)
    out = leaderboard_text(tmp_path, markdown=True)
    assert "### scale 340M" in out and "3 ok of 5 trials" in out and "### scale 1.3B" in out
    assert out.index("### scale 340M") < out.index("### scale 1.3B")
    with pytest.raises(NoResults, match="grid 'nope'"):
        leaderboard_text(tmp_path, grid="nope")


def test_ok_rows_that_ran_a_reference_backend_on_a_gpu_say_so():
    rows = [_row("a", "Mamba2", 3.1, backend="mamba2=reference", gpu_name="NVIDIA H100 80GB HBM3"),
            _row("b", "GLA", 3.0, backend="gla=fused,attention=fused", gpu_name="NVIDIA H100 80GB HBM3"),
            _row("c", "Mamba2", 3.2, backend="mamba2=reference", gpu_name=None)]  # CPU: the reference is the point
    t = lm_leaderboard(pd.DataFrame(rows))["340M"].set_index("trial_key")
    assert t.loc["a", "note"] == "reference backend on GPU (mamba2): not fused-kernel speed"
    assert t.loc["b", "note"] == "" and t.loc["c", "note"] == ""
