"""Command-line input checks shared by every lingrid CLI: one parser class, typed ranges, one-line errors.

Every CLI builds its parsers with `StrictParser` (never `argparse.ArgumentParser` directly; a test
walks every parser). It refuses abbreviations (`--setting` is not `--settings`) and unknown flags,
and reports a bad value as ONE line naming the flag and what is allowed, exit status 2, no
traceback. Range types (`int_range`, `float_range`) turn `--n-gpu -1` into such a line before any
work starts. `validation_message` does the same for pydantic errors of a file (grid, task, data
spec): the field, the value and what is allowed, on one line.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml


class StrictParser(argparse.ArgumentParser):
    """argparse without prefix matching, with one-line errors (exit 2). Subparsers inherit the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False  # never guess: `--setting baseline` must not mean `--settings`
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        one_line = " ".join(str(message).split())
        sys.stderr.write(f"{self.prog}: error: {one_line} (see {self.prog} --help)\n")
        sys.exit(2)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """parse_args, returning the exit code instead of raising SystemExit (2: bad input, 0: --help)."""
    try:
        return parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


def fail(message: str, code: int = 2) -> int:
    """Print `error: <message>` as one line on stderr; return the exit code (2 = bad input)."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    return code


def _bounds(lo: float | None, hi: float | None, lo_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"<= {hi:g}")
    return " and ".join(parts)


def _must(kind: str, bounds: str, text: str) -> str:
    return f"must be {kind}{' ' + bounds if bounds else ''}, got {text!r}"


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [lo, hi] (None = unbounded)."""

    def check(text: str) -> int:
        try:
            value = int(text, 10)
        except (TypeError, ValueError):
            value = None
        if value is None or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(_must("an integer", _bounds(lo, hi, False), text))
        return value

    check.__name__ = "int"
    return check


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number >= lo (> lo with lo_open) and <= hi."""

    def check(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            value = math.nan
        bad = not math.isfinite(value) or (lo is not None and (value <= lo if lo_open else value < lo)) \
            or (hi is not None and value > hi)
        if bad:
            raise argparse.ArgumentTypeError(_must("a finite number", _bounds(lo, hi, lo_open), text))
        return value

    check.__name__ = "float"
    return check


def non_empty(what: str = "value") -> Callable[[str], str]:
    """argparse type: a string that is not empty or blank."""

    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"must be a non-empty {what}, got {text!r}")
        return text

    check.__name__ = "str"
    return check


def read_mapping(path: Any, what: str, fields: str, error: type[Exception] = ValueError) -> dict:
    """The YAML mapping in file `path` (a `what`: "grid file", "file", ...), or `error` with one line saying
    why not (missing, a directory, not text, not YAML, not a mapping of `fields`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory; give a YAML file") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not a text (YAML) file") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise error(f"{what} {path}: expected a mapping of fields ({fields}), got {type(raw).__name__}")
    return raw


def validation_message(exc: Any, source: str) -> str:
    """A pydantic ValidationError as one line: `<source>: <field>: <message> (value <v>); ...`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(top)"
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        value = err.get("input")
        shown = "" if isinstance(value, (dict, list)) else f" (value {value!r})"
        parts.append(f"{loc}: {msg}{shown}")
    return f"{source}: " + "; ".join(" ".join(p.split()) for p in parts)


__all__ = ["StrictParser", "fail", "float_range", "int_range", "non_empty", "parse", "read_mapping",
           "validation_message"]
