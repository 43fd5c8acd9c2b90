"""Sources: fixed document order, the stdlib corpus, field handling, a clear error when `datasets` is missing."""
from __future__ import annotations

import builtins
import gzip
import json
import sys
import sysconfig
import types

import pytest

from grid.data.sources import SourceError, iter_documents, stdlib_files
from grid.data.spec import SourceSpec


def test_stdlib_corpus_is_sorted_and_excludes_tests():
    files = stdlib_files()
    root = sysconfig.get_paths()["stdlib"]
    rel = [f.relative_to(root).as_posix() for f in files]
    assert rel == sorted(rel) and len(rel) > 100
    assert "os.py" in rel and "json/__init__.py" in rel
    for r in rel:
        parts = r.split("/")[:-1]
        assert not {"test", "tests", "idle_test", "site-packages"} & set(parts), r
    assert stdlib_files() == files


def test_stdlib_documents_are_source_text():
    docs = iter_documents(SourceSpec(name="s", kind="stdlib"))
    first = next(docs)
    assert first == stdlib_files()[0].read_text(encoding="utf-8")


def test_jsonl_gzip_and_multi_field(tmp_path):
    rows = [{"q": "What?", "a": "That."}, {"q": "Why?", "a": None}, {"q": "", "a": ""}]
    with gzip.open(tmp_path / "r.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n\n")
    spec = SourceSpec(name="r", kind="jsonl", paths=[str(tmp_path / "*.jsonl.gz")], text_field=["q", "a"])
    assert list(iter_documents(spec)) == ["What?\n\nThat.", "Why?"]  # empty documents are skipped


def test_paths_order_is_sorted_per_entry(tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    spec = SourceSpec(name="t", kind="text_files", paths=[str(tmp_path)])
    assert list(iter_documents(spec)) == ["a.txt", "b.txt", "sub/c.txt"]


def test_bad_json_line_is_located(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(SourceError, match=r"x.jsonl:2 is not JSON"):
        list(iter_documents(SourceSpec(name="x", kind="jsonl", paths=[str(tmp_path / "x.jsonl")])))


def test_hf_without_datasets_names_the_fix(monkeypatch):
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    spec = SourceSpec(name="general", kind="hf", hf_name="HuggingFaceFW/fineweb-edu")
    with pytest.raises(SourceError, match=r"needs the `datasets` package: pip install 'lingrid\[data\]'"):
        next(iter_documents(spec))


def test_hf_source_reads_rows_through_datasets(monkeypatch):
    calls = {}

    def load_dataset(name, config, split, data_files, streaming):
        calls.update(name=name, config=config, split=split, data_files=data_files, streaming=streaming)
        return iter([{"text": "first"}, {"text": ""}, {"text": "second"}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    spec = SourceSpec(name="math", kind="hf", hf_name="HuggingFaceTB/finemath", hf_config="finemath-4plus")
    assert list(iter_documents(spec)) == ["first", "second"]
    assert calls == {"name": "HuggingFaceTB/finemath", "config": "finemath-4plus", "split": "train",
                     "data_files": None, "streaming": True}


def test_hf_unreachable_names_the_fix(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    spec = SourceSpec(name="general", kind="hf", hf_name="HuggingFaceFW/fineweb-edu")
    with pytest.raises(SourceError, match=r"(?s)ConnectionError: hub unreachable.*fix:.*kind 'parquet'"):
        next(iter_documents(spec))
