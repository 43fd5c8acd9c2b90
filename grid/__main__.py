"""`python -m grid <command> ...`: one entry point, each command lives in the module that owns it.

Commands are imported lazily so that `python -m grid results query` never imports torch or fla.
"""
from __future__ import annotations

import importlib
import sys

# command -> ("module:function" taking argv and returning an exit code, its arguments, what it does), by group
GROUPS: dict[str, dict[str, tuple[str, str, str]]] = {
    "LM grids (configs/grids/*.yaml) and MAD sweeps (configs/mad/sweeps/*.yaml)": {
        "run": ("grid.run.suites:run_main", "FILE.yaml", "run the trials the store lacks (Ray), print the table"),
        "plan": ("grid.lm.cli:plan_main", "GRID.yaml", "the trial table: params, tokens, FLOPs, GPU-hours"),
        "submit": ("grid.lm.cli:submit_main", "GRID.yaml --address URL", "submit a grid to a Ray cluster "
                   "(Ray Jobs API)"),
        "status": ("grid.run.status:status_main", "", "done / failed / in flight per grid"),
    },
    "Results": {
        "results": ("grid.results.cli:main", "show | query SQL", "tables of trials; DuckDB SQL over the store"),
        "analyze": ("grid.analysis.cli:main", "leaderboard | scaling | recall | plots", "LM leaderboards, scaling-law "
                    "fits, PNG plots"),
    },
    "Models and data": {
        "models": ("grid.models.cli:main", "[list] | describe | size", "the mixer registry; counts of a model"),
        "data": ("grid.data.cli:main", "prepare SPEC.yaml", "text -> token shards (+ manifest)"),
    },
    "Trained models": {
        "export": ("grid.export.cli:main", "TRIAL_KEY OUT_DIR", "a trained LM as a transformers folder"),
        "eval": ("grid.harness.cli:main", "lm-eval TRIAL_KEY --tasks ...", "lm-evaluation-harness scores as rows"),
    },
    "GPU checks": {
        "check": ("grid.check.cli:main", "parity", "fused vs reference kernels on this machine"),
        "bench": ("grid.bench.cli:main", "mixers | mad", "tokens/s and memory per mixer; MAD packing"),
    },
}
COMMANDS: dict[str, tuple[str, str]] = {name: (target, help_) for group in GROUPS.values()
                                         for name, (target, _args, help_) in group.items()}


def _usage() -> str:
    lines = ["lingrid: efficient sequence mixers compared under identical conditions.", "",
             "usage: python -m grid <command> [args]   (python -m grid <command> --help: its options)"]
    for title, cmds in GROUPS.items():
        lines += ["", f"{title}:"]
        lines += [f"  {name:<8} {args:<30} {help_}" for name, (_, args, help_) in cmds.items()]
    lines += ["", "MAD synthetic tasks:",
              "  python -m evals.mad.mad_eval_<arch> [--help]   run the suite for one architecture (e.g. mad_eval_gla)",
              "  python -m evals.mad leaderboard                the MAD table of every architecture in the store",
              "", "Main job: python -m grid run configs/grids/quickstart.yaml",
              "Files: <repository>/benchmark by default (LINGRID_BENCHMARK and LINGRID_STORE move them)",
              "Progress display: LINGRID_PROGRESS=auto|live|plain|off"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a command is required: say which there are
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
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
