"""Data spec validation: every rejection names the field, the bad value and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest

from grid.data.spec import DataSpecError, load_data_spec, parse_data_spec

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "data"


def _spec(**over):
    base = {"name": "t", "sources": [{"name": "s", "kind": "stdlib"}], "tokenizer": {"kind": "bytes"},
            "seq_len": 64, "max_tokens": 10_000}
    base.update(over)
    return base


def _error(data) -> str:
    with pytest.raises(DataSpecError) as info:
        parse_data_spec(data)
    return str(info.value)


def test_defaults_and_out_dir(monkeypatch, tmp_path):
    from grid.paths import REPO

    monkeypatch.delenv("LINGRID_BENCHMARK", raising=False)
    monkeypatch.chdir(tmp_path)  # the default does not depend on the working directory
    spec = parse_data_spec(_spec())
    assert spec.val_fraction == 0.01 and spec.val_share == 0.01
    assert spec.out_dir == str(REPO / "benchmark" / "data" / "lm" / "t")
    monkeypatch.setenv("LINGRID_BENCHMARK", str(tmp_path / "bench"))
    assert parse_data_spec(_spec()).out_dir == str(tmp_path / "bench" / "data" / "lm" / "t")
    assert spec.on_short == "cycle" and spec.seed == 0


def test_bad_source_kind_names_field_value_and_allowed():
    msg = _error(_spec(sources=[{"name": "s", "kind": "csv"}]))
    assert "sources.0.kind" in msg and "'csv'" in msg
    for allowed in ("text_files", "jsonl", "parquet", "hf", "stdlib"):
        assert allowed in msg


def test_bad_tokenizer_kind():
    msg = _error(_spec(tokenizer={"kind": "bp"}))
    assert "tokenizer.kind" in msg and "'bp'" in msg and "'bytes', 'bpe' or 'hf'" in msg


def test_unknown_field_lists_allowed_fields():
    msg = _error(_spec(tokenizer={"kind": "bytes", "vocab": 5}))
    assert "tokenizer.vocab" in msg and "unknown field" in msg and "vocab_size" in msg and "name_or_path" in msg
    msg = _error(_spec(shards=3))
    assert "shards: unknown field" in msg and "shard_tokens" in msg


def test_val_fraction_bounds():
    msg = _error(_spec(val_fraction=0.7))
    assert "val_fraction" in msg and "0.7" in msg and "less than 0.5" in msg
    assert "val_fraction" in _error(_spec(val_fraction=0))


def test_val_fraction_and_val_tokens_exclusive_and_need_budget():
    assert "not both" in _error(_spec(val_fraction=0.1, val_tokens=100))
    assert "val_tokens needs max_tokens" in _error(_spec(val_tokens=100, max_tokens=None))
    assert parse_data_spec(_spec(val_tokens=1000)).val_share == pytest.approx(0.1)


def test_kind_specific_fields():
    assert "needs `vocab_size`" in _error(_spec(tokenizer={"kind": "bpe"}))
    msg = _error(_spec(tokenizer={"kind": "bytes", "vocab_size": 300}))
    assert "vocab_size" in msg and "257" in msg
    assert "needs `name_or_path`" in _error(_spec(tokenizer={"kind": "hf"}))
    assert "needs `paths`" in _error(_spec(sources=[{"name": "s", "kind": "jsonl"}]))
    assert "needs `hf_name`" in _error(_spec(sources=[{"name": "s", "kind": "hf"}]))
    assert "only apply to kind='hf'" in _error(_spec(sources=[{"name": "s", "kind": "stdlib", "hf_name": "x"}]))
    msg = _error(_spec(sources=[{"name": "s", "kind": "stdlib", "weight": -1}]))
    assert "sources.0.weight" in msg and "greater than 0" in msg


def test_duplicate_source_names():
    src = {"name": "s", "kind": "stdlib"}
    assert "repeated: ['s']" in _error(_spec(sources=[src, src]))


def test_spec_hash_ignores_out_dir_only():
    a = parse_data_spec(_spec(out_dir="x"))
    assert a.spec_hash() == parse_data_spec(_spec(out_dir="y")).spec_hash()
    assert a.spec_hash() != parse_data_spec(_spec(seed=1)).spec_hash()


def test_load_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("name: t\nsources: [{name: s, kind: stdlib}]\ntokenizer: {kind: bytes}\nseq_len: 8\n")
    assert load_data_spec(path).name == "t"
    path.write_text("name: t\nseq_len: 8\n")
    msg = str(pytest.raises(DataSpecError, load_data_spec, path).value)
    assert str(path) in msg and "sources: Field required" in msg and "tokenizer: Field required" in msg
    path.write_text("name: [unclosed\n")
    assert "not valid YAML" in str(pytest.raises(DataSpecError, load_data_spec, path).value)
    assert "cannot read" in str(pytest.raises(DataSpecError, load_data_spec, tmp_path / "nope.yaml").value)


def test_shipped_configs_validate():
    for name in ("stdlib-bytes", "stdlib-bpe", "linear-next-mix"):
        spec = load_data_spec(CONFIGS / f"{name}.yaml")
        assert spec.name == name
    mix = load_data_spec(CONFIGS / "linear-next-mix.yaml")
    assert {s.name: s.weight for s in mix.sources} == {"general": 50, "code": 30, "math": 15, "reasoning": 5}
