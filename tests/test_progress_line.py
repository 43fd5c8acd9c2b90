"""The runner's progress line: counts and an ETA that moves while trials run."""
from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from grid.run import callbacks  # noqa: E402
from grid.run.callbacks import ProgressCallback  # noqa: E402


class Clock:
    def __init__(self):
        self.t = 1000.0

    def time(self):
        return self.t


def _trial(tid, **result):
    return SimpleNamespace(trial_id=tid, last_result=result)


def _eta_s(line: str) -> float:
    m = re.search(r"ETA ~(?:(\d+)m)?(\d+)s", line)
    assert m, line
    return int(m.group(1) or 0) * 60 + int(m.group(2))


def test_counts_and_eta_counting_down_while_a_trial_runs(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "time", clock.time)
    cb = ProgressCallback(3, experiment="x", stream=io.StringIO())
    a, b = _trial("a", status="ok", wall_s=100.0), _trial("b")
    cb.on_trial_start(0, [], a)
    clock.t += 100
    cb.on_trial_complete(0, [], a)
    cb.on_trial_start(0, [], b)
    line0 = cb.line()
    assert "1/3 done | 0 failed | 1 running | 1 pending" in line0
    assert _eta_s(line0) == 200  # b: 100 s left, c: 100 s, one at a time
    clock.t += 60
    assert _eta_s(cb.line()) == 140  # b has used 60 of its expected 100 s
    clock.t += 90
    assert _eta_s(cb.line()) == 100  # b overran: only c's time is left
    assert "ETA" not in cb.line(final=True)


def test_eta_ignores_fast_failures_and_says_when_it_cannot_tell(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "time", clock.time)
    cb = ProgressCallback(3, experiment="x", stream=io.StringIO())
    bad, a, b = _trial("bad", status="error", wall_s=5.0), _trial("a", status="ok", wall_s=100.0), _trial("b")
    cb.on_trial_start(0, [], bad)
    cb.on_trial_start(0, [], a)
    clock.t += 5
    cb.on_trial_complete(0, [], bad)
    assert "ETA" not in cb.line()  # a 5 s failure is no estimate of a working trial
    cb.on_trial_start(0, [], b)
    clock.t += 95
    cb.on_trial_complete(0, [], a)
    assert _eta_s(cb.line()) == 5  # b has used 95 of the 100 s that a took
    clock.t += 50  # b is now past the mean and nothing is pending: not "ETA ~0s"
    line = cb.line()
    assert "ETA ?" in line and "1m40s mean" in line, line


def test_packs_count_their_runs():
    import json

    from grid.run.trainable import ROW_KEY

    cb = ProgressCallback(2, experiment="x", stream=io.StringIO(), n_runs=5)
    rows = [{"status": "ok"}, {"status": "error"}, {"status": "ok"}]
    a = _trial("a", status="partial", wall_s=10.0, **{ROW_KEY: json.dumps({"members": rows})})
    cb.on_trial_start(0, [], a)
    cb.on_trial_complete(0, [], a)
    line = cb.line()
    assert "1/2 done (1 partial)" in line and "0 failed" in line  # the pack itself finished
    assert "runs: 2/5 done, 1 failed" in line                     # its runs, one of them failed


def test_packed_runs_count_as_they_finish_and_survive_their_pack_dying(monkeypatch):
    import json

    from grid.run.trainable import MEMBER_ROW_KEY

    cb = ProgressCallback(1, experiment="x", stream=io.StringIO(), n_runs=3)
    members = [SimpleNamespace(trial_key=k) for k in ("m1", "m2", "m3")]
    monkeypatch.setattr(callbacks, "spec_of", lambda trial: SimpleNamespace(members=members))
    a = _trial("a")
    cb.on_trial_start(0, [], a)
    cb.on_trial_result(0, [], a, {MEMBER_ROW_KEY: json.dumps({"trial_key": "m1", "status": "ok"})})
    assert "runs: 1/3 done, 0 failed" in cb.line()  # while its pack still runs
    cb.on_trial_error(0, [], a)  # the process died: the finished run stays done, the other two failed
    assert "runs: 1/3 done, 2 failed" in cb.line()
