"""MAD datasets on disk (spec §6): `<root>/<dir_name>/{train,test}/{inputs,targets}.npy`, int64.

A setting directory is only ever created complete: generation writes into a temporary sibling and
renames it into place, so a killed run cannot leave a half-written setting that looks done. A
directory that already holds the four files (e.g. the original mad-lab/Zenodo data) is used as is.

CLI: `python -m evals.mad.data generate [--tasks CR NR ...] [--settings baseline|all] [--root DIR]`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evals.mad.settings import MADSetting, all_settings
from grid.paths import data_root
from evals.mad.tasks import generate_split
from grid.cliargs import StrictParser, fail, int_range, parse

# Lazy here: concurrent (one code path)

SPLITS = ("train", "test")
FILES = ("inputs.npy", "targets.npy")
DEFAULT_ROOT = Path(data_root())  # <benchmark root>/data (grid/paths.py), whatever the working directory
_TMP_MARK = ".tmp-"


def setting_dir(setting: MADSetting, root: str | Path) -> Path:
    return Path(root) / setting.dir_name


def missing_files(path: Path) -> list[str]:
    return [f"{s}/{f}" for s in SPLITS for f in FILES if not (path / s / f).is_file()]


def generate_setting(setting: MADSetting) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both splits, train first, from ONE Generator(seed) shared by train and test (spec §1).

    Selective copying also draws blank positions from numpy's legacy RNG; mad-lab seeds the global
    one with np.random.seed(seed) before generating. A private RandomState(seed) yields the identical
    stream (same MT19937 seeding) without touching global state that other code may rely on.
    """
    rng = np.random.default_rng(setting.seed)
    legacy = np.random.RandomState(setting.seed)
    train = generate_split(setting, rng, setting.num_train_examples, True, legacy_rng=legacy)
    test = generate_split(setting, rng, setting.num_test_examples, False, legacy_rng=legacy)
    return {"train": train, "test": test}


def _write(path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    for split, arrays in splits.items():
        (path / split).mkdir(parents=True)
        for name, arr in zip(FILES, arrays):
            with open(path / split / name, "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr, dtype=np.int64))
                fh.flush()
                os.fsync(fh.fileno())  # data on disk before the rename makes it visible


def _tmp_prefix(final: Path) -> str:
    return f".{final.name}{_TMP_MARK}"


def _clean_stale_tmp(final: Path) -> None:
    """Remove temp dirs of this setting left by dead processes on this host (a killed generation).

    Temp names carry host and pid; dirs of live or foreign-host processes are left alone (ignored).
    """
    host = socket.gethostname()
    for tmp in final.parent.glob(_tmp_prefix(final) + "*"):
        try:
            tmp_host, pid_s, _ = tmp.name[len(_tmp_prefix(final)):].rsplit("-", 2)
            pid = int(pid_s)
        except ValueError:
            continue
        if tmp_host != host or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, owned by someone else


def ensure_data(setting: MADSetting, root: str | Path = DEFAULT_ROOT) -> Path:
    """Path of the setting's data directory, generating it only if it does not exist yet."""
    final = setting_dir(setting, root)
    if final.exists():
        missing = missing_files(final)
        if missing:
            # never written by us (we rename complete dirs only): do not guess, do not delete data
            raise FileExistsError(f"{final} exists but is incomplete (missing {', '.join(missing)}); "
                                  "remove it to regenerate")
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent,
                                prefix=f"{_tmp_prefix(final)}{socket.gethostname()}-{os.getpid()}-"))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the final dir should be readable like any other
        _write(tmp, generate_setting(setting))
        try:
            os.rename(tmp, final)  # atomic on one filesystem; fails if `final` appeared meanwhile
        except OSError:
            if final.exists() and not missing_files(final):
                return final  # a concurrent generator won the race; its data are identical
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_split(setting: MADSetting, root: str | Path = DEFAULT_ROOT, split: str = "train",
               mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of one split, as stored (no dtype conversion)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed: use one of {SPLITS}")
    path = setting_dir(setting, root) / split
    if not (path / FILES[0]).is_file() or not (path / FILES[1]).is_file():
        raise FileNotFoundError(f"no {split} data for {setting.dir_name} under {root}; "
                                "run `python -m evals.mad.data generate` or call ensure_data()")
    mode = "r" if mmap else None
    return np.load(path / FILES[0], mmap_mode=mode), np.load(path / FILES[1], mmap_mode=mode)


def _ensure_timed(args) -> tuple[MADSetting, bool, float]:
    setting, root = args
    t0 = time.perf_counter()
    existed = setting_dir(setting, root).exists()
    ensure_data(setting, root)
    return setting, existed, time.perf_counter() - t0


def ensure_all(settings: list[MADSetting], root: str | Path = DEFAULT_ROOT, jobs: int = 1, log=print) -> None:
    """Make sure every setting's data exists; `jobs` > 1 generates settings in parallel processes
    (each setting still uses its own single RNG stream, so the output is identical)."""
    todo = [(s, root) for s in settings]
    if jobs > 1 and sum(not setting_dir(s, root).exists() for s in settings) > 1:
        from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = pool.map(_ensure_timed, todo)
            for i, (s, existed, dt) in enumerate(results, 1):
                log(f"[{i}/{len(settings)}] {s.code:<2} {s.setting_id:<24} {s.dir_name}: "
                    + ("exists" if existed else f"generated in {dt:.1f}s"))
        return
    for i, item in enumerate(todo, 1):
        s, existed, dt = _ensure_timed(item)
        log(f"[{i}/{len(settings)}] {s.code:<2} {s.setting_id:<24} {s.dir_name}: "
            + ("exists" if existed else f"generated in {dt:.1f}s"))


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = StrictParser(prog="python -m evals.mad.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate missing MAD setting directories")
    gen.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                     help="task names or codes (CR NR FR M C SC); default all")
    gen.add_argument("--settings", choices=("baseline", "all"), default="all")
    gen.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    gen.add_argument("--jobs", type=int_range(1), default=1, help="settings generated in parallel processes")
    args = parse(parser, argv)
    if isinstance(args, int):
        return args

    try:
        settings = all_settings(args.tasks, which=args.settings)
    except (ValueError, OSError) as exc:
        return fail(str(exc))
    ensure_all(settings, args.root, max(1, args.jobs), log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
