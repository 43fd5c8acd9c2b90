"""`python -m grid data prepare SPEC.yaml [--force] [--out DIR]`, `data show DIR`, `data verify DIR`."""
from __future__ import annotations

import argparse
import json
import sys

from grid.cliargs import StrictParser, fail, parse
from grid.data.manifest import DataDirError, read_manifest, summary_lines, verify
from grid.data.prepare import PrepareError, prepare
from grid.data.sources import SourceError
from grid.data.spec import DataSpecError, load_data_spec
from grid.data.tokenizer import TokenizerError
from grid.run.outputs import OutputPathError, check_output_dir

# Lazy here: pathlib (one code path)


def _parser() -> argparse.ArgumentParser:
    p = StrictParser(prog="python -m grid data", description="text sources -> tokenizer -> token shards")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{prepare,show,verify}")
    pp = sub.add_parser("prepare", help="build the token shards of a data spec (reused when up to date)")
    pp.add_argument("spec", help="data spec YAML, e.g. configs/data/stdlib-bytes.yaml")
    pp.add_argument("--out", help="output dir (default: the spec's out_dir, benchmark/data/lm/<name>)")
    pp.add_argument("--force", action="store_true", help="rebuild even if the dir holds this or another spec")
    pp.add_argument("--quiet", action="store_true", help="no progress lines")
    ps = sub.add_parser("show", help="print the manifest summary of a prepared dir")
    ps.add_argument("dir")
    ps.add_argument("--json", action="store_true", help="the whole manifest as JSON")
    pv = sub.add_parser("verify", help="re-hash every shard and tokenizer file against the manifest")
    pv.add_argument("dir")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse(_parser(), sys.argv[1:] if argv is None else argv)
    if isinstance(args, int):
        return args
    if args.cmd == "prepare":
        try:
            spec = load_data_spec(args.spec)
            out = args.out if args.out is not None else spec.out_dir
            if out is not None:
                from pathlib import Path  # noqa: PLC0415

                if Path(out).exists() and not Path(out).is_dir():
                    raise OutputPathError(f"--out {out}: exists and is not a directory; give a directory for the "
                                          "shards")
                check_output_dir("--out", Path(out).parent)
        except (DataSpecError, OutputPathError) as exc:
            return fail(str(exc))
        try:
            manifest = prepare(spec, out_dir=args.out, force=args.force, verbose=not args.quiet)
        except (DataSpecError, DataDirError, SourceError, TokenizerError, PrepareError) as exc:
            return fail(str(exc), 2 if isinstance(exc, DataSpecError) else 1)
        print("\n".join(summary_lines(manifest)))
        return 0
    manifest = read_manifest(args.dir)
    if manifest is None:
        print(f"error: {args.dir} has no manifest.json: not a prepared data dir (or an interrupted build)",
              file=sys.stderr)
        return 1
    if args.cmd == "show":
        print(json.dumps(manifest, indent=2, sort_keys=True) if args.json else "\n".join(summary_lines(manifest)))
        return 0
    problems = verify(args.dir)
    for line in problems:
        print(f"  {line}", file=sys.stderr)
    print(f"{args.dir}: {'damaged' if problems else 'ok'} (content_hash {manifest['content_hash']})")
    return 1 if problems else 0
