"""The users' entry points `python -m evals.mad.mad_eval_<arch>`: one three-line module per entry of
configs/mad/architectures.yaml, all made from SHIM below. `python -m evals.mad.shims` writes the missing
ones (after adding an architecture) and removes those whose entry is gone; tests/test_mad_shims.py checks
that the files and the YAML agree.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Lazy here: evals.mad.arch (they import torch or Ray)

HERE = Path(__file__).resolve().parent
SHIM = '''"""MAD suite for `{arch}` (layer settings: configs/mad/architectures.yaml). See evals/mad/run.py for flags."""
import sys

from evals.mad.run import main

if __name__ == "__main__":
    sys.exit(main(default_arch="{arch}"))
'''


def shim_path(arch: str) -> Path:
    return HERE / f"mad_eval_{arch.replace('-', '_')}.py"


def expected() -> dict[Path, str]:
    """Every shim file as it should be: path -> text."""
    from evals.mad.arch import arch_names  # noqa: PLC0415

    return {shim_path(a): SHIM.format(arch=a) for a in arch_names()}


def present() -> list[Path]:
    return sorted(HERE.glob("mad_eval_*.py"))


def main() -> int:
    want = expected()
    for path, text in want.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.name}")
    for path in present():
        if path not in want:
            path.unlink()
            print(f"removed {path.name} (no entry in configs/mad/architectures.yaml)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
