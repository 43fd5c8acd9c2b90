"""TrialSpec / make_trial / trial_resources validation (no Ray)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from grid.keys import trial_key
from grid.run.resources import check_fits, trial_resources
from grid.run.spec import Resources, TrialSpec, make_trial

ROOT = Path(__file__).resolve().parents[1]


def test_make_trial_hashes_config():
    cfg = {"task": "in_context_recall", "model": {"mixer": "gla", "d": 128}, "lr": 1e-3, "seed": 0}
    t = make_trial(cfg, suite="mad", grid="mad-v1", trainable="tests.stub_trials:ok_trial",
                   columns={"mixer": "gla", "lr": 1e-3, "seed": 0}, resources={"cpu": 1, "gpu": 0.25})
    assert t.trial_key == trial_key("mad", cfg) == trial_key("mad", t.hashed())
    assert t.resources == Resources(cpu=1, gpu=0.25)
    assert t.resources.bundle() == {"CPU": 1.0, "GPU": 0.25}
    assert TrialSpec.from_json(t.to_json()) == t
    assert make_trial(cfg, suite="mad", grid="g", trainable="a.b:c", trial_key="explicit").trial_key == "explicit"
    # key order does not matter; any value change does
    assert make_trial(dict(reversed(list(cfg.items()))), suite="mad", grid="g", trainable="a:b").trial_key == t.trial_key
    assert make_trial({**cfg, "seed": 1}, suite="mad", grid="g", trainable="a:b").trial_key != t.trial_key
    # the runtime block travels in the config but never enters the key; the suite does
    r = make_trial(cfg, suite="mad", grid="g", trainable="a:b", runtime={"data_dir": "/x"})
    assert r.trial_key == t.trial_key and r.config["data_dir"] == "/x" and r.hashed() == cfg
    assert make_trial(cfg, suite="other", grid="g", trainable="a:b").trial_key != t.trial_key
    with pytest.raises(ValueError, match="both the hashed and the runtime"):
        make_trial(cfg, suite="mad", grid="g", trainable="a:b", runtime={"seed": 2})
    # a suite's spec (runtime set) must carry the key of its hashed block
    with pytest.raises(ValidationError, match="not the key of its hashed block"):
        TrialSpec(**{**r.model_dump(), "trial_key": "0123456789abcdef"})


def test_one_key_rule_for_every_suite():
    """trial_key is the hash of the hashed block with the suite in it: a config that names its suite (LM's,
    lm-eval's) gets the same key as one that does not, and a key never depends on dict order."""
    from grid.keys import content_hash

    block = {"model": {"mixer": "gla"}, "seed": 0, "device": "cpu"}
    assert trial_key("lm", block) == trial_key("lm", {**block, "suite": "lm"}) == content_hash({**block, "suite": "lm"})
    with pytest.raises(ValueError, match="names suite"):
        trial_key("mad", {**block, "suite": "lm"})
    assert trial_key("lm", {**block, "device": "cuda"}) != trial_key("lm", block)


@pytest.mark.parametrize("kw, msg", [
    ({"trainable": "no_colon"}, "package.module:function"),
    ({"trainable": "a b:c"}, "package.module:function"),
    ({"suite": "a/b"}, "suite must be"),
    ({"config": {"x": object()}}, "JSON-serialisable"),
    ({"columns": {"seed": "zero"}}, "expects int64"),
    ({"columns": {"status": "ok"}}, "filled in by the runner"),
    ({"columns": {"shape": [1, 2]}}, "unsupported value type"),
    ({"resources": {"cpu": 0}}, "greater than 0"),
    ({"resources": {"gpu": -1}}, "greater than or equal to 0"),
    ({"resources": {"gpu": 1.5}}, "whole number of GPUs"),
    ({"resources": {"tpu": 1}}, "Extra inputs are not permitted"),
])
def test_spec_validation(kw, msg):
    base = dict(config={"x": 1}, suite="mad", grid="g", trainable="m:f")
    base.update(kw)
    with pytest.raises(ValidationError, match=msg):
        make_trial(**base)
    with pytest.raises(ValidationError, match="Extra inputs"):
        TrialSpec(trial_key="k", suite="s", grid="g", trainable="m:f", config={}, bogus=1)


def test_trial_resources():
    assert trial_resources(8, 4, 2) == Resources(cpu=2, gpu=0.25)
    assert trial_resources(1, 1) == Resources(cpu=1, gpu=1)
    assert trial_resources(0, 4, 1) == Resources(cpu=1, gpu=0)
    for args, msg in [((-1, 1, 1), "n_gpu_available"), ((1, 0, 1), "n_tasks_per_gpu"), ((1, 1.5, 1), "n_tasks_per_gpu"),
                      ((1, 1, 0), "cpus_per_trial"), ((1, 1, float("nan")), "cpus_per_trial")]:
        with pytest.raises(ValueError, match=msg):
            trial_resources(*args)
    check_fits(Resources(cpu=2, gpu=1), {"CPU": 4.0, "GPU": 2.0})
    with pytest.raises(ValueError, match="GPU=1 but the Ray cluster has GPU=0"):
        check_fits(Resources(cpu=1, gpu=1), {"CPU": 4.0})


def test_driver_modules_import_without_torch_or_ray():
    code = ("import sys, grid.run, grid.run.spec, grid.run.resources, grid.results.store, grid.results.cli; "
            "bad = [m for m in ('torch', 'fla', 'triton', 'ray') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    code2 = ("import sys, grid.run.runner, grid.run.callbacks, grid.run.trainable; "
             "bad = [m for m in ('torch', 'fla', 'triton') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code2], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
