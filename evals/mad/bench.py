"""How MAD runs pack onto GPUs: `python -m grid bench mad [--arch gla] [--k 1 2 4 8] [--epochs 3] [--n-gpu 1]`.

For each k (runs sharing one GPU, `--n-tasks-gpu k`) this runs one setting per task (the six
baselines) x the six (lr, wd) pairs = 36 runs through the real runner with a fresh results
store, records the suite's wall time, per-run wall time and GPU utilisation (nvidia-smi sampled
every 0.5 s), and extrapolates the full 396-run, 200-epoch suite at each k:

    full = sum over the 66 settings of 6 x 200 x epoch_s(task) x batches(setting) / batches(baseline)
           / measured packing speed-up at k

where epoch_s(task) is the median over that task's six runs at the first k of training+evaluation time
per epoch (the median drops the run that paid the one-off kernel compile in a fresh worker), and
batches = ceil(train examples / 128) + ceil(test examples / 128). Cost per batch, not per token: at
MAD's width (128) a step is launch-bound; measured on an H100, 2-epoch gla runs of tasks with 32, 128
and 256 tokens per sequence (same example counts) took 2.2, 2.0-2.2 and 2.5 s per epoch. Early stopping
at accuracy 0.999 makes the real suite shorter, so the estimate is an upper bound for that reason.
With `--epochs 200` (the protocol) the runs stop early as the suite's would, and a second estimate
prices every setting at its task baseline's measured trial time (`full_suite_from_runs_s`);
`--settings all --only ID...` measures other settings, and `--setting-costs` feeds their measured
cost into that estimate.
A `--setting-costs` profile also prices the suite by GPU work (`gpu_work_s`: profiled GPU time per
step x every run's steps), and checks that model against the pass it came with (predicted GPU
seconds of the six baselines vs the pass's wall time).
`--from-json REPORT` recomputes the table from a saved report without running anything. `--warm`
compiles and autotunes every task's kernels in two untimed passes first (`warm_kernels`), so that no
timed run pays for Triton (without it, the first runs of each fresh worker do: see `--like`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from evals.mad.settings import all_settings
from grid.cliargs import StrictParser, int_range, parse
from grid.env import provenance
from grid.paths import data_root
from grid.results.store import ResultsStore

# Lazy here: evals.mad.run (they import torch or Ray); os (one code path)

class GPUSampler:
    """Mean GPU utilisation (%) per device from `nvidia-smi` while a block runs."""

    def __init__(self, interval_ms: int = 500):
        self.interval_ms, self.samples, self._stop = interval_ms, [], threading.Event()

    def __enter__(self):
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                vals = [tuple(float(x) for x in line.split(",")) for line in out.stdout.strip().splitlines()]
                if vals:
                    self.samples.append(vals)
            except (OSError, subprocess.SubprocessError, ValueError):
                return
            self._stop.wait(self.interval_ms / 1000)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=5)

    def mean_util(self) -> list[float]:
        if not self.samples:
            return []
        n = len(self.samples[0])
        return [sum(s[i][0] for s in self.samples if len(s) == n) / len(self.samples) for i in range(n)]

    def max_mem_mib(self) -> list[float]:
        if not self.samples:
            return []
        n = len(self.samples[0])
        return [max(s[i][1] for s in self.samples if len(s) == n) for i in range(n)]


RUN_COLUMNS = ["task", "setting", "lr", "wd", "status", "epochs_run", "wall_s", "train_wall_s", "gpu_index", "acc", "loss",
               "train_loss_last", "cuda_graph_replays", "cuda_graph_fallback", "error"]


def batches_per_epoch(s, batch_size: int = 128) -> int:
    return -(-s.num_train_examples // batch_size) + -(-s.num_test_examples // batch_size)


def full_suite_serial_s(epoch_s_by_task: dict[str, float], epochs: int = 200) -> float:
    """Seconds for all 66 settings x 6 (lr, wd) runs one after another, from per-task epoch times."""

    base = {s.code: s for s in all_settings(which="baseline")}
    return sum(6 * epochs * epoch_s_by_task.get(s.code, float("nan")) * batches_per_epoch(s)
               / batches_per_epoch(base[s.code]) for s in all_settings())


def full_suite_from_runs_s(runs: list[dict], k: int, pack: int, cost: dict[str, float] | None = None) -> float:
    """Seconds for all 66 settings on one GPU from full-protocol runs of the six baselines (early
    stopping included): a trial holds its GPU slot until its slowest run ends, k trials share the GPU,
    and every setting of a task costs what its baseline cost, scaled by its batches per epoch. The
    baselines' early stopping is applied to every setting: harder settings may stop later. `cost` maps
    "TASK setting_id" to a measured cost relative to the task's baseline (per epoch), replacing the
    batch count ratio for those settings (batches alone miss that longer sequences cost more per batch)."""

    by_task: dict[str, list[float]] = {}
    for r in runs:
        by_task.setdefault(r["task"], []).append(float(r["wall_s"]))
    # pack 1: each run is a trial; pack > 1: the task's runs in trials of `pack`, each as long as its slowest
    slot_s = {t: (sum(w) if pack == 1 else max(w) * -(-len(w) // pack)) for t, w in by_task.items()}
    base = {s.code: s for s in all_settings(which="baseline")}
    cost = cost or {}
    return sum(slot_s.get(s.code, float("nan"))
               * cost.get(f"{s.code} {s.setting_id}", batches_per_epoch(s) / batches_per_epoch(base[s.code]))
               for s in all_settings()) / k


def settings_per_baseline(cost: dict[str, float] | None = None) -> float:
    """The 66 settings' cost in units of the six baselines' (batches per epoch, or `cost` where measured)."""

    base, cost = {s.code: s for s in all_settings(which="baseline")}, cost or {}
    return sum(cost.get(f"{s.code} {s.setting_id}", batches_per_epoch(s) / batches_per_epoch(base[s.code]))
               for s in all_settings()) / len(base)


def setting_costs(full: dict, other: dict) -> dict[str, float]:
    """Per-epoch cost of `other`'s settings relative to their task's baseline (same k and pack). The
    baseline's epoch time comes from `other` itself where it ran there (same pass, same number of epochs,
    same neighbours on the GPU: like against like), else from `full`."""
    a, b = full["rows"][0], other["rows"][0]
    if (a["k"], a.get("pack", 1), a.get("compile", "off")) != (b["k"], b.get("pack", 1), b.get("compile", "off")):
        raise ValueError(f"--setting-costs: measured at k={b['k']} pack={b.get('pack', 1)} compile="
                         f"{b.get('compile', 'off')}, the report at k={a['k']} pack={a.get('pack', 1)} "
                         f"compile={a.get('compile', 'off')}")
    measured = b["epoch_s_by_setting"]
    base = {t: measured.get(f"{t} baseline", secs) for t, secs in a["epoch_s_by_task"].items()}
    return {name: secs / base[name.split()[0]] for name, secs in measured.items()
            if name.split()[0] in base and name.split()[1] != "baseline"}


def profile_setting_costs(full: dict, profile: dict) -> dict[str, float]:
    """Per-epoch cost of the settings of a `scripts/gpu/profile_mad_step.py` report relative to their
    task's baseline: GPU kernel time per step (alone on the GPU) x batches per epoch. When many runs
    share the GPU and keep it busy, a run costs the others its GPU time, so this ratio is what a
    setting costs more than its baseline, free of whichever neighbours a timed pass gave it."""

    compiled = full["rows"][0].get("compile", "off") == "on"
    rows = {r["setting"]: r for r in profile["rows"] if "error" not in r}
    if any(r["compile"] != compiled for r in rows.values()):
        raise ValueError(f"--setting-costs: the profile's compile differs from the report's ({'on' if compiled else 'off'})")
    lacking = sorted({n.split()[0] for n in rows if f"{n.split()[0]} baseline" not in rows})
    if lacking:
        raise ValueError(f"--setting-costs: the profile lacks the baseline of {', '.join(lacking)}")
    named = {f"{s.code} {s.setting_id}": s for s in all_settings()}
    base = {s.code: s for s in all_settings(which="baseline")}
    return {n: r["gpu_kernel_ms_per_step"] / rows[f"{r['task']} baseline"]["gpu_kernel_ms_per_step"]
            * batches_per_epoch(named[n]) / batches_per_epoch(base[r["task"]])
            for n, r in rows.items() if not n.endswith(" baseline")}


EVAL_STEP_FRACTION = 1 / 3  # an evaluation batch is a forward pass only: about a third of a training step


def profile_step_ms(full: dict, profile: dict) -> dict[str, float]:
    """"TASK setting_id" -> GPU kernel ms per training step, from a profile_mad_step.py report (checked
    like profile_setting_costs: same compile as the report, every task's baseline present)."""
    profile_setting_costs(full, profile)  # the same checks; raises ValueError
    return {r["setting"]: r["gpu_kernel_ms_per_step"] for r in profile["rows"] if "error" not in r}


def gpu_work_s(runs: list[dict], step_ms: dict[str, float], which: str = "all") -> float:
    """GPU busy seconds of a set of settings' runs. Every setting's six runs run as many epochs as its
    task's baseline runs did (`runs`), each epoch its training batches plus its test batches at
    EVAL_STEP_FRACTION of a step, each step its profiled GPU time (the task baseline's where the setting
    was not profiled). Processes that share one GPU take turns on it (no MPS), so when they keep it busy
    the suite's wall time is about this sum, whoever shares with whom; the streams of one pack's runs
    may overlap small kernels, which makes the sum lean high."""

    epochs: dict[str, int] = {}
    for r in runs:
        epochs[r["task"]] = epochs.get(r["task"], 0) + int(r["epochs_run"] or 0)
    total = 0.0
    for s in all_settings(which=which):
        ms = step_ms.get(f"{s.code} {s.setting_id}", step_ms.get(f"{s.code} baseline", float("nan")))
        steps = -(-s.num_train_examples // 128) + EVAL_STEP_FRACTION * -(-s.num_test_examples // 128)
        total += epochs.get(s.code, float("nan")) * steps * ms / 1e3
    return total


def print_report(report: dict) -> None:
    """Two estimates per k. By suite wall time: the 36 short runs' speed-up over the first k, start-up
    of each run included. By epoch times: k runs at once, each at the per-epoch time it had while
    sharing the GPU, i.e. the steady state of long runs (the last wave of a pass may hold fewer than
    k runs, so this one leans optimistic)."""
    ref = report["rows"][0]
    serial = full_suite_serial_s(ref["epoch_s_by_task"])
    n_gpu = report["n_gpu"]
    print(f"\narch={report['arch']} epochs measured={report['epochs']} GPUs={n_gpu}")
    print("est. = full suite in hours on the GPUs above, no early stopping")
    print("k  pack  graph  compile  suite_wall_s  speed-up  run_wall_s  mean GPU util %  est. (suite wall)  "
          "epoch-rate speed-up  est. (epoch times)")
    for row in report["rows"]:
        speed = ref["suite_wall_s"] / row["suite_wall_s"]
        row["speedup_vs_first"] = speed
        row["est_full_suite_h"] = serial / speed / 3600 / n_gpu
        packed = full_suite_serial_s(row["epoch_s_by_task"]) / (row["k"] * row.get("pack", 1))
        row["epoch_rate_speedup_vs_first"] = serial / packed
        row["est_full_suite_h_epoch_times"] = packed / 3600 / n_gpu
        print(f"{row['k']:<2} {row.get('pack', 1):<4}  {row.get('cuda_graph', 'off'):<5}  {row.get('compile', 'off'):<7}  "
              f"{row['suite_wall_s']:>11.1f}  {speed:>8.2f}  {row['run_wall_s_mean']:>10.1f}  "
              f"{','.join(f'{u:.0f}' for u in row['gpu_util_mean']):>15}  {row['est_full_suite_h']:>17.2f}  "
              f"{row['epoch_rate_speedup_vs_first']:>19.2f}  {row['est_full_suite_h_epoch_times']:>18.2f}")
    report["serial_full_suite_h_at_first_k"] = serial / 3600
    if report["epochs"] < 200:
        return
    print("\nfull-protocol runs (200 epochs, early stopping at accuracy 0.999): full suite from the measured "
          "runs' wall times,\nthe baselines' early stopping applied to every setting of their task")
    for row in report["rows"]:
        runs = row.get("runs_detail", [])
        cost = report.get("setting_costs", {})
        row["est_full_suite_h_from_runs"] = full_suite_from_runs_s(runs, row["k"], row.get("pack", 1), cost) / 3600 / n_gpu
        # the slots' sum assumes k trials always share the GPU (optimistic: the last trials run with fewer
        # neighbours); scaling the whole pass's wall time, its ragged end included, is the pessimistic side
        row["est_full_suite_h_from_suite_wall"] = (None if row.get("runs_substituted") else
                                                   row["suite_wall_s"] * settings_per_baseline(cost) / 3600 / n_gpu)
        wall = row["est_full_suite_h_from_suite_wall"]
        stops = {t: sorted(int(r["epochs_run"] or 0) for r in runs if r["task"] == t) for t in sorted({r["task"] for r in runs})}

        base = {b.code: b for b in all_settings(which="baseline")}
        print("time per batch while sharing (median epoch time / batches per epoch): " + ", ".join(
            f"{t} {1e3 * e / batches_per_epoch(base[t]):.1f} ms" for t, e in sorted(row["epoch_s_by_task"].items())
            if t in base))
        print(f"k={row['k']} pack={row.get('pack', 1)} compile={row.get('compile', 'off')}: "
              f"{row['est_full_suite_h_from_runs']:.2f} h from trial slots, "
              + ("n/a (--like)" if wall is None else f"{wall:.2f} h") + " from the pass's wall time; epochs run per task: "
              + "; ".join(f"{t} {','.join(map(str, e))}" for t, e in stops.items()))
        lacking = sorted({t for t in stops if f"{t} baseline" not in report.get("gpu_step_ms", {})})
        if "gpu_step_ms" in report and lacking:
            print(f"k={row['k']}: GPU work n/a (the profile lacks the baselines of {', '.join(lacking)})")
        elif "gpu_step_ms" in report:
            this_pass = gpu_work_s(runs, report["gpu_step_ms"], which="baseline")
            row["est_full_suite_h_gpu_work"] = gpu_work_s(runs, report["gpu_step_ms"]) / 3600 / n_gpu
            check = ("n/a (--like)" if row.get("runs_substituted") else
                     f"this pass: {this_pass:.0f} s of GPU work predicted, {row['suite_wall_s']:.0f} s of wall time "
                     f"measured ({this_pass / row['suite_wall_s']:.2f}x)")
            print(f"k={row['k']}: {row['est_full_suite_h_gpu_work']:.2f} h of GPU work (profiled GPU time per step x "
                  f"steps, the baselines' early stopping applied; {check})")


def merge_reports(reports: list[dict]) -> dict:
    """One report from several saved ones (e.g. k=1 from one GPU session, k=2,4,8 from another). The
    reference row (speed-ups are relative to it) is the smallest k, eager before graphed."""
    keys = {(r["arch"], r["epochs"], r["n_gpu"]) for r in reports}
    if len(keys) != 1:
        raise ValueError(f"reports measure different things (arch, epochs, n_gpu): {sorted(keys)}")
    def what(row):  # reports before --cuda-graph were eager, before --pack unpacked, before --compile not compiled
        return (row["k"] * row.get("pack", 1), row["k"], row.get("cuda_graph", "off"), row.get("pack", 1),
                row.get("compile", "off"))

    rows = sorted((row for r in reports for row in r["rows"]), key=what)
    ks = [what(row) for row in rows]
    if len(set(ks)) != len(ks):
        raise ValueError(f"the same (k, cuda_graph, pack, compile) appears in more than one report: {ks}")
    merged = {**reports[0], "rows": rows}
    if len(reports) > 1:
        merged["provenance_per_row"] = [r.get("provenance") for r in reports for _ in r["rows"]]
    return merged


def selection(args) -> list[str]:
    """The MAD command's setting selection: the six baselines, or the settings that --only names."""
    return [*(["--tasks", *args.tasks] if args.tasks else []), "--settings", args.settings,
            *(["--only", *args.only] if args.only else [])]


def warm_kernels(args, mad_main) -> None:
    """Two untimed passes of one short run per setting before the timed ones, so that no timed run pays
    for Triton: first up to six settings at once (fla compiles every autotuning candidate, CPU-bound;
    FLA_CACHE_RESULTS=0, so no choice timed on a crowded GPU is kept), then one run at a time
    (Triton finds compiled binaries and times the candidates on a quiet GPU; fla caches the choice
    on disk for the timed workers). Inductor's cache fills in the first pass when --compile on."""
    import os  # noqa: PLC0415

    base = [*selection(args), "--epochs", "1", "--max-train-examples", "256", "--lrs", "1e-3", "--wds", "0",
            "--n-gpu", str(args.n_gpu), "--data-path", args.data_path, "--num-workers", "4",
            "--cuda-graph", args.cuda_graph, "--pack", "1", "--autotune", args.autotune, "--compile", args.compile]

    # at most 6 at once: on a 16-core H100 host, 6 baselines compiled in 293 s, while 14 settings at once
    # (each process running Inductor's and Triton's compile workers) finished 1 in 8 min 20 s
    n = sum(1 for s in all_settings(args.tasks, which=args.settings) if not args.only or s.setting_id in args.only)
    for k, cache in ((min(max(n, 1), 6), "0"), (1, "1")):
        work = Path(tempfile.mkdtemp(prefix=f"madbench-warm-k{k}-"))
        before = os.environ.get("FLA_CACHE_RESULTS")
        os.environ["FLA_CACHE_RESULTS"] = cache  # the MAD command hands it to its Ray workers
        try:
            t0 = time.perf_counter()
            rc = mad_main([*base, "--n-tasks-gpu", str(k), "--results", str(work / "results"),
                           "--ray-tmp-path", str(work / "ray")], default_arch=args.arch)
            print(f"[warm] pass k={k} FLA_CACHE_RESULTS={cache}: rc={rc}, {time.perf_counter() - t0:.0f} s", flush=True)
        finally:
            if before is None:
                os.environ.pop("FLA_CACHE_RESULTS", None)
            else:
                os.environ["FLA_CACHE_RESULTS"] = before
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(prog="python -m grid bench mad")
    p.add_argument("--arch", default="gla")
    p.add_argument("--k", type=int_range(1), nargs="+", default=[1, 2, 4, 8], help="runs per GPU to try")
    p.add_argument("--epochs", type=int_range(1), default=3)
    p.add_argument("--cuda-graph", choices=("on", "off"), default="on", help="passed to the MAD runs (recorded per k)")
    p.add_argument("--pack", type=int_range(1), default=1,
                   help="runs per Ray trial (threads of one process; passed to the MAD runs, recorded per row). "
                        "Runs at once per GPU = k x pack")
    p.add_argument("--autotune", choices=("first", "full"), default="full", help="passed to the MAD runs (recorded)")
    p.add_argument("--compile", choices=("on", "off"), default="off", help="passed to the MAD runs (recorded)")
    p.add_argument("--warm", action="store_true",
                   help="first compile and autotune every task's kernels in two untimed passes (see warm_kernels)")
    p.add_argument("--settings", choices=("baseline", "all"), default="baseline",
                   help="which settings to run (the estimates assume the six baselines; other selections feed "
                        "--setting-costs)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="only these tasks (codes CR NR FR M C SC; default all; passed to the MAD runs)")
    p.add_argument("--only", nargs="+", default=None, metavar="SETTING",
                   help="only these setting ids (e.g. --settings all --only seq_len=512 seq_len=1024)")
    p.add_argument("--setting-costs", default=None, metavar="REPORT",
                   help="with --from-json of a 200-epoch baseline report: a report of other settings at the same k "
                        "and pack (their measured epoch time over their task's baseline epoch time), or a "
                        "scripts/gpu/profile_mad_step.py report (GPU time per step over the baseline's), replaces "
                        "the batch count ratio in the full-protocol estimate")
    p.add_argument("--n-gpu", type=int_range(0), default=1)
    p.add_argument("--data-path", default=data_root())
    p.add_argument("--json", default=None)
    p.add_argument("--from-json", nargs="+", default=None, metavar="REPORT",
                   help="print the table and estimates of saved reports (several: their k's merged, the smallest "
                        "k is the reference); run nothing")
    p.add_argument("--epoch-s", nargs="*", default=[], metavar="TASK=S",
                   help="with --from-json: replace a task's epoch time at the reference (smallest) k (e.g. CR=2.19 "
                        "when a saved mean carries a one-off kernel compile)")
    p.add_argument("--like", nargs="*", default=[], metavar="TASK=OTHER",
                   help="with --from-json: use OTHER's epoch time (and, in 200-epoch reports, OTHER's runs) for TASK "
                        "in every row (e.g. CR=NR: same length and example counts, while CR's runs came first and paid "
                        "each fresh worker's kernel compile; CR=FR in a full-protocol report: as if CR never stopped early)")
    args = parse(p, argv)
    if isinstance(args, int):
        return args
    if args.from_json:
        try:
            report = merge_reports([json.loads(Path(f).read_text()) for f in args.from_json])
        except ValueError as exc:
            p.error(str(exc))
        if args.setting_costs:  # against the baselines as measured, before any --epoch-s / --like
            other = json.loads(Path(args.setting_costs).read_text())
            profiled = "gpu_kernel_ms_per_step" in other["rows"][0]
            try:
                report["setting_costs"] = (profile_setting_costs if profiled else setting_costs)(report, other)
                if profiled:
                    report["gpu_step_ms"] = profile_step_ms(report, other)
            except ValueError as exc:
                p.error(str(exc))
            if profiled:
                how = "GPU kernel time per step alone on the GPU (profile_mad_step.py) x batches per epoch"
            else:
                same_pass = sorted(n.split()[0] for n in other["rows"][0]["epoch_s_by_setting"] if n.endswith(" baseline"))
                how = (f"epoch time; the baseline's from the same pass for: {', '.join(same_pass) or 'none'}, "
                       "else from the 200-epoch report")
            print(f"measured cost per epoch relative to the task's baseline ({how}): "
                  + ", ".join(f"{n} {c:.2f}x" for n, c in sorted(report["setting_costs"].items())))
        for item in args.epoch_s:
            task, _, secs = item.partition("=")
            if task not in report["rows"][0]["epoch_s_by_task"] or not secs:
                p.error(f"--epoch-s {item!r}: expected TASK=SECONDS with TASK one of "
                        f"{sorted(report['rows'][0]['epoch_s_by_task'])}")
            report["rows"][0]["epoch_s_by_task"][task] = float(secs)
        for item in args.like:
            task, _, other = item.partition("=")
            known = report["rows"][0]["epoch_s_by_task"]
            if task not in known or other not in known:
                p.error(f"--like {item!r}: expected TASK=OTHER with both in {sorted(known)}")
            for row in report["rows"]:
                row["epoch_s_by_task"][task] = row["epoch_s_by_task"][other]
                runs = row.get("runs_detail", [])  # and, for full-protocol reports, OTHER's runs stand in for TASK's
                row["runs_detail"] = [r for r in runs if r["task"] != task] + [
                    {**r, "task": task} for r in runs if r["task"] == other]
                row["runs_substituted"] = True  # the pass's measured wall time no longer describes these runs
        print_report(report)
        return 0

    from evals.mad.run import main as mad_main  # noqa: PLC0415

    if args.warm:
        warm_kernels(args, mad_main)
    report = {"arch": args.arch, "epochs": args.epochs, "n_gpu": args.n_gpu, "provenance": provenance(), "rows": [],
              "warmed": args.warm, "settings": args.settings, "only": args.only,
              "tasks": args.tasks}
    for k in args.k:
        work = Path(tempfile.mkdtemp(prefix=f"madbench-k{k}-"))
        cmd = [*selection(args), "--epochs", str(args.epochs), "--n-gpu", str(args.n_gpu),
               "--n-tasks-gpu", str(k), "--results", str(work / "results"), "--ray-tmp-path", str(work / "ray"),
               "--data-path", args.data_path, "--num-workers", "4", "--cuda-graph", args.cuda_graph, "--pack", str(args.pack),
               "--autotune", args.autotune, "--compile", args.compile]
        t0 = time.perf_counter()
        with GPUSampler() as gpu:
            rc = mad_main(cmd, default_arch=args.arch)
        wall = time.perf_counter() - t0
        df = ResultsStore(work / "results").query("SELECT * FROM results WHERE suite='mad'")
        if "error" not in df:
            df["error"] = None
        ok = df[df.status == "ok"]  # timings from finished runs only; failures are listed, never timed
        row = {"k": k, "pack": args.pack, "autotune": args.autotune, "compile": args.compile, "cuda_graph": args.cuda_graph, "rc": rc, "suite_wall_s": wall, "runs": len(df), "ok": int((df.status == "ok").sum()),
               "run_wall_s_mean": float(df.wall_s.mean()), "train_wall_s_mean": float(df.train_wall_s.mean()),
               "gpu_util_mean": gpu.mean_util(), "gpu_mem_max_mib": gpu.max_mem_mib(),
               "epoch_s_by_task": {t: float((g.train_wall_s / g.epochs_run).median()) for t, g in ok.groupby("task")},
               "epoch_s_mean_by_task": {t: float((g.train_wall_s / g.epochs_run).mean()) for t, g in ok.groupby("task")},
               "epoch_s_by_setting": {f"{t} {st}": float((g.train_wall_s / g.epochs_run).median())
                                      for (t, st), g in ok.groupby(["task", "setting"])},
               "errors": sorted({f"{r.task}: {r.error}"[:400] for r in df[df.status != "ok"].itertuples()}),
               "runs_detail": json.loads(df[[c for c in RUN_COLUMNS if c in df]].to_json(orient="records"))}
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        if args.json:  # partial report after every k: a killed run keeps what it measured
            Path(args.json).write_text(json.dumps(report, indent=1))
        shutil.rmtree(work, ignore_errors=True)

    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
