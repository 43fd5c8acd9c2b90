"""Tokenizers: bytes round trip, deterministic BPE training, eos never faked by text, hf from a local dir."""
from __future__ import annotations

import importlib.util
import random

import pytest

from grid.data import TokenShards, load_tokenizer, parse_data_spec, prepare
from grid.data.tokenizer import EOS_TOKEN, ByteTokenizer, HFTokenizer, TokenizerError, train_bpe

HAS_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_tokenizers = pytest.mark.skipif(not HAS_TOKENIZERS, reason="`tokenizers` not installed (pip install tokenizers)")


def _texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["def", "return", "self", "import", "class", "for", "in", "range", "value", "(", ")", ":"]
    words += [f"var{i}" for i in range(200)]  # enough distinct pairs to learn a few hundred merges
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 80))) + "\n" for _ in range(n)]


def test_bytes_round_trip():
    tok = ByteTokenizer()
    text = "naïve ☃ code\n\tx = 1"
    ids = tok.encode(text)
    assert max(ids) < 256 and tok.eos_id == 256 and tok.vocab_size == 257
    assert tok.encode_array(text).tolist() == ids
    assert tok.decode(ids + [tok.eos_id]) == text


@needs_tokenizers
def test_bpe_training_is_deterministic(tmp_path):
    texts = _texts()
    a, b = train_bpe(texts, 300), train_bpe(list(reversed(texts)), 300)
    for name, tok in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        tok.save(tmp_path / name)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert a.vocab_size == 300 and a.eos_id == 0
    sample = texts[0]
    assert a.decode(a.encode(sample)) == sample
    assert len(a.encode(sample)) < len(sample.encode())  # it learned merges


@needs_tokenizers
def test_literal_eos_text_is_not_eos():
    tok = train_bpe(_texts(), 300)
    ids = tok.encode(f"a {EOS_TOKEN} b")
    assert tok.eos_id not in ids
    assert tok.decode(ids) == f"a {EOS_TOKEN} b"


@needs_tokenizers
def test_prepare_with_bpe(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for i, t in enumerate(_texts(200)):
        (root / f"{i:03d}.py").write_text(t)
    data = {"name": "bpe", "sources": [{"name": "code", "kind": "text_files", "paths": [str(root)]}],
            "tokenizer": {"kind": "bpe", "vocab_size": 320}, "seq_len": 16, "max_tokens": 5_000,
            "val_fraction": 0.1}
    m1 = prepare(parse_data_spec(data), out_dir=tmp_path / "a", verbose=False)
    m2 = prepare(parse_data_spec(data), out_dir=tmp_path / "b", verbose=False)
    assert m1["content_hash"] == m2["content_hash"]
    assert m1["tokenizer"]["files"]["tokenizer.json"] == m2["tokenizer"]["files"]["tokenizer.json"]
    assert m1["tokenizer"]["vocab_size"] == 320
    tok = load_tokenizer(tmp_path / "a", m1["tokenizer"])
    train = TokenShards(tmp_path / "a", "train")
    stream = train.read(0, train.tokens).tolist()
    first_doc = tok.decode(stream[: stream.index(tok.eos_id)])
    assert first_doc in {p.read_text() for p in root.iterdir()}  # decodes back to an original file
    data["tokenizer"]["vocab_size"] = 330
    m3 = prepare(parse_data_spec(data), out_dir=tmp_path / "c", verbose=False)
    assert m3["content_hash"] != m1["content_hash"]


@pytest.mark.skipif(not (HAS_TOKENIZERS and HAS_TRANSFORMERS), reason="needs `tokenizers` and `transformers`")
def test_hf_tokenizer_from_local_dir(tmp_path):
    from transformers import PreTrainedTokenizerFast

    bpe = train_bpe(_texts(), 300)
    bpe.save(tmp_path)
    PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                            eos_token=EOS_TOKEN).save_pretrained(tmp_path / "hf")
    tok = HFTokenizer(str(tmp_path / "hf"))
    sample = _texts(1, seed=5)[0]
    assert tok.encode(sample) == bpe.encode(sample)
    assert tok.eos_id == bpe.eos_id and tok.vocab_size == 300
    assert tok.eos_id not in tok.encode(f"x {EOS_TOKEN} y")
    assert tok.describe()["kind"] == "hf"
    # the whole pipeline with an hf tokenizer: its files are copied next to the shards and hashed
    for i, t in enumerate(_texts(100)):
        (tmp_path / f"{i:03d}.txt").write_text(t)
    data = {"name": "hf", "sources": [{"name": "t", "kind": "text_files", "paths": [str(tmp_path / "*.txt")]}],
            "tokenizer": {"kind": "hf", "name_or_path": str(tmp_path / "hf")}, "seq_len": 16,
            "max_tokens": 3_000, "val_fraction": 0.1}
    m = prepare(parse_data_spec(data), out_dir=tmp_path / "out", verbose=False)
    assert "tokenizer/tokenizer.json" in m["tokenizer"]["files"]
    again = load_tokenizer(tmp_path / "out", m["tokenizer"])
    assert again.encode(sample) == bpe.encode(sample)


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="needs `transformers`")
def test_hf_tokenizer_unreachable_names_the_fix(tmp_path):
    with pytest.raises(TokenizerError, match="local directory"):
        HFTokenizer(str(tmp_path / "no-such-tokenizer"))
