"""The training core: resume equivalence, divergence guard, grad accumulation, AdamW groups, schedules."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models import ModelConfig, build_model
from grid.models.mixers._common import RMSNorm
from grid.train import (Constant, CosinePerEpoch, DirCheckpointer, MemoryCheckpointer, SimpleTask, WarmupCosine, build_adamw,
                        param_groups, train)

V, T, B = 16, 12, 4


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, d_model=32, n_layers=2, mixer="attention", mixer_kwargs={"num_heads": 2},
                      backend="reference", context=T, head_bias=True)
    return build_model(cfg)


def get_batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(0, V, (B, T + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


def lm_loss(model, x, y):
    # a little randomness inside the step: resume must restore the RNG state for this to match
    noise = 1.0 + 0.01 * torch.rand(())
    return F.cross_entropy(model(x).float().reshape(-1, V), y.reshape(-1)) * noise


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("store", ["memory", "dir"])
def test_resume_equals_straight_run(tmp_path, store):
    n = 3
    sched = WarmupCosine(3e-3, warmup_steps=2, total_steps=2 * n, final_frac=0.1)

    class Probed(SimpleTask):
        def evaluate(self, step):
            return {"probe": float(torch.rand(()))}  # consumes RNG: must match too

    task = Probed(get_batch, lm_loss, sched)
    model = tiny_model(0)
    straight = train(model, build_adamw(model, 1e-3, 0.1, no_decay=True), task, max_steps=2 * n, eval_every=2)
    want = flat(model)

    ck = MemoryCheckpointer() if store == "memory" else DirCheckpointer(tmp_path / "ck")
    first = tiny_model(0)
    part = train(first, build_adamw(first, 1e-3, 0.1, no_decay=True), task,
                 max_steps=n, eval_every=2, eval_at_end=False, checkpointer=ck, ckpt_every=n)
    assert part.steps == n and part.status == "ok"
    torch.rand(5)  # the process moves on / restarts: RNG state differs until restored
    second = tiny_model(7)  # different init: everything must come from the checkpoint
    resumed = train(second, build_adamw(second, 1e-3, 0.1, no_decay=True), task,
                    max_steps=2 * n, eval_every=2, checkpointer=ck, ckpt_every=n)
    assert resumed.resumed_from == n and resumed.steps == 2 * n
    torch.testing.assert_close(flat(second), want, rtol=0, atol=1e-6)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in straight.history] == [2, 4, 6]
    for a, b in zip(resumed.history, straight.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["probe"] == pytest.approx(b["probe"], abs=1e-7)
    assert resumed.tokens_seen == straight.tokens_seen == 2 * n * B * T


@pytest.mark.parametrize("sync_every", [1, 4])
def test_divergence_guard_nan(sync_every):
    k = 3
    calls = {"n": 0}

    def loss_fn(model, x, y):
        step = calls["n"]
        calls["n"] += 1
        loss = lm_loss(model, x, y)
        return loss * float("nan") if step == k else loss

    model = tiny_model()
    res = train(model, build_adamw(model, 1e-3), SimpleTask(get_batch, loss_fn, Constant(1e-3)), max_steps=10,
                sync_every=sync_every)
    assert res.status == "diverged"
    assert res.diverged_step == k and res.steps == k
    assert "non-finite" in res.diverged_reason


def test_divergence_guard_ratio():
    losses = [4.0, 2.0, 1.0, 1.5, 30.0, 1.0]

    def loss_fn(model, x, y):
        step = loss_fn.n
        loss_fn.n += 1
        return (model(x).sum() * 0 + losses[step])

    loss_fn.n = 0
    model = tiny_model()
    res = train(model, build_adamw(model, 1e-3), SimpleTask(get_batch, loss_fn), max_steps=6, guard=10.0)
    assert (res.status, res.diverged_step, res.min_loss) == ("diverged", 4, 1.0)


def test_grad_accumulation_equivalence():
    def mean_loss(model, x, y):
        return F.cross_entropy(model(x).float().reshape(-1, V), y.reshape(-1))

    a, b = tiny_model(0), tiny_model(0)
    task = SimpleTask(get_batch, mean_loss, Constant(1e-3))
    ra = train(a, build_adamw(a, 1e-3, 0.1), task, max_steps=3, grad_clip=1.0)
    rb = train(b, build_adamw(b, 1e-3, 0.1), task, max_steps=3, grad_clip=1.0, grad_accum=2)
    torch.testing.assert_close(flat(a), flat(b), rtol=0, atol=1e-5)
    assert rb.tokens_seen == ra.tokens_seen
    assert rb.last_loss == pytest.approx(ra.last_loss, abs=1e-5)


def test_eval_early_stop_and_task_hooks():
    seen, prog = [], []

    class Task(SimpleTask):
        def evaluate(self, step):
            return {"acc": step / 10}

        def on_eval(self, record):
            seen.append(record)
            return record["acc"] >= 0.6

        def on_sync(self, info):
            prog.append(info)

    model = tiny_model()
    res = train(model, build_adamw(model, 1e-3), Task(get_batch, lm_loss, Constant(1e-3)), max_steps=20,
                eval_every=2, sync_every=3)
    assert res.status == "ok" and res.stopped_early and res.steps == 6
    assert [r["step"] for r in res.history] == [2, 4, 6] == [r["step"] for r in seen]
    assert all(math.isfinite(r["train_loss"]) for r in res.history)
    assert prog and prog[-1]["step"] == 6


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.lin = nn.Linear(4, 4)
        self.norm = RMSNorm(4)
        self.ln = nn.LayerNorm(4)
        self.A_log = nn.Parameter(torch.zeros(4))
        self.mat = nn.Parameter(torch.zeros(4, 4))
        self.mat._no_weight_decay = True


def test_adamw_groups():
    m = Toy()
    (g,) = param_groups(m, 0.1, no_decay=False)
    assert g["weight_decay"] == 0.1 and len(g["params"]) == len(list(m.parameters()))
    decay, exempt = param_groups(m, 0.1, no_decay=True)
    assert decay["names"] == ["lin.weight"] and decay["weight_decay"] == 0.1
    assert set(exempt["names"]) == {"emb.weight", "lin.bias", "norm.weight", "ln.weight", "ln.bias", "A_log", "mat"}
    assert exempt["weight_decay"] == 0.0
    opt = build_adamw(m, 1e-3, 0.1)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    lm = tiny_model()
    d, e = param_groups(lm, 0.1, no_decay=True)
    assert "embed.weight" in e["names"] and "lm_head.weight" in d["names"] and "lm_head.bias" in e["names"]


def test_schedules():
    s = CosinePerEpoch(1e-3, 1e-6, epochs=4, steps_per_epoch=3)
    assert [s(i) for i in range(3)] == [1e-3] * 3  # constant within an epoch
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3),
                                                     T_max=4, eta_min=1e-6)
    for e in range(4):
        assert s(3 * e) == pytest.approx(ref.get_last_lr()[0], rel=1e-9)
        ref.optimizer.step()
        ref.step()
    w = WarmupCosine(1.0, warmup_steps=4, total_steps=14, final_frac=0.1)
    assert [w(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert w(4) == pytest.approx(1.0) and w(9) == pytest.approx(0.55) and w(14) == pytest.approx(0.1)
    assert w(100) == pytest.approx(0.1)
