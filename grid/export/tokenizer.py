"""The tokenizer of a prepared data dir as a transformers fast tokenizer (saved next to an exported model).

Token ids equal grid/data/tokenizer.py's for ordinary text:
- bytes: a byte-level `tokenizers` model with no merges whose vocabulary is the 256 bytes in byte order
  (id = byte value), plus "<|endoftext|>" as id 256;
- bpe:   the data dir's tokenizer.json as it is;
- hf:    the pretrained tokenizer saved in the data dir.
One difference: lingrid's own bytes/bpe tokenizers read a literal "<|endoftext|>" in a document as
plain text, the exported one as the eos token (transformers' convention for special tokens).
The pad token is set to eos when the tokenizer has none (batching in lm-eval and generate needs one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from grid.data.tokenizer import BPE_FILE, EOS_TOKEN, HF_DIR

# Lazy here: tokenizers, transformers (optional or slow to import: only the paths that use them)


def _byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    # ByteLevel maps every byte to one printable character; listing those characters in byte order makes id = byte
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda ch: _byte_of(ch))
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS_TOKEN])  # id 256
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN)


def _byte_of(ch: str) -> int:
    """Inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256 + k."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    if ord(ch) in printable:
        return ord(ch)
    others = [b for b in range(256) if b not in printable]
    return others[ord(ch) - 256]


def hf_tokenizer(data_dir: str | Path, described: dict[str, Any]):
    """A transformers tokenizer equivalent to the data dir's (its manifest's `tokenizer` entry)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: PLC0415

    kind = described["kind"]
    if kind == "bytes":
        tok = _byte_tokenizer()
    elif kind == "bpe":
        tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(data_dir) / BPE_FILE), eos_token=EOS_TOKEN)
    elif kind == "hf":
        tok = AutoTokenizer.from_pretrained(str(Path(data_dir) / HF_DIR))
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; allowed: 'bytes', 'bpe', 'hf'")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


__all__ = ["hf_tokenizer"]
