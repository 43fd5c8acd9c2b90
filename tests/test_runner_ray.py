"""run_trials on a real (embedded) Ray with 2 logical GPUs: GPU assignment, dedup/force, retries, errors.

One Ray instance for the whole module (Ray startup is the slow part on 2 cores); run_trials
reuses an initialised Ray and leaves it running.
"""
from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from grid.results.store import ResultsStore  # noqa: E402
from grid.run.runner import run_trials  # noqa: E402
from grid.run.spec import make_trial  # noqa: E402
from tests.helpers import embedded_ray  # noqa: E402

STUB = "tests.stub_trials"


@pytest.fixture(scope="module", autouse=True)
def ray_4cpu_2gpu():
    yield from embedded_ray(num_cpus=4, num_gpus=2)


def _trial(fn, grid="g", resources=None, columns=None, **config):
    return make_trial(config, suite="test", grid=grid, trainable=f"{STUB}:{fn}", resources=resources, columns=columns)


def test_gpu_trials_get_distinct_devices(tmp_path):
    store = ResultsStore(tmp_path / "store")
    trials = [_trial("gpu_trial", resources={"cpu": 1, "gpu": 1}, columns={"seed": i}, sleep_s=2.5, i=i) for i in range(2)]
    s = run_trials(trials, store=store, experiment="gpus", storage_dir=tmp_path / "ray", progress=False)
    assert (s.n_total, s.n_ok, s.n_failed, s.n_skipped) == (2, 2, 0, 0)
    df = store.df()
    assert sorted(df["gpu_index"]) == ["0", "1"]           # distinct logical GPUs ...
    assert (df["gpu_index"] == df["cvd"]).all()             # ... recorded as the trial saw them
    a, b = df.sort_values("started_at").itertuples()
    assert b.started_at < a.finished_at                     # they really ran at the same time
    assert set(df["seed"]) == {0, 1} and df["ray"].notna().all() and df["torch"].notna().all()
    assert (df["attempt"] == 1).all() and (df["wall_s"] >= 2.5).all()


def test_resubmission_skips_finished_and_force_reruns(tmp_path, capsys):
    store = ResultsStore(tmp_path / "store")
    trials = [_trial("ok_trial", x=i, steps=1) for i in range(2)]
    kw = dict(store=store, experiment="dedup", storage_dir=tmp_path / "ray")
    first = run_trials(trials, **kw)
    assert first.n_ok == 2
    err = capsys.readouterr().err
    assert "done" in err and "2/2 done" in err  # the progress line
    stamps = store.df().set_index("trial_key")["finished_at"]

    again = run_trials(trials, **kw)  # nothing runs: no Tune experiment at all
    assert (again.n_skipped, again.n_ok, again.experiment_path, again.statuses) == (2, 0, None, {})
    assert "2 already ok" in capsys.readouterr().err

    more = run_trials(trials + [_trial("ok_trial", x=99, steps=1)], progress=False, **kw)  # a trial added
    assert (more.n_skipped, more.n_ok) == (2, 1) and not more.restored
    assert Path(more.experiment_path).name.startswith("dedup__")  # new experiment for the new trial set

    forced = run_trials(trials, force=True, progress=False, **kw)
    assert (forced.n_skipped, forced.n_ok) == (0, 2)
    df = store.df().set_index("trial_key")
    assert len(df) == 3  # replaced, not duplicated ...
    assert all(df.loc[k, "finished_at"] > stamps[k] for k in stamps.index)
    hist = store.query("SELECT trial_key, finished_at FROM history").set_index("trial_key")["finished_at"]
    assert hist.sort_index().tolist() == stamps.sort_index().tolist()  # ... and the old rows kept (issue 21)

    # the same trials under a renamed grid are the same trials: nothing runs, no duplicate key (issue 21)
    renamed = [_trial("ok_trial", grid="renamed", x=i, steps=1) for i in range(2)]
    assert [t.trial_key for t in renamed] == [t.trial_key for t in trials]
    again = run_trials(renamed, progress=False, **kw)
    assert (again.n_skipped, again.n_ok, again.experiment_path) == (2, 0, None)
    assert store.query("SELECT count(*) AS n FROM results")["n"][0] == 3


def test_retry_then_ok_and_permanent_error(tmp_path):
    store = ResultsStore(tmp_path / "store")
    flaky = _trial("flaky_trial", marker=str(tmp_path / "marker"), ckpt_dir=str(tmp_path / "ckpt"))
    broken = _trial("always_fails", n=1)
    fine = _trial("ok_trial", x=3, steps=1)
    diverging = _trial("diverging_trial", n=2, columns={"mixer": "gla"})
    s = run_trials([flaky, broken, fine, diverging], store=store, experiment="faults",
                   storage_dir=tmp_path / "ray", max_failures=1, progress=False)
    assert (s.n_ok, s.n_failed, s.n_other) == (2, 1, 1)
    df = store.df().set_index("trial_key")
    assert len(df) == 4
    r = df.loc[flaky.trial_key]
    assert r.status == "ok" and r.attempt == 2 and r.resumed_from == "step=1"  # retried from its checkpoint
    e = df.loc[broken.trial_key]
    assert e.status == "error" and e.attempt == 2 and "always_fails: this trial never works" in e.error
    assert "\x1b[" not in e.error and e.torch is not None and e.finished_at is not None
    assert df.loc[fine.trial_key].status == "ok" and df.loc[fine.trial_key].score == 6.0
    d = df.loc[diverging.trial_key]
    assert d.status == "diverged" and d.mixer == "gla" and d.loss != d.loss  # NaN kept
    assert s.statuses[broken.trial_key] == "error"


def test_wall_s_sums_segments_and_build_errors_are_not_retried(tmp_path):
    """Defects (issue 21): a resumed trial's wall_s covered only its last segment; a deterministic build error
    was retried."""
    store = ResultsStore(tmp_path / "store")
    log = tmp_path / "runs.log"
    seg = _trial("slow_flaky_trial", marker=str(tmp_path / "marker"), ckpt_dir=str(tmp_path / "ckpt"), sleep_s=1.5)
    bad = _trial("config_error_trial", log=str(log))
    s = run_trials([seg, bad], store=store, experiment="segments", storage_dir=tmp_path / "ray", max_failures=2,
                   progress=False)
    assert (s.n_ok, s.n_failed) == (1, 1)
    df = store.df().set_index("trial_key")
    r = df.loc[seg.trial_key]
    assert r.status == "ok" and r.attempt == 2 and r.segments == 2 and r.resumed_from == "step=1"
    assert r.wall_s >= 3.0  # both 1.5 s segments, not only the last
    assert (r.finished_at - r.started_at).total_seconds() >= 3.0  # started_at is the first segment's start
    e = df.loc[bad.trial_key]
    assert e.status == "error" and e.attempt == 1 and "not retried" in e.error and "num_heads" in e.error
    assert log.read_text().splitlines() == ["ran"]  # one execution, although max_failures=2
