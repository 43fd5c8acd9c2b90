"""Packed trials (grid/run/pack.py): several member trials in one Ray trial, one store row per member.

Ray tests share one embedded Ray (2 CPUs, no GPU) and one first run of a 3-member pack (two ok,
one failing); the validation tests never start Ray.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

import grid.run.runner as runner  # noqa: E402
from grid.results.store import ResultsStore  # noqa: E402
from grid.run.pack import leaves, make_pack  # noqa: E402
from grid.run.runner import run_trials  # noqa: E402
from grid.run.spec import TrialSpec, make_trial  # noqa: E402
from tests.helpers import embedded_ray  # noqa: E402

STUB = "tests.stub_trials"


def _trial(fn, suite="test", grid="g", columns=None, **config):
    return make_trial(config, suite=suite, grid=grid, trainable=f"{STUB}:{fn}", columns=columns)


@pytest.fixture(scope="module")
def ray_2cpu():
    yield from embedded_ray(num_cpus=2, num_gpus=0)


@pytest.fixture(scope="module")
def first_run(ray_2cpu, tmp_path_factory):
    """One pack of [ok x=1, ok x=2, always_fails] run once; the store as it was right after."""
    base = tmp_path_factory.mktemp("pack")
    members = [_trial("ok_trial", x=1, steps=2, columns={"seed": 1, "mixer": "m1"}),
               _trial("ok_trial", x=2, steps=2, columns={"seed": 2, "mixer": "m2"}),
               _trial("always_fails", n=1, columns={"seed": 3})]
    pack = make_pack(members)
    store = ResultsStore(base / "store")
    kw = dict(store=store, experiment="packs", storage_dir=base / "ray", progress=False)
    summary = run_trials([pack], **kw)
    return {"members": members, "pack": pack, "store": store, "kw": kw, "summary": summary,
            "df": store.df().set_index("trial_key")}


# ------------------------------------------------------------------------------------- through Ray

def test_pack_writes_one_row_per_member(first_run):
    members, pack, s, df = first_run["members"], first_run["pack"], first_run["summary"], first_run["df"]
    ok1, ok2, bad = members
    assert (s.n_total, s.n_ok, s.n_failed, s.n_skipped, s.missing) == (3, 2, 1, 0, [])
    assert s.statuses == {ok1.trial_key: "ok", ok2.trial_key: "ok", bad.trial_key: "error"}
    assert sorted(df.index) == sorted(m.trial_key for m in members)  # exactly the members ...
    assert pack.trial_key not in df.index                              # ... and no row for the pack
    for m, x in ((ok1, 1), (ok2, 2)):
        r = df.loc[m.trial_key]
        assert r.status == "ok" and pd.isna(r.error) and r.attempt == 1
        assert r.score == 2.0 * x and r.n_steps == 2 and r.loss == 0.5  # returned + last ctx.report metrics
        assert json.loads(r.config_json) == m.config and r.config_json == m.config_json
        assert (r.seed, r.mixer) == (m.columns["seed"], m.columns["mixer"])
        assert (r.suite, r.grid) == ("test", "g") and r.started_at <= r.finished_at
        assert r.ray is not None and r.experiment == "packs"
    e = df.loc[bad.trial_key]
    assert e.status == "error" and "always_fails: this trial never works" in e.error
    assert "ValueError" in e.error and e.seed == 3 and json.loads(e.config_json) == bad.config
    assert pd.isna(e.score)  # NaN: the ok members' metrics did not leak into the failed member's row


def test_members_run_concurrently_in_threads_of_one_worker(ray_2cpu, tmp_path):
    store = ResultsStore(tmp_path / "store")
    members = [_trial("thread_trial", sleep_s=1.5, i=i) for i in range(2)]
    s = run_trials([make_pack(members)], store=store, experiment="threads", storage_dir=tmp_path / "ray",
                   progress=False)
    assert (s.n_total, s.n_ok) == (2, 2)
    a, b = (store.df().set_index("trial_key").loc[m.trial_key] for m in members)
    assert max(a.entered, b.entered) < min(a.left, b.left)  # inside the trial functions, they overlapped
    assert b.started_at < a.finished_at and a.started_at < b.finished_at
    assert a.worker_pid == b.worker_pid                      # one worker process ...
    assert a.thread_id != b.thread_id                        # ... two threads, named after the member
    assert (a.thread_name, b.thread_name) == tuple(f"member-{m.trial_key}" for m in members)


def test_resubmitted_pack_reruns_only_unfinished_members_and_force_reruns_all(first_run):
    members, store, kw, before = first_run["members"], first_run["store"], first_run["kw"], first_run["df"]
    ok1, ok2, bad = members
    pack = first_run["pack"]

    again = run_trials([pack], **kw)
    assert (again.n_total, again.n_skipped, again.n_ok, again.n_failed) == (3, 2, 0, 1)
    assert again.statuses == {bad.trial_key: "error"}  # only the failed member ran
    df = store.df().set_index("trial_key")
    assert len(df) == 3
    for m in (ok1, ok2):
        assert df.loc[m.trial_key, "finished_at"] == before.loc[m.trial_key, "finished_at"]
    assert df.loc[bad.trial_key, "finished_at"] > before.loc[bad.trial_key, "finished_at"]
    assert df.loc[bad.trial_key, "status"] == "error"

    forced = run_trials([pack], force=True, **kw)
    assert (forced.n_total, forced.n_skipped, forced.n_ok, forced.n_failed) == (3, 0, 2, 1)
    after = store.df().set_index("trial_key")
    assert len(after) == 3
    assert all(after.loc[m.trial_key, "finished_at"] > df.loc[m.trial_key, "finished_at"] for m in members)


# ------------------------------------------------------------------------------ validation, no Ray

def test_pack_validation():
    a, b = _trial("ok_trial", x=1), _trial("ok_trial", x=2)
    with pytest.raises(ValueError, match="at least one member"):
        make_pack([])
    with pytest.raises(ValueError, match="one suite and grid"):
        make_pack([a, _trial("ok_trial", grid="other", x=3)])
    with pytest.raises(ValueError, match="one suite and grid"):
        make_pack([a, _trial("ok_trial", suite="other", x=3)])
    with pytest.raises(ValueError, match="do not nest"):
        make_pack([make_pack([a]), b])
    with pytest.raises(ValueError, match="appears twice"):
        make_pack([a, b, a])
    p = make_pack([a, b])
    assert p.trainable == a.trainable and leaves(p) == [a, b] and leaves(a) == [a]
    assert p.trial_key not in (a.trial_key, b.trial_key) and (p.suite, p.grid) == (a.suite, a.grid)
    assert make_pack([b, a]).trial_key == p.trial_key != make_pack([a]).trial_key


def test_run_trials_refuses_a_member_twice_before_starting_ray(tmp_path, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not be started")

    monkeypatch.setattr(runner, "_init_ray", no_ray)
    a, b, c = (_trial("ok_trial", x=i) for i in range(3))
    store = ResultsStore(tmp_path / "store")
    kw = dict(store=store, experiment="twice", storage_dir=tmp_path / "ray", progress=False)
    for trials in ([make_pack([a, b]), make_pack([a, c])],   # one member in two packs
                   [make_pack([a, b]), a]):                  # a member also on its own
        with pytest.raises(ValueError, match="more than one pack") as e:
            run_trials(trials, **kw)
        assert a.trial_key in str(e.value)
    assert not (tmp_path / "ray").exists() and store.trial_keys() == set()


def test_pack_spec_json_round_trip():
    members = [_trial("ok_trial", x=i, columns={"seed": i}) for i in range(3)]
    p = make_pack(members, resources={"cpu": 2, "gpu": 0.5})
    q = TrialSpec.from_json(p.to_json())
    assert q == p and q.trial_key == p.trial_key and q.resources.gpu == 0.5
    assert [m.trial_key for m in q.members] == [m.trial_key for m in members]
    assert [m.config for m in q.members] == [m.config for m in members]
    assert [m.columns for m in q.members] == [m.columns for m in members]
    assert all(not m.members for m in q.members)


def test_a_failing_member_is_retried_in_its_thread(ray_2cpu, tmp_path):
    flaky = _trial("flaky_trial", marker=str(tmp_path / "marker"), ckpt_dir=str(tmp_path / "ckpt"))
    fine = _trial("ok_trial", x=5, steps=1)
    store = ResultsStore(tmp_path / "store")
    s = run_trials([make_pack([flaky, fine], retries=1)], store=store, experiment="retry",
                   storage_dir=tmp_path / "ray", progress=False)
    assert (s.n_ok, s.n_failed) == (2, 0)
    df = store.df().set_index("trial_key")
    assert df.loc[flaky.trial_key].status == "ok" and df.loc[flaky.trial_key].attempt == 2  # second attempt
    assert df.loc[fine.trial_key].attempt == 1


def _dying_pack(tmp_path, *, retry: bool):
    ok = _trial("counted_trial", log=str(tmp_path / "ok.log"))
    dies = _trial("dies_after_row", log=str(tmp_path / "dies.log"), store=str(tmp_path / "store"),
                  wait_key=ok.trial_key, marker=str(tmp_path / "died") if retry else None)
    return ok, dies, make_pack([ok, dies])


def test_members_that_finished_keep_their_rows_when_the_pack_process_dies(ray_2cpu, tmp_path):
    ok, dies, pack = _dying_pack(tmp_path, retry=False)
    store = ResultsStore(tmp_path / "store")
    s = run_trials([pack], store=store, experiment="dies", storage_dir=tmp_path / "ray", progress=False,
                   max_failures=0)
    df = store.df().set_index("trial_key")
    assert df.loc[ok.trial_key, "status"] == "ok" and df.loc[ok.trial_key, "score"] == 1.0
    assert df.loc[dies.trial_key, "status"] == "error"  # the process died under it
    assert s.statuses == {ok.trial_key: "ok", dies.trial_key: "error"}


def test_a_retried_pack_runs_only_the_members_without_a_row(ray_2cpu, tmp_path):
    ok, dies, pack = _dying_pack(tmp_path, retry=True)
    store = ResultsStore(tmp_path / "store")
    s = run_trials([pack], store=store, experiment="retry", storage_dir=tmp_path / "ray", progress=False,
                   max_failures=1)
    assert s.statuses == {ok.trial_key: "ok", dies.trial_key: "ok"}
    assert (tmp_path / "ok.log").read_text().count("ran") == 1  # restored from the pack's checkpoint, not re-run
    assert (tmp_path / "dies.log").read_text().count("ran") == 2
    assert store.df().set_index("trial_key").loc[dies.trial_key, "score"] == 2.0
