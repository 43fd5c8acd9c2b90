"""The MAD suite driver: trial expansion, hashing, the final table, and one tiny run through the real command."""
import pytest

from evals.mad.run import build_parser, make_trials, pack_by_setting, pack_size, print_table
from evals.mad.settings import all_settings


def _args(argv, arch="gla"):
    args = build_parser(arch).parse_args(argv)
    args.model_id = args.model_id or arch
    args.gpus_found = 0
    return args


def test_baseline_expands_to_six_runs_per_setting():
    settings = all_settings(which="baseline")
    trials = make_trials(_args(["--epochs", "2"]), settings)
    assert len(trials) == 6 * 6
    assert len({t.trial_key for t in trials}) == len(trials)
    assert {(t.columns["lr"], t.columns["wd"]) for t in trials} == {(lr, wd) for lr in (1e-4, 5e-4, 1e-3)
                                                                     for wd in (0.0, 0.1)}
    assert all(t.resources.gpu == 0 for t in trials)  # no GPU here: CPU trials


def test_full_suite_is_396_runs_with_fractional_gpus():
    args = _args(["--n-tasks-gpu", "4"])
    args.gpus_found = 8
    trials = make_trials(args, all_settings())
    assert len(trials) == 396
    assert all(t.resources.gpu == 0.25 for t in trials)


def test_key_ignores_where_data_lives_but_not_the_protocol():
    s = all_settings(["M"], which="baseline")
    a = make_trials(_args(["--data-path", "/x"]), s)[0].trial_key
    b = make_trials(_args(["--data-path", "/y"]), s)[0].trial_key
    c = make_trials(_args(["--epochs", "3"]), s)[0].trial_key
    d = make_trials(_args(["--protocol", "cosine"]), s)[0].trial_key
    cpu_compiled = make_trials(_args(["--data-path", "/x", "--compile", "on"]), s)[0]
    assert a == b != c and d != a
    # compile is hashed where it takes effect: a CPU run ignores it (and says so in its config)
    assert cpu_compiled.config["compile"] is False and cpu_compiled.trial_key == a


def _gpu_args(argv):
    args = _args(argv)
    args.gpus_found = 1
    return args


def test_cpu_reference_and_gpu_runs_of_one_trial_get_different_keys():
    """The dedup bug of issue 17: an ok CPU-reference row must not make the GPU run of the same
    (setting, lr, wd) count as done. The key covers the device class the run gets."""
    s = all_settings(["M"], which="baseline")
    cpu, gpu = make_trials(_args([]), s), make_trials(_gpu_args([]), s)
    assert [t.config["device"] for t in cpu[:1] + gpu[:1]] == ["cpu", "cuda"]
    assert not {t.trial_key for t in cpu} & {t.trial_key for t in gpu}
    # on a GPU, compile changes the numbers (Inductor's fused kernels): hashed there
    compiled = make_trials(_gpu_args(["--compile", "on"]), s)[0]
    assert compiled.config["compile"] is True and compiled.trial_key != gpu[0].trial_key
    # ... except for batched models, which are never compiled: their key is the uncompiled run's
    batched = make_trials(_gpu_args(["--compile", "on", "--batch", "on"]), s)[0]
    assert batched.config["compile"] is False and batched.trial_key == gpu[0].trial_key


def test_key_covers_the_resolved_model_of_architectures_yaml(tmp_path, monkeypatch):
    """Editing an architecture's entry in configs/mad/architectures.yaml (e.g. its norm_eps) makes new
    trials: the hashed block holds the model as it will be built, not the arch name."""
    import yaml

    from evals.mad import arch as arch_mod
    from grid.keys import trial_key

    s = all_settings(["M"], which="baseline")
    before = make_trials(_args([]), s)
    doc = yaml.safe_load(arch_mod.ARCH_CONFIG.read_text())
    doc["architectures"]["gla"]["mixer_kwargs"]["norm_eps"] = 1e-6
    edited = tmp_path / "architectures.yaml"
    edited.write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(arch_mod, "ARCH_CONFIG", edited)
    after = make_trials(_args([]), s)
    assert after[0].config["resolved_model"]["mixer_kwargs"]["norm_eps"] == 1e-6
    assert not {t.trial_key for t in before} & {t.trial_key for t in after}
    for t in before + after:  # the one key rule, on the hashed block (the runtime block left out)
        assert t.trial_key == trial_key("mad", t.hashed())
        assert set(t.config) - set(t.hashed()) == {"data_root", "num_workers", "cuda_graph"}


def test_table_printed_from_store(tmp_path, capsys):
    from grid.results.store import ResultsStore

    store = ResultsStore(tmp_path)
    for i, (task, acc) in enumerate([("M", 0.5), ("M", 0.7), ("C", float("nan"))]):
        store.write_row({"trial_key": f"k{i}", "status": "ok" if acc == acc else "nan", "model_id": "gla",
                         "mixer": "gla", "task": task, "setting": "baseline", "lr": 1e-3, "wd": 0.1 * i,
                         "epochs": 2, "acc": acc}, suite="mad", grid="mad")
    print_table(str(tmp_path), "gla", 2)
    out = capsys.readouterr().out
    assert "| gla |" in out and "0.700" in out


def test_sweep_file_end_to_end_records_the_autotune_policy_from_the_worker(tmp_path):
    # one tiny run through the real command and Ray: the policy travels to the worker by runtime_env
    import subprocess
    import sys

    from grid.results.store import ResultsStore

    # through `python -m grid run SWEEP.yaml` (the suites' one front door): the file's fields, then the flags
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("suite: mad\narch: gla\ntasks: [M]\nsettings: baseline\nepochs: 1\nlrs: [1.0e-3, 5.0e-4]\n")
    cmd = [sys.executable, "-m", "grid", "run", str(sweep), "--wds", "0",
           "--max-train-examples", "64", "--n-gpu", "0", "--autotune", "first", "--batch", "on",
           "--results", str(tmp_path / "res"), "--ray-tmp-path", str(tmp_path / "ray"),
           "--data-path", str(tmp_path / "data"), "--num-workers", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    df = ResultsStore(tmp_path / "res").query("SELECT status, autotune, mixer, exec_path, exec_members FROM results")
    # gla's two runs of the setting trained as one batched model (--batch on), one row each
    assert df.to_dict("records") == [{"status": "ok", "autotune": "first", "mixer": "gla", "exec_path": "batched",
                                      "exec_members": 2}] * 2


def _baseline_trials():
    trials = make_trials(_args(["--epochs", "2"]), all_settings(which="baseline"))
    assert len(trials) == 36
    return trials


def _setting_of(t):
    return (t.columns["task"], t.columns["setting"])


def test_pack_by_setting_six_packs_of_one_setting_each():
    from grid.run.spec import Resources

    trials = _baseline_trials()
    res = Resources(cpu=1, gpu=0.5)
    packs = pack_by_setting(trials, 6, res)
    assert len(packs) == 6 and all(len(p.members) == 6 for p in packs)
    assert all(p.resources == res and (p.suite, p.grid) == ("mad", "mad") for p in packs)
    for p in packs:
        assert len({_setting_of(m) for m in p.members}) == 1  # one task + setting per pack
        assert {(m.columns["lr"], m.columns["wd"]) for m in p.members} == {(lr, wd) for lr in (1e-4, 5e-4, 1e-3)
                                                                            for wd in (0.0, 0.1)}
    assert len({_setting_of(p.members[0]) for p in packs}) == 6
    # every trial exactly once, in the given order
    assert [m.trial_key for p in packs for m in p.members] == [t.trial_key for t in trials]


def test_pack_by_setting_uneven_size_never_mixes_settings():
    trials = _baseline_trials()
    packs = pack_by_setting(trials, 4, None)
    assert [len(p.members) for p in packs] == [4, 2] * 6
    assert all(len({_setting_of(m) for m in p.members}) == 1 for p in packs)
    assert sorted(m.trial_key for p in packs for m in p.members) == sorted(t.trial_key for t in trials)
    assert all(p.resources == p.members[0].resources for p in packs)  # None: the members' own resources
    assert pack_by_setting(trials, 1, None) == trials
    assert all(not t.members for t in pack_by_setting(trials, 1, None))


def test_pack_size_auto_follows_gpus_and_bad_values_are_rejected():
    args = _args([])
    assert args.pack == "auto" and pack_size(args) == 1  # CPU: one run per trial
    args.gpus_found = 1
    assert pack_size(args) == 6                          # GPU: the 3 lr x 2 wd runs of a setting
    args = _args(["--lrs", "1e-3", "5e-4", "--wds", "0"])
    args.gpus_found = 2
    assert pack_size(args) == 2
    args = _args(["--pack", "3"])
    assert pack_size(args) == 3
    args.gpus_found = 4
    assert pack_size(args) == 3
    for bad in ("0", "-2", "x", "2.5"):
        with pytest.raises(SystemExit):
            _args(["--pack", bad])


def test_only_keeps_the_named_settings_of_every_task_and_refuses_unknown_ids(capsys):
    from evals.mad.run import main

    assert main(["--tasks", "CR", "FR", "M", "--only", "seq_len=512", "seq_len=1024", "--log-parameters"],
                default_arch="gla") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line[:2] in ("CR", "FR", "M ")]
    assert sorted((r[0], r[2]) for r in rows) == [("CR", "1,024"), ("CR", "512"), ("FR", "1,024"), ("FR", "512")]
    assert main(["--tasks", "M", "--only", "seq_len=9", "--log-parameters"], default_arch="gla") == 2
    err = capsys.readouterr().err
    assert "--only seq_len=9: no such setting" in err and "vocab_size=8192" in err


def test_settings_run_heaviest_first_with_the_spec_order_among_equals():
    from evals.mad.run import heaviest_first

    ordered = heaviest_first(all_settings())
    assert sorted((s.code, s.setting_id) for s in ordered) == sorted((s.code, s.setting_id) for s in all_settings())
    tokens = [s.num_train_examples * s.seq_len for s in ordered]
    assert tokens == sorted(tokens, reverse=True)
    assert {(s.code, s.setting_id) for s in ordered[:4]} == {(c, "seq_len=1024") for c in ("CR", "NR", "FR", "SC")}
    assert [s.code for s in ordered[:4]] == ["CR", "NR", "FR", "SC"]  # ties keep the spec's task order
    assert ordered[-1].code == "M"  # 256 examples of 32 tokens


def test_sweep_file_is_the_mad_flags_and_rejects_unknown_fields(tmp_path, capsys):
    from evals.mad.sweep import load_sweep
    from grid.run.suites import run_main, suite_of_file

    assert load_sweep("configs/mad/sweeps/gla-baseline.yaml").flags() == ["--arch", "gla", "--settings", "baseline"]
    assert suite_of_file("configs/mad/sweeps/gla-baseline.yaml").NAME == "mad"
    assert suite_of_file("configs/grids/quickstart.yaml").NAME == "lm"  # grid files need no `suite:`
    bad = tmp_path / "bad.yaml"
    bad.write_text("suite: mad\narch: gla\nepoch: 3\n")
    assert run_main([str(bad)]) == 2
    assert "epoch: unknown field" in capsys.readouterr().err
    bad.write_text("suite: nope\n")
    assert run_main([str(bad)]) == 2
    assert "suite='nope' is not allowed; allowed: lm, mad" in capsys.readouterr().err
