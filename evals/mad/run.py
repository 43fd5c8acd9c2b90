"""The MAD suite on the Ray runner: `python -m evals.mad.mad_eval_<arch> [flags]`.

Flags keep the original benchmark's names (--model-id --n-gpu --n-tasks-gpu --ray-tmp-path
--data-path --num-workers --log-parameters) plus --tasks, --settings, --epochs, --results,
--address, --force, --backend, --autotune, --cuda-graph, --compile, --pack, --batch. The command generates
missing data, runs every (setting, lr, wd) trial that has no ok row in the results store yet, and
ends by printing the MAD table.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from evals.mad.arch import arch_entry, arch_model_config, arch_names
from evals.mad.backbones import build_backbone
from evals.mad.batched import batchable
from evals.mad.data import ensure_all
from evals.mad.protocol import MADRunConfig
from evals.mad.protocols import DEFAULT_PROTOCOL, PROTOCOLS
from evals.mad.scoring import by_protocol, mad_tables
from evals.mad.settings import all_settings
from evals.mad.suite import NAME, RUNTIME_FIELDS, TRAINABLE
from grid import paths
from grid.check.gate import CACHE_ENV, POLICIES, POLICY_ENV
from grid.cliargs import StrictParser, fail, float_range, int_range, non_empty, parse
from grid.keys import device_class
from grid.models.stack import build_for_counting
from grid.results.store import ResultsStore
from grid.run.outputs import OutputPathError, check_output_dir
from grid.run.pack import make_pack
from grid.run.preflight import backend_problems
from grid.run.reach import cluster_problems
from grid.run.resources import trial_resources
from grid.run.runner import run_trials
from grid.run.spec import Work, make_trial
from grid.textable import table

# Lazy here: ray, torch (heavy: never at import time on the driver)

LRS = (1e-4, 5e-4, 1e-3)
WDS = (0.0, 0.1)


def build_parser(default_arch: str | None) -> argparse.ArgumentParser:
    description = "Run the MAD suite for one architecture on Ray and print its MAD table."
    if default_arch is not None:
        description += f" Architecture {default_arch!r}: {arch_entry(default_arch)['source']}"
    p = StrictParser(prog=f"python -m evals.mad.mad_eval_{(default_arch or 'ARCH').replace('-', '_')}",
                     description=description)
    p.add_argument("--arch", default=default_arch, required=default_arch is None,
                   help="architecture name in configs/mad/architectures.yaml")
    p.add_argument("--model-id", type=non_empty("label"), default=None, help="label in tables (default: the arch name; no '_')")
    p.add_argument("--n-gpu", type=int_range(0), default=1, help="GPUs to use (0 or no GPU present: CPU)")
    p.add_argument("--n-tasks-gpu", type=int_range(1), default=2, help="runs sharing one GPU (each gets 1/k of it)")
    p.add_argument("--ray-tmp-path", default=paths.ray_tmp(), help="Ray Tune experiment storage")
    p.add_argument("--data-path", default=paths.data_root(), help="MAD data root (mad-lab's on-disk format)")
    p.add_argument("--num-workers", type=int_range(0), default=2, help="CPUs per run (and data-generation processes)")
    p.add_argument("--log-parameters", action="store_true", help="print parameter counts per task and exit")
    p.add_argument("--tasks", nargs="+", default=None, help="task names or codes (CR NR FR M C SC); default all")
    p.add_argument("--settings", choices=("baseline", "all"), default="all")
    p.add_argument("--only", nargs="+", default=None, metavar="SETTING",
                   help="only these settings of --tasks, by the id the results use (baseline, seq_len=1024, ...)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default=DEFAULT_PROTOCOL,
                   help="madlab (default): what mad-lab's code executes (constant lr, its init, its AutoEncoder); "
                        "cosine: mad-lab as its config describes it (lr cosine per epoch, the project's init). "
                        "Part of every trial key and row; tables never mix protocols (docs/mad.md)")
    p.add_argument("--epochs", type=int_range(1), default=200, help="recorded; tables never mix protocols")
    p.add_argument("--max-train-examples", type=int_range(1), default=None,
                   help="smoke runs on a CPU: train on the first N examples of each setting (recorded as a "
                        "separate protocol; never mixed with full runs in tables)")
    p.add_argument("--lrs", type=float_range(0, lo_open=True), nargs="+", default=list(LRS))
    p.add_argument("--wds", type=float_range(0), nargs="+", default=list(WDS))
    p.add_argument("--results", default=paths.store(), help="parquet results store (default: $LINGRID_STORE or "
                   "<repository>/benchmark/results)")
    p.add_argument("--address", default=None, help="an existing Ray cluster (e.g. auto or ray://...)")
    p.add_argument("--backend", choices=("auto", "fused", "reference"), default="auto")
    p.add_argument("--autotune", choices=("first", "full"), default="full",
                   help="fla kernel configs: full (default) = Triton times every candidate once per kernel and "
                        "shape (minutes in a fresh worker; fla caches the choice on disk for later workers); "
                        "first = the first config that compiles (results do not depend on it, but on an H100 "
                        "gla's chunk_gla_bwd_kernel_dv took 1.43 ms per MAD step with it and 0.11 ms tuned: "
                        "docs/gpu.md). Recorded in every row")
    p.add_argument("--cuda-graph", choices=("on", "off"), default="on",
                   help="on (default): after 3 eager warm-up steps, each GPU training step is replayed from a captured "
                        "CUDA graph (same kernels; removes the Python launch cost that bounds MAD's small models); "
                        "CPU runs ignore it. Rows record the replays (cuda_graph_replays) and any fallback")
    p.add_argument("--compile", choices=("on", "off"), default="off",
                   help="on: torch.compile each backbone on GPU, so that Inductor fuses the small elementwise kernels "
                        "around the mixers' fused kernels (inside the CUDA graph too); costs a compile per shape "
                        "in each worker. CPU runs ignore it. Rows record `compiled`")
    p.add_argument("--pack", default="auto", type=_pack_arg,
                   help="runs per Ray trial, trained at once by threads of one process on their own CUDA streams "
                        "(processes that share a GPU are time-sliced, threads overlap their kernels). auto "
                        "(default): the lr x wd runs of one setting together on GPU, 1 on CPU. Each run still gets "
                        "its own row; --n-tasks-gpu counts these trials per GPU")
    p.add_argument("--batch", choices=("on", "off"), default="off",
                   help="off (default: batched is not faster on every task, docs/batched.md): every architecture "
                        "runs as --pack says. on: the lr x wd runs of a setting train as ONE model with member-stacked weights "
                        "(evals/mad/batched.py: one kernel launch per layer for all of them, each run still gets its "
                        "own row and key, exec_path=batched) where the architecture's mixer can be stacked "
                        "(grid/models/stacked.py: STACKABLE); other architectures run as --pack says. A number for "
                        "--pack caps the runs per batched model. On CPU (reference backend) a batched run equals its solo run bit "
                        "for bit; on an H200 its losses matched solo runs within noise, 3x faster on memorization, "
                        "0.8-1.1x on in-context recall")
    p.add_argument("--parity", choices=POLICIES, default="fallback",
                   help="the parity gate (grid/check/gate.py): before a run trains a fused mixer, the mixer must match "
                        "its reference at the run's shape and dtype on this host (checked once per host and package "
                        "versions, then cached). fallback (default): a failing mixer trains the reference backend; "
                        "stop: the run stops; off: no check. Rows record parity_gate and parity_detail")
    p.add_argument("--force", action="store_true", help="re-run trials that already have an ok row")
    p.add_argument("--max-failures", type=int_range(-1), default=1, help="retries per trial (-1 = no limit)")
    return p


def _pack_arg(value: str) -> str | int:
    if value == "auto":
        return value
    try:
        return int_range(1)(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--pack must be 'auto' or an integer >= 1, got {value!r}") from None


def pack_size(args) -> int:
    if args.pack == "auto":
        return len(args.lrs) * len(args.wds) if args.gpus_found > 0 else 1
    return int(args.pack)


GROUP_FN = "evals.mad.batched:run_mad_group"  # trains a batched group's runs as one stacked model


def pack_by_setting(trials: list, size: int, resources, retries: int = 0, group: str | None = None) -> list:
    """Packs of up to `size` runs of one setting (same data, same batch order), in the given order;
    with `group`, each pack's runs train through that group function (a batched model)."""

    if size <= 1 and group is None:
        return list(trials)
    groups: dict[tuple, list] = {}
    for t in trials:
        groups.setdefault((t.columns["task"], t.columns["setting"]), []).append(t)
    return [make_pack(g[i:i + size], resources=resources, retries=retries, group=group)
            for g in groups.values() for i in range(0, len(g), max(size, 1))]


def batch_or_pack(trials: list, args, resources, retries: int = 0) -> list:
    """Trials as they go to Ray: batched groups (--batch on, where the mixer can be stacked) of up to
    all runs of a setting (or --pack N), and packs (--pack) of the rest, settings in the given order."""

    out, size = [], pack_size(args)
    cap = int(args.pack) if args.pack != "auto" else len(args.lrs) * len(args.wds)
    for i, t in enumerate(trials):
        first_of_setting = i == 0 or _setting(trials[i - 1]) != _setting(t)
        if not first_of_setting:
            continue
        runs = [u for u in trials if _setting(u) == _setting(t)]
        if args.batch == "on" and batchable(MADRunConfig.model_validate(t.config), args.gpus_found)[0]:
            out += pack_by_setting(runs, cap, resources, retries, group=GROUP_FN)
        else:
            out += pack_by_setting(runs, size, resources, retries)
    return out


def _setting(trial) -> tuple:
    return trial.columns["task"], trial.columns["setting"]


def heaviest_first(settings: list) -> list:
    """Settings by training tokens per epoch, most first (stable: the spec's order among equals).
    Longest first keeps the suite's end from being one long trial alone on a GPU while the others
    idle; at T >= 256 a step's GPU time grows with its tokens (docs/gpu.md, session 7)."""
    return sorted(settings, key=lambda s: -s.num_train_examples * s.seq_len)


def run_work(setting, cfg):
    """Planned steps and tokens of one MAD run (all epochs: early stopping can only shorten it)."""

    n = setting.num_train_examples if cfg.max_train_examples is None else min(setting.num_train_examples,
                                                                               cfg.max_train_examples)
    return Work(steps=cfg.epochs * math.ceil(n / cfg.batch_size), tokens=cfg.epochs * n * setting.seq_len,
                epochs=cfg.epochs, may_stop_early=True)


def make_trials(args, settings) -> list:
    """One TrialSpec per (setting, lr, wd). The hashed block is the run's MADRunConfig without the runtime
    fields: it holds the model as it will be built (resolved from configs/mad/architectures.yaml), the
    device class the run gets (cpu | cuda) and `compile` only where it takes effect (a GPU run that is
    not batched): grid/keys.py."""

    resources = trial_resources(args.gpus_found, args.n_tasks_gpu, cpus_per_trial=1)
    device = device_class(resources.gpu)
    trials = []
    for s in settings:
        base = MADRunConfig(setting=s.model_dump(), arch=args.arch, backend=args.backend, protocol=args.protocol,
                            model_id=args.model_id, epochs=args.epochs, max_train_examples=args.max_train_examples,
                            data_root=str(Path(args.data_path).resolve()), num_workers=args.num_workers,
                            cuda_graph=args.cuda_graph == "on", device=device)
        batched = args.batch == "on" and batchable(base, args.gpus_found)[0]  # batched models are not compiled
        resolved = base.resolve_model(s.seq_len).model_dump(mode="json")
        for lr in args.lrs:
            for wd in args.wds:
                cfg = base.model_copy(update={"lr": lr, "weight_decay": wd, "resolved_model": resolved,
                                              "compile": args.compile == "on" and device == "cuda" and not batched})
                trials.append(mad_trial(cfg, resources=resources, work=run_work(s, cfg)))
    return trials


def mad_trial(cfg, *, resources=None, work=None):
    """The TrialSpec of one MAD run (MADRunConfig `cfg`): its hashed block and runtime block, its columns."""

    config = cfg.model_dump(mode="json")
    s = cfg.mad_setting()
    hashed = {k: v for k, v in config.items() if k not in RUNTIME_FIELDS}
    return make_trial(hashed, runtime={k: config[k] for k in RUNTIME_FIELDS}, suite=NAME, grid=NAME,
                      trainable=TRAINABLE, resources=resources, work=work,
                      columns={"model_id": cfg.label(), "protocol": cfg.protocol, "mixer": cfg.model_cfg(s.seq_len).mixer,
                               "task": s.code, "setting": s.setting_id, "lr": cfg.lr, "wd": cfg.weight_decay,
                               "seed": cfg.seed, "epochs": cfg.epochs, "max_train_examples": cfg.max_train_examples or 0})


def log_parameters(args, settings) -> int:
    rows, seen = [], set()
    for s in settings:
        if (s.code, s.vocab_size, s.seq_len) in seen:
            continue
        seen.add((s.code, s.vocab_size, s.seq_len))
        cfg = arch_model_config(args.arch, s.vocab_size, s.seq_len, backend="reference")
        try:
            model = build_backbone(cfg, s.code, s.seq_len, args.protocol)
        except Exception:  # noqa: BLE001  fused-only mixer: count on the meta device

            model = build_for_counting(cfg)
        rows.append([s.code, s.vocab_size, s.seq_len, sum(p.numel() for p in model.parameters())])
    print(table(["task", "vocab", "seq_len", "params"], rows))
    return 0


def print_table(results: str, model_id: str, epochs: int, max_train_examples: int = 0,
                protocol: str | None = None) -> None:
    """The MAD table of this run's protocol for `model_id` (one table, never mixing protocols)."""

    df = ResultsStore(results).query("SELECT * FROM results WHERE suite = 'mad' AND model_id = ?", [model_id])
    parts = [(k, p) for k, p in by_protocol(df) if int(k["epochs"]) == epochs
             and int(k.get("max_train_examples", 0) or 0) == max_train_examples
             and (protocol is None or k["protocol"] == protocol)]
    if not parts:
        print(f"no MAD rows for model_id={model_id!r} protocol={protocol} epochs={epochs} in {results}")
        return
    print(mad_tables(parts, "MAD")[0])


def build_problem(args, settings) -> str | None:
    """Why the architecture's backbone cannot be built on this machine (deterministic: refused before Ray)."""

    s = settings[0]
    try:
        cfg = arch_model_config(args.arch, s.vocab_size, s.seq_len, backend=args.backend)
    except ValueError as exc:  # ConfigError / ValidationError from configs/mad/architectures.yaml
        return f"--arch {args.arch}: {' '.join(str(exc).split())}"
    problems = backend_problems([cfg])
    if not problems:
        return None
    where = f"{args.gpus_found} GPU(s)" if args.gpus_found else "CPU"
    return f"--arch {args.arch} cannot run here ({where}): {'; '.join(problems)}"


def worker_env(autotune: str, parity: str = "fallback") -> dict[str, str]:
    """Environment of the Ray workers: the autotune and parity-gate policies, and fla's switch for caching
    its tuned choices on disk when the caller set one (grid bench mad --warm turns it off for a crowded pass)."""
    env = {"LINGRID_AUTOTUNE": autotune, POLICY_ENV: parity}
    if CACHE_ENV in os.environ:
        env[CACHE_ENV] = os.environ[CACHE_ENV]
    if "FLA_CACHE_RESULTS" in os.environ:
        env["FLA_CACHE_RESULTS"] = os.environ["FLA_CACHE_RESULTS"]
    return env


def gpus_present() -> int:
    import torch  # noqa: PLC0415

    return torch.cuda.device_count()


def main(argv: list[str] | None = None, default_arch: str | None = None) -> int:
    args = parse(build_parser(default_arch), argv)
    if isinstance(args, int):
        return args

    if args.arch not in arch_names():
        return fail(f"--arch={args.arch!r} is not allowed; allowed: {', '.join(arch_names())}")
    args.model_id = args.model_id or args.arch.replace("_", "-")
    if "_" in args.model_id:
        return fail(f"--model-id={args.model_id!r} must not contain '_' (mad-lab's run names split on it)")
    try:
        settings = all_settings(args.tasks, which=args.settings)
    except (ValueError, OSError) as exc:
        return fail(str(exc))
    if args.only:
        known = {s.setting_id for s in settings}
        unknown = [x for x in args.only if x not in known]
        if unknown:
            return fail(f"--only {' '.join(unknown)}: no such setting among the {len(settings)} selected; "
                        f"their ids: {', '.join(sorted(known))}")
        settings = [s for s in settings if s.setting_id in args.only]
    if args.log_parameters:
        return log_parameters(args, settings)

    found = gpus_present() if args.address is None else args.n_gpu
    args.gpus_found = min(args.n_gpu, found) if args.address is None else args.n_gpu
    if args.address is None and args.n_gpu > found:
        print(f"note: --n-gpu {args.n_gpu} but {found} GPU(s) visible: using {args.gpus_found}"
              + (" (CPU run)" if found == 0 else ""), file=sys.stderr)

    try:  # every output path before any work (data generation included)
        for flag, path in (("--results", args.results), ("--ray-tmp-path", args.ray_tmp_path),
                           ("--data-path", args.data_path)):
            check_output_dir(flag, path)
    except OutputPathError as exc:
        return fail(str(exc))
    if args.address is None:  # trials run here: a backbone this machine cannot build never starts
        problem = build_problem(args, settings)
        if problem:
            return fail(problem)
    else:  # a cluster: every node must reach the store, the Tune storage and the MAD data (read by trials)
        import ray  # noqa: PLC0415

        if not ray.is_initialized():
            ray.init(address=args.address, log_to_driver=False)
        problem = cluster_problems({"--results": args.results, "--ray-tmp-path": args.ray_tmp_path,
                                    "--data-path": args.data_path})
        if problem:
            return fail(problem)

    print(f"MAD data in {args.data_path} ({len(settings)} settings)", flush=True)
    ensure_all(settings, args.data_path, jobs=max(1, args.num_workers), log=lambda m: print(m, flush=True))
    trials = make_trials(args, heaviest_first(settings))

    trials = batch_or_pack(trials, args, trial_resources(args.gpus_found, args.n_tasks_gpu, cpus_per_trial=1),
                           retries=max(args.max_failures, 0))
    if any(t.members for t in trials):
        batched = [t for t in trials if t.config.get("group")]
        if batched and args.compile == "on":
            print("note: --compile on does not apply to batched models (evals/mad/batched.py); --batch off "
                  "compiles every run", file=sys.stderr)
        print(f"{sum(len(t.members) or 1 for t in trials)} runs in {len(trials)} Ray trials: "
              f"{sum(len(t.members) for t in batched)} runs in {len(batched)} batched models (--batch), the rest "
              f"in packs of up to {pack_size(args)} (--pack); {args.n_tasks_gpu} trial(s) per GPU", flush=True)
    cpus = os.cpu_count() or 2
    summary = run_trials(trials, store=ResultsStore(args.results), experiment=f"mad-{args.model_id}",
                         storage_dir=str(Path(args.ray_tmp_path).resolve()), address=args.address,
                         num_gpus=None if args.address else args.gpus_found,
                         num_cpus=None if args.address else cpus,
                         max_failures=args.max_failures, force=args.force,
                         ray_init_kwargs={"runtime_env": {"env_vars": worker_env(args.autotune, args.parity)}})
    print(f"trials: {summary.n_total} total, {summary.n_skipped} already in the store, {summary.n_ok} ok, "
          f"{summary.n_failed} failed, {len(summary.missing)} not run")
    print_table(args.results, args.model_id, args.epochs, args.max_train_examples or 0, args.protocol)
    return 0 if summary.n_failed == 0 and not summary.missing else 1
