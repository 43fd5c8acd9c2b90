"""Mixture: achieved token shares match the weights, interleaving is smooth, short sources cycle or stop."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grid.data import TokenShards, parse_data_spec, prepare
from grid.data.mixture import apportion
from grid.data.sources import SourceError


def _docs(letter: str, n: int, seed: int) -> list[str]:
    """Documents made of one letter (plus a number that keeps them distinct): tokens reveal their source."""
    rng = random.Random(seed)
    return [f"{i} " + letter * rng.randint(50, 600) for i in range(n)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mix")
    (root / "a.jsonl").write_text("".join(json.dumps({"body": d, "id": 1}) + "\n" for d in _docs("a", 200, 1)))
    pq.write_table(pa.table({"text": _docs("b", 200, 2)}), root / "b.parquet")
    (root / "c").mkdir()
    for i, d in enumerate(_docs("c", 30, 3)):  # small: ~10k tokens
        (root / "c" / f"{i:02d}.txt").write_text(d)
    return {"a": root / "a.jsonl", "b": root / "b.parquet", "c": root / "c"}


def _spec(sources, weights=(5, 3, 2), **over):
    data = {
        "name": "mix", "tokenizer": {"kind": "bytes"}, "seq_len": 32, "max_tokens": 50_000, "val_fraction": 0.1,
        "sources": [
            {"name": "A", "kind": "jsonl", "paths": [str(sources["a"])], "text_field": "body", "weight": weights[0]},
            {"name": "B", "kind": "parquet", "paths": [str(sources["b"])], "weight": weights[1]},
            {"name": "C", "kind": "text_files", "paths": [str(sources["c"] / "*.txt")], "weight": weights[2]},
        ],
    }
    data.update(over)
    return parse_data_spec(data)


def _letter_share(stream: np.ndarray) -> dict[str, float]:
    counts = {ch: int((stream == ord(ch)).sum()) for ch in "abc"}
    total = sum(counts.values())
    return {ch: c / total for ch, c in counts.items()}


def test_apportion_sums_exactly():
    assert apportion(10, [1 / 3] * 3) == [4, 3, 3]
    assert sum(apportion(49_999, [0.5, 0.3, 0.15, 0.05])) == 49_999


def test_achieved_shares_match_weights(sources, tmp_path):
    m = prepare(_spec(sources), out_dir=tmp_path / "m", verbose=False)
    by_name = {s["name"]: s for s in m["sources"]}
    for name, want in (("A", 0.5), ("B", 0.3), ("C", 0.2)):
        s = by_name[name]
        assert s["requested_share"] == pytest.approx(want)
        assert s["achieved_share"] == pytest.approx(want, abs=1e-4)
        for split in ("train", "val"):
            assert s["achieved_share_by_split"][split] == pytest.approx(want, abs=1e-3)
    assert m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"] == 50_000
    # C holds ~10k tokens but needs 10k: it is cycled, and the manifest says how much
    assert by_name["C"]["passes"] >= 2 and by_name["C"]["epochs"] > 1
    assert by_name["A"]["passes"] == 1


def test_every_prefix_is_mixed(sources, tmp_path):
    prepare(_spec(sources), out_dir=tmp_path / "m", verbose=False)
    train = TokenShards(tmp_path / "m", "train")
    stream = train.read(0, train.tokens)
    for frac in (0.1, 0.5, 1.0):
        share = _letter_share(stream[: int(frac * stream.size)])
        assert share["a"] == pytest.approx(0.5, abs=0.05)
        assert share["b"] == pytest.approx(0.3, abs=0.05)
        assert share["c"] == pytest.approx(0.2, abs=0.05)


def test_on_short_stop_reports_shortfall(sources, tmp_path):
    m = prepare(_spec(sources, weights=(2, 2, 6), on_short="stop"), out_dir=tmp_path / "s", verbose=False)
    c = {s["name"]: s for s in m["sources"]}["C"]
    assert c["passes"] == 1 and c["stop_reason"] == "source exhausted"
    assert c["requested_share"] == pytest.approx(0.6)
    assert c["achieved_share"] < 0.5  # C cannot supply 60% of 50k tokens once
    assert m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"] < 50_000


def test_no_budget_reads_every_source_once(sources, tmp_path):
    m = prepare(_spec(sources, max_tokens=None), out_dir=tmp_path / "n", verbose=False)
    for s in m["sources"]:
        assert s["passes"] == 1 and s["epochs"] == 1.0 and s["docs_skipped"] == 0
        assert s["stop_reason"] == "source exhausted"


def test_missing_text_field_is_named(sources, tmp_path):
    spec = _spec(sources)
    spec.sources[0].text_field = "text"
    with pytest.raises(SourceError, match=r"no field 'text'; fields present: \['body', 'id'\]"):
        prepare(spec, out_dir=tmp_path / "x", verbose=False)
    spec = _spec(sources)
    spec.sources[2].paths = [str(tmp_path / "none" / "*.txt")]
    with pytest.raises(SourceError, match="matches no files"):
        prepare(spec, out_dir=tmp_path / "y", verbose=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
