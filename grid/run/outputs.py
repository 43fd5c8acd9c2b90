"""Output paths are checked before any trial starts (a results store that is a file must not be found
after hours of training: issue 21).

`check_output_dir(flag, path)` makes the directory if needed and proves it writable by creating
and removing a probe file; anything else is an `OutputPathError` naming the flag, the path and why,
in one line. `check_input_dir` is the read-side twin (data that must already exist).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path


class OutputPathError(ValueError):
    """An output (or input) path cannot be used; the message names the flag and the path."""


def check_output_dir(flag: str, path: str | os.PathLike[str]) -> Path:
    """`path` as a writable directory (created when missing); OutputPathError otherwise."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {p}: exists and is not a directory; give a directory (it is created "
                              "when missing)")
    for parent in [p, *p.parents]:  # the first existing ancestor must be a directory
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{flag} {p}: {parent} is a file, so the directory cannot be created")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"{flag} {p}: cannot create the directory ({exc.strerror or exc})") from None
    probe = p / f".lingrid-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(f"{flag} {p}: the directory is not writable ({exc.strerror or exc})") from None
    return p


def check_input_dir(flag: str, path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise OutputPathError(f"{flag} {p}: does not exist")
    if not p.is_dir():
        raise OutputPathError(f"{flag} {p}: is not a directory")
    return p


__all__ = ["OutputPathError", "check_input_dir", "check_output_dir"]
