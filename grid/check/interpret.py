"""Run fla's Triton kernels on a CPU through Triton's interpreter (TRITON_INTERPRET=1).

`fixes()` patches three interpreter gaps of triton 3.9 while fla kernels run (restored afterwards):
* loop variables of `for i in range(...)` are python ints in the interpreter but tensors when
  compiled, so fla's `i_t.to(tl.int64)` (every chunk-mode kernel) fails with "'int' object has no
  attribute 'to'": the loop variable is wrapped into a tensor, as compiled;
* a bool mask combined with a scalar bool comes out with int64 data (chunk_hgrn): load/store masks
  are cast back to bool;
* libdevice functions are stubs returning None (LightNet uses libdevice.log1p): log1p is mapped to
  tl.log(1 + x).

This lets CPU-only CI compare our reference mixers with the real fused layers at tiny shapes.
It must be enabled before fla (or any module defining Triton kernels) is imported. Autotuning
needs a GPU driver to time configs, so in interpreter mode every config gets the same fake time
and the first one is used. Not every fla kernel runs in the interpreter; callers treat a failure
as "unavailable in the interpreter", never as a parity failure.
"""
from __future__ import annotations

import contextlib
import os
import sys

# Lazy here: triton (heavy: never at import time on the driver); numpy (optional or slow to import: only the paths
#   that use them); ast (one code path)


def enable() -> bool:
    """Turn the interpreter on for this process. Returns False if fla was imported already."""
    if any(m == "fla" or m.startswith("fla.") for m in sys.modules):
        return os.environ.get("TRITON_INTERPRET") == "1"
    os.environ["TRITON_INTERPRET"] = "1"
    import triton.runtime.autotuner as autotuner  # noqa: PLC0415

    autotuner.Autotuner._bench = lambda self, *args, config=None, **kw: [0.0, 0.0, 0.0]
    return True


def active() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


_PATCHED_REWRITES: dict = {}


@contextlib.contextmanager
def fixes():
    """Patch three Triton-interpreter gaps (module docstring) while fla kernels run; no-op when compiled."""
    if not active():
        yield
        return
    import ast  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    import triton.language as tl  # noqa: PLC0415
    import triton.language.extra.libdevice as libdevice  # noqa: PLC0415
    from triton.runtime import interpreter as I  # noqa: PLC0415

    def visit_For(self, node):
        node = self.generic_visit(node)
        it = node.iter
        is_range = isinstance(it, ast.Call) and (
            (isinstance(it.func, ast.Name) and it.func.id == "range")
            or (isinstance(it.func, ast.Attribute) and it.func.attr == "range"))
        if is_range and isinstance(node.target, ast.Name):
            name = node.target.id
            wrap = ast.Assign(
                targets=[ast.Name(id=name, ctx=ast.Store())],
                value=ast.Call(func=ast.Attribute(value=ast.Name(id="interpreter_semantic", ctx=ast.Load()),
                                                  attr="to_tensor", ctx=ast.Load()),
                               args=[ast.Name(id=name, ctx=ast.Load()), ast.Constant(value=False)], keywords=[]))
            node.body.insert(0, wrap)
        return node

    def bool_mask(mask):
        return mask if mask.data.dtype == np.bool_ else I.TensorHandle(mask.data.astype(np.bool_), mask.dtype)

    def log1p(x, _semantic=None):
        return tl.log(1.0 + x)

    B = I.InterpreterBuilder
    saved = [(I.ASTTransformer, "visit_For"), (B, "create_masked_load"), (B, "create_masked_store"),
             (libdevice, "log1p")]
    saved = [(obj, name, obj.__dict__.get(name)) for obj, name in saved]
    load, store = B.create_masked_load, B.create_masked_store
    I.ASTTransformer.visit_For = visit_For
    B.create_masked_load = lambda self, ptrs, mask, other, *a: load(self, ptrs, bool_mask(mask), other, *a)
    B.create_masked_store = lambda self, ptrs, value, mask, *a: store(self, ptrs, value, bool_mask(mask), *a)
    libdevice.log1p = log1p
    # kernels rewritten by the patched transformer live in their own cache, reused across tests
    unpatched_cache = I.InterpretedFunction.rewritten_fn
    I.InterpretedFunction.rewritten_fn = _PATCHED_REWRITES
    try:
        yield
    finally:
        for obj, name, old in saved:
            if old is None:
                delattr(obj, name)
            else:
                setattr(obj, name, old)
        I.InterpretedFunction.rewritten_fn = unpatched_cache
