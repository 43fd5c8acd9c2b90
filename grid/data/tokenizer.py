"""Tokenizers behind one small interface: encode, decode, eos_id, vocab_size, describe, save.

- bytes: UTF-8 bytes are ids 0..255, eos is 256, vocab 257. No training, no files, works everywhere.
- bpe:   byte-level BPE learned on the corpus with the `tokenizers` library; saved as tokenizer.json next
         to the shards, so the shards are never separated from the vocabulary that gives them meaning.
- hf:    a pretrained tokenizer (`transformers.AutoTokenizer`), saved into `tokenizer/` next to the shards.

Documents are encoded without special tokens and joined by eos by the shard writer. A literal
"<|endoftext|>" inside a document is encoded as plain text, never as eos (it would fake a boundary).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from grid.data.spec import TokenizerSpec
from grid.env import package_version

# Lazy here: huggingface_hub, tokenizers, transformers (optional or slow to import: only the paths that use them);
#   socket, urllib (one code path)

EOS_TOKEN = "<|endoftext|>"
BPE_FILE = "tokenizer.json"
HF_DIR = "tokenizer"


class TokenizerError(RuntimeError):
    """A tokenizer that cannot be built or loaded; the message names the fix."""


class Tokenizer:
    kind: str = ""
    vocab_size: int = 0
    eos_id: int = 0

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_array(self, text: str) -> np.ndarray:
        """Same ids as encode(), as an int64 array (the shard writer's fast path)."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eos_id": self.eos_id}

    def save(self, out_dir: Path) -> list[str]:
        """Write whatever is needed to load this tokenizer again; returns paths relative to out_dir."""
        return []


class ByteTokenizer(Tokenizer):
    kind = "bytes"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, tok: Any):
        tok.encode_special_tokens = True  # see module docstring: "<|endoftext|>" in text stays text
        self._tok = tok
        self.eos_id = tok.token_to_id(EOS_TOKEN)
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        if self.eos_id is None:
            raise ValueError(f"BPE tokenizer has no {EOS_TOKEN!r} token")

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTok  # noqa: PLC0415

        return cls(HFTok.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": "byte-level BPE", "library": "tokenizers",
                "library_version": _version("tokenizers"), "file": BPE_FILE}

    def save(self, out_dir: Path) -> list[str]:
        self._tok.save(str(Path(out_dir) / BPE_FILE), pretty=True)
        return [BPE_FILE]


def _import_tokenizers():
    try:
        import tokenizers  # noqa: PLC0415
    except ImportError:
        raise TokenizerError("tokenizer kind 'bpe' needs the `tokenizers` package: pip install tokenizers "
                           "(or pip install 'lingrid[data]')") from None
    return tokenizers


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
    """Learn byte-level BPE merges. Deterministic: the same texts give the same merges and tokenizer.json.

    The `tokenizers` trainer counts pairs in parallel but breaks count ties by the pair itself, so the
    result does not depend on thread scheduling (tests/test_data_tokenizer.py checks this).
    """
    tk = _import_tokenizers()
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS_TOKEN],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tok)


HUB_PROBE_S = 3.0  # how long to wait for the Hugging Face hub before calling this machine offline


def hub_offline() -> str | None:
    """Why the Hugging Face hub cannot be used from here (HF_HUB_OFFLINE, or no answer within HUB_PROBE_S),
    else None. Without this, a download on an offline machine spends a minute in retries before failing."""
    import socket  # noqa: PLC0415
    from urllib.parse import urlparse  # noqa: PLC0415

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or \
            os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy decides what is reachable: let the hub client try
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=HUB_PROBE_S).close()
    except OSError as exc:
        return f"{url.hostname} cannot be reached ({exc})"
    return None


def _in_hf_cache(name: str) -> bool | None:
    """Whether the local Hugging Face cache holds tokenizer files of hub id `name` (None: cannot tell)."""
    try:
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415  (light; no transformers import)
    except ImportError:
        return None
    try:
        return any(isinstance(try_to_load_from_cache(name, f), str)
                   for f in ("tokenizer_config.json", "tokenizer.json", "tokenizer.model"))
    except Exception:  # noqa: BLE001 - e.g. a name that is not a valid repo id
        return None


def _load_hf(name_or_path: str):
    """transformers' tokenizer: a local directory; else the local Hugging Face cache (no network); else the hub,
    only when it can be reached (an offline machine fails at once, saying what to do)."""
    fix = ("fix: check the name, or on an offline machine pass a local directory that holds the tokenizer files "
           "(save_pretrained output), or fill the Hugging Face cache where there is network")
    if not Path(name_or_path).exists() and _in_hf_cache(name_or_path) is False:
        why = hub_offline()
        if why is not None:  # decided before importing transformers (seconds) or calling the hub (a minute)
            raise TokenizerError(f"cannot load tokenizer {name_or_path!r}: it is not in the local Hugging Face "
                                 f"cache and the hub cannot be used ({why})\n{fix}")
    try:
        from transformers import AutoTokenizer  # noqa: PLC0415  (heavy; only hf tokenizers pay)
    except ImportError:
        raise TokenizerError("tokenizer kind 'hf' needs the `transformers` package: pip install transformers") from None
    local = Path(name_or_path).exists()
    sources = [{}] if local else [{"local_files_only": True}, {}]
    last = None
    for kwargs in sources:
        if not kwargs and not local:
            why = hub_offline()
            if why is not None:
                raise TokenizerError(f"cannot load tokenizer {name_or_path!r}: it is not in the local Hugging Face "
                                     f"cache and the hub cannot be used ({why})\n{fix}")
        try:
            return AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        except Exception as exc:  # noqa: BLE001  (hub / file errors: all mean "cannot load it")
            last = exc
    raise TokenizerError(f"cannot load tokenizer {name_or_path!r}: {type(last).__name__}: {last}\n{fix}") from None


class HFTokenizer(Tokenizer):
    kind = "hf"

    def __init__(self, name_or_path: str, tok: Any = None):
        if tok is None:
            tok = _load_hf(name_or_path)
        self.name_or_path = name_or_path
        self._tok = tok
        self.vocab_size = len(tok)
        if tok.eos_token_id is None:
            raise TokenizerError(f"tokenizer {name_or_path!r} defines no eos token; documents need a separator")
        self.eos_id = int(tok.eos_token_id)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False, split_special_tokens=True)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "name_or_path": self.name_or_path, "class": type(self._tok).__name__,
                "eos_token": self._tok.eos_token, "library_version": _version("transformers"), "file": HF_DIR}

    def save(self, out_dir: Path) -> list[str]:
        target = Path(out_dir) / HF_DIR
        self._tok.save_pretrained(str(target))
        return sorted(str(p.relative_to(out_dir)) for p in target.rglob("*") if p.is_file())


def _version(pkg: str) -> str | None:
    return package_version(pkg)


def build_tokenizer(spec: TokenizerSpec, corpus: Iterable[str] | None = None) -> Tokenizer:
    """The tokenizer a spec asks for; `corpus` (texts) is only consumed for bpe training."""
    if spec.kind == "bytes":
        return ByteTokenizer()
    if spec.kind == "bpe":
        if corpus is None:
            raise ValueError("bpe tokenizer needs a corpus to train on")
        return train_bpe(corpus, spec.vocab_size, spec.min_frequency)  # type: ignore[arg-type]
    return HFTokenizer(spec.name_or_path)  # type: ignore[arg-type]


def load_tokenizer(data_dir: str | Path, described: dict[str, Any]) -> Tokenizer:
    """Reload the tokenizer of a prepared data dir from its manifest entry (to decode samples, evaluate)."""
    data_dir = Path(data_dir)
    kind = described["kind"]
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "bpe":
        _import_tokenizers()
        return BPETokenizer.load(data_dir / BPE_FILE)
    if kind == "hf":
        return HFTokenizer(os.fspath(data_dir / HF_DIR))
    raise ValueError(f"unknown tokenizer kind {kind!r}; allowed: 'bytes', 'bpe', 'hf'")
