"""`grid bench mad` extrapolation: cost per batch, recomputed from a saved report (no GPU, no runs)."""
from __future__ import annotations

import json

import pytest

from evals.mad.settings import all_settings
from evals.mad.bench import batches_per_epoch, full_suite_serial_s, main


def test_baseline_only_suite_costs_six_runs_times_epochs_times_epoch_time():
    # with 1 s per epoch for every task, each setting costs 6 x 200 x its batches / its baseline's batches
    base = {s.code: s for s in all_settings(which="baseline")}
    expected = sum(6 * 200 * batches_per_epoch(s) / batches_per_epoch(base[s.code]) for s in all_settings())
    assert full_suite_serial_s({code: 1.0 for code in base}) == pytest.approx(expected)
    assert batches_per_epoch(base["CR"]) == 100 + 10  # 12,800 train + 1,280 test examples, batch 128


TASKS = ("CR", "NR", "FR", "M", "C", "SC")


def _report(path, k, wall, epoch_s, **extra):
    row = {"k": k, "suite_wall_s": wall, "run_wall_s_mean": 3.0, "gpu_util_mean": [10.0 * k],
           "epoch_s_by_task": {c: epoch_s for c in TASKS}}
    path.write_text(json.dumps({"arch": "gla", "epochs": 2, "n_gpu": 1, "rows": [row], **extra}))
    return path


def _estimates(lines):
    """(est. by suite wall, epoch-rate speed-up, est. by epoch times) of the table's k rows."""
    rows = [line.split() for line in lines if line.split() and line.split()[0].isdigit()]
    return [(float(r[8]), float(r[9]), float(r[10])) for r in rows]


def test_from_json_merges_reports_and_estimates_from_wall_time_and_epoch_times(tmp_path, capsys):
    # k=1: 1 s per epoch. k=4: the suite ran 4x faster, each run's epochs 2x slower while sharing the GPU
    one = _report(tmp_path / "k1.json", 1, 100.0, 1.0)
    four = _report(tmp_path / "k4.json", 4, 25.0, 2.0)
    assert main(["--from-json", str(four), str(one)]) == 0  # order does not matter: the smallest k is the ref
    (wall1, rate1, ep1), (wall4, rate4, ep4) = _estimates(capsys.readouterr().out.splitlines())
    assert wall1 == pytest.approx(ep1, rel=1e-2) and rate1 == 1.0
    assert wall1 == pytest.approx(4 * wall4, rel=2e-2)  # table rounds to 0.01 h
    assert rate4 == 2.0 and ep1 == pytest.approx(2 * ep4, rel=2e-2)  # 4 runs at once, each at half speed


def test_from_json_refuses_reports_of_different_runs(tmp_path):
    one = _report(tmp_path / "a.json", 1, 100.0, 1.0)
    other = tmp_path / "b.json"
    other.write_text(json.dumps({**json.loads(one.read_text()), "epochs": 3}))
    with pytest.raises(SystemExit):
        main(["--from-json", str(one), str(other)])
    with pytest.raises(SystemExit):  # the same k twice
        main(["--from-json", str(one), str(one)])
    graphed = tmp_path / "c.json"  # the same k with CUDA graphs is another row, after the eager one
    graphed.write_text(json.dumps({**json.loads(one.read_text()), "rows": [
        {**json.loads(one.read_text())["rows"][0], "cuda_graph": "on", "suite_wall_s": 10.0}]}))
    assert main(["--from-json", str(graphed), str(one)]) == 0


def test_from_json_with_an_epoch_time_replaced(tmp_path, capsys):
    path = _report(tmp_path / "r.json", 1, 100.0, 1.0)
    assert main(["--from-json", str(path)]) == 0
    (plain, _, _), = _estimates(capsys.readouterr().out.splitlines())
    assert main(["--from-json", str(path), "--epoch-s", "CR=2"]) == 0
    (slower, _, _), = _estimates(capsys.readouterr().out.splitlines())
    assert slower > plain
    with pytest.raises(SystemExit):
        main(["--from-json", str(path), "--epoch-s", "XX=1"])


def test_like_copies_one_tasks_epoch_time_to_another_in_every_row(tmp_path, capsys):
    rows = [json.loads(_report(tmp_path / f"k{k}.json", k, 100.0 / k, 1.0).read_text())["rows"][0] for k in (1, 4)]
    for row in rows:
        row["epoch_s_by_task"]["CR"] = 50.0  # a compile-laden median
    path = tmp_path / "both.json"
    path.write_text(json.dumps({"arch": "gla", "epochs": 2, "n_gpu": 1, "rows": rows}))
    assert main(["--from-json", str(path), "--like", "CR=NR"]) == 0
    fixed = _estimates(capsys.readouterr().out.splitlines())
    clean = _report(tmp_path / "clean.json", 1, 100.0, 1.0)
    assert main(["--from-json", str(clean)]) == 0
    (ref,) = _estimates(capsys.readouterr().out.splitlines())
    assert fixed[0][2] == pytest.approx(ref[2])  # as if CR had cost what NR costs
    with pytest.raises(SystemExit):
        main(["--from-json", str(path), "--like", "CR=XX"])


def test_packed_runs_count_as_runs_at_once(tmp_path, capsys):
    # k=1 x pack 6 at 2 s per epoch is the same steady state as k=6 unpacked at 2 s per epoch
    ref = json.loads(_report(tmp_path / "r.json", 1, 100.0, 1.0).read_text())
    packed = {**ref["rows"][0], "k": 1, "pack": 6, "cuda_graph": "on", "epoch_s_by_task": {c: 2.0 for c in TASKS}}
    six = {**ref["rows"][0], "k": 6, "epoch_s_by_task": {c: 2.0 for c in TASKS}}
    path = tmp_path / "all.json"
    path.write_text(json.dumps({**ref, "rows": [ref["rows"][0], packed, six]}))
    assert main(["--from-json", str(path)]) == 0
    (_, _, ep_ref), (_, _, ep_a), (_, _, ep_b) = _estimates(capsys.readouterr().out.splitlines())
    assert ep_a == pytest.approx(ep_b) == pytest.approx(ep_ref / 3, rel=2e-2)


def test_warm_passes_compile_crowded_then_tune_quietly_and_restore_the_environment(monkeypatch):
    import argparse
    import os

    from evals.mad.run import worker_env
    from evals.mad.bench import warm_kernels

    monkeypatch.setenv("FLA_CACHE_RESULTS", "1")
    calls = []

    def fake_mad_main(argv, default_arch=None):
        calls.append((argv, default_arch, worker_env("full")))
        return 0

    args = argparse.Namespace(arch="gla", n_gpu=1, data_path="d", cuda_graph="on", autotune="full", compile="on",
                              settings="all", only=["seq_len=512", "seq_len=1024"], tasks=None)
    warm_kernels(args, fake_mad_main)
    assert [c[2]["FLA_CACHE_RESULTS"] for c in calls] == ["0", "1"]  # crowded pass keeps no tuned choice
    ks = [c[0][c[0].index("--n-tasks-gpu") + 1] for c in calls]
    assert ks == ["6", "1"] and all(c[1] == "gla" for c in calls)  # 6 of the 8 selected settings at once, then one by one
    for argv, _, _ in calls:  # one short run per task, with the timed runs' kernel policies
        assert argv[argv.index("--lrs") + 1:argv.index("--wds")] == ["1e-3"]
        assert argv[argv.index("--compile") + 1] == "on" and argv[argv.index("--autotune") + 1] == "full"
        assert argv[argv.index("--settings") + 1:argv.index("--settings") + 5] == ["all", "--only", "seq_len=512",
                                                                                   "seq_len=1024"]
    assert os.environ["FLA_CACHE_RESULTS"] == "1"
    calls.clear()  # --tasks narrows the selection: SC's baseline and two long settings, all three at once
    warm_kernels(argparse.Namespace(**{**vars(args), "tasks": ["SC"], "only": ["baseline", "seq_len=512", "seq_len=1024"]}),
                 fake_mad_main)
    assert [c[0][c[0].index("--n-tasks-gpu") + 1] for c in calls] == ["3", "1"]
    assert calls[0][0][:2] == ["--tasks", "SC"]
    monkeypatch.delenv("FLA_CACHE_RESULTS")
    assert "FLA_CACHE_RESULTS" not in worker_env("first")


def test_full_protocol_estimate_uses_each_trials_slowest_run_and_scales_to_every_setting(tmp_path, capsys):
    from evals.mad.bench import full_suite_from_runs_s

    base = {s.code: s for s in all_settings(which="baseline")}
    settings_per_task = {c: sum(batches_per_epoch(s) / batches_per_epoch(base[c]) for s in all_settings() if s.code == c)
                         for c in TASKS}
    # six runs per task; the slowest run of a pack of six holds the slot, unpacked runs add up
    runs = [{"task": c, "wall_s": 10.0 * (i + 1), "epochs_run": 200 - i} for c in TASKS for i in range(6)]
    packed = full_suite_from_runs_s(runs, k=2, pack=6)
    assert packed == pytest.approx(sum(60.0 * settings_per_task[c] for c in TASKS) / 2)
    unpacked = full_suite_from_runs_s(runs, k=2, pack=1)
    assert unpacked == pytest.approx(sum(210.0 * settings_per_task[c] for c in TASKS) / 2)
    # the table prints it only for 200-epoch reports
    row = {"k": 2, "pack": 6, "suite_wall_s": 100.0, "run_wall_s_mean": 3.0, "gpu_util_mean": [50.0],
           "epoch_s_by_task": {c: 1.0 for c in TASKS}, "runs_detail": runs}
    path = tmp_path / "full.json"
    for epochs, shown in ((2, False), (200, True)):
        path.write_text(json.dumps({"arch": "gla", "epochs": epochs, "n_gpu": 1, "rows": [row]}))
        assert main(["--from-json", str(path)]) == 0
        out = capsys.readouterr().out
        assert (f"{packed / 3600:.2f} h from trial slots" in out) is shown
        assert ("CR 195,196,197,198,199,200" in out) is shown
        whole = 100.0 * sum(settings_per_task.values()) / 6 / 3600  # the pass's 100 s, scaled to every setting
        assert (f"{whole:.2f} h from the pass's wall time" in out) is shown
        assert ("time per batch while sharing (median epoch time / batches per epoch): C 9.1 ms" in out) is shown


def test_setting_costs_replace_the_batch_ratio_for_measured_settings(tmp_path, capsys):
    from evals.mad.bench import full_suite_from_runs_s, setting_costs

    runs = [{"task": c, "wall_s": 100.0, "epochs_run": 200} for c in TASKS for _ in range(6)]
    full = {"arch": "gla", "epochs": 200, "n_gpu": 1, "rows": [
        {"k": 3, "pack": 6, "compile": "on", "suite_wall_s": 200.0, "run_wall_s_mean": 100.0, "gpu_util_mean": [90.0],
         "epoch_s_by_task": {c: 2.0 for c in TASKS}, "runs_detail": runs}]}
    longer = {"arch": "gla", "epochs": 3, "n_gpu": 1, "rows": [
        {"k": 3, "pack": 6, "compile": "on", "epoch_s_by_setting": {"FR seq_len=1024": 8.0, "FR seq_len=512": 4.0}}]}
    cost = setting_costs(full, longer)
    assert cost == {"FR seq_len=1024": 4.0, "FR seq_len=512": 2.0}
    # FR's two long settings each cost 1 baseline slot by batch count; measured, 4 and 2: 4 slots more
    plain, measured = full_suite_from_runs_s(runs, 3, 6), full_suite_from_runs_s(runs, 3, 6, cost)
    assert measured - plain == pytest.approx((3 + 1) * 100.0 / 3)
    f, o = tmp_path / "full.json", tmp_path / "long.json"
    f.write_text(json.dumps(full))
    o.write_text(json.dumps(longer))
    assert main(["--from-json", str(f), "--setting-costs", str(o)]) == 0
    out = capsys.readouterr().out
    assert "FR seq_len=1024 4.00x" in out and f"{measured / 3600:.2f} h from trial slots" in out
    # where the baseline ran in the same pass, it is the reference (same epochs, same neighbours)
    longer["rows"][0]["epoch_s_by_setting"]["FR baseline"] = 2.5
    assert setting_costs(full, longer) == {"FR seq_len=1024": 8.0 / 2.5, "FR seq_len=512": 4.0 / 2.5}
    o.write_text(json.dumps(longer))
    assert main(["--from-json", str(f), "--setting-costs", str(o)]) == 0
    out = capsys.readouterr().out
    assert "FR seq_len=1024 3.20x" in out and "same pass for: FR," in out
    longer["rows"][0]["k"] = 2  # measured under other sharing: refused
    o.write_text(json.dumps(longer))
    with pytest.raises(SystemExit):
        main(["--from-json", str(f), "--setting-costs", str(o)])


def test_like_in_a_full_protocol_report_swaps_runs_and_drops_the_pass_wall_estimate(tmp_path, capsys):
    from evals.mad.bench import full_suite_from_runs_s

    runs = [{"task": c, "wall_s": 10.0 if c == "CR" else 100.0, "epochs_run": 5 if c == "CR" else 200}
            for c in TASKS for _ in range(6)]
    row = {"k": 3, "pack": 6, "suite_wall_s": 300.0, "run_wall_s_mean": 3.0, "gpu_util_mean": [90.0],
           "epoch_s_by_task": {c: 1.0 for c in TASKS}, "runs_detail": runs}
    path = tmp_path / "full.json"
    path.write_text(json.dumps({"arch": "gla", "epochs": 200, "n_gpu": 1, "rows": [row]}))
    assert main(["--from-json", str(path), "--like", "CR=FR"]) == 0
    out = capsys.readouterr().out
    as_if = full_suite_from_runs_s([{**r, "wall_s": 100.0} for r in runs], 3, 6)  # CR as long as FR
    assert f"{as_if / 3600:.2f} h from trial slots, n/a (--like) from the pass's wall time" in out
    assert "CR 200,200,200,200,200,200" in out


def test_setting_costs_from_a_gpu_profile_are_gpu_time_ratios_to_the_task_baseline(tmp_path, capsys):
    from evals.mad.bench import profile_setting_costs

    runs = [{"task": c, "wall_s": 100.0, "epochs_run": 200} for c in TASKS for _ in range(6)]
    full = {"arch": "gla", "epochs": 200, "n_gpu": 1, "rows": [
        {"k": 3, "pack": 6, "compile": "on", "suite_wall_s": 200.0, "run_wall_s_mean": 100.0, "gpu_util_mean": [90.0],
         "epoch_s_by_task": {c: 2.0 for c in TASKS}, "runs_detail": runs}]}

    def row(name, ms, compile=True):
        return {"setting": name, "task": name.split()[0], "compile": compile, "gpu_kernel_ms_per_step": ms}

    profile = {"arch": "gla", "rows": [row("CR baseline", 1.5), row("CR seq_len=1024", 9.0),
                                       row("CR num_train_examples=6400", 1.5),
                                       {"setting": "SC seq_len=512", "error": "OOM"}]}
    # half the examples: fewer batches per epoch at the same cost per step
    half = next(s for s in all_settings() if s.code == "CR" and s.setting_id == "num_train_examples=6400")
    ratio = batches_per_epoch(half) / batches_per_epoch(next(s for s in all_settings(which="baseline") if s.code == "CR"))
    assert ratio < 1
    assert profile_setting_costs(full, profile) == pytest.approx({"CR seq_len=1024": 6.0,
                                                                  "CR num_train_examples=6400": ratio})
    f, o = tmp_path / "full.json", tmp_path / "prof.json"
    f.write_text(json.dumps(full))
    o.write_text(json.dumps(profile))
    assert main(["--from-json", str(f), "--setting-costs", str(o)]) == 0
    assert "CR seq_len=1024 6.00x" in capsys.readouterr().out
    for bad in ([row("CR seq_len=1024", 9.0)],  # no baseline to divide by
                [row("CR baseline", 1.5, compile=False), row("CR seq_len=1024", 9.0, compile=False)]):  # other compile
        o.write_text(json.dumps({"arch": "gla", "rows": bad}))
        with pytest.raises(SystemExit):
            main(["--from-json", str(f), "--setting-costs", str(o)])


def test_gpu_work_sums_each_settings_profiled_step_time_over_the_baselines_epochs(tmp_path, capsys):
    from evals.mad.bench import gpu_work_s

    runs = [{"task": c, "wall_s": 100.0, "epochs_run": 10} for c in TASKS for _ in range(6)]  # 60 epochs per task
    step_ms = {f"{c} baseline": 1.0 for c in TASKS}
    cr = next(s for s in all_settings(which="baseline") if s.code == "CR")
    assert (cr.num_train_examples, cr.num_test_examples) == (12800, 1280)
    # CR's baseline alone: 60 epochs x (100 training batches + 10 test batches at a third of a step) x 1 ms
    only_cr = {n: (ms if n.startswith("CR ") else 0.0) for n, ms in step_ms.items()}
    assert gpu_work_s(runs, only_cr, which="baseline") == pytest.approx(60 * (100 + 10 / 3) * 1e-3)
    # a profiled setting replaces its task baseline's step time; unprofiled ones keep the baseline's
    plain = gpu_work_s(runs, step_ms)
    longer = gpu_work_s(runs, {**step_ms, "CR seq_len=1024": 5.0})
    assert longer - plain == pytest.approx(60 * (100 + 10 / 3) * 4e-3)
    assert gpu_work_s(runs, step_ms, which="baseline") < plain

    full = {"arch": "gla", "epochs": 200, "n_gpu": 1, "rows": [
        {"k": 3, "pack": 6, "compile": "on", "suite_wall_s": 30.0, "run_wall_s_mean": 100.0, "gpu_util_mean": [90.0],
         "epoch_s_by_task": {c: 2.0 for c in TASKS}, "runs_detail": runs}]}
    f, o = tmp_path / "full.json", tmp_path / "prof.json"
    f.write_text(json.dumps(full))
    rows = [{"setting": n, "task": n.split()[0], "compile": True, "gpu_kernel_ms_per_step": ms} for n, ms in step_ms.items()]
    o.write_text(json.dumps({"arch": "gla", "rows": rows}))
    assert main(["--from-json", str(f), "--setting-costs", str(o)]) == 0
    out = capsys.readouterr().out
    this_pass = gpu_work_s(runs, step_ms, which="baseline")
    assert f"{plain / 3600:.2f} h of GPU work" in out
    assert f"{this_pass:.0f} s of GPU work predicted, 30 s of wall time measured ({this_pass / 30:.2f}x)" in out
    # a profile without every task's baseline prices no suite
    o.write_text(json.dumps({"arch": "gla", "rows": rows[:2]}))
    assert main(["--from-json", str(f), "--setting-costs", str(o)]) == 0
    assert "GPU work n/a (the profile lacks the baselines of C, FR, M, SC)" in capsys.readouterr().out
