"""TokenShards: batch(step) is a pure function of step; windows, shard boundaries, eval order, ranks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from grid.data.shards import ShardWriter, TokenShards, dtype_for_vocab, permute


def make_dir(tmp_path, tokens: np.ndarray, shard_tokens: int = 1000, seed: int = 0, val: np.ndarray | None = None):
    """A hand-made data dir: known token values make every window checkable."""
    dtype = np.dtype("<u2")
    splits = {}
    for split, arr in (("train", tokens), ("val", tokens[:500] if val is None else val)):
        w = ShardWriter(tmp_path, split, dtype, shard_tokens)
        w.write(arr[:123])  # several writes: a write may cross a shard boundary
        w.write(arr[123:])
        splits[split] = {"tokens": w.tokens, "docs": 1, "shards": w.finish()}
    manifest = {"dtype": "uint16", "tokenizer": {"eos_id": 0, "vocab_size": 60000},
                "spec": {"seed": seed, "seq_len": 16}, "splits": splits}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


@pytest.fixture
def data(tmp_path):
    return make_dir(tmp_path, np.arange(5_000) % 60000)


def test_writer_cuts_shards(data):
    m = json.loads((data / "manifest.json").read_text())
    assert [s["tokens"] for s in m["splits"]["train"]["shards"]] == [1000] * 5
    assert TokenShards(data, "train").tokens == 5000


def test_read_across_shards(data):
    ts = TokenShards(data, "train")
    assert ts.read(990, 25).tolist() == list(range(990, 1015))
    assert ts.read(0, 5000).tolist() == list(range(5000))
    with pytest.raises(IndexError):
        ts.read(4990, 20)


def test_batch_shapes_targets_and_determinism(data):
    ts = TokenShards(data, "train")
    x, y = ts.batch(7, batch_size=4, seq_len=16)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    assert ((x[:, 0] % 16) == 0).all()  # windows start on the seq_len grid (tokens == positions here)
    fresh = TokenShards(data, "train")  # a resumed run: new object, no history
    for step in (0, 7, 1000):
        a, b = ts.batch(step, 4, 16), fresh.batch(step, 4, 16)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(ts.batch(0, 4, 16)[0], ts.batch(1, 4, 16)[0])


def test_one_epoch_visits_every_window_once(data):
    ts = TokenShards(data, "train")
    n = ts.num_windows(16)
    assert n == (5000 - 1) // 16
    starts = []
    for step in range(n // 8 + 1):
        x, _ = ts.batch(step, 8, 16)
        starts += (x[:, 0] // 16).tolist()
    first_epoch = starts[:n]
    assert sorted(first_epoch) == list(range(n))
    assert first_epoch != list(range(n))  # shuffled


def test_seed_changes_order(data):
    a = TokenShards(data, "train", seed=0).batch(0, 8, 16)[0]
    b = TokenShards(data, "train", seed=1).batch(0, 8, 16)[0]
    assert not torch.equal(a, b)


def test_ranks_split_one_global_batch(data):
    ts = TokenShards(data, "train")
    whole = ts.batch(3, 8, 16)[0]
    parts = torch.cat([ts.batch(3, 2, 16, rank=r, world=4)[0] for r in range(4)])
    assert torch.equal(whole, parts)
    with pytest.raises(ValueError):
        ts.batch(0, 2, 16, rank=4, world=4)


def test_eval_batches_cover_windows_in_order(data):
    ts = TokenShards(data, "val")
    n = ts.num_windows(16)
    batches = list(ts.eval_batches(16, batch_size=8))
    x = torch.cat([b[0] for b in batches])
    assert x.shape == (n, 16)
    assert (x[:, 0] == torch.arange(n) * 16).all()  # non-overlapping, stream order
    two = [torch.cat([b[0] for b in ts.eval_batches(16, 4, rank=r, world=2)]) for r in range(2)]
    assert sorted(torch.cat(two)[:, 0].tolist()) == (torch.arange(n) * 16).tolist()
    assert sum(b[0].shape[0] for b in ts.eval_batches(16, 8, max_windows=10)) == 10


def test_permute_is_a_bijection():
    for n in (1, 2, 3, 17, 1000, 4097):
        out = permute(np.arange(n), n, key=123)
        assert sorted(out.tolist()) == list(range(n))
    assert permute(np.arange(100), 100, 1).tolist() != permute(np.arange(100), 100, 2).tolist()


def test_damaged_dir_is_reported(data):
    (data / "train-00002.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="damaged"):
        TokenShards(data, "train")
    with pytest.raises(FileNotFoundError, match="not a prepared data dir"):
        TokenShards(data / "nowhere", "train")


def test_dtype_follows_vocab():
    assert dtype_for_vocab(257) == np.uint16 and dtype_for_vocab(65536) == np.uint16
    assert dtype_for_vocab(65537) == np.uint32 and dtype_for_vocab(151_665) == np.uint32
