"""The suite contract (grid/run/suites.py) end to end: a toy third suite (tests/toy_suite.py) runs through
`python -m grid run FILE` on the real runner, with dedup against the store and resume from a checkpoint."""
from __future__ import annotations

import pytest

pytest.importorskip("ray")

from grid.__main__ import main as grid_main  # noqa: E402
from grid.results.store import ResultsStore  # noqa: E402
from tests.helpers import embedded_ray  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_2cpu():
    yield from embedded_ray(num_cpus=2)


def test_toy_suite_runs_through_grid_run_with_dedup_and_resume(tmp_path, capsys):
    toy = tmp_path / "toy.yaml"
    toy.write_text("suite: tests.toy_suite\nname: squares\nvalues: [2, 3]\nfail_once: [3]\n")
    run = ["run", str(toy), "--results", str(tmp_path / "store"), "--ray-tmp-path", str(tmp_path / "ray")]

    assert grid_main(run) == 1  # 3's first attempt crashes (no retries): an error row, the grid is not done
    assert "2 trial(s): 0 already in the store, 1 ok, 1 failed" in capsys.readouterr().out
    assert grid_main(run) == 0  # dedup: 2 is not run again; resume: 3 restarts from its checkpoint
    assert "2 trial(s): 1 already in the store, 1 ok, 0 failed" in capsys.readouterr().out
    assert grid_main(run) == 0  # all done: nothing runs
    assert "2 trial(s): 2 already in the store, 0 ok, 0 failed" in capsys.readouterr().out

    df = ResultsStore(tmp_path / "store").df(suite="toy", grid="squares").set_index("square")
    assert sorted(df.index) == [4, 9] and set(df["status"]) == {"ok"}
    assert df.loc[9, "resumed_from"] == "half done" and df.loc[4, "resumed_from"] == ""
    from grid.keys import trial_key  # the one key rule; the runtime block stays out of it

    assert set(df["trial_key"]) == {trial_key("toy", {"value": 2}), trial_key("toy", {"value": 3})}


def test_grid_run_names_the_suites_it_knows(tmp_path, capsys):
    bad = tmp_path / "x.yaml"
    bad.write_text("suite: tests.no_such_suite\n")
    assert grid_main(["run", str(bad)]) == 2
    assert "cannot import tests.no_such_suite" in capsys.readouterr().err
    bad.write_text("suite: grid.keys\n")  # a module that is not a suite
    assert grid_main(["run", str(bad)]) == 2
    assert "does not implement the suite contract" in capsys.readouterr().err
