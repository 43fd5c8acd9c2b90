"""A training step captured once as a CUDA graph and replayed: `train(..., cuda_graph=True)`.

Why: at MAD's width (128) a step is a few GFLOP (microseconds of H100 time) but hundreds of kernel
launches from Python (fla's Triton launcher, the eager ops around it, fused AdamW): about 20 ms per
step, with the GPU idle 92 % of the time (docs/gpu.md). Replaying a captured graph issues the same
kernels, in the same order, with one call.

How:
* the first `warmup` steps run eagerly on a side stream (Triton compiles and autotunes there, AdamW
  creates its state, cuBLAS its workspaces); the next step is captured whole (forward, backward,
  clipping, AdamW; gradients are allocated inside the graph) and then replayed. Every later step
  whose batch has the captured shape copies the batch into the graph's inputs and replays.
* the optimizer becomes capturable: `capturable=True` and a device-tensor lr that `set_lr` fills in
  place before each step (a Python-float lr would be frozen into the graph).
* a batch of another shape (the smaller last batch of an epoch) runs eagerly into the same gradient
  tensors that the graph reads.
* nothing is silent: if the capture fails (a kernel that waits on the host, say), every later step
  runs eagerly and `fallback_reason` says why; `replays` counts the steps that ran as a graph.
* threads: several runs may train in one process, one thread and one CUDA stream each (packed
  trials, grid/run/pack.py), so that their small kernels overlap on the GPU. Everything that is not
  a replay (warm-up steps, the capture, eager steps, and the loop's evaluations) holds
  `EAGER_LOCK`, and captures use CUDA's thread-local capture mode: a capture never overlaps
  another thread's eager work or Triton autotuning, only other threads' replays and batch copies.
Numerics: the eager step's kernels in the eager step's order; inside the graph autocast's cache
of bf16 weight copies is off, so the casts are recomputed (same values).
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import torch
import torch.nn as nn


# held by every thread for GPU work that is not a graph replay (see the module docstring)
EAGER_LOCK = threading.RLock()


def set_lr(optimizer: torch.optim.Optimizer, lr) -> None:
    """Write `lr` into every param group: in place into a tensor lr (a captured graph reads it).
    An optimizer with its own `set_lr` (per-member lrs: grid/train/member_optim.py) takes it as is."""
    if hasattr(optimizer, "set_lr"):
        optimizer.set_lr(lr)
        return
    for g in optimizer.param_groups:
        if isinstance(g["lr"], torch.Tensor):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """capturable=True, lr as a device tensor, step counters on the device (AdamW/Adam)."""
    for g in optimizer.param_groups:
        if "capturable" not in g:
            raise ValueError(f"{type(optimizer).__name__} cannot be captured in a CUDA graph (no `capturable` option)")
        g["capturable"] = True
        if not isinstance(g["lr"], torch.Tensor):
            g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)
    for state in optimizer.state.values():  # a restored checkpoint may hold CPU step counters
        if isinstance(state.get("step"), torch.Tensor) and state["step"].device != device:
            state["step"] = state["step"].to(device)


class GraphedStep:
    """Callable `(x, y) -> detached loss` doing one optimizer step; see the module docstring."""

    def __init__(self, step_fn: Callable[..., torch.Tensor], model: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, warmup: int = 3):
        if device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device (it is on {device})")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (Triton autotunes and AdamW creates its state there), got {warmup}")
        self.step_fn, self.model, self.optimizer, self.device, self.warmup = step_fn, model, optimizer, device, warmup
        make_capturable(optimizer, device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.fallback_reason: str | None = None
        self.replays = self.eager_steps = 0
        self._side = torch.cuda.Stream(device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.graph is None and self.fallback_reason is None and self.eager_steps >= self.warmup:
            with EAGER_LOCK:
                self._capture(x, y)
        if self.graph is not None and x.shape == self.static_x.shape and y.shape == self.static_y.shape \
                and x.dtype == self.static_x.dtype and y.dtype == self.static_y.dtype:
            self.static_x.copy_(x, non_blocking=True)
            self.static_y.copy_(y, non_blocking=True)
            self.graph.replay()
            self.replays += 1
            return self.static_loss.clone()
        with EAGER_LOCK:
            return self._eager(x, y)

    def _eager(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # eager steps use the capture's autocast settings (no weight-cast cache, same values): a
        # torch.compile'd model then never meets a new global state, so nothing recompiles mid-capture
        self.eager_steps += 1
        if self.graph is not None:  # keep the gradient tensors the graph reads and writes
            return self.step_fn(x, y, set_to_none=False, autocast_cache=False)
        if self.fallback_reason is not None:
            return self.step_fn(x, y, autocast_cache=False)
        main = torch.cuda.current_stream(self.device)
        self._side.wait_stream(main)
        with torch.cuda.stream(self._side):  # warm-up away from the stream the capture will use
            loss = self.step_fn(x, y, autocast_cache=False)
        main.wait_stream(self._side)
        return loss

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.static_x, self.static_y = x.clone(), y.clone()
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # gradients are allocated inside the graph's memory
        torch.cuda.synchronize(self.device)
        try:
            # captured on this step's own stream: cuBLAS keys its workspace by (handle, stream), and
            # graphs captured on one shared stream would share it (a race when packed runs replay at once)
            with torch.cuda.graph(graph, stream=self._side, capture_error_mode="thread_local"):
                self.static_loss = self.step_fn(self.static_x, self.static_y, autocast_cache=False)
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly, say why
            self.fallback_reason = (f"CUDA graph capture failed after {self.eager_steps} eager steps, eager from "
                                    f"here on: {type(exc).__name__}: {str(exc).splitlines()[0][:240]}")
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(self.device)
            return
        self.graph = graph


class GraphedCall:
    """`fn(x, y) -> tensor` without backward (an evaluation batch), replayed from a CUDA graph.

    The first call with a new shape runs eagerly on a side stream (kernels compile there); the next
    call with that same shape is captured and replayed, and so is every later one. A call of another
    shape (a smaller last batch) runs eagerly. Autocast stays as the caller set it, without the
    weight-cast cache (a cached cast would freeze the weights into the graph). Replays return a
    clone. If the capture fails, every call runs eagerly and `fallback_reason` says why.
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device):
        if device.type != "cuda":
            raise ValueError(f"GraphedCall needs a CUDA device (got {device})")
        self.fn, self.device = fn, device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.fallback_reason: str | None = None
        self.replays = self.eager_calls = 0
        self._seen: set[tuple] = set()
        self._side = torch.cuda.Stream(device)

    @staticmethod
    def _key(x: torch.Tensor, y: torch.Tensor) -> tuple:
        return tuple(x.shape), x.dtype, tuple(y.shape), y.dtype

    def _autocast(self):
        dtype = torch.get_autocast_dtype("cuda")
        return torch.autocast("cuda", dtype=dtype, enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        key = self._key(x, y)
        with EAGER_LOCK:
            if self.graph is None and self.fallback_reason is None and key in self._seen:
                self._capture(x, y)
            if self.graph is not None and key == self._graph_key:
                self.static_x.copy_(x, non_blocking=True)
                self.static_y.copy_(y, non_blocking=True)
                self.graph.replay()
                self.replays += 1
                return self.out.clone()
            self.eager_calls += 1
            self._seen.add(key)
            main = torch.cuda.current_stream(self.device)
            self._side.wait_stream(main)
            with torch.cuda.stream(self._side), self._autocast():
                out = self.fn(x, y)
            main.wait_stream(self._side)
            out.record_stream(main)
            return out

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.static_x, self.static_y, self._graph_key = x.clone(), y.clone(), self._key(x, y)
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.device)
        try:
            with torch.cuda.graph(graph, stream=self._side, capture_error_mode="thread_local"), self._autocast():
                self.out = self.fn(self.static_x, self.static_y)
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly, say why
            self.fallback_reason = (f"CUDA graph capture failed, eager from here on: {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0][:240]}")
            torch.cuda.synchronize(self.device)
            return
        self.graph = graph
