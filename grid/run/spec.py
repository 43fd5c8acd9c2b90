"""What one trial is: the resolved config (its hashed block makes `trial_key`), where it runs, what it needs.

A suite's trial spec has a config of two blocks: the hashed block (everything that can change the
result; `grid.keys.trial_key(suite, hashed)` is the trial's key) and the runtime block, whose field
names `runtime` lists (paths, data-parallel layout, CUDA graphs: how it runs, never what it computes).
`make_trial(hashed, runtime=...)` builds one and a spec with `runtime` set is checked to carry the
key of its hashed block. A spec made without `runtime` has a key given by hand (packs, test stubs).

A `TrialSpec` is plain data (pydantic, JSON round-trip): the runner ships it to the Ray worker
as a JSON string and the worker imports `trainable` ("module:function") there, so the driver
never imports model code (no torch, fla or triton on the driver).
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grid.keys import canonical_json, trial_key as key_of
from grid.results.schema import FIXED_COLUMNS, RUNNER_COLUMNS, check_name, coerce_fixed, infer_type

# store columns a trial may describe itself with (anything else belongs in config or metrics)
DESCRIPTIVE_COLUMNS: tuple[str, ...] = ("model_id", "mixer", "backend", "task", "setting", "lr", "wd", "seed")


class Resources(BaseModel):
    """Per-trial Ray resources: cpu > 0, gpu >= 0 (fractions share a device; > 1 must be whole)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError(f"gpu={v}: above 1 GPU a trial must ask for a whole number of GPUs (Ray cannot split them)")
        return v

    def bundle(self) -> dict[str, float]:
        """The Ray placement-group bundle ({"CPU": .., "GPU": ..}; GPU omitted when 0)."""
        out = {"CPU": float(self.cpu)}
        if self.gpu > 0:
            out["GPU"] = float(self.gpu)
        return out


class Work(BaseModel):
    """What a trial plans to do, for the progress display and its ETA (never part of `trial_key`).

    `steps` optimizer steps covering `tokens` training tokens (an upper bound where a trial may stop
    early, as MAD runs do at 99.9 % accuracy); `epochs` when the trial counts in epochs (MAD).
    A pack's work is the sum of its members' (make_pack)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(ge=0)
    tokens: int = Field(ge=0)
    epochs: int | None = Field(None, gt=0)
    may_stop_early: bool = False

    @classmethod
    def total(cls, parts: list["Work | None"]) -> "Work | None":
        if not parts or any(w is None for w in parts):
            return None
        epochs = {w.epochs for w in parts}
        return cls(steps=sum(w.steps for w in parts), tokens=sum(w.tokens for w in parts),
                   epochs=epochs.pop() if len(epochs) == 1 else None, may_stop_early=any(w.may_stop_early for w in parts))


class TrialSpec(BaseModel):
    """One trial: `trial_key` = trial_key(suite, hashed block of config) for a suite's trial (`runtime` set)."""

    model_config = ConfigDict(extra="forbid")

    trial_key: str
    suite: str
    grid: str
    trainable: str = Field(description='"package.module:function"; called as fn(config, ctx) on the worker')
    config: dict[str, Any] = Field(description="what the trial function gets: the hashed block (everything that can "
                                   "change the result) and the runtime block (the fields `runtime` names)")
    runtime: list[str] | None = Field(None, description="the config fields that are NOT hashed into trial_key; None: "
                                      "a key given by hand (packs, stubs)")
    columns: dict[str, Any] = Field(default_factory=dict, description="descriptive store columns (model_id, mixer, task, setting, lr, wd, seed, ...)")
    resources: Resources = Field(default_factory=Resources)
    members: list[TrialSpec] = Field(default_factory=list, description="a pack: member trials that run together in "
                                     "this one trial and get one row each (grid/run/pack.py: make_pack)")
    # runtime block: how the trial runs, never what it computes (not in trial_key)
    env: dict[str, str] = Field(default_factory=dict, description="environment variables set in the worker while "
                                "this trial runs (execution choices such as LINGRID_AUTOTUNE; grid/run/resources.py)")
    work: Work | None = Field(None, description="planned steps and tokens (progress and ETA)")

    @field_validator("trial_key", "suite", "grid")
    @classmethod
    def _path_safe(cls, v: str, info) -> str:
        return check_name(info.field_name, v)

    @field_validator("trainable")
    @classmethod
    def _module_function(cls, v: str) -> str:
        mod, sep, fn = v.partition(":")
        if not sep or not mod or not fn or not all(p.isidentifier() for p in mod.split(".")) or not fn.isidentifier():
            raise ValueError(f"trainable must look like 'package.module:function', got {v!r}")
        return v

    @field_validator("config")
    @classmethod
    def _json_able(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(v, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config must be JSON-serialisable (it is hashed and stored): {exc}") from None
        return v

    @model_validator(mode="after")
    def _key_ok(self) -> "TrialSpec":
        if self.runtime is not None and not self.members:
            want = key_of(self.suite, self.hashed())
            if self.trial_key != want:
                raise ValueError(f"trial_key {self.trial_key} is not the key of its hashed block ({want}): a suite's "
                                 "trial keys come from grid.keys.trial_key only")
        return self

    @model_validator(mode="after")
    def _columns_ok(self) -> "TrialSpec":
        for name, value in self.columns.items():
            if name in RUNNER_COLUMNS:
                raise ValueError(f"columns[{name!r}] is filled in by the runner; allowed descriptive columns include {list(DESCRIPTIVE_COLUMNS)}")
            if name in FIXED_COLUMNS:
                coerce_fixed(name, value)
            else:
                infer_type(name, value)
        return self

    @model_validator(mode="after")
    def _members_ok(self) -> "TrialSpec":
        keys = [m.trial_key for m in self.members]
        if len(set(keys)) != len(keys):
            raise ValueError(f"pack {self.trial_key}: a member trial_key appears twice: {keys}")
        for m in self.members:
            if m.members:
                raise ValueError(f"pack {self.trial_key}: member {m.trial_key} is itself a pack (packs do not nest)")
            if (m.suite, m.grid) != (self.suite, self.grid):
                raise ValueError(f"pack {self.trial_key}: member {m.trial_key} is in {m.suite}/{m.grid}, the pack in "
                                 f"{self.suite}/{self.grid} (a pack holds trials of one suite and grid)")
        return self

    def hashed(self) -> dict[str, Any]:
        """The hashed block of the config (all of it for a spec without `runtime`)."""
        skip = set(self.runtime or ())
        return {k: v for k, v in self.config.items() if k not in skip}

    @property
    def config_json(self) -> str:
        return canonical_json(self.config)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, s: str) -> "TrialSpec":
        return cls.model_validate_json(s)


def make_trial(
    config: dict[str, Any],
    *,
    suite: str,
    grid: str,
    trainable: str,
    runtime: dict[str, Any] | None = None,
    columns: dict[str, Any] | None = None,
    resources: Resources | dict[str, float] | None = None,
    trial_key: str | None = None,
    work: Work | None = None,
    env: dict[str, str] | None = None,
) -> TrialSpec:
    """A suite's TrialSpec: `config` is the hashed block, `runtime` the runtime block (the trial function gets
    both in one dict); `trial_key` = grid.keys.trial_key(suite, config). An explicit `trial_key` makes a
    hand-keyed spec instead (tests, stubs)."""
    runtime = dict(runtime or {})
    clash = sorted(set(config) & set(runtime))
    if clash:
        raise ValueError(f"fields {clash} are in both the hashed and the runtime block")
    if resources is None:
        resources = Resources()
    elif isinstance(resources, dict):
        resources = Resources(**resources)
    return TrialSpec(
        trial_key=trial_key if trial_key is not None else key_of(suite, config),
        suite=suite,
        grid=grid,
        trainable=trainable,
        config={**config, **runtime},
        runtime=None if trial_key is not None else sorted(runtime),
        columns=dict(columns or {}),
        resources=resources,
        work=work,
        env=dict(env or {}),
    )


TrialSpec.model_rebuild()  # `members` refers to the class itself
