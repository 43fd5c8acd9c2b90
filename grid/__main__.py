"""`python -m grid <command> ...`: one entry point, each command lives in the module that owns it.

Commands are imported lazily so that `python -m grid results query` never imports torch or fla.
"""
from __future__ import annotations

import importlib
import sys

# command -> "module:function" taking argv (list[str]) and returning an exit code
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("grid.models.cli:main", "list the mixer registry; `models describe CONFIG.yaml`"),
    "check": ("grid.check.cli:main", "`check parity`: fused vs reference kernels on this GPU"),
    "bench": ("grid.bench.cli:main", "`bench mixers`: tokens/s and memory per fused mixer"),
    "results": ("grid.results.cli:main", "`results query SQL`: DuckDB over the parquet store"),
    "data": ("grid.data.cli:main", "`data prepare SPEC.yaml`: text -> token shards"),
    "plan": ("grid.run.grid_cli:plan_main", "print the expanded trial table of a grid"),
    "run": ("grid.run.grid_cli:run_main", "run a grid on the embedded local Ray"),
    "submit": ("grid.run.grid_cli:submit_main", "submit a grid to a Ray cluster (Ray Jobs API)"),
    "status": ("grid.run.grid_cli:status_main", "done / failed / running per grid"),
    "analyze": ("grid.analysis.cli:main", "`analyze scaling`: power-law fits and plots"),
    "export": ("grid.export.cli:main", "`export TRIAL_KEY OUT_DIR`: a trained LM as a transformers folder"),
    "eval": ("grid.harness.cli:main", "`eval lm-eval TRIAL_KEY --tasks ...`: lm-evaluation-harness scores"),
}


def _usage() -> str:
    lines = ["usage: python -m grid <command> [args]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}; allowed: {', '.join(COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func = COMMANDS[name][0].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(module.rsplit(".", 1)[0]):
            print(f"command {name!r} is not available yet ({exc})", file=sys.stderr)
            return 2
        raise
    return int(getattr(mod, func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
