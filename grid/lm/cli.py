"""`python -m grid plan|run|submit`: the LM suite's commands for its grids (configs/grids/*.yaml) on Ray.

    plan GRID.yaml      the expanded trial table (nothing runs, data need not be prepared)
    run GRID.yaml       prepare the data, run what the store lacks on the embedded local Ray
                        (or --address), print the grid's leaderboard
    submit GRID.yaml --address http://HEAD:8265
                        validate, then submit `python -m grid run GRID.yaml ...` as a Ray Job

Bad grid files and flags exit with status 2 and one line naming the field, the value and what is
allowed (grid/cliargs.py), before any data is prepared or any trial starts; output paths are
checked first too (grid/run/outputs.py), and a mixer that cannot run on this machine is refused
before Ray starts (grid/run/preflight.py).
The driver imports neither fla nor triton; torch only to count local GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from grid import paths
from grid.analysis.leaderboard import lm_leaderboard, to_text
from grid.check.gate import CACHE_ENV, POLICIES, POLICY_ENV
from grid.cliargs import StrictParser, fail, int_range, parse
from grid.data.cache import cache_dir, ensure_local
from grid.env.profiles import ProfileError, load_profile
from grid.keys import device_class
from grid.lm.mfu import peak_bf16_flops
from grid.results.store import ResultsStore
from grid.run.outputs import OutputPathError, check_output_dir
from grid.run.preflight import backend_problems
from grid.run.reach import cluster_problems
from grid.run.runner import run_trials
from grid.textable import table

# Lazy here: ray, torch (heavy: never at import time on the driver); grid.lm.gridspec, grid.lm.prepare_grid (they
#   import torch or Ray)

REPO = paths.REPO
# what a Ray Job's working_dir upload leaves out (runtime_env "excludes", gitignore syntax)
SUBMIT_EXCLUDES = ["benchmark/", ".git", ".gpu-bundle*", ".whl/", "*.bundle", "*.tar.gz", ".venv/", "build/",
                   "__pycache__/", "*.egg-info/", ".pytest_cache/"]


def _load(path: str):
    """load_grid, with unreadable files also reported as GridError (exit 2)."""
    from grid.lm.gridspec import GridError, load_grid  # noqa: PLC0415

    try:
        return load_grid(path)
    except OSError as exc:
        raise GridError(f"cannot read grid file {path}: {exc}") from None


def _human(n: float | None) -> str:
    """Counts (parameters, state, tokens) as 214K / 20.5M / 1.3B / 300B."""
    if n is None:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def _stored(results: str) -> tuple[set[str], set[str]]:
    """(trial_keys with an ok row anywhere in the store, trial_keys whose file is unreadable).

    Unreadable files are skipped and named (grid/results/scan.py); dedup is by trial_key across
    grids, as `run` does it."""

    if not Path(results).is_dir():
        return set(), set()
    store = ResultsStore(results)
    return store.ok_keys(), store.unreadable_keys()


# -------------------------------------------------------------------------------------------- plan

def plan_main(argv: list[str] | None = None) -> int:
    p = StrictParser(prog="python -m grid plan", description="Print the expanded trial table of an "
                     "LM grid (nothing is run or prepared).")
    p.add_argument("grid", help="grid file, e.g. configs/grids/quickstart.yaml")
    p.add_argument("--results", default=paths.store(), help="results store (marks trials already done)")
    p.add_argument("--data-dir", default=None, help="prepared data dir (default: the data spec's out_dir)")
    p.add_argument("--vocab-size", type=int_range(2), default=None, help="plan with this vocabulary size instead of reading "
                   "it from the data (e.g. an hf tokenizer on an offline machine); trial keys are then provisional")
    p.add_argument("--n-gpu", type=int_range(0), default=None, help="plan for this many GPUs (default: the GPUs visible "
                   "here; trial keys include the device class, so a CPU plan and a GPU plan differ)")
    args = parse(p, argv)
    if isinstance(args, int):
        return args
    from grid.lm.gridspec import ASSUMED_MFU, PLAN_GPU, estimate, expand  # noqa: PLC0415
    from grid.lm.prepare_grid import data_identity  # noqa: PLC0415

    try:
        spec = _load(args.grid)
        ident = data_identity(spec, args.grid, args.data_dir, vocab_size=args.vocab_size)
        n_gpu = _visible_gpus() if args.n_gpu is None else args.n_gpu
        trials = expand(spec, ident.vocab_size, ident.data_hash, device=device_class(n_gpu))
    except ValueError as exc:  # GridError, and ConfigError from building a layer at some scale
        return fail(str(exc))
    done, unreadable = _stored(args.results)
    rows, tot_flops, tot_h = [], 0.0, 0.0
    for i, t in enumerate(trials, 1):
        est = estimate(t)
        tot_flops += est["train_flops"]
        tot_h += est["gpu_hours"]
        c = t.counts
        eff = c.get("effective_ratio", "?")
        hyb = t.hybrid if eff == t.hybrid else f"{t.hybrid} (eff. {eff})"
        attn = ",".join(map(str, c.get("attention_layers") or [])) or "-"
        rows.append([i, t.arch, t.mixer, hyb, attn, t.scale, t.seed, _human(c.get("non_embedding_params")),
                     _human(c.get("state_size")), _human(t.train["tokens"]), t.train["steps"],
                     f"{est['train_flops']:.3g}", f"{est['gpu_hours']:.3g}", t.trial_key,
                     "ok" if t.trial_key in done else "unreadable" if t.trial_key in unreadable else "-"])
    print(f"grid {spec.name}: {spec.description}".rstrip(": "))
    print(f"data: {ident.name} ({ident.spec_path}), vocab {ident.vocab_size}, hash {ident.data_hash} [{ident.note}]")
    r = spec.recipe
    print(f"recipe: AdamW betas {tuple(r.betas)} wd {r.weight_decay}, lr {r.lr or 'per scale'}, warmup "
          f"{r.warmup_steps if r.warmup_steps is not None else 'per scale'}, cosine to {r.min_lr_ratio:g} x peak, "
          f"clip {r.grad_clip}, {r.precision}, eval every {r.eval_every} steps ({r.eval_batches} batches), "
          f"checkpoint every {r.ckpt_every}; env profile {spec.env_profile or '-'}")
    print()
    print(table(["#", "arch", "mixer", "hybrid", "attn layers", "scale", "seed", "non-emb params", "state",
                 "tokens", "steps", "train FLOPs", "GPU-h", "trial_key", "stored"], rows))
    print()
    print(f"{len(trials)} trial(s), {sum(t.trial_key in done for t in trials)} already ok in {args.results}; "
          f"total {tot_flops:.3g} training FLOPs = {tot_h:.3g} GPU-hours at an assumed MFU of "
          f"{ASSUMED_MFU:.0%} of {peak_bf16_flops(PLAN_GPU) / 1e12:.0f} TFLOP/s (H100/H200 SXM dense bf16)")
    if unreadable & {t.trial_key for t in trials}:
        print(f"{len(unreadable & {t.trial_key for t in trials})} trial(s) have an unreadable file in {args.results} "
              "(named above): `run` runs them again; `python -m grid results check` lists and quarantines them")
    problems = backend_problems(t.model for t in trials)
    if problems:
        print(f"warning: cannot run on this machine ({'GPU' if _visible_gpus() else 'CPU'}): "
              + "; ".join(problems) + " (`run` here refuses them before Ray starts; a host with the backend runs "
              "them)", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------- run

def _visible_gpus() -> int:
    import torch  # noqa: PLC0415  (CPU-safe; fla/triton are never imported by the driver)

    return torch.cuda.device_count()


def _gpu_memory_gib() -> float | None:
    """Memory of the smallest visible GPU (the resources policy packs tiny trials by it); None without one."""
    import torch  # noqa: PLC0415

    n = torch.cuda.device_count()
    return min(torch.cuda.get_device_properties(i).total_memory for i in range(n)) / 2**30 if n else None


def print_leaderboard(results: str, grid: str, keys: set[str] | None = None) -> None:
    """The grid's leaderboard (grid/analysis/leaderboard.py)."""

    if keys is not None:  # the grid's trials wherever they are stored (dedup is by trial_key across grids)
        df = ResultsStore(results).query("SELECT * FROM results WHERE suite = 'lm' AND list_contains(?, trial_key)",
                                         [sorted(keys)])
    else:
        df = ResultsStore(results).query("SELECT * FROM results WHERE suite = 'lm' AND grid = ?", [grid])
    print(f"\nleaderboard of grid {grid} ({len(df)} trial(s) in {results}):\n")
    if not len(df):
        print("(no results)")
        return

    for scale, tab in lm_leaderboard(df).items():
        print(f"scale {scale}: {int((tab['status'] == 'ok').sum())} ok of {len(tab)}\n{to_text(tab)}\n")


def _run_parser() -> argparse.ArgumentParser:
    p = StrictParser(prog="python -m grid run", description="Prepare the data of an LM grid, run its "
                     "trials that the store lacks on Ray, print its leaderboard.")
    p.add_argument("grid", help="grid file, e.g. configs/grids/quickstart.yaml")
    p.add_argument("--results", default=paths.store(), help="parquet results store")
    p.add_argument("--force", action="store_true", help="re-run trials that already have an ok row (the old row "
                   "is kept in the store's history)")
    p.add_argument("--n-gpu", type=int_range(0), default=None, help="GPUs to use (default: all visible; 0 = CPU)")
    p.add_argument("--max-failures", type=int_range(-1), default=1,
                   help="retries per trial (from its last checkpoint; -1 = no limit)")
    p.add_argument("--ray-tmp-path", default=paths.ray_tmp(), help="Ray Tune experiment storage")
    p.add_argument("--data-dir", default=None, help="where the token shards live (default: the data spec's "
                   "out_dir); on a multi-node cluster a path every node can read")
    p.add_argument("--address", default=None, help="an existing Ray cluster (e.g. auto inside a Ray Job)")
    p.add_argument("--num-cpus", type=int_range(1), default=None, help="CPUs of the embedded Ray (default: all)")
    p.add_argument("--parity", choices=POLICIES, default="fallback",
                   help="the parity gate (grid/check/gate.py): a fused mixer trains only after it matched its "
                        "reference at the trial's shape and dtype on this host (cached per host and versions). "
                        "fallback (default): train the reference backend instead; stop: the trial stops; off: no "
                        "check. Rows record parity_gate and parity_detail")
    return p


def parity_env(policy: str) -> dict[str, str]:
    """The parity-gate policy (and cache location, when set) for the Ray workers."""
    env = {POLICY_ENV: policy}
    if CACHE_ENV in os.environ:
        env[CACHE_ENV] = os.environ[CACHE_ENV]
    return env


def run_main(argv: list[str] | None = None) -> int:
    args = parse(_run_parser(), argv)
    if isinstance(args, int):
        return args
    from grid.lm.gridspec import GridError, expand  # noqa: PLC0415
    from grid.lm.prepare_grid import lm_trial_specs, prepare_data  # noqa: PLC0415

    for name in ("results", "ray_tmp_path", "data_dir"):  # `~` from a submitted job means the cluster's home
        if getattr(args, name) is not None:
            setattr(args, name, os.path.expanduser(getattr(args, name)))
    # on a cluster without a shared --data-dir, every node prepares the shards itself (grid/data/cache.py):
    # the driver's copy lives in its node's cache, never in the job's temporary working dir
    local_data = args.address is not None and args.data_dir is None
    try:
        spec = _load(args.grid)
        if local_data:
            from grid.lm.prepare_grid import grid_data_spec  # noqa: PLC0415

            args.data_dir = str(cache_dir(grid_data_spec(spec, args.grid)))
        # every output path before any work: a store that is a file must not be found after training
        check_output_dir("--results", args.results)
        check_output_dir("--ray-tmp-path", args.ray_tmp_path)
        if args.data_dir is not None:
            check_output_dir("--data-dir", args.data_dir if not local_data else Path(args.data_dir).parent)
        # the model of every trial is built (for counting) and its backend resolved before any data work
        from grid.lm.prepare_grid import data_identity  # noqa: PLC0415

        ident = data_identity(spec, args.grid, args.data_dir)
        planned = expand(spec, ident.vocab_size, ident.data_hash)
    except (GridError, OutputPathError) as exc:
        return fail(str(exc))
    except ValueError as exc:  # ConfigError from building a layer at some scale
        return fail(str(exc))
    if args.address is None:  # the embedded Ray runs the trials here: what cannot be built here never starts

        problems = backend_problems(t.model for t in planned)
        if problems:
            return fail(f"grid {spec.name}: cannot run on this machine: {'; '.join(problems)}")
    print(f"grid {spec.name}: preparing data (reused when up to date)", flush=True)
    try:
        if local_data:
            from grid.lm.prepare_grid import grid_data_spec  # noqa: PLC0415

            data_spec = grid_data_spec(spec, args.grid).hashed()
            manifest = ensure_local(data_spec, None, verbose=True)
        else:
            data_spec = None
            manifest = prepare_data(spec, args.grid, args.data_dir)
    except GridError as exc:
        return fail(str(exc))
    except (ValueError, RuntimeError, OSError) as exc:  # PrepareError, DataDirError, tokenizer errors, ...
        return fail(f"preparing the data of grid {spec.name}: {exc}")
    try:
        trials = expand(spec, int(manifest["tokenizer"]["vocab_size"]), manifest["content_hash"])
    except ValueError as exc:  # GridError, and ConfigError from building a layer at some scale
        return fail(str(exc))

    import ray  # noqa: PLC0415

    started_ray = False
    if args.address is not None:
        if not ray.is_initialized():
            ray.init(address=args.address, log_to_driver=False)
            started_ray = True
        n_gpu = int(ray.cluster_resources().get("GPU", 0)) if args.n_gpu is None else args.n_gpu
    else:
        visible = _visible_gpus()
        n_gpu = visible if args.n_gpu is None else min(args.n_gpu, visible)
        if args.n_gpu is not None and args.n_gpu > visible:
            print(f"note: --n-gpu {args.n_gpu} but {visible} GPU(s) visible: using {n_gpu}", file=sys.stderr)
    try:
        try:
            specs, max_concurrent, notes = lm_trial_specs(trials, spec, manifest["dir"], n_gpu=n_gpu,
                                                          gpu_memory_gib=None if args.address else _gpu_memory_gib(),
                                                          data_spec=data_spec)
        except GridError as exc:
            return fail(str(exc))
        if args.address is not None:  # every node reaches what the grid writes (and a shared --data-dir)

            shared = {"--results": args.results, "--ray-tmp-path": args.ray_tmp_path}
            if not local_data and args.data_dir is not None:
                shared["--data-dir"] = args.data_dir
            problem = cluster_problems(shared)
            if problem:
                return fail(f"grid {spec.name}: {problem}")
            if local_data:
                print(f"note: no shared --data-dir: each node prepares the data in its cache ({manifest['dir']} "
                      "here) and checks its content_hash", file=sys.stderr)
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        print(f"grid {spec.name}: {len(specs)} trial(s) on {'CPU' if n_gpu == 0 else f'{n_gpu} GPU(s)'}; "
              f"results in {args.results}", flush=True)

        summary = run_trials(specs, store=ResultsStore(args.results), experiment=f"lm-{spec.name}",
                             storage_dir=str(Path(args.ray_tmp_path).resolve()), address=args.address,
                             num_gpus=None if args.address else n_gpu,
                             num_cpus=None if args.address else (args.num_cpus or os.cpu_count() or 1),
                             max_failures=args.max_failures, force=args.force, max_concurrent=max_concurrent,
                             ray_init_kwargs={"runtime_env": {"env_vars": parity_env(args.parity)}})
    finally:
        if started_ray:
            ray.shutdown()
    print(f"grid {spec.name}: {summary.n_total} trial(s): {summary.n_skipped} already in the store, {summary.n_ok} "
          f"ok, {summary.n_other} diverged/other, {summary.n_failed} failed, {len(summary.missing)} not run")
    print_leaderboard(args.results, spec.name, {t.trial_key for t in specs})
    return 0 if summary.n_failed == 0 and not summary.missing else 1


# ------------------------------------------------------------------------------------------ submit

def _rel_to_repo(path: str) -> str:
    p = Path(path).resolve()
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        raise ValueError(f"{path} is outside the repository {REPO}: the Ray Job uploads the repository as its "
                         "working_dir, so the grid file must live inside it (e.g. configs/grids/)") from None


CLUSTER_RESULTS = "~/lingrid/results"  # a job's defaults: `~` is expanded on the cluster by `grid run`
CLUSTER_RAY_TMP = "~/lingrid/ray"


def _submit_parser() -> argparse.ArgumentParser:
    p = StrictParser(prog="python -m grid submit", description="Validate an LM grid and submit "
                     "`python -m grid run GRID ...` to a Ray cluster through the Ray Jobs API.")
    p.add_argument("grid")
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://HEAD:8265 "
                   "(token auth: RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    p.add_argument("--env-profile", default=None, help="configs/env/<NAME>.txt for the job's runtime_env "
                   "(default: the grid's env_profile)")
    p.add_argument("--results", default=CLUSTER_RESULTS, help="results store on the cluster: an absolute path (or "
                   f"~/...) that every node mounts (default {CLUSTER_RESULTS}, checked from every node)")
    p.add_argument("--ray-tmp-path", default=CLUSTER_RAY_TMP, help="Tune experiment storage on the cluster, on "
                   f"storage every node mounts (default {CLUSTER_RAY_TMP}, checked from every node)")
    p.add_argument("--data-dir", default=None, help="token shards on storage every node mounts (default: each node "
                   "prepares the data itself from the grid's data spec and checks its content hash)")
    p.add_argument("--n-gpu", type=int_range(0), default=None)
    p.add_argument("--max-failures", type=int_range(-1), default=1)
    p.add_argument("--force", action="store_true")
    p.add_argument("--submission-id", default=None)
    return p


def build_job(args) -> tuple[Any, str, dict[str, Any], Any]:
    """(grid spec, entrypoint, runtime_env, env profile or None) of a submission; GridError/ProfileError/
    ValueError (one line each) for anything that would fail on the cluster."""
    from grid.lm.gridspec import GridError, expand  # noqa: PLC0415
    from grid.lm.prepare_grid import grid_data_spec  # noqa: PLC0415

    spec = _load(args.grid)  # validates fields, scales and the grid's own env profile
    dspec = grid_data_spec(spec, args.grid)
    vocab = {"bytes": 257, "bpe": dspec.tokenizer.vocab_size}.get(dspec.tokenizer.kind, 32000)  # shape check only
    expand(spec, int(vocab), "validate", count=True)  # hybrids realisable at every scale, mixers known, layers build
    name = args.env_profile or spec.env_profile
    if args.env_profile and spec.env_profile and args.env_profile != spec.env_profile:
        raise GridError(f"--env-profile {args.env_profile!r} differs from the grid's env_profile "
                        f"{spec.env_profile!r}, which every trial checks (and its trial_key covers); "
                        "edit the grid's env_profile instead")
    profile = load_profile(name) if name else None
    if profile is not None:
        profile.check_architectures(a.mixer for a in spec.architectures)
    rel_grid = _rel_to_repo(args.grid)
    for flag, val in (("--results", args.results), ("--ray-tmp-path", args.ray_tmp_path),
                      ("--data-dir", args.data_dir)):
        if val is not None and not (val.startswith("~") or Path(val).is_absolute()):
            raise ValueError(f"{flag} {val}: give an absolute path (or ~/...) on storage every node mounts; a relative "
                             "path would land in the job's temporary working dir, which Ray deletes")
    cmd = ["python", "-m", "grid", "run", rel_grid, "--address", "auto", "--max-failures", str(args.max_failures),
           "--results", args.results, "--ray-tmp-path", args.ray_tmp_path]
    for flag, val in (("--data-dir", args.data_dir), ("--n-gpu", args.n_gpu)):
        if val is not None:
            cmd += [flag, str(val)]
    if args.force:
        cmd.append("--force")
    runtime_env: dict[str, Any] = {"working_dir": str(REPO), "excludes": list(SUBMIT_EXCLUDES)}
    if profile is not None:
        runtime_env.update(profile.runtime_env())
    return spec, shlex.join(cmd), runtime_env, profile


def submit_main(argv: list[str] | None = None) -> int:
    args = parse(_submit_parser(), argv)
    if isinstance(args, int):
        return args
    from grid.lm.gridspec import GridError  # noqa: PLC0415

    try:
        spec, entrypoint, runtime_env, profile = build_job(args)
    except (GridError, ProfileError, ValueError) as exc:
        return fail(str(exc))
    if profile is None:
        print("note: no environment profile: the job uses the cluster's installed packages unchecked",
              file=sys.stderr)
    try:
        from ray.job_submission import JobSubmissionClient  # noqa: PLC0415
    except ImportError as exc:
        return fail(f"the Ray Jobs client needs ray[default]: pip install -e '.[cluster]' ({exc})")
    try:
        client = JobSubmissionClient(args.address)
        sid = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=args.submission_id,
                                metadata={"lingrid_grid": spec.name})
    except Exception as exc:  # noqa: BLE001 - connection, auth, runtime_env errors
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())
        hint = ""
        if isinstance(exc, (ImportError, RuntimeError)) and "default" in msg.lower():
            hint = " (the Ray Jobs client needs ray[default]: pip install -e '.[cluster]')"
        if any(w in msg.lower() for w in ("auth", "token", "401", "403")):
            hint = " (token auth: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH; `ray get-auth-token` on the head prints it)"
        return fail(f"submitting to {args.address} failed: {msg[:500]}{hint}", 1)
    print(f"submitted grid {spec.name} as Ray job {sid} to {args.address}")
    print(f"  entrypoint: {entrypoint}")
    print(f"  runtime_env: {json.dumps({k: v for k, v in runtime_env.items() if k != 'excludes'})}")
    print(f"follow it:  ray job logs --address {args.address} --follow {sid}")
    print(f"status:     ray job status --address {args.address} {sid}")
    print(f"stop it:    ray job stop --address {args.address} {sid}")
    return 0


__all__ = ["plan_main", "print_leaderboard", "run_main", "submit_main"]
