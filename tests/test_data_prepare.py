"""prepare(): determinism, content hashes, round trips, reuse / refusal / rebuild of the output dir, CLI."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from grid.data import TokenShards, load_tokenizer, parse_data_spec, prepare
from grid.data.manifest import DataDirError, read_manifest, verify
from grid.data.shards import doc_split

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "kappa", "ünï", "☃", "café"]


def make_corpus(root: Path, n_docs: int = 60, seed: int = 0) -> Path:
    """Text files of varied length (some non-ASCII) so documents straddle windows and shards."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(20, 400))]
        (root / f"doc{i:03d}.txt").write_text(f"# doc {i}\n" + " ".join(words) + "\n", encoding="utf-8")
    return root


def spec_for(corpus: Path, **over):
    data = {"name": "tiny", "sources": [{"name": "text", "kind": "text_files", "paths": [str(corpus)]}],
            "tokenizer": {"kind": "bytes"}, "seq_len": 32, "max_tokens": 50_000, "val_fraction": 0.1,
            "shard_tokens": 8_192}
    data.update(over)
    return parse_data_spec(data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "tiny"
    return prepare(spec_for(corpus), out_dir=out, verbose=False), out


def _bins(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}


def test_same_spec_twice_is_byte_identical(corpus, built, tmp_path):
    manifest, out = built
    again = prepare(spec_for(corpus), out_dir=tmp_path / "again", verbose=False)
    assert again["content_hash"] == manifest["content_hash"]
    assert _bins(tmp_path / "again") == _bins(out)
    assert len(_bins(out)) > 2  # several train shards: shard_tokens is small
    assert verify(out) == []


def test_different_spec_different_hash(corpus, built, tmp_path):
    manifest, _ = built
    for change in ({"seed": 1}, {"max_tokens": 40_000}, {"val_fraction": 0.2}):
        other = prepare(spec_for(corpus, **change), out_dir=tmp_path / str(change), verbose=False)
        assert other["content_hash"] != manifest["content_hash"], change


def test_manifest_contents(built):
    manifest, out = built
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 257
    splits = manifest["splits"]
    assert splits["train"]["tokens"] + splits["val"]["tokens"] == 50_000
    assert splits["val"]["tokens"] == 5_000
    for split in ("train", "val"):
        shards = splits[split]["shards"]
        assert sum(s["tokens"] for s in shards) == splits[split]["tokens"]
        for s in shards:
            assert (out / s["file"]).stat().st_size == 2 * s["tokens"] and len(s["sha256"]) == 64
    (src,) = manifest["sources"]
    assert src["requested_share"] == 1.0 and src["achieved_share"] == 1.0
    assert "out_dir" not in manifest["spec"]


def test_round_trip_decodes_original_documents(corpus, built):
    manifest, out = built
    tok = load_tokenizer(out, manifest["tokenizer"])
    originals = {p.read_text(encoding="utf-8") for p in corpus.iterdir()}
    for split in ("train", "val"):
        shards = TokenShards(out, split)
        stream = shards.read(0, shards.tokens)
        assert stream[-1] == tok.eos_id
        bounds = np.flatnonzero(stream == tok.eos_id)
        starts = np.concatenate([[0], bounds[:-1] + 1])
        pieces = [tok.decode(stream[a:b].tolist()) for a, b in zip(starts, bounds)]
        assert len(pieces) == manifest["splits"][split]["docs"]
        # every document is an original; only the one that hit the budget may be cut short
        whole = [p for p in pieces if p in originals]
        assert len(whole) >= len(pieces) - 1
        for p in pieces:
            assert p in originals or any(o.startswith(p) for o in originals)


def test_train_and_val_are_disjoint(corpus, built):
    manifest, out = built
    tok = load_tokenizer(out, manifest["tokenizer"])
    docs = {}
    for split in ("train", "val"):
        shards = TokenShards(out, split)
        stream = shards.read(0, shards.tokens)
        bounds = np.flatnonzero(stream == tok.eos_id)
        starts = np.concatenate([[0], bounds[:-1] + 1])
        docs[split] = {tok.decode(stream[a:b].tolist()) for a, b in zip(starts, bounds)}
    assert docs["train"] and docs["val"] and not docs["train"] & docs["val"]
    for d in docs["val"]:
        if d in {p.read_text(encoding="utf-8") for p in corpus.iterdir()}:
            assert doc_split(d, 0, 0.1) == "val"


def test_up_to_date_is_reused(corpus, built, capsys):
    manifest, out = built
    before = (out / "manifest.json").stat().st_mtime_ns
    again = prepare(spec_for(corpus), out_dir=out)
    assert again["content_hash"] == manifest["content_hash"]
    assert (out / "manifest.json").stat().st_mtime_ns == before
    assert "up to date" in capsys.readouterr().err


def test_different_spec_in_existing_dir_is_refused_then_forced(corpus, tmp_path):
    out = tmp_path / "d"
    first = prepare(spec_for(corpus), out_dir=out, verbose=False)
    with pytest.raises(DataDirError, match="(?s)different spec.*--force"):
        prepare(spec_for(corpus, seed=3), out_dir=out, verbose=False)
    assert read_manifest(out)["content_hash"] == first["content_hash"]  # untouched
    forced = prepare(spec_for(corpus, seed=3), out_dir=out, force=True, verbose=False)
    assert forced["content_hash"] != first["content_hash"]
    assert read_manifest(out)["content_hash"] == forced["content_hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temp or old dirs left behind


def test_dir_without_manifest_is_incomplete_and_rebuilt(corpus, built, tmp_path):
    manifest, _ = built
    out = tmp_path / "crashed"
    out.mkdir()
    (out / "train-00000.bin").write_bytes(b"\x01\x02garbage")
    (out / "manifest.json.tmp").write_text("{")
    rebuilt = prepare(spec_for(corpus), out_dir=out, verbose=False)
    assert rebuilt["content_hash"] == manifest["content_hash"]
    assert verify(out) == []


def test_foreign_dir_is_not_deleted(corpus, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.md").write_text("precious")
    with pytest.raises(DataDirError, match="did not write"):
        prepare(spec_for(corpus), out_dir=out, verbose=False)
    assert (out / "notes.md").read_text() == "precious"


def test_failed_build_leaves_nothing(corpus, tmp_path):
    # val budget too small for one window of seq_len + 1 -> PrepareError, no dir, no temp dir
    from grid.data.prepare import PrepareError

    with pytest.raises(PrepareError, match="val split"):
        prepare(spec_for(corpus, seq_len=6000), out_dir=tmp_path / "x", verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_prepare_show_verify(corpus, tmp_path, capsys):
    from grid.__main__ import main

    spec_path = tmp_path / "tiny.yaml"
    data = spec_for(corpus).model_dump(mode="json", exclude={"out_dir"})
    spec_path.write_text(json.dumps(data))  # JSON is YAML
    out = tmp_path / "cli"
    assert main(["data", "prepare", str(spec_path), "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "content_hash" in text.out and "MB/s" in text.err
    assert main(["data", "show", str(out)]) == 0
    assert "requested" in capsys.readouterr().out
    assert main(["data", "verify", str(out)]) == 0
    data["seed"] = 9
    spec_path.write_text(json.dumps(data))
    assert main(["data", "prepare", str(spec_path), "--out", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    data["tokenizer"] = {"kind": "nope"}
    spec_path.write_text(json.dumps(data))
    assert main(["data", "prepare", str(spec_path), "--out", str(out)]) == 2
    assert "tokenizer.kind" in capsys.readouterr().err


def test_stdlib_bytes_tiny_budget(tmp_path):
    spec = parse_data_spec({"name": "std", "sources": [{"name": "stdlib", "kind": "stdlib"}],
                            "tokenizer": {"kind": "bytes"}, "seq_len": 64, "max_tokens": 50_000,
                            "val_fraction": 0.1})
    a = prepare(spec, out_dir=tmp_path / "a", verbose=False)
    b = prepare(spec, out_dir=tmp_path / "b", verbose=False)
    assert a["content_hash"] == b["content_hash"]
    assert a["sources"][0]["info"]["files"] > 100
    train = TokenShards(tmp_path / "a", "train")
    text = load_tokenizer(tmp_path / "a", a["tokenizer"]).decode(train.read(0, 2000).tolist())
    assert "import" in text or "def " in text  # it is Python source
