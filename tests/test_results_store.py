"""Results store: atomic publish, union_by_name, overwrite dedup, type enforcement, empty store."""
from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from grid.results import store as store_mod
from grid.results.schema import FIXED_COLUMNS, SchemaError
from grid.results.store import ResultsStore


def _row(key, **kw):
    return {"trial_key": key, "status": "ok", **kw}


def test_empty_store_gives_fixed_columns(tmp_path):
    s = ResultsStore(tmp_path / "nothing-here")
    df = s.query("SELECT * FROM results")
    assert list(df.columns) == list(FIXED_COLUMNS) and len(df) == 0
    assert list(s.df().columns) == list(FIXED_COLUMNS)
    assert s.ok_keys() == set()
    assert len(s.query("SELECT * FROM curves")) == 0
    assert s.query("SELECT count(*) AS n FROM results")["n"][0] == 0


def test_write_layout_and_roundtrip(tmp_path):
    s = ResultsStore(tmp_path)
    t0 = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    p = s.write_row(_row("k1", lr=1e-3, seed=np.int64(3), acc=np.float32(0.5), steps=7, model_id="gla",
                         started_at=t0, finished_at="2025-01-02T03:05:00+00:00"), suite="mad", grid="g1")
    assert p == tmp_path / "suite=mad" / "grid=g1" / "k1.parquet"
    assert list(p.parent.iterdir()) == [p]  # no temp file left behind
    sch = pq.read_schema(p)
    assert sch.field("seed").type == "int64" and sch.field("steps").type == "int64"
    assert sch.field("acc").type == "double" and sch.field("lr").type == "double"
    assert str(sch.field("started_at").type) == "timestamp[us, tz=UTC]"
    df = s.df()
    r = df.iloc[0]
    assert (r.trial_key, r.suite, r.grid, r.status, r.model_id) == ("k1", "mad", "g1", "ok", "gla")
    assert r.seed == 3 and r.steps == 7 and r.acc == 0.5
    assert r.started_at == t0 and (r.finished_at - r.started_at).total_seconds() == 55
    assert pd.isna(r.error) and pd.isna(r.wall_s)


def test_union_by_name_with_column_added_later(tmp_path):
    s = ResultsStore(tmp_path)
    s.write_row(_row("a", loss=1.0), "mad", "g")
    s.write_row(_row("b", loss=2.0, tokens_per_s=123.0), "mad", "g")
    s.write_row(_row("c", loss=3.0), "lm", "other")
    df = s.query("SELECT trial_key, suite, grid, loss, tokens_per_s FROM results ORDER BY trial_key")
    assert df["trial_key"].tolist() == ["a", "b", "c"]
    assert df["tokens_per_s"].isna().tolist() == [True, False, True]
    assert df.loc[1, "tokens_per_s"] == 123.0
    assert df["suite"].tolist() == ["mad", "mad", "lm"]
    assert s.df(suite="mad")["trial_key"].tolist() in (["a", "b"], ["b", "a"])
    assert set(s.df(trial_key=["a", "c"])["trial_key"]) == {"a", "c"}


def test_overwrite_is_last_write_wins(tmp_path):
    s = ResultsStore(tmp_path)
    s.write_row(_row("k", status="error", error="boom"), "mad", "g")
    assert s.ok_keys() == set()
    s.write_row(_row("k", acc=0.9), "mad", "g")
    df = s.df()
    assert len(df) == 1 and df.iloc[0].status == "ok" and df.iloc[0].acc == 0.9
    assert s.ok_keys() == {"k"} and s.ok_keys(suite="mad", grid="g") == {"k"}
    assert s.ok_keys(grid="elsewhere") == set() and s.ok_keys(suite="lm") == set()
    assert s.trial_keys(status=["ok", "error"]) == {"k"}


@pytest.mark.parametrize("row, msg", [
    ({"seed": "3"}, "'seed' expects int64"),
    ({"seed": 1.5}, "'seed' expects int64"),
    ({"lr": "big"}, "'lr' expects float64"),
    ({"lr": True}, "'lr' expects float64"),
    ({"model_id": 7}, "'model_id' expects str"),
    ({"status": "great"}, "must be one of"),
    ({"started_at": "yesterday"}, "cannot parse timestamp"),
    ({"per_pos_acc": [0.1, 0.2]}, "unsupported value type list"),
    ({"cfg": {"a": 1}}, "unsupported value type dict"),
    ({"arr": np.zeros(3)}, "unsupported value type numpy.ndarray"),
    ({"Loss": 1.0, "loss": 2.0}, "differ only by case"),
    ({"LR": 1.0}, "collides with fixed column"),
])
def test_type_enforcement(tmp_path, row, msg):
    s = ResultsStore(tmp_path)
    with pytest.raises(SchemaError, match=msg):
        s.write_row(_row("k", **row), "mad", "g")
    assert not list(tmp_path.rglob("*.parquet"))


def test_coercions_and_bad_names(tmp_path):
    s = ResultsStore(tmp_path)
    s.write_row(_row("k", lr=1, seed=2.0, wd=np.float64(0.1), started_at=dt.datetime(2025, 1, 1)), "mad", "g")
    r = s.df().iloc[0]
    assert r.lr == 1.0 and r.seed == 2 and r.wd == 0.1
    assert str(r.started_at.tz) == "UTC"
    for kw in ({"suite": "a/b", "grid": "g"}, {"suite": "mad", "grid": ".."}, {"suite": "", "grid": "g"}):
        with pytest.raises(SchemaError):
            s.write_row(_row("k2"), **kw)
    with pytest.raises(SchemaError, match="trial_key"):
        s.write_row(_row(".hidden"), "mad", "g")
    with pytest.raises(SchemaError, match="partition"):
        s.write_row(_row("k3", grid="other"), "mad", "g")


def test_crash_mid_write_publishes_nothing(tmp_path, monkeypatch):
    s = ResultsStore(tmp_path)
    s.write_row(_row("good", acc=1.0), "mad", "g")
    real_write = pq.write_table

    def half_write(table, where, **kw):
        where.write(b"PAR1 partial garbage")  # bytes hit the temp file, then the process "dies"
        raise KeyboardInterrupt("simulated crash mid-write")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(KeyboardInterrupt):
        s.write_row(_row("bad", acc=0.0), "mad", "g")
    monkeypatch.setattr(pq, "write_table", real_write)
    assert sorted(p.name for p in tmp_path.rglob("*.parquet")) == ["good.parquet"]

    # crash between write and rename: the temp file is complete but never published
    def no_replace(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(store_mod.os, "replace", no_replace)
    with pytest.raises(OSError):
        s.write_row(_row("bad2"), "mad", "g")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.rglob("*.parquet")) == ["good.parquet"]
    assert s.ok_keys() == {"good"}


def test_leftover_tmp_files_do_not_break_queries(tmp_path):
    s = ResultsStore(tmp_path)
    s.write_row(_row("good"), "mad", "g")
    d = tmp_path / "suite=mad" / "grid=g"
    (d / ".k.parquet.123-abc.tmp").write_bytes(b"PAR1 truncated")  # what a SIGKILL mid-write leaves
    (d / ".k.parquet.tmp").write_bytes(b"")
    s.write_curve("good", [{"step": 0, "loss": 2.0}], "mad", "g")
    (tmp_path / "curves" / "suite=mad" / "grid=g" / ".x.parquet.9.tmp").write_bytes(b"junk")
    assert s.query("SELECT trial_key FROM results")["trial_key"].tolist() == ["good"]
    assert len(s.query("SELECT * FROM curves")) == 1


def test_concurrent_reader_never_sees_partial_files(tmp_path):
    s = ResultsStore(tmp_path)
    keys = [f"k{i}" for i in range(5)]
    for k in keys:
        s.write_row(_row(k, v=0), "mad", "g")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        i = 0
        try:
            while not stop.is_set():
                i += 1
                s.write_row(_row(keys[i % len(keys)], v=i, pad="x" * 5000), "mad", "g")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    th = threading.Thread(target=writer)
    th.start()
    try:
        for _ in range(40):
            df = s.query("SELECT trial_key, v FROM results")
            assert sorted(df["trial_key"]) == keys  # always all keys, exactly once each
    finally:
        stop.set()
        th.join()
    assert not errors


def test_curves_table(tmp_path):
    s = ResultsStore(tmp_path)
    s.write_curve("k", [{"step": 0, "loss": 2}, {"step": 1, "loss": 1.5}], "mad", "g")
    s.write_curve("k", [{"step": 0, "loss": 3.0}, {"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0}], "mad", "g")
    df = s.query("SELECT * FROM curves ORDER BY step")
    assert df["step"].tolist() == [0, 1, 2] and df["loss"].tolist() == [3.0, 2.5, 2.0]
    assert set(df["trial_key"]) == {"k"} and set(df["grid"]) == {"g"}
    with pytest.raises(SchemaError, match="mixes types"):
        s.write_curve("k", [{"step": 0}, {"step": "one"}], "mad", "g")
    assert len(s.query("SELECT * FROM results")) == 0  # curves never leak into results
