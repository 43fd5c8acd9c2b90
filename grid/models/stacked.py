"""Member-stacked models: M copies of one model trained at once, one kernel launch for all of them.

    stacked = stack_model(solo, members=6)   # every member starts as `solo` is now
    logits = stacked(input_ids)              # input_ids [B, T] shared by all members -> [M, B, T, V]
    stacked.keep([0, 2, 5])                  # drop the other members (their slices of every parameter)
    solo.load_state_dict(stacked.member_state_dict(2))

Why: a MAD run (width 128) launches hundreds of small kernels per step and fills a fraction of a
GPU. The 6 (lr, wd) runs of a setting share their initial weights and their batches, so they can
run as one model whose every parameter has a leading member dim: one GEMM, one norm, one
sequence-mixing kernel per layer for all members, instead of six of each.

How (a rule per kind of leaf, not a twin per mixer): the solo model is deep-copied and its leaves
are rewritten in place; every forward of the solo code (blocks, mixers, the AutoEncoder) then runs
unchanged, with activations of batch M*B, member-major (rows m*B .. m*B+B-1 are member m's):
* nn.Linear -> `StackedLinear`: weight [M, out, in]; x [M*B, ..., in] is viewed as [M, B*..., in]
  and multiplied by one batched GEMM (torch.baddbmm/bmm).
* nn.Embedding -> `StackedEmbedding`: one table [M, V, D]; member m reads rows m*V + id.
* per-channel modules (RMSNorm, RMSNormGated and subclasses): their own forward runs on the [M*B, ...]
  input; only the weight step (`affine`) views the normalised rows as [M, B*..., D] against the
  weight presented as [M, 1, D]. Why not view the input: the input's gradient would then arrive as
  one sum through the view instead of term by term as in the solo model (another rounding order).
* ShortConvolution (depthwise causal conv): on GPU members folded into channels, [B, T, M*C], one
  conv; on CPU one solo call per member (oneDNN's backward rounds differently for another channel
  count, and reference runs should stay bit for bit their solo runs).
* any other parameter held directly by one of OUR modules (decay rates A_log, dt_bias, ...): the
  module's forward reads it as [M*B, 1, *shape], i.e. broadcast over time against [M*B, T, *shape]
  activations (checked per mixer by tests/test_stacked_models.py). On CPU such a module runs once
  per member instead, with that member's parameters in their solo shapes (see EXACT_ON_CPU).
* the sequence-mixing kernels see q/k/v/gates of batch M*B: fla's chunk kernels for the fused
  backend, our reference math for the reference one, exactly the calls a solo run makes.
  A fused layer that is fla's own module hands its parameters straight to fla's kernels (Gated
  DeltaNet's A_log, fla's fused norms), so it cannot be rewritten: its reference twin (same
  parameter names and shapes, state loaded) runs instead, with fla's recurrence kernel
  (`FLA_TWINS`). Any other third-party module with parameters makes `stack_model` raise
  `NotStackable`: the caller runs such models unbatched.
Why not torch.func.vmap over stacked parameters: vmap cannot pass through fla's Triton kernels (an
autograd.Function without a vmap rule); giving each kernel a rule that folds the vmapped dim into
the batch is what the rules above do once, at the module level.

Numerics: per member the same operations as the solo model, except that GEMMs run batched (another
cuBLAS/MKL kernel, so a different rounding order is possible), the embedding gradient is summed
over one M*V table, and fla's fused norm-gate/gate kernels are replaced by the same math in PyTorch.
Members never mix: every op is per row or per member, so a member that turns NaN stays alone.
"""
from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.embedding_grad import SmallVocabEmbedding, use_one_pass
from grid.models.mixers._common import RMSNorm, RMSNormGated, ShortConvolution
from grid.models.registry import get_mixer
from grid.models.stack import Block

# the mixers whose stacked model is checked member by member against solo runs
# (tests/test_stacked_models.py runs every one of them): stack_model refuses the others
STACKABLE: tuple[str, ...] = ("attention", "gla", "deltanet", "gated_deltanet", "retnet", "hgrn", "hgrn2")
# mixers whose fused layer is fla's own module: the stacked model runs their reference twin with this
# fla recurrence ("module:function", called like the twin's `recurrence`)
FLA_TWINS: dict[str, str] = {
    "deltanet": "grid.models.mixers.deltanet:fla_delta_rule",
    "gated_deltanet": "grid.models.mixers.gated_deltanet:fla_gated_delta_rule",
}
# CPU runs take per-member paths where one batched kernel would round unlike the solo kernel (a
# one-output Linear, the short convolution), so that reference runs stay bit for bit their solo runs;
# False: the one-kernel paths that GPUs take (tests check those against solo runs up to rounding)
EXACT_ON_CPU = True
# where our own modules live: only their direct parameters may be broadcast (third-party code may hand
# a parameter to a kernel that has no member dim)
_OUR_PACKAGES = ("grid.", "evals.")


def stackable(mixer: str, backend: str) -> bool:
    """Whether models of `mixer` under `backend` ('fused' or 'reference') can be stacked: a tested
    mixer whose fused layer is our own module (MixerSpec.fused_traceable) or has an fla twin."""
    if mixer not in STACKABLE:
        return False
    if backend == "reference":
        return True

    return get_mixer(mixer).fused_traceable or mixer in FLA_TWINS


class NotStackable(ValueError):
    """The model holds a module the stacking rules cannot rewrite (the message names it)."""


@dataclass
class Members:
    """Shared by every rewritten module of one stacked model."""

    count: int  # M: members currently stacked
    batch: int = 0  # B: rows per member in the current forward (set by StackedModel.forward)
    index: int | None = None  # the member whose solo computation runs now (CPU exact paths); None: all

    def each(self, x: torch.Tensor):
        """(member index, that member's rows of x) for each member, with `index` set meanwhile."""
        try:
            for i, rows in enumerate(x.split(x.shape[0] // self.count)):
                self.index = i
                yield i, rows
        finally:
            self.index = None


def exact_on_cpu(x: torch.Tensor, members: Members) -> bool:
    """Whether this call runs one member at a time (the solo module's own call per member): on CPU with
    EXACT_ON_CPU, unless a member's computation is already running."""
    return EXACT_ON_CPU and not x.is_cuda and members.index is None


# ------------------------------------------------------------------------------------------ leaves

class StackedLinear(nn.Module):
    """M Linear layers: weight [M, out, in], bias [M, out]; x [M*B, ..., in] -> [M*B, ..., out]."""

    def __init__(self, solo: nn.Linear, members: Members):
        super().__init__()
        self.members, self.in_features, self.out_features = members, solo.in_features, solo.out_features
        self.weight = _stack(solo.weight, members.count)
        self.bias = _stack(solo.bias, members.count) if solo.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = self.members.index
        if i is not None:  # one member's solo computation
            return F.linear(x, self.weight[i], None if self.bias is None else self.bias[i])
        m = self.members.count
        xs = x.reshape(m, -1, self.in_features)
        if self.out_features == 1 and exact_on_cpu(x, self.members):
            # a solo Linear with one output runs a matrix-vector kernel on CPU, which rounds unlike bmm:
            # per member here, so that reference runs stay bit for bit their solo runs
            y = torch.stack([F.linear(xs[i], self.weight[i], None if self.bias is None else self.bias[i])
                             for i in range(m)])
        else:
            w = self.weight.transpose(1, 2)
            y = torch.bmm(xs, w) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), xs, w)
        return y.reshape(*x.shape[:-1], self.out_features)


class StackedEmbedding(nn.Module):
    """M embedding tables [M, V, D]; ids [B, T] (shared) -> [M*B, T, D]. The forward is a gather from
    the [M*V, D] view (member m reads row m*V + id), so the one-pass small-vocabulary gradient of
    grid/models/embedding_grad.py applies as it does to a solo table, whenever M*V rows qualify."""

    def __init__(self, solo: nn.Embedding, members: Members):
        super().__init__()
        if solo.padding_idx is not None or solo.max_norm is not None or solo.scale_grad_by_freq or solo.sparse:
            raise NotStackable("an nn.Embedding with padding_idx/max_norm/scale_grad_by_freq/sparse")
        self.members = members
        self.num_embeddings, self.embedding_dim = solo.num_embeddings, solo.embedding_dim
        self.weight = _stack(solo.weight, members.count)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        m, v = self.members.count, self.num_embeddings
        table = self.weight.reshape(m * v, self.embedding_dim)
        offsets = torch.arange(m, device=input_ids.device, dtype=input_ids.dtype) * v
        ids = input_ids.unsqueeze(0) + offsets.view(m, *([1] * input_ids.dim()))
        out = SmallVocabEmbedding.apply(ids, table) if use_one_pass(table) else F.embedding(ids, table)
        return out.reshape(m * input_ids.shape[0], *input_ids.shape[1:], self.embedding_dim)


def _stack(p: torch.Tensor, m: int) -> nn.Parameter:
    return nn.Parameter(p.detach().unsqueeze(0).repeat(m, *([1] * p.dim())), requires_grad=p.requires_grad)


# rewritten classes, one per (kind, original class): modules keep their own forward code, and
# properties present their stacked parameters in the shape that code can broadcast
_CLASSES: dict[tuple[str, type, tuple[str, ...]], type] = {}


def _rewritten_class(kind: str, cls: type, names: tuple[str, ...]) -> type:
    key = (kind, cls, names)
    if key not in _CLASSES:
        base_forward = _plain_base(cls).forward if kind == "per_channel" else cls.forward
        present = {"per_channel": _per_channel_view, "conv": _conv_view, "broadcast": _broadcast_view}[kind]
        ns: dict[str, Any] = {name: property(lambda self, n=name: present(self, self._parameters[n])) for name in names}
        if kind == "per_channel":
            ns["forward"] = base_forward
            ns["affine"] = _per_channel_affine(_plain_base(cls).affine)
        elif kind == "conv":
            ns["forward"] = _conv_forward(base_forward)
            ns["groups"] = property(lambda self: self._solo_groups * (
                1 if self._stack_members.index is not None else self._stack_members.count))
        else:
            ns["forward"] = _broadcast_forward(base_forward)
        _CLASSES[key] = type(f"Stacked{cls.__name__}", (cls,), ns)
    return _CLASSES[key]


def _plain_base(cls: type) -> type:
    """The plain-PyTorch class of a per-channel module (a subclass that calls a fused kernel, e.g.
    GLA's RMSNormGatedFla, runs its plain parent's forward: the kernel takes one weight, not M)."""
    for base in (RMSNormGated, RMSNorm):
        if issubclass(cls, base):
            return base
    raise AssertionError(cls)  # pragma: no cover


def _per_channel_view(module, p: torch.Tensor) -> torch.Tensor:
    i = module._stack_members.index
    return p[i] if i is not None else p.unsqueeze(1)  # [M, 1, D]: against rows viewed as [M, B*..., D]


def _per_channel_affine(base_affine):
    def affine(self, y: torch.Tensor) -> torch.Tensor:
        if self._stack_members.index is not None:
            return base_affine(self, y)
        m = self._stack_members.count
        return base_affine(self, y.reshape(m, -1, y.shape[-1])).reshape(y.shape)
    return affine


def _conv_view(module, p: torch.Tensor) -> torch.Tensor:
    i = module._stack_members.index
    return p[i] if i is not None else p.flatten(0, 1)  # weight [M, C, 1, K] -> [M*C, 1, K]; bias -> [M*C]


def _conv_forward(base_forward):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members = self._stack_members
        if members.index is not None:  # one member's solo computation
            return base_forward(self, x)
        m = members.count
        mb, t, c = x.shape
        b = mb // m
        if exact_on_cpu(x, members):
            # CPU: each member's rows through the solo module's own call, with that member's weights.
            # The folded conv below computes the same sums, but oneDNN picks its backward algorithm by
            # channel count and rounds differently; reference runs stay bit for bit their solo runs.
            outs = [base_forward(self, rows).transpose(1, 2) for _, rows in members.each(x)]
            return torch.cat(outs).transpose(1, 2)  # [M*B, T, C], laid out as a solo conv's output
        folded = x.reshape(m, b, t, c).permute(1, 2, 0, 3).reshape(b, t, m * c)  # [B, T, M*C]: one conv
        out = base_forward(self, folded)  # [B, T, M*C]
        return out.reshape(b, t, m, c).permute(2, 0, 1, 3).reshape(mb, t, c)
    return forward


def _broadcast_forward(base_forward):
    def forward(self, x: torch.Tensor, *args, **kwargs):
        members = self._stack_members
        if not exact_on_cpu(x, members):
            return base_forward(self, x, *args, **kwargs)
        # CPU: the module once per member, every parameter in it that member's, solo-shaped. The
        # broadcast below sums a parameter's gradient over time, then over the batch; a solo module sums
        # over both at once (another rounding order).
        return torch.cat([base_forward(self, rows, *args, **kwargs) for _, rows in members.each(x)])
    return forward


def _broadcast_view(module, p: torch.Tensor) -> torch.Tensor:
    members = module._stack_members
    if members.index is not None:
        return p[members.index]
    m, b = members.count, members.batch
    # [M, *S] -> [M*B, 1, *S]: row r of the batch is member r // B; the 1 broadcasts over time
    return p.unsqueeze(1).expand(m, b, *p.shape[1:]).reshape(m * b, 1, *p.shape[1:])


def _rewrite(module: nn.Module, kind: str, members: Members) -> None:
    names = tuple(n for n, p in module._parameters.items() if p is not None)
    for n in names:
        module._parameters[n] = _stack(module._parameters[n], members.count)
    module._stack_members = members
    if kind == "conv":
        module._solo_groups = module.__dict__.pop("groups")
    module.__class__ = _rewritten_class(kind, type(module), names)


# --------------------------------------------------------------------------------------- the model

class StackedModel(nn.Module):
    """M members of one architecture; see the module docstring. `model` holds the rewritten copy of
    the solo model (state-dict names are the solo names prefixed with `model.`)."""

    def __init__(self, model: nn.Module, members: Members):
        super().__init__()
        self.model, self.members = model, members

    @property
    def count(self) -> int:
        return self.members.count

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """ids [B, ...] shared by all members -> the solo output per member, [M, B, ...]."""
        self.members.batch = input_ids.shape[0]
        out = self.model(input_ids)
        return out.reshape(self.members.count, input_ids.shape[0], *out.shape[1:])

    @property
    def backends(self) -> dict[str, str]:
        return self.model.backends

    @property
    def aux_loss(self):
        return getattr(self.model, "aux_loss", 0.0)

    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights under the solo model's names (load them into the solo model)."""
        stacked = {id(p) for p in self.model.parameters()}
        out = {}
        for name, t in self.model.state_dict(keep_vars=True).items():
            out[name] = (t[i] if id(t) in stacked else t).detach().clone()
        return out

    @torch.no_grad()
    def keep(self, idx: list[int]) -> None:
        """Keep only members `idx` (in that order): every parameter's slices; gradients are dropped."""
        if not idx:
            raise ValueError("keep() needs at least one member")
        index = torch.tensor(idx, dtype=torch.long)
        for p in self.model.parameters():
            p.data = p.data[index.to(p.device)].contiguous()
            p.grad = None
        self.members.count = len(idx)


def stack_model(solo: nn.Module, members: int) -> StackedModel:
    """A StackedModel of `members` copies of `solo` as it is now (solo itself is not changed)."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    ids = [id(p) for _, p in solo.named_parameters(remove_duplicate=False)]
    if len(ids) != len(set(ids)):
        raise NotStackable("the model shares a parameter between modules (tied weights)")

    for block in solo.modules():
        if isinstance(block, Block) and not stackable(block.kind, block.backend):
            raise NotStackable(f"mixer {block.kind!r} ({block.backend}) is not stackable; stackable: "
                               + ", ".join(f"{m} ({'reference, fused' if stackable(m, 'fused') else 'reference'})"
                                           for m in STACKABLE))
    model = _with_fla_twins(copy.deepcopy(solo))
    info = Members(count=members)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            new = _leaf(child, info)
            if new is not None:
                parent._modules[name] = new
    for name, module in model.named_modules():
        if isinstance(module, (StackedLinear, StackedEmbedding)) or hasattr(module, "_stack_members"):
            continue
        own = [n for n, p in module._parameters.items() if p is not None]
        if not own:
            continue
        if not type(module).__module__.startswith(_OUR_PACKAGES):
            raise NotStackable(f"module {name or '<root>'} ({type(module).__module__}.{type(module).__name__}) "
                               f"holds parameters {own} that third-party code uses directly")
        _rewrite(module, "broadcast", info)
    return StackedModel(model, info)


def _leaf(module: nn.Module, info: Members) -> nn.Module | None:
    """The replacement of one leaf (or None: leave it, maybe rewrite its direct parameters later)."""
    if isinstance(module, nn.Linear):
        return StackedLinear(module, info)
    if isinstance(module, nn.Embedding):
        return StackedEmbedding(module, info)
    if isinstance(module, (RMSNorm, RMSNormGated)):
        _rewrite(module, "per_channel", info)
    elif isinstance(module, ShortConvolution):
        _rewrite(module, "conv", info)
    return None


def _with_fla_twins(model: nn.Module) -> nn.Module:
    """Replace fused mixers that are fla's own layers by their reference twins running fla's kernel."""

    cfg = getattr(model, "cfg", None) or getattr(getattr(model, "encoder", None), "cfg", None)
    for i, block in enumerate(b for b in model.modules() if isinstance(b, Block)):
        if not block.third_party_fused:
            continue
        if block.kind not in FLA_TWINS:
            raise NotStackable(f"the fused {block.kind!r} layer is fla's own module and has no stackable twin "
                               f"(stackable fused mixers: {sorted(FLA_TWINS)})")
        spec = get_mixer(block.kind)
        kw = cfg.resolved_attn_kwargs() if block.kind != cfg.mixer else cfg.resolved_mixer_kwargs()
        old = block.mixer
        twin = spec.reference(cfg.d_model, getattr(old, "layer_idx", i), kw)
        twin.load_state_dict(old.state_dict())
        twin.to(next(old.parameters()).device)
        module, _, fn = FLA_TWINS[block.kind].partition(":")
        twin.recurrence = getattr(importlib.import_module(module), fn)
        block.mixer = twin
    return model
