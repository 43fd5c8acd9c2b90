"""`python -m grid eval lm-eval TRIAL_KEY --tasks ...`: lm-evaluation-harness scores of a trained LM trial.

    python -m grid eval lm-eval 3f2a9c0d1e4b5a6f --tasks lambada_openai,piqa [--num-fewshot N] [--limit N]
                                [--include-path DIR] [--batch-size N] [--device cpu|cuda|cuda:K]
                                [--format lingrid|fla|auto] [--seed N] [--results DIR] [--ray-tmp-path DIR]
                                [--checkpoint PATH]

Runs the harness's Python API on the trial's exported model (grid/harness/run.py) and stores one
row per task in suite `lm-eval` of the results store (grid = the trial's grid), e.g.
`python -m grid results query "SELECT model_id, hybrid, task, acc FROM results WHERE suite = 'lm-eval'"`.
Offline: --include-path DIR adds task YAMLs over local files (tests/data/lm_eval has two).
Exit codes: 0 stored; 2 bad arguments, missing lm-eval, or a trial / task that cannot be used.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from grid import paths
from grid.cliargs import StrictParser, fail, int_range, parse
from grid.harness.run import HarnessError, require_lm_eval, run_lm_eval
from grid.results.schema import LM_EVAL_SUITE, SchemaError, check_name

# Lazy here: grid.export.fla_map, grid.export.hf, grid.export.locate (they import torch or Ray)

_TASK = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _tasks(value: str) -> list[str]:
    tasks = [t.strip() for t in value.split(",") if t.strip()]
    bad = [t for t in tasks if not _TASK.match(t)]
    if not tasks or bad:
        raise argparse.ArgumentTypeError(f"--tasks {value!r}: allowed: comma-separated task names "
                                         "(letters, digits, '_', '.', '-')")
    return tasks


def _device(value: str) -> str:
    if not re.match(r"^(cpu|cuda(:\d+)?)$", value):
        raise argparse.ArgumentTypeError(f"--device {value!r}: allowed: cpu, cuda, cuda:K")
    return value


def _parser() -> argparse.ArgumentParser:
    from grid.export.hf import FORMATS  # noqa: PLC0415

    p = StrictParser(prog="python -m grid eval",
                                description="Evaluate a trained LM trial with an external harness.")
    sub = p.add_subparsers(dest="harness", required=True)
    le = sub.add_parser("lm-eval", help="lm-evaluation-harness (lm_eval.simple_evaluate)")
    le.add_argument("trial_key", help="the LM trial to evaluate (python -m grid results show --suite lm)")
    le.add_argument("--tasks", required=True, type=_tasks, help="comma-separated harness task names")
    le.add_argument("--num-fewshot", type=int_range(0), default=None, help="few-shot examples (default: the task's)")
    le.add_argument("--limit", type=int_range(1), default=None, help="at most N documents per task (a quick look)")
    le.add_argument("--include-path", default=None, metavar="DIR", help="a folder of extra task YAMLs")
    le.add_argument("--batch-size", type=int_range(1), default=8)
    le.add_argument("--device", type=_device, default=None, help="default: cuda when visible, else cpu")
    le.add_argument("--format", choices=FORMATS, default="lingrid",
                    help="export format the harness loads (default lingrid: our own stack, exactly what was trained)")
    le.add_argument("--seed", type=int_range(0), default=0, help="the harness's random seeds")
    le.add_argument("--results", default=paths.store(), metavar="DIR")
    le.add_argument("--ray-tmp-path", default=paths.ray_tmp(), metavar="DIR",
                    help="where `grid run` kept its Tune experiments (the checkpoints)")
    le.add_argument("--checkpoint", default=None, metavar="PATH", help="a train_state.pt to use instead")
    return p



def main(argv: list[str] | None = None) -> int:
    args = parse(_parser(), argv)
    if isinstance(args, int):  # --help (0) or bad arguments (2)
        return args

    try:
        check_name("trial_key", args.trial_key)
    except SchemaError as exc:
        return fail(str(exc))
    if args.include_path is not None and not Path(args.include_path).is_dir():
        return fail(f"--include-path {args.include_path!r} is not a folder")
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        return fail(f"--checkpoint {args.checkpoint!r} does not exist")
    from grid.export.fla_map import Unmappable  # noqa: PLC0415
    from grid.export.locate import ExportError  # noqa: PLC0415

    try:
        require_lm_eval()  # fail before exporting anything
        rows = run_lm_eval(args.trial_key, args.tasks, results=args.results, ray_tmp=args.ray_tmp_path,
                           checkpoint=args.checkpoint, include_path=args.include_path, num_fewshot=args.num_fewshot,
                           limit=args.limit, batch_size=args.batch_size, device=args.device, fmt=args.format,
                           seed=args.seed)
    except (HarnessError, ExportError, Unmappable) as exc:
        return fail(str(exc))

    print(f"stored {len(rows)} row(s) in suite {LM_EVAL_SUITE} of {args.results}:")
    skip = {"trial_key", "status", "config_json", "started_at", "finished_at", "wall_s", "git_sha", "torch", "triton",
            "fla", "ray", "cuda", "gpu_name", "env_profile", "autotune"}
    for r in rows:
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items() if k not in skip and v is not None}
        print("  " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
