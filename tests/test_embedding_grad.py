"""grid.models.embedding_grad: the one-pass weight gradient of small-vocabulary embeddings.

On a CPU its Triton kernel runs through the interpreter (conftest enables it); on a GPU compiled.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models import embedding_grad as eg

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _index_add(ids, rows, vocab):
    return torch.zeros(vocab, rows.shape[-1], device=rows.device).index_add_(0, ids.reshape(-1),
                                                                             rows.reshape(-1, rows.shape[-1]))


@pytest.mark.parametrize("vocab,shape,d", [(16, (3, 100), 128), (5, (70,), 24), (144, (2, 90), 128),
                                           (256, (130,), 40), (16, (0, 4), 8)])
def test_kernel_sums_each_tokens_rows(vocab, shape, d):
    torch.manual_seed(0)
    ids = torch.randint(0, min(vocab, 9) if vocab > 100 else vocab, shape, device=DEVICE)  # some ids absent
    rows = torch.randn(*shape, d, device=DEVICE)
    out = eg.small_vocab_embedding_grad(ids, rows, vocab)
    assert out.shape == (vocab, d) and out.dtype == torch.float32
    torch.testing.assert_close(out, _index_add(ids, rows, vocab), rtol=1e-5, atol=1e-5)


def test_autograd_function_is_the_embedding_forward_and_backward():
    torch.manual_seed(0)
    emb = nn.Embedding(16, 32).to(DEVICE)
    ids = torch.randint(0, 16, (4, 50), device=DEVICE)
    upstream = torch.randn(4, 50, 32, device=DEVICE)
    w = emb.weight.detach().clone().requires_grad_()
    out = eg.SmallVocabEmbedding.apply(ids, w)
    out.backward(upstream)
    ref = F.embedding(ids, emb.weight)
    ref.backward(upstream)
    assert torch.equal(out, ref)
    torch.testing.assert_close(w.grad, emb.weight.grad, rtol=1e-5, atol=1e-5)


def test_only_small_fp32_cuda_embeddings_take_the_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(eg.SmallVocabEmbedding, "apply", lambda *a: calls.append(a) or F.embedding(*a))
    monkeypatch.setattr(eg, "use_one_pass", lambda w: w.shape[0] <= eg.SMALL_VOCAB)  # as if on CUDA
    ids = torch.randint(0, 16, (2, 8))
    eg.embed_tokens(nn.Embedding(16, 8), ids)
    eg.embed_tokens(nn.Embedding(eg.SMALL_VOCAB + 1, 8), ids)
    eg.embed_tokens(nn.Embedding(16, 8, padding_idx=0), ids)  # aten's padding semantics
    assert len(calls) == 1
    monkeypatch.undo()
    assert not eg.use_one_pass(nn.Embedding(16, 8).weight)  # CPU: aten


@pytest.mark.gpu
def test_cuda_rules_and_compiled_model_gradient(monkeypatch):
    """On CUDA: the kernel is used unless deterministic algorithms are on, and a compiled small-vocab
    LM with it gets the embedding gradient that an eager one with aten's gradient gets."""
    from grid.models import build_model  # noqa: PLC0415
    from grid.models.config import ModelConfig  # noqa: PLC0415

    w = torch.zeros(16, 8, device="cuda")
    assert eg.use_one_pass(w) and not eg.use_one_pass(w.bfloat16())
    torch.use_deterministic_algorithms(True)
    try:
        assert not eg.use_one_pass(w)
    finally:
        torch.use_deterministic_algorithms(False)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=16, d_model=64, n_layers=2, mixer="attention", backend="reference", context=64)
    eager = build_model(cfg).cuda()
    compiled = build_model(cfg).cuda()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    ids = torch.randint(0, 16, (8, 64), device="cuda")
    for model, kernel in ((eager, False), (compiled, True)):
        monkeypatch.setattr(eg, "use_one_pass", lambda w, kernel=kernel: kernel)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(ids).float().square().mean().backward()
    ref = eager.embed.weight.grad  # compiled and eager bf16 models differ by rounding (H100: 2.7e-5 of ~1e-3)
    torch.testing.assert_close(compiled.embed.weight.grad, ref, rtol=2e-2, atol=1e-2 * ref.abs().max().item())
