"""`python -m grid export TRIAL_KEY OUT_DIR`: a finished LM trial as a transformers model folder.

    python -m grid export 3f2a9c0d1e4b5a6f out/gla-3to1 [--format auto|fla|lingrid] [--results DIR]
                          [--ray-tmp-path DIR] [--checkpoint PATH]

Then `AutoModelForCausalLM.from_pretrained(OUT_DIR)` (fla format, after `import fla`) or
`AutoModelForCausalLM.from_pretrained(OUT_DIR, trust_remote_code=True)` (lingrid format); the
tokenizer loads with `AutoTokenizer.from_pretrained(OUT_DIR)`. Formats: grid/export/hf.py.
Exit codes: 0 written; 2 bad arguments, or the trial / its checkpoint / its data cannot be used.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grid import paths
from grid.cliargs import StrictParser, fail, parse
from grid.results.schema import SchemaError, check_name

# Lazy here: grid.export.fla_map, grid.export.hf, grid.export.locate (they import torch or Ray)



def _parser() -> argparse.ArgumentParser:
    from grid.export.hf import FORMATS  # noqa: PLC0415

    p = StrictParser(prog="python -m grid export",
                                description="Write a finished LM trial as a transformers model folder.")
    p.add_argument("trial_key", help="the trial's trial_key (python -m grid results show --suite lm)")
    p.add_argument("out_dir", help="new (or empty) folder to write")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="fla: fla's own model class; lingrid: our stack via trust_remote_code; auto: fla where exact")
    p.add_argument("--results", default=paths.store(), metavar="DIR",
                   help="results store holding the trial's row (default: $LINGRID_STORE or <repository>/benchmark/results)")
    p.add_argument("--ray-tmp-path", default=paths.ray_tmp(), metavar="DIR",
                   help="where `grid run` kept its Tune experiments (the checkpoints); default <repository>/benchmark/ray")
    p.add_argument("--checkpoint", default=None, metavar="PATH", help="a train_state.pt (or its folder) to use "
                   "instead of searching --ray-tmp-path")
    return p



def validate_out_dir(out_dir: str) -> str | None:
    """None when `out_dir` can be written (absent or an empty folder), else the reason."""
    p = Path(out_dir)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        return f"out_dir {out_dir!r} exists and is not an empty folder; allowed: a new or empty folder"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse(_parser(), argv)
    if isinstance(args, int):  # --help (0) or bad arguments (2)
        return args

    try:
        check_name("trial_key", args.trial_key)
    except SchemaError as exc:
        return fail(str(exc))
    if (why := validate_out_dir(args.out_dir)) is not None:
        return fail(why)
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        return fail(f"--checkpoint {args.checkpoint!r} does not exist")
    from grid.export.fla_map import Unmappable  # noqa: PLC0415
    from grid.export.hf import export_trial  # noqa: PLC0415
    from grid.export.locate import ExportError  # noqa: PLC0415

    try:
        done = export_trial(args.trial_key, args.out_dir, fmt=args.format, results=args.results,
                            ray_tmp=args.ray_tmp_path, checkpoint=args.checkpoint)
    except (ExportError, Unmappable) as exc:
        return fail(str(exc))
    print(f"wrote {done.out_dir} ({done.format} format, {done.model_class})")
    if done.note:
        print(f"note: lingrid format because the model is {done.note}")
    if done.format == "fla":
        print(f"load:  import fla; AutoModelForCausalLM.from_pretrained({str(done.out_dir)!r})")
    else:
        print(f"load:  AutoModelForCausalLM.from_pretrained({str(done.out_dir)!r}, trust_remote_code=True)  "
              "(lingrid importable)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
