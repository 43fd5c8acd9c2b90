"""`python -m grid plan` of a grid whose data uses a pretrained (hub) tokenizer, on a machine without network:
the vocabulary comes from data prepared before, else the tokenizer cache; else it fails at once."""
from __future__ import annotations

import json
import socket
import sys
import time

import pytest

from grid.lm.gridspec import load_grid
from grid.lm.prepare_grid import data_identity
from grid.paths import REPO

GRID = REPO / "configs" / "grids" / "hybrid-72.yaml"  # data: linear-next-mix (hf tokenizer fla-hub/...)


def _no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_uncached_hub_tokenizer_offline_fails_at_once(monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    from grid.data.tokenizer import HFTokenizer, TokenizerError

    _no_network(monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setitem(sys.modules, "transformers", None)  # never needed to know it cannot work
    t0 = time.time()
    with pytest.raises(TokenizerError, match="not in the local Hugging Face cache and the hub cannot be used"):
        HFTokenizer("fla-hub/transformer-1.3B-100B")
    assert time.time() - t0 < 5


def test_plan_takes_the_vocabulary_from_data_prepared_with_the_same_tokenizer(monkeypatch, tmp_path):
    from grid.data import tokenizer

    _no_network(monkeypatch)
    monkeypatch.setenv("LINGRID_BENCHMARK", str(tmp_path))
    other = tmp_path / "data" / "lm" / "some-other-mix"  # another data set, the same tokenizer
    other.mkdir(parents=True)
    (other / "manifest.json").write_text(json.dumps({"spec_hash": "x", "tokenizer": {
        "kind": "hf", "name_or_path": "fla-hub/transformer-1.3B-100B", "vocab_size": 32000, "eos_id": 2}}))
    monkeypatch.setattr(tokenizer, "HFTokenizer", lambda *a, **k: pytest.fail("the tokenizer was loaded"))
    ident = data_identity(load_grid(GRID), GRID)
    assert ident.vocab_size == 32000 and "some-other-mix" in ident.note and not ident.prepared
