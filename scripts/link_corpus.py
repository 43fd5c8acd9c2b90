"""Link installed packages' folders into one folder, for an offline corpus (configs/data/site-packages-bpe.yaml).

    python scripts/link_corpus.py benchmark/corpus          # the installed packages of DEFAULT_PACKAGES
    python scripts/link_corpus.py benchmark/corpus --packages torch numpy

Makes `<out>/<package>` for every package of --packages that imports here (its source folder:
code and docstrings) and `<out>/<package>.dist-info` (its distribution's metadata, whose METADATA
holds the project's README), as symlinks, and prints their sizes. (The standard library is the
data spec's own `stdlib` source, which leaves out tests and site-packages.) The data spec then reads `<out>/**/*.py` etc. with ordinary globs, so the same
spec works on any host whatever its install paths; the manifest records what was read, and its
content hash (in every trial_key) tells two hosts' corpora apart. Only packages are linked, never
site-packages as a whole: the folders do not overlap, so no file is read twice.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # find `grid` from anywhere
from grid.cliargs import StrictParser  # noqa: E402  (one-line errors, no abbreviations)

# what torch and the lingrid GPU bundle bring along (present on the GPU host); missing ones are skipped
DEFAULT_PACKAGES = ["torch", "triton", "numpy", "sympy", "networkx", "jinja2", "transformers", "tokenizers",
                    "huggingface_hub", "ray", "fla", "pydantic", "yaml", "pandas", "pyarrow", "duckdb", "einops"]


def package_dir(name: str) -> Path | None:
    """The folder of an importable package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def dist_info_dir(name: str) -> Path | None:
    """The .dist-info folder of the distribution that provides import package `name`."""
    import importlib.metadata as md  # noqa: PLC0415

    for dist_name in md.packages_distributions().get(name, []):
        try:
            path = getattr(md.distribution(dist_name), "_path", None)
        except md.PackageNotFoundError:
            continue
        if path is not None and Path(path).is_dir() and (Path(path) / "METADATA").is_file():
            return Path(path).resolve()
    return None


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.py") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to create (e.g. benchmark/corpus)")
    p.add_argument("--packages", nargs="+", default=DEFAULT_PACKAGES, help="import names to link")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    targets: dict[str, Path] = {}
    for name in args.packages:
        d = package_dir(name)
        if d is None:
            print(f"skip {name}: not importable here", file=sys.stderr)
            continue
        targets[name] = d
        info = dist_info_dir(name)
        if info is not None:
            targets[f"{name}.dist-info"] = info
    for link, target in targets.items():
        dst = out / link
        if dst.is_symlink() or dst.exists():
            if dst.is_symlink() and Path(os.readlink(dst)) == target:
                continue
            dst.unlink()
        dst.symlink_to(target, target_is_directory=True)
    total = 0
    for link, target in sorted(targets.items()):
        if link.endswith(".dist-info"):
            continue
        n = _size(target)
        total += n
        print(f"{link:<16} {n / 1e6:8.1f} MB of .py  {target}")
    readmes = sum((t / "METADATA").stat().st_size for k, t in targets.items() if k.endswith(".dist-info"))
    print(f"{'total':<16} {total / 1e6:8.1f} MB of .py, {readmes / 1e6:.2f} MB of METADATA in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
