"""`python -m grid plan|submit` and grid-file errors (no Ray, no training)."""
from __future__ import annotations

from pathlib import Path

import pytest

from grid.lm.gridspec import expand, load_grid
from grid.lm.cli import REPO, SUBMIT_EXCLUDES, plan_main, submit_main
from tests.helpers import write_tiny_bytes_spec


def _grid(root: Path, body: str, name: str = "g") -> Path:
    write_tiny_bytes_spec(root)
    path = root / f"{name}.yaml"
    path.write_text(f"name: {name}\ndata: data.yaml\n" + body)
    return path


GOOD = """architectures:
  - {name: transformer, mixer: attention}
  - {name: gla, mixer: gla}
hybrid: [pure, "3:1"]
scales: [cpu-tiny]
recipe: {tokens: 12288}
"""


@pytest.mark.parametrize("body, needles", [
    ("architectures: [{name: x, mixer: nosuchmixer}]\nscales: [cpu-tiny]\n",
     ["architectures[].mixer", "nosuchmixer", "allowed", "gla"]),
    ("architectures: [{name: gla, mixer: gla}]\nhybrid: ['5:1']\nscales: [cpu-tiny]\n",
     ["trial gla / hybrid 5:1 / scale cpu-tiny", "5:1"]),
    ("architectures: [{name: gla, mixer: gla}]\nscales: [cpu-huge]\n",
     ["scales", "cpu-huge", "allowed", "cpu-tiny"]),
    ("architectures: [{name: gla, mixer: gla}]\nscales: [cpu-tiny]\nrecipe: {lrr: 0.1}\n",
     ["recipe.lrr", "unknown field", "0.1"]),
    ("architectures: [{name: gla, mixer: gla}]\nscales: [cpu-tiny]\nrecipe: {precision: fp8}\n",
     ["recipe.precision", "fp8", "bf16", "fp32"]),
])
def test_bad_grids_exit_2_naming_field_value_and_allowed(tmp_path, capsys, body, needles):
    assert plan_main([str(_grid(tmp_path, body))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)


def test_plan_lists_trials_with_keys_and_store_state(tmp_path, capsys):
    from grid.data import prepare
    from grid.results.store import ResultsStore

    path = _grid(tmp_path, GOOD)
    # before the data is prepared: provisional keys from the data spec hash, marked as such
    assert plan_main([str(path), "--results", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "data not prepared" in out and "hash spec-" in out
    # once prepared: the keys `run` will use; a stored ok row is shown as done
    manifest = prepare(tmp_path / "data.yaml", verbose=False)
    trials = expand(load_grid(path), 257, manifest["content_hash"])
    assert len(trials) == 3  # attention is never hybridised
    ResultsStore(tmp_path / "store").write_row({"trial_key": trials[0].trial_key, "status": "ok"}, suite="lm", grid="g")
    assert plan_main([str(path), "--results", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "data prepared" in out
    for t in trials:
        assert t.trial_key in out
    lines = {t.trial_key: next(line for line in out.splitlines() if t.trial_key in line) for t in trials}
    assert lines[trials[0].trial_key].rstrip().endswith("ok")
    assert lines[trials[1].trial_key].rstrip().endswith("-")
    assert "3:1" in lines[trials[2].trial_key] and "cpu-tiny" in lines[trials[2].trial_key]
    assert "3 trial(s), 1 already ok" in out and "assumed MFU of 40%" in out and "GPU-hours" in out


class FakeJobClient:
    calls: list = []

    def __init__(self, address, *args, **kwargs):
        FakeJobClient.calls.append(("init", address))

    def submit_job(self, **kwargs):
        FakeJobClient.calls.append(("submit", kwargs))
        return "raysubmit_fake123"


@pytest.fixture
def fake_client(monkeypatch):
    import ray.job_submission

    FakeJobClient.calls = []
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeJobClient)
    return FakeJobClient


def test_submit_builds_the_run_command_with_profile_runtime_env():
    """What the job runs (the submission itself is tested against a real cluster in tests/test_cluster.py)."""
    from grid.env.profiles import load_profile
    from grid.lm.cli import _submit_parser, build_job

    args = _submit_parser().parse_args(["configs/grids/quickstart.yaml", "--address", "http://head:8265",
                                        "--env-profile", "current", "--results", "/shared/results",
                                        "--ray-tmp-path", "/shared/ray", "--max-failures", "2"])
    spec, entrypoint, env, profile = build_job(args)
    assert entrypoint == ("python -m grid run configs/grids/quickstart.yaml --address auto --max-failures 2 "
                          "--results /shared/results --ray-tmp-path /shared/ray")
    assert env["working_dir"] == str(REPO) and env["excludes"] == SUBMIT_EXCLUDES
    assert "benchmark/" in env["excludes"] and ".git" in env["excludes"]
    assert env["pip"] == list(load_profile("current").requirements)
    assert env["env_vars"] == {"LINGRID_ENV_PROFILE": "current"}
    # the defaults: storage every node reaches (checked on the cluster), never the job's working dir
    _, entrypoint, _, _ = build_job(_submit_parser().parse_args(["configs/grids/quickstart.yaml", "--address", "x"]))
    assert "--results '~/lingrid/results' --ray-tmp-path '~/lingrid/ray'" in entrypoint


def test_submit_validates_before_contacting_the_cluster(fake_client, tmp_path, capsys):
    quick = (REPO / "configs" / "grids" / "quickstart.yaml").read_text()
    ok_grid = tmp_path / "q.yaml"
    ok_grid.write_text(quick)
    assert submit_main([str(ok_grid), "--address", "http://h:8265"]) == 2  # outside the repo: never uploaded
    assert "outside the repository" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(quick.replace("mixer: hgrn2}", "mixer: path_attn}"))
    assert submit_main([str(bad), "--address", "http://h:8265", "--env-profile", "seed-pinned"]) == 2
    err = capsys.readouterr().err
    assert "seed-pinned" in err and "path_attn" in err and "allowed" in err
    assert submit_main([str(bad), "--address", "http://h:8265", "--env-profile", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text(quick.replace('hybrid: [pure, "3:1"]', 'hybrid: [pure, "9:1"]'))
    assert submit_main([str(broken), "--address", "http://h:8265"]) == 2
    assert "9:1" in capsys.readouterr().err
    for flag in ("--results", "--ray-tmp-path", "--data-dir"):  # a relative path would land in the working dir
        assert submit_main(["configs/grids/quickstart.yaml", "--address", "http://h:8265", flag, "rel/dir"]) == 2
        err = capsys.readouterr().err
        assert flag in err and "absolute" in err and len(err.strip().splitlines()) == 1
    assert fake_client.calls == []


def test_trial_resources_single_gpu_fraction_and_data_parallel(tmp_path):
    from grid.lm.gridspec import GridError
    from grid.lm.prepare_grid import lm_trial_specs

    def specs(gpus, n_gpu):
        body = GOOD + (f"resources: {{gpus_per_trial: {gpus}, cpus_per_trial: 2}}\n" if gpus is not None else "")
        spec = load_grid(_grid(tmp_path, body))
        return lm_trial_specs(expand(spec, 257, "h", count=False), spec, tmp_path, n_gpu=n_gpu)

    ts, conc, notes = specs(None, 0)  # CPU
    assert (ts[0].resources.gpu, conc, notes) == (0, None, [])
    assert ts[0].trainable == "grid.lm.trial:run_lm" and ts[0].config["data_dir"] == str(tmp_path.resolve())
    assert ts[0].columns["model_id"] == "transformer" and ts[1].columns["hybrid"] in ("pure", "3:1")
    ts, conc, _ = specs(None, 2)  # one GPU per trial by default
    assert (ts[0].resources.gpu, ts[0].resources.cpu, conc) == (1, 1, None) and "ddp" not in ts[0].config
    ts, conc, _ = specs(0.25, 1)  # four trials share a GPU
    assert ts[0].resources.gpu == 0.25
    ts, conc, notes = specs(2, 4)  # data-parallel: the Tune trial is a CPU driver, Train workers hold the GPUs
    assert (ts[0].resources.gpu, conc) == (0, 2) and notes
    assert ts[0].config["ddp"] == {"workers": 2, "use_gpu": True, "cpus_per_worker": 2}
    # the key is the planned trial's, on the device class it runs on (GPU trials: cuda)
    assert ts[0].trial_key == expand(load_grid(tmp_path / "g.yaml"), 257, "h", count=False, device="cuda")[0].trial_key
    with pytest.raises(GridError, match="gpus_per_trial=4 but the cluster has 2"):
        specs(4, 2)
    ts, _, notes = specs(2, 0)  # no GPU at all: single-process CPU trials, said so
    assert "ddp" not in ts[0].config and "ignored" in notes[0]


def test_status_counts_rows_and_unfinished_trials(tmp_path, capsys):
    import json

    from grid.results.store import ResultsStore
    from grid.run.status import status_main

    store = ResultsStore(tmp_path / "store")
    store.write_row({"trial_key": "k1", "status": "ok"}, suite="lm", grid="g")
    store.write_row({"trial_key": "k2", "status": "diverged"}, suite="lm", grid="g")
    exp = tmp_path / "ray" / "lm-g"
    exp.mkdir(parents=True)
    (exp / "lingrid_manifest.json").write_text(json.dumps({"experiment": "lm-g", "trials": {
        "k1": "h", "k2": "h", "k3": "h", "k4": "h"}}))
    (exp / "k3").mkdir()
    assert status_main(["--results", str(tmp_path / "store"), "--ray-tmp-path", str(tmp_path / "ray")]) == 0
    out = capsys.readouterr().out
    rows = next(ln for ln in out.splitlines() if ln.startswith("lm ")).split()
    assert rows == ["lm", "g", "1", "1", "0", "0", "0", "2"]  # ok, diverged, nan, failed, skipped, rows
    assert next(ln for ln in out.splitlines() if ln.startswith("lm-g")).split() == ["lm-g", "4", "2", "1", "1"]


def test_mfu_uses_the_gpu_peak_table():
    from grid.lm.mfu import mfu, peak_bf16_flops

    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == peak_bf16_flops("NVIDIA H200") == 989e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12 and peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops(None) is None and peak_bf16_flops("Tesla T4") is None
    assert mfu(6e9, 1e4, "NVIDIA H100 80GB HBM3") == pytest.approx(6e13 / 989e12)
    assert mfu(6e9, 2e4, "NVIDIA H200", n_gpus=2) == pytest.approx(6e13 / 989e12)
    assert mfu(6e9, 1e4, None) is None  # CPU


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "grids").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_grid_expands(path):
    spec = load_grid(path)
    trials = expand(spec, vocab_size=4096, data_hash="x", count=False)
    assert trials and len({t.trial_key for t in trials}) == len(trials)
