"""Token shards on disk: the train/val split rule, the writer, and the memory-mapped reader.

On disk: `<split>-<index:05d>.bin`, raw little-endian uint16 (vocab <= 65536) or uint32, no header;
dtype, token counts and sha256 per file are in manifest.json. Each split is one logical stream
(shards concatenated in index order) of documents, each followed by eos.

Split rule (doc_split): a document goes to validation when a keyed hash of its text falls below the
val share. It depends only on (seed, text): not on order, budget or tokenizer, so identical documents
(duplicates, or a source read again when cycled) always land in the same split and never leak.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# Lazy here: torch (heavy: never at import time on the driver)

SPLITS = ("train", "val")
MANIFEST = "manifest.json"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def doc_split(text: str, seed: int, val_share: float) -> str:
    """'val' or 'train' for one document: keyed blake2b of the text, read as a uniform number in [0, 1)."""
    digest = hashlib.blake2b(text.encode("utf-8", errors="replace"), digest_size=8,
                             key=str(seed).encode()).digest()
    return "val" if int.from_bytes(digest, "little") / 2**64 < val_share else "train"


class ShardWriter:
    """Appends token arrays to one split; cuts a new file every `shard_tokens` tokens (docs may straddle)."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.out_dir, self.split, self.dtype, self.shard_tokens = Path(out_dir), split, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.tokens = 0
        self._fh = None
        self._sha = None
        self._in_shard = 0

    def _open(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self._fh = open(self.out_dir / name, "wb")  # noqa: SIM115  (closed in _close)
        self._sha = hashlib.sha256()
        self._in_shard = 0
        self.shards.append({"file": name, "tokens": 0, "sha256": None})

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self.shards[-1].update(tokens=self._in_shard, sha256=self._sha.hexdigest())
            self._fh = None

    def write(self, ids: np.ndarray) -> None:
        arr = np.ascontiguousarray(ids, dtype=self.dtype)
        while arr.size:
            if self._fh is None:
                self._open()
            room = self.shard_tokens - self._in_shard
            part, arr = arr[:room], arr[room:]
            data = part.tobytes()
            self._fh.write(data)
            self._sha.update(data)
            self._in_shard += part.size
            self.tokens += part.size
            if self._in_shard == self.shard_tokens:
                self._close()

    def finish(self) -> list[dict[str, Any]]:
        self._close()
        return self.shards


# ---- reading --------------------------------------------------------------------------------------------

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (wrapping uint64 arithmetic): a cheap, well-mixed round function."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def permute(idx: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed pseudo-random bijection of [0, n), evaluated pointwise (4-round Feistel + cycle walking).

    Why not np.random.permutation: that costs 8 bytes per window (GBs at trillion-token scale) and
    must be rebuilt per epoch; this needs no memory and gives any position's window in O(1).
    """
    idx = np.asarray(idx, dtype=np.uint64)
    if n <= 1:
        return np.zeros_like(idx)
    bits = max(2, (n - 1).bit_length())
    bits += bits & 1  # even, so both halves have the same width
    half, mask = np.uint64(bits // 2), np.uint64((1 << (bits // 2)) - 1)
    with np.errstate(over="ignore"):
        keys = _mix64(np.arange(4, dtype=np.uint64) + _mix64(np.array([key & (2**64 - 1)], dtype=np.uint64)))

        def feistel(x: np.ndarray) -> np.ndarray:
            left, right = x >> half, x & mask
            for k in keys:
                left, right = right, left ^ (_mix64(right ^ k) & mask)
            return (left << half) | right

        out = feistel(idx)
        bad = out >= np.uint64(n)
        while bad.any():  # cycle walking: re-apply until inside [0, n); domain < 4n, so few rounds
            out[bad] = feistel(out[bad])
            bad = out >= np.uint64(n)
    return out


def _epoch_key(seed: int, epoch: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest(), "little")


class TokenShards:
    """Memory-mapped token stream of one split of a prepared data dir.

    `batch(step, ...)` is a pure function of (step, batch_size, seq_len, rank, world, seed): resuming at
    step k gives exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, data_dir: str | Path, split: str = "train", seed: int | None = None):
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        self.dir = Path(data_dir)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{self.dir} has no {MANIFEST}: not a prepared data dir "
                                    "(run `python -m grid data prepare SPEC.yaml`)")
        self.manifest = json.loads(path.read_text())
        self.split = split
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")  # files are little-endian
        self.eos_id = int(self.manifest["tokenizer"]["eos_id"])
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
        self.seed = int(self.manifest["spec"]["seed"] if seed is None else seed)
        self.default_seq_len = int(self.manifest["spec"]["seq_len"])
        self._maps: list[np.ndarray] = []
        for shard in self.manifest["splits"][split]["shards"]:
            file = self.dir / shard["file"]
            size = file.stat().st_size if file.exists() else -1
            if size != shard["tokens"] * self.dtype.itemsize:
                raise ValueError(f"{file}: expected {shard['tokens']} tokens of {self.dtype}, file has {size} "
                                 "bytes; the data dir is damaged: prepare it again with --force")
            self._maps.append(np.memmap(file, dtype=self.dtype, mode="r"))
        self._starts = np.cumsum([0] + [m.size for m in self._maps])
        self.tokens = int(self._starts[-1])

    def __len__(self) -> int:
        return self.tokens

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length) of the split's stream as int64, across shard boundaries."""
        if start < 0 or start + length > self.tokens:
            raise IndexError(f"tokens [{start}, {start + length}) outside the {self.split} split ({self.tokens})")
        out = np.empty(length, dtype=np.int64)
        pos, i = 0, int(np.searchsorted(self._starts, start, side="right")) - 1
        while pos < length:
            offset = start + pos - int(self._starts[i])
            take = min(length - pos, self._maps[i].size - offset)
            out[pos:pos + take] = self._maps[i][offset:offset + take]
            pos += take
            i += 1
        return out

    def num_windows(self, seq_len: int) -> int:
        """Windows of seq_len+1 tokens at stride seq_len: every token is a target at most once."""
        return max(0, (self.tokens - 1) // seq_len)

    def _windows(self, idx: np.ndarray, seq_len: int):
        import torch  # noqa: PLC0415  (keeps `grid data show` and the manifest code torch-free)

        rows = np.stack([self.read(int(w) * seq_len, seq_len + 1) for w in idx]) if len(idx) else \
            np.empty((0, seq_len + 1), dtype=np.int64)
        rows = torch.from_numpy(rows)
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def batch(self, step: int, batch_size: int, seq_len: int, rank: int = 0, world: int = 1):
        """(inputs, targets), int64 tensors [batch_size, seq_len], for this rank at this step.

        Sample g = (step * world + rank) * batch_size + i walks a keyed permutation of all windows,
        re-keyed each epoch (g // windows). The global batch (all ranks) is the same for any split of
        one global batch size across ranks.
        """
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world size {world}")
        n = self.num_windows(seq_len)
        if n == 0:
            raise ValueError(f"{self.split} split has {self.tokens} tokens: too few for one window of {seq_len + 1}")
        g = (step * world + rank) * batch_size + np.arange(batch_size, dtype=np.int64)
        epochs, pos = g // n, g % n
        idx = np.empty(batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            idx[sel] = permute(pos[sel], n, _epoch_key(self.seed, int(epoch))).astype(np.int64)
        return self._windows(idx, seq_len)

    def eval_batches(self, seq_len: int, batch_size: int, max_windows: int | None = None,
                     rank: int = 0, world: int = 1) -> Iterator[tuple[Any, Any]]:
        """Non-overlapping windows in stream order, in batches (the last may be smaller).

        Batch j of rank r holds windows (j * world + r) * batch_size + [0, batch_size): ranks interleave so
        that together they cover the first `max_windows` windows exactly once.
        """
        n = self.num_windows(seq_len) if max_windows is None else min(max_windows, self.num_windows(seq_len))
        j = 0
        while True:
            lo = (j * world + rank) * batch_size
            if lo >= n:
                return
            yield self._windows(np.arange(lo, min(lo + batch_size, n)), seq_len)
            j += 1
