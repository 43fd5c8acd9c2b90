"""The suite contract, and the one list of suites.

A suite (LM grids, MAD sweeps, lm-eval rows, the toy suite of the tests) is a module that provides:

    NAME: str                        the `suite` of its rows and trial specs
    RUNTIME_FIELDS: tuple[str, ...]  config fields of its trials that are not hashed into trial_key
    run_file(path, argv) -> int      optional: `python -m grid run FILE [flags]` for a file of this suite
                                     (the suite owns its flags; it turns the file into TrialSpecs made by
                                     grid.run.spec.make_trial and hands them to grid.run.runner.run_trials)
    upgrade_row(config, row, renamed) -> (config, column updates)
                                     optional: the row's config under today's key rule, for
                                     `python -m grid results rekey` (raise ValueError when it cannot tell)

A file names its suite in its `suite:` field (LM grid files may leave it out: `lm`). A `suite:` that
is a dotted module path instead of a name loads that module (plugins and the toy suite of the tests).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from grid.cliargs import fail, read_mapping

# Lazy here: grid.lm.suite (they import torch or Ray); sys (one code path)

# suite name -> module implementing the contract; rekey visits them in this order (an lm-eval row names
# the LM trial it evaluated, so LM rows are re-keyed first)
SUITES: dict[str, str] = {
    "lm": "grid.lm.suite",
    "mad": "evals.mad.suite",
    "lm-eval": "grid.harness.suite",
}
DEFAULT_SUITE = "lm"  # grid files written before `suite:` was required


class SuiteError(ValueError):
    """A file or name that no suite claims (one line, for the CLI)."""


def get_suite(name: str) -> ModuleType:
    """The module of suite `name` (a registered name, or a dotted module path)."""
    target = SUITES.get(name)
    if target is None:
        if "." not in name or not all(p.isidentifier() for p in name.split(".")):
            raise SuiteError(f"suite={name!r} is not allowed; allowed: {', '.join(SUITES)} (or a module path)")
        target = name
    try:
        module = importlib.import_module(target)
    except ImportError as exc:
        raise SuiteError(f"suite {name!r}: cannot import {target}: {exc}") from None
    if not isinstance(getattr(module, "NAME", None), str) or not hasattr(module, "RUNTIME_FIELDS"):
        raise SuiteError(f"suite {name!r}: module {target} does not implement the suite contract "
                         "(NAME, RUNTIME_FIELDS: grid/run/suites.py)")
    return module


def suite_of_file(path: str | Path) -> ModuleType:
    """The suite that runs file `path`, from its `suite:` field."""
    raw = read_mapping(path, "file", "suite, name, ...", SuiteError)
    name = raw.get("suite", DEFAULT_SUITE)
    if not isinstance(name, str):
        raise SuiteError(f"file {path}: suite={name!r} is not allowed; allowed: {', '.join(SUITES)}")
    module = get_suite(name)
    if not hasattr(module, "run_file"):
        raise SuiteError(f"file {path}: suite {name!r} has no files to run; runnable suites: "
                         f"{', '.join(n for n in SUITES if hasattr(get_suite(n), 'run_file'))}")
    return module


def run_main(argv: list[str] | None = None) -> int:
    """`python -m grid run FILE [flags]`: the suite named in FILE runs it with its own flags."""
    import sys  # noqa: PLC0415

    argv = list(sys.argv[1:] if argv is None else argv)
    path = next((a for a in argv if not a.startswith("-") and Path(a).is_file()), None)
    if path is None:  # no file (or --help): the LM command's parser says what is wrong, in its words
        from grid.lm.suite import run_file  # noqa: PLC0415

        return int(run_file(None, argv) or 0)
    try:
        module = suite_of_file(path)
    except SuiteError as exc:
        return fail(str(exc))
    return int(module.run_file(path, argv) or 0)


__all__ = ["DEFAULT_SUITE", "SUITES", "SuiteError", "get_suite", "run_main", "suite_of_file"]
