"""Where does `python -m grid run GRID` spend its time before Ray starts? (the driver's own share
of the main job's wall time: imports, data check, planning, resource notes)

    python scripts/profile_driver.py [--grid configs/grids/quickstart.yaml] [--results DIR] [--top 40]

Runs the real CLI in this process under cProfile and stops it where it would start Ray (ray.init
raises SystemExit), then prints the seconds to that point and the top entries by cumulative time.
Nothing trains; the results store is only read. Works on a CPU machine and on a GPU host.
"""
from __future__ import annotations

import cProfile
import io
import pstats
import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: find `grid`

from grid.cliargs import StrictParser, int_range  # noqa: E402


class _RayWouldStart(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default=str(ROOT / "configs" / "grids" / "quickstart.yaml"))
    p.add_argument("--results", default=None, help="results store for `grid run --results` (default: the CLI's)")
    p.add_argument("--top", type=int_range(1), default=40, help="profile entries to print")
    args = p.parse_args(argv)

    t_ray = time.perf_counter()
    import ray  # the driver imports it too (timed apart); patched so that the profile stops where Ray would start

    t_ray = time.perf_counter() - t_ray

    def stop(*_a, **_k):
        raise _RayWouldStart

    ray.init = stop
    cli = ["grid", "run", args.grid] + (["--results", args.results] if args.results else [])
    saved, sys.argv = sys.argv, cli
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    reached = False
    prof.enable()
    try:
        runpy.run_module("grid", run_name="__main__")
    except _RayWouldStart:
        reached = True
    except SystemExit as exc:
        print(f"grid run exited with {exc.code} before starting Ray", file=sys.stderr)
    finally:
        prof.disable()
        sys.argv = saved
    wall = time.perf_counter() - t0
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    print(f"driver: {wall:.2f} s from `grid run` to {'ray.init' if reached else 'exit'} "
          f"({' '.join(cli)}), plus {t_ray:.2f} s importing ray before it")
    return 0 if reached else 1


if __name__ == "__main__":
    sys.exit(main())
