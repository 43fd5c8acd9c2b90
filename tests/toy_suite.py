"""A third suite, in 50 lines: what docs/architecture.md's "how to add a suite" checklist asks for.

A file `suite: tests.toy_suite` (a module path: suites outside grid/run/suites.py's SUITES are found by it)
runs through `python -m grid run FILE` like an LM grid or a MAD sweep: one trial per value, keyed by the
one key rule (make_trial), deduplicated against the store and resumed by the one runner.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from grid import paths
from grid.cliargs import StrictParser, fail, int_range, parse

NAME = "toy"
TRAINABLE = "tests.toy_suite:toy_trial"
RUNTIME_FIELDS = ("marker_dir", "fail_once")  # how a trial runs (the tests' crash switch), never what it computes


class ToyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suite: str
    name: str
    values: list[int] = Field(min_length=1)
    fail_once: list[int] = Field(default_factory=list, description="values whose first attempt crashes")


def toy_trial(config, ctx):
    """Squares its value; a `fail_once` trial crashes after its first checkpoint and resumes from it."""
    marker = Path(config["marker_dir"]) / f"{config['value']}.crashed"
    if config["fail_once"] and not marker.exists():
        ckpt = marker.with_suffix(".ckpt")
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "state.txt").write_text("half done")
        ctx.report({"step": 1}, checkpoint_dir=str(ckpt))
        marker.write_text("crashed once")
        raise RuntimeError("toy: the first attempt crashes on purpose")
    restored = ctx.checkpoint_dir()
    return {"square": config["value"] ** 2,
            "resumed_from": (Path(restored) / "state.txt").read_text() if restored else ""}


def run_file(path: str, argv: list[str]) -> int:
    from grid.results.store import ResultsStore  # noqa: PLC0415
    from grid.run.runner import run_trials  # noqa: PLC0415
    from grid.run.spec import make_trial  # noqa: PLC0415

    p = StrictParser(prog="python -m grid run TOY.yaml")
    p.add_argument("file")
    p.add_argument("--results", default=paths.store())
    p.add_argument("--ray-tmp-path", default=paths.ray_tmp())
    p.add_argument("--max-failures", type=int_range(0), default=0)
    args = parse(p, argv)
    if isinstance(args, int):
        return args
    try:
        spec = ToyFile.model_validate(yaml.safe_load(Path(path).read_text()))
    except ValueError as exc:
        return fail(" ".join(str(exc).split()))
    specs = [make_trial({"value": v}, runtime={"marker_dir": str(Path(args.ray_tmp_path).resolve()),
                                               "fail_once": v in spec.fail_once},
                        suite=NAME, grid=spec.name, trainable=TRAINABLE, columns={"seed": 0})
             for v in spec.values]
    s = run_trials(specs, store=ResultsStore(args.results), experiment=f"toy-{spec.name}",
                   storage_dir=args.ray_tmp_path, max_failures=args.max_failures, progress=False)
    print(f"toy {spec.name}: {s.n_total} trial(s): {s.n_skipped} already in the store, {s.n_ok} ok, "
          f"{s.n_failed} failed")
    return 0 if s.n_failed == 0 and not s.missing else 1
