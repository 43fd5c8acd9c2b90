"""What a new user sees first: `python -m grid --help` (and no arguments), and `python -m grid models`."""
from __future__ import annotations

import pytest

from grid.__main__ import COMMANDS, main


def test_help_lists_every_command_with_what_it_does(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in COMMANDS:
        assert any(ln.startswith(f"  {name} ") for ln in lines), name
    assert "python -m evals.mad.mad_eval_<arch>" in out and "python -m evals.mad leaderboard" in out
    assert "python -m grid run configs/grids/quickstart.yaml" in out
    assert max(len(ln) for ln in lines) <= 110


def test_no_arguments_is_a_usage_error_that_lists_the_commands(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: python -m grid <command>" in err and "  run " in err


def test_models_table_fits_and_says_what_is_true(capsys):
    from grid.models.cli import main as models_main
    from grid.models.registry import all_mixers, fused_status, reference_status

    assert models_main([]) == 0
    out = capsys.readouterr().out
    assert max(len(ln) for ln in out.splitlines()) <= 120
    assert "use backend=reference" not in out
    for spec in all_mixers():
        row = next(ln for ln in out.splitlines() if ln.startswith(spec.name + " "))
        auto = "fused" if fused_status(spec)[0] else "reference" if reference_status(spec)[0] else "-"
        assert row.split()[4] == auto, row


def test_a_fused_only_mixer_that_cannot_run_never_points_to_a_reference(monkeypatch):
    from grid.env import kernels as environment
    from grid.models.errors import BackendUnavailable
    from grid.models.registry import all_mixers, build_mixer

    monkeypatch.setattr(environment, "cuda_capability", lambda: None)  # as on a CPU-only machine
    fused_only = next(s for s in all_mixers() if s.reference is None and s.fused is not None)
    with pytest.raises(BackendUnavailable) as info:
        build_mixer(fused_only, 64, 0, fused_only.resolve_kwargs({}), "fused")
    assert "no reference backend" in str(info.value) and "backend=reference" not in str(info.value)
    with_ref = next(s for s in all_mixers() if s.reference is not None and s.fused is not None
                    and s.fused_needs_cuda)
    with pytest.raises(BackendUnavailable, match="backend=reference runs it in plain PyTorch"):
        build_mixer(with_ref, 64, 0, with_ref.resolve_kwargs({}), "fused")
