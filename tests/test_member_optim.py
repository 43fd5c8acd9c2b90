"""Per-member AdamW and schedules (grid/train/member_optim.py), per-member loss bookkeeping
(grid/train/members.py), and the loop's per-member hooks (grid/train/loop.py)."""
from __future__ import annotations

import math

import pytest
import torch

from grid.train import Constant, CosinePerEpoch, SimpleTask, train
from grid.train.member_optim import MemberAdamW, MemberSchedule
from grid.train.members import MemberLosses

LRS = [1e-4, 5e-4, 1e-3, 3e-2]
WDS = [0.0, 0.1, 0.0, 0.1]
SHAPES = [(5, 3), (7,), (2, 3, 4)]


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    stacked = [torch.nn.Parameter(torch.randn(len(LRS), *s, generator=g)) for s in SHAPES]
    solos = [[torch.nn.Parameter(p.detach()[m].clone()) for p in stacked] for m in range(len(LRS))]
    return stacked, solos


def _steps(stacked, opt, solos, sopts, n, seed, members):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        grads = [torch.randn(len(members), *s, generator=g) for s in SHAPES]
        for p, gr in zip(stacked, grads):
            p.grad = gr.clone()
        opt.step()
        for j, m in enumerate(members):
            for p, gr in zip(solos[m], grads):
                p.grad = gr[j].clone()
            sopts[m].step()


def _assert_bitwise(stacked, solos, members):
    for j, m in enumerate(members):
        for p, q in zip(stacked, solos[m]):
            assert torch.equal(p[j], q), f"member {m} differs from torch AdamW"


def test_member_adamw_is_torch_adamw_per_member_bit_for_bit():
    stacked, solos = _pair()
    opt = MemberAdamW(stacked, LRS, WDS)
    sopts = [torch.optim.AdamW(solos[m], lr=LRS[m], weight_decay=WDS[m], foreach=False) for m in range(len(LRS))]
    _steps(stacked, opt, solos, sopts, 20, seed=1, members=range(4))
    opt.set_lr([x / 2 for x in LRS])  # a schedule step: new lrs for every member
    for m, so in enumerate(sopts):
        so.param_groups[0]["lr"] = LRS[m] / 2
    _steps(stacked, opt, solos, sopts, 20, seed=2, members=range(4))
    _assert_bitwise(stacked, solos, range(4))
    assert int(opt.step_count) == 40


def test_keep_continues_the_kept_members_exactly():
    stacked, solos = _pair()
    opt = MemberAdamW(stacked, LRS, WDS)
    sopts = [torch.optim.AdamW(solos[m], lr=LRS[m], weight_decay=WDS[m], foreach=False) for m in range(len(LRS))]
    _steps(stacked, opt, solos, sopts, 5, seed=1, members=range(4))
    kept = [3, 1]
    with torch.no_grad():
        for p in stacked:
            p.data = p.data[kept].contiguous()
    opt.keep(kept)
    assert opt.members == 2 and opt.param_groups[0]["lr"].tolist() == [LRS[3], LRS[1]]
    _steps(stacked, opt, solos, sopts, 7, seed=3, members=kept)
    _assert_bitwise(stacked, solos, kept)


def test_member_adamw_validates_its_inputs():
    with pytest.raises(ValueError, match="one lr and one weight decay per member"):
        MemberAdamW([torch.nn.Parameter(torch.zeros(2, 3))], [1e-3, 1e-3], [0.0])
    with pytest.raises(ValueError, match="leading member dim of 2"):
        MemberAdamW([torch.nn.Parameter(torch.zeros(3, 3))], [1e-3, 1e-3], [0.0, 0.0])
    opt = MemberAdamW([torch.nn.Parameter(torch.zeros(2, 3))], [1e-3, 1e-3], [0.0, 0.0])
    with pytest.raises(ValueError, match="3 lrs for 2 members"):
        opt.set_lr([1.0, 2.0, 3.0])


def test_member_schedule_gives_each_member_its_own_schedule():
    sched = MemberSchedule([Constant(1e-3), CosinePerEpoch(5e-4, 1e-6, 4, 10)])
    assert sched(0) == (1e-3, 5e-4)
    assert sched(25) == (1e-3, CosinePerEpoch(5e-4, 1e-6, 4, 10)(25))
    sched.keep([1])
    assert sched(0) == (5e-4,)


def test_member_losses_flag_the_first_non_finite_step_and_keep_windows_per_member():
    t = MemberLosses(["a", "b", "c"])
    out = t.reduce([0, 1, 2], [[1.0, 2.0, 3.0], [1.0, math.nan, 5.0], [3.0, 7.0, math.inf]])
    assert t.diverged == {"b": (1, "non-finite loss nan at step 1"), "c": (2, "non-finite loss inf at step 2")}
    assert out == [2.0, 3.0, 3.0]  # the mean of the members still finite at each step
    assert t.pop_window("a") == 5 / 3 and t.pop_window("b") == 2.0 and t.pop_window("c") == 4.0
    assert math.isnan(t.pop_window("a"))  # nothing since the last call
    t.keep(["a"])
    assert t.reduce([3], [[0.5]]) == [0.5]
    assert math.isnan(t.reduce([4], [[math.nan]])[0])  # nobody finite: the loop stops as diverged
    with pytest.raises(ValueError, match="1 stacked members"):
        t.reduce([5], [[1.0, 2.0]])


def test_loop_trains_members_with_per_member_losses_and_may_reshape_after_evaluation():
    # two "members" of a linear model as one [2, 1] parameter; the second member diverges at once
    w = torch.nn.Parameter(torch.ones(2, 1))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = w

        def forward(self, x):
            return self.w * x

    model = Model()
    opt = MemberAdamW([w], [1e-2, 1e-2], [0.0, 0.0])
    tracker = MemberLosses([0, 1])
    sched = MemberSchedule([Constant(1e-2)] * 2)
    kept: list = []

    def loss_fn(m, x, y):  # member 1 (while stacked) has a NaN loss
        losses = (m(x) - y).square().mean(-1)
        return losses * torch.tensor([1.0, float("nan")][:len(losses)])

    def after_eval(record):
        if tracker.diverged and len(tracker.ids) == 2:
            w.data = w.data[[0]]
            opt.keep([0])
            sched.keep([0])
            tracker.keep([0])
            kept.append(record["step"])
            return True
        return False

    class Task(SimpleTask):
        def evaluate(self, step):
            return {}

        def reduce_losses(self, steps, values):
            return tracker.reduce(steps, values)

        def after_eval(self, record):
            return after_eval(record)

    res = train(model, opt, Task(lambda s: (torch.ones(1), torch.zeros(1)), loss_fn, sched), max_steps=6, eval_every=2)
    assert res.status == "ok" and res.steps == 6
    assert tracker.diverged == {1: (0, "non-finite loss nan at step 0")}
    assert kept == [2] and w.shape == (1, 1) and float(w.detach()) < 1.0  # member 0 kept training
    assert [list(h["lr"]) for h in res.history] == [[1e-2, 1e-2], [1e-2], [1e-2]]
