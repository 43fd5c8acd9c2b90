"""The embedding's weight gradient for small vocabularies, without aten's sort.

    embed_tokens(embedding, input_ids) -> embedding(input_ids), same forward, same gradient

aten computes an embedding's weight gradient by sorting the token ids (radix sort, segment offsets,
a gather and an atomic accumulate): about 0.11 ms of a gla MAD step at T = 256 and 0.36 ms at
T = 1024 on an H100, some 5 % of the step, for a [16, 128] gradient. torch.compile does not
replace it (Inductor falls back to aten's kernel). With a vocabulary of at most SMALL_VOCAB rows
the gradient is one pass instead (0.018 and 0.041 ms there; docs/gpu.md, session 9): each Triton
program sums a slab of tokens' gradient rows into a [V, D-block] accumulator with a one-hot matrix
product in IEEE fp32 (products with 0 and 1 are exact, sums in fp32 as aten's), then adds it
atomically into the result. Like aten's kernel on CUDA, the order of the fp32 sums is not
deterministic; with deterministic algorithms requested, aten's path is used.

The forward is F.embedding either way; the parameter stays `embedding.weight` (state dicts unchanged).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# Lazy here: triton (heavy: never at import time on the driver)

SMALL_VOCAB = 256  # the largest vocabulary that takes the one-pass gradient (MAD's are 16 to 144, plus M's)


def use_one_pass(weight: torch.Tensor) -> bool:
    return (weight.is_cuda and weight.dtype == torch.float32 and weight.shape[0] <= SMALL_VOCAB
            and not torch.are_deterministic_algorithms_enabled())


def embed_tokens(embedding: nn.Embedding, input_ids: torch.Tensor) -> torch.Tensor:
    """embedding(input_ids); on CUDA with a small vocabulary, the backward is the one-pass kernel.
    Any other embedding module (a member-stacked one: grid/models/stacked.py) is called as it is."""
    if not isinstance(embedding, nn.Embedding):
        return embedding(input_ids)
    if (use_one_pass(embedding.weight) and embedding.padding_idx is None and embedding.max_norm is None
            and not embedding.scale_grad_by_freq and not embedding.sparse):
        return SmallVocabEmbedding.apply(input_ids, embedding.weight)
    return embedding(input_ids)


class SmallVocabEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input_ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(input_ids)
        ctx.vocab = weight.shape[0]
        return F.embedding(input_ids, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (input_ids,) = ctx.saved_tensors
        return None, torch.ops.lingrid.small_vocab_embedding_grad(input_ids, grad.contiguous(), ctx.vocab)


@torch.library.custom_op("lingrid::small_vocab_embedding_grad", mutates_args=())
def small_vocab_embedding_grad(input_ids: torch.Tensor, grad: torch.Tensor, vocab: int) -> torch.Tensor:
    """sum of grad's rows per token id: [..., D] rows, ids in [0, vocab) -> [vocab, D] fp32."""
    ids = input_ids.reshape(-1).contiguous()
    rows = grad.reshape(-1, grad.shape[-1]).float().contiguous()
    out = torch.zeros(vocab, rows.shape[1], dtype=torch.float32, device=rows.device)
    if ids.numel():
        launch(ids, rows, out)
    return out.to(grad.dtype)


@small_vocab_embedding_grad.register_fake
def _(input_ids, grad, vocab):  # shapes for torch.compile: the op stays one opaque call
    return grad.new_empty(vocab, grad.shape[-1])


def launch(ids: torch.Tensor, rows: torch.Tensor, out: torch.Tensor) -> None:
    import triton  # noqa: PLC0415

    n, d = rows.shape
    vocab = out.shape[0]
    vocab_pow2 = max(16, triton.next_power_of_2(vocab))
    block_d = min(max(16, 4096 // vocab_pow2), max(16, triton.next_power_of_2(d)))  # acc: <= 4096 fp32
    block_n = 64
    # enough programs to fill the GPU, few enough that the atomic adds (programs x V x D) stay cheap
    programs = max(1, min(triton.cdiv(n, block_n), 4 * _sm_count(rows.device)))
    per_program = triton.cdiv(triton.cdiv(n, block_n), programs) * block_n
    grid = (triton.cdiv(n, per_program), triton.cdiv(d, block_d))
    _kernel()[grid](ids, rows, out, n, d, vocab, per_program,
                    VP=vocab_pow2, BLOCK_N=block_n, BLOCK_D=block_d)


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


_KERNEL = None


def _kernel():
    """The Triton kernel, defined on first use (importing triton at module import would cost every CPU
    process that never trains on a GPU)."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton  # noqa: PLC0415
    import triton.language as tl  # noqa: PLC0415

    @triton.jit
    def small_vocab_embedding_grad_kernel(ids_ptr, rows_ptr, out_ptr, n, d, vocab, per_program,
                                          VP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        start = tl.program_id(0) * per_program
        cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        words = tl.arange(0, VP)
        acc = tl.zeros([VP, BLOCK_D], dtype=tl.float32)
        for offset in range(0, per_program, BLOCK_N):
            r = start + offset + tl.arange(0, BLOCK_N)
            in_rows = r < n
            tok = tl.load(ids_ptr + r, mask=in_rows, other=-1)
            g = tl.load(rows_ptr + r[:, None].to(tl.int64) * d + cols[None, :],
                        mask=in_rows[:, None] & (cols[None, :] < d), other=0.0)
            one_hot = (words[:, None] == tok[None, :]).to(tl.float32)  # [VP, BLOCK_N]
            acc += tl.dot(one_hot, g, input_precision="ieee")
        tl.atomic_add(out_ptr + words[:, None] * d + cols[None, :], acc,
                      mask=(words[:, None] < vocab) & (cols[None, :] < d))

    _KERNEL = small_vocab_embedding_grad_kernel
    return _KERNEL
