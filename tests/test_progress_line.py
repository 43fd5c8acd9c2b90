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


# ------------------------------------------------------------------ work-based ETA, labels, live table
def _specs(n, tokens=1000, steps=10, **work):
    from grid.run.spec import Work, make_trial

    return [make_trial({"i": i}, suite="s", grid="g", trainable="m:f",
                       columns={"model_id": "gla", "hybrid": "pure" if i % 2 else "3:1", "seed": 0},
                       work=Work(steps=steps, tokens=tokens, **work)) for i in range(n)]


def _tune_trial(spec, **result):
    return SimpleNamespace(trial_id=spec.trial_key[:6], last_result=result,
                           config={"trial": {"trial_key": spec.trial_key}})


def test_eta_comes_from_tokens_trained_and_left(monkeypatch):
    """Two trials of 1000 tokens, one at a time. The rate is measured from the first progress report on
    (start-up is not training speed): 250 more tokens in 50 s = 5 tokens/s, 1650 tokens left: 330 s.
    No finished trial is needed, and the answer is never '?'."""
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "time", clock.time)
    specs = _specs(2)
    cb = ProgressCallback(2, experiment="x", stream=io.StringIO(), specs=specs)
    a, b = (_tune_trial(s) for s in specs)
    cb.on_trial_start(0, [], a)
    clock.t += 30  # Ray, imports, the first kernels
    cb.on_trial_result(0, [], a, {"progress/step": 1.0, "progress/tokens": 100.0})
    assert "ETA after the first progress reports" in cb.line()
    clock.t += 50
    cb.on_trial_result(0, [], a, {"progress/step": 3.0, "progress/tokens": 350.0, "progress/train_loss": 3.0})
    assert _eta_s(cb.line()) == 330 and "tokens 350/2K" in cb.line()
    clock.t += 130  # a finishes (900 tokens in 180 s since the first report), b starts: 1000 tokens left
    cb.on_trial_complete(0, [], _tune_trial(specs[0], status="ok", **{"progress/tokens": 1000.0}))
    cb.on_trial_start(0, [], b)
    assert _eta_s(cb.line()) == 200


def test_eta_is_an_upper_bound_when_trials_may_stop_early(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "time", clock.time)
    specs = _specs(1, epochs=10, may_stop_early=True)
    cb = ProgressCallback(1, experiment="x", stream=io.StringIO(), specs=specs)
    a = _tune_trial(specs[0])
    cb.on_trial_start(0, [], a)
    cb.on_trial_result(0, [], a, {"progress/tokens": 100.0, "progress/epoch": 1.0})
    clock.t += 10
    cb.on_trial_result(0, [], a, {"progress/tokens": 500.0, "progress/epoch": 5.0})
    assert "ETA <=12s" in cb.line()  # 400 tokens in 10 s, 500 left (runs that stop early: at most)


def test_labels_name_trials_by_what_differs():
    from grid.run.pack import make_pack
    from grid.run.progress import trial_labels

    specs = _specs(2)
    assert sorted(trial_labels(specs).values()) == ["gla 3:1", "gla pure"]
    pack = make_pack(specs)
    assert trial_labels([pack]) == {pack.trial_key: "gla (2 runs)"}  # what its members share


def test_live_table_shows_each_running_trial(monkeypatch):
    from rich.console import Console

    from grid.run.progress import progress_mode

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("LINGRID_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert progress_mode(Tty()) == "live" and progress_mode(io.StringIO()) == "plain"
    monkeypatch.setenv("LINGRID_PROGRESS", "off")
    assert progress_mode(Tty()) == "off"
    specs = _specs(2)
    cb = ProgressCallback(2, experiment="x", stream=io.StringIO(), specs=specs)
    a = _tune_trial(specs[0])
    cb.on_trial_start(0, [], a)
    cb.on_trial_result(0, [], a, {"progress/step": 5.0, "progress/tokens": 500.0, "progress/train_loss": 2.5,
                                  "progress/eval_loss": 2.75})
    out = io.StringIO()
    Console(file=out, width=120).print(cb.board.table())
    text = out.getvalue()
    assert all(len(line) <= 120 for line in text.splitlines())
    row = next(line for line in text.splitlines() if line.startswith("gla"))
    assert "50%" in row and "5/10" in row and "2.5" in row and "2.75" in row


def test_progress_tracker_derives_tokens_and_epochs_from_steps():
    from grid.run.spec import Work
    from grid.run.context import ProgressTracker

    t = ProgressTracker(Work(steps=100, tokens=12800, epochs=4))
    t.update({"step": 50, "epoch": 1, "train_loss": 1.5, "test_loss": 2.0, "test_acc": 0.5})  # what MAD reports
    assert t.values == {"step": 50.0, "tokens": 6400.0, "epoch": 2.0, "train_loss": 1.5, "eval_loss": 2.0,
                        "eval_acc": 0.5, "runs_done": None}
    lm = ProgressTracker(Work(steps=10, tokens=1000))
    lm.update({"curve/step": 3, "curve/tokens": 300, "curve/train_loss": 4.0})  # what an LM trial reports
    assert (lm.values["step"], lm.values["tokens"], lm.values["epoch"]) == (3.0, 300.0, None)


def test_a_bad_progress_setting_warns_and_falls_back(monkeypatch, capsys):
    from grid.run import progress

    monkeypatch.setenv("LINGRID_PROGRESS", "fancy")
    monkeypatch.setattr(progress.progress_mode, "_warned", False, raising=False)
    assert progress.progress_mode(io.StringIO()) == "plain"
    assert "LINGRID_PROGRESS='fancy' is not one of auto, live, plain, off" in capsys.readouterr().err
