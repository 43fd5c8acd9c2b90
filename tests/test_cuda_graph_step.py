"""CUDA-graphed training steps (grid/train/graphed.py): CPU-side rules here, GPU parity when a GPU is present."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from grid.train import SimpleTask, build_adamw, train
from grid.train.graphed import GraphedCall, GraphedStep, make_capturable, set_lr


def _tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(8, 4), torch.nn.Flatten(), torch.nn.Linear(12, 8))


def _loss(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y)


def test_capturable_optimizer_gets_a_tensor_lr_that_set_lr_fills_in_place():
    model = _tiny()
    opt = build_adamw(model, 1e-3, 0.1)
    make_capturable(opt, torch.device("cpu"))
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and opt.param_groups[0]["capturable"] is True
    set_lr(opt, 5e-4)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(5e-4)  # the same tensor
    plain = build_adamw(_tiny(), 1e-3)
    set_lr(plain, 2e-3)
    assert plain.param_groups[0]["lr"] == 2e-3


def test_optimizer_without_capturable_option_is_refused():
    with pytest.raises(ValueError, match="cannot be captured"):
        make_capturable(torch.optim.SGD(_tiny().parameters(), lr=0.1), torch.device("cpu"))


def test_graphed_step_needs_a_cuda_device():
    model = _tiny()
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        GraphedStep(lambda x, y: None, model, build_adamw(model, 1e-3), torch.device("cpu"))


def test_cpu_training_ignores_cuda_graph_and_says_so():
    x, y = torch.randint(0, 8, (16, 3)), torch.randint(0, 8, (16,))
    runs = []
    for graph in (False, True):
        model = _tiny()
        res = train(model, build_adamw(model, 1e-2), SimpleTask(lambda s: (x, y), _loss), max_steps=5, cuda_graph=graph)
        runs.append((res, [p.detach().clone() for p in model.parameters()]))
    (eager, pe), (graphed, pg) = runs
    assert graphed.graph_replays == 0 and graphed.graph_fallback is None
    assert all(torch.equal(a, b) for a, b in zip(pe, pg))  # the same eager steps


def _gpu_check():
    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu" / "check_cuda_graph.py"
    spec = importlib.util.spec_from_file_location("check_cuda_graph", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.gpu
@pytest.mark.parametrize("mixer", ["attention", "gla"])
def test_graphed_training_matches_eager_training_on_the_gpu(mixer):
    row = _gpu_check().check(mixer)
    assert row["ok"], row


@pytest.mark.gpu
def test_compiled_graphed_training_matches_eager_training_on_the_gpu():
    # losses, not the per-tensor parameter check: Inductor reorders reductions, and Adam turns that
    # into full-size steps on near-zero entries (on the H100 a zero-initialised gate bias differed
    # 3.0x the eager-vs-eager noise while every loss agreed within it; docs/gpu.md, session 5)
    mod = _gpu_check()
    row = mod.check("gla", timing=False, compile=True)
    assert row["compiled"] and row["graph_replays"] > 0 and row["graph_fallback"] is None, row
    assert row["max_rel_loss_diff"] <= max(mod.LOSS_TOL, 3 * row["eager_vs_eager_loss_diff"]), row


def test_graphed_call_needs_a_cuda_device():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        GraphedCall(lambda x, y: x, torch.device("cpu"))


@pytest.mark.gpu
def test_graphed_evaluation_replays_current_weights_and_runs_odd_shapes_eagerly():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4).to(dev)
    call = GraphedCall(lambda x, y: (model(x) * y).sum(0), dev)
    x, y = torch.randn(16, 8, device=dev), torch.randn(16, 4, device=dev)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        outs = [call(x, y) for _ in range(3)]  # eager, capture + replay, replay
        assert (call.eager_calls, call.replays, call.fallback_reason) == (1, 2, None)
        assert all(torch.equal(outs[0], o) for o in outs[1:])
        model.weight.add_(1.0)  # an optimizer step between evaluations: the graph must see it
        after = call(x, y)
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            assert torch.equal(after, (model(x) * y).sum(0))
        odd = call(x[:5], y[:5])  # another shape: eager, same math
        assert call.eager_calls == 2 and torch.equal(odd, (model(x[:5]) * y[:5]).sum(0))
