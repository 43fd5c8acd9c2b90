"""AdamW and lr schedules for member-stacked parameters (grid/models/stacked.py): one optimizer, M runs.

    opt = MemberAdamW(stacked.parameters(), lrs=[1e-4, 5e-4, ...], weight_decays=[0.0, 0.1, ...])
    schedule = MemberSchedule([Constant(1e-4), Constant(5e-4), ...])   # train(..., lr_schedule=schedule)
    opt.keep([0, 2]); schedule.keep([0, 2])                              # members 1, 3, ... are gone

Every parameter has a leading member dim M; member m has its own lr and weight decay. The update of
member m is torch.optim.AdamW's (betas, eps, decoupled weight decay on every parameter) with that
member's lr and weight decay, in torch's operation order: per element, the same float32 operations
as `torch.optim.AdamW(foreach=False)` on CPU (tests/test_member_optim.py checks it bit for bit).
All members take their steps together, so the step count is one number.

No host synchronisation: the step count, the bias corrections and the per-member lr and decay live
on the parameters' device (float64 scalars), so a step can be captured in a CUDA graph
(grid/train/graphed.py) and replayed; `set_lr` writes the member lrs into that tensor only when
they change (once per epoch under MAD's cosine, never under a constant lr): an upload from host
memory waits for the device.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch


class MemberAdamW(torch.optim.Optimizer):
    def __init__(self, params: Iterable[torch.nn.Parameter], lrs: Sequence[float], weight_decays: Sequence[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if len(lrs) != len(weight_decays) or not lrs:
            raise ValueError(f"need one lr and one weight decay per member, got {len(lrs)} and {len(weight_decays)}")
        params = list(params)
        if not params:
            raise ValueError("MemberAdamW got no parameters")
        m = len(lrs)
        bad = [tuple(p.shape) for p in params if p.dim() == 0 or p.shape[0] != m]
        if bad:
            raise ValueError(f"every parameter needs a leading member dim of {m}; got shapes {bad[:3]}")
        device = params[0].device
        f64 = dict(dtype=torch.float64, device=device)
        super().__init__(params, dict(lr=torch.tensor(list(lrs), **f64), betas=betas, eps=eps, capturable=True))
        self.weight_decay = torch.tensor(list(weight_decays), **f64)
        self.step_count = torch.zeros((), **f64)
        self._host_lrs = tuple(float(x) for x in lrs)

    @property
    def members(self) -> int:
        return int(self.weight_decay.shape[0])

    def set_lr(self, lrs: Sequence[float]) -> None:
        """The members' lrs of the coming steps (one per member, in stack order)."""
        lrs = tuple(float(x) for x in lrs)
        if len(lrs) != self.members:
            raise ValueError(f"{len(lrs)} lrs for {self.members} members")
        if lrs != self._host_lrs:
            self.param_groups[0]["lr"].copy_(torch.tensor(lrs, dtype=torch.float64))
            self._host_lrs = lrs

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        if closure is not None:
            raise ValueError("MemberAdamW does not take a closure")
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        eps = group["eps"]
        self.step_count += 1
        # torch AdamW's per-step scalars (python doubles there, float64 device scalars here), per member
        bias_correction1 = 1 - torch.pow(beta1, self.step_count)
        bias_correction2_sqrt = torch.pow(1 - torch.pow(beta2, self.step_count), 0.5)
        neg_step = (-(group["lr"] / bias_correction1)).float()  # [M]: -lr / (1 - beta1^t)
        decay = (1 - group["lr"] * self.weight_decay).float()  # [M]: 1 - lr * wd
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avg, exp_avg_sq, grad = state["exp_avg"], state["exp_avg_sq"], p.grad
            shape = (-1,) + (1,) * (p.dim() - 1)
            p.mul_(decay.view(shape))  # decoupled weight decay (x 1.0 exactly where wd = 0)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            # torch: p.addcdiv_(exp_avg, denom, value=-step_size), i.e. p + (value * exp_avg) / denom
            p.addcdiv_(exp_avg * neg_step.view(shape), denom)
        return None

    @torch.no_grad()
    def keep(self, idx: Sequence[int]) -> None:
        """Keep members `idx` (in that order): their lrs, weight decays and moment slices. Call it with
        the same `idx` as the model's `keep`, after it (the parameters then have the new shapes)."""
        group = self.param_groups[0]
        index = torch.tensor(list(idx), dtype=torch.long, device=self.weight_decay.device)
        group["lr"] = group["lr"][index].contiguous()
        self.weight_decay = self.weight_decay[index].contiguous()
        self._host_lrs = tuple(self._host_lrs[i] for i in idx)
        for p in group["params"]:
            state = self.state.get(p)
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key] = state[key][index.to(state[key].device)].contiguous()


class MemberSchedule:
    """One lr schedule per member (each a function of the step, as grid.train.optim's); called with a
    step it returns the members' lrs in stack order, which MemberAdamW.set_lr takes."""

    def __init__(self, schedules: Sequence[Callable[[int], float]]):
        self.schedules = list(schedules)

    def __call__(self, step: int) -> tuple[float, ...]:
        return tuple(float(s(step)) for s in self.schedules)

    def keep(self, idx: Sequence[int]) -> None:
        self.schedules = [self.schedules[i] for i in idx]
