import pytest

from grid.env.profiles import ProfileError, load_profile, profile_names


def test_profiles_shipped():
    assert {"current", "seed-pinned"} <= set(profile_names())


def test_seed_pinned_rules():
    prof = load_profile("seed-pinned")
    assert "torch==2.5.1" in prof.requirements and "triton==3.1.0" in prof.requirements
    prof.check_architectures(["gla", "deltanet", "attention"])
    with pytest.raises(ProfileError, match=r"cannot run mixer\(s\) \['path_attn'\]; allowed: .*gla"):
        prof.check_architectures(["gla", "path_attn"])


def test_current_allows_every_architecture():
    load_profile("current").check_architectures(["path_attn", "mesa_net", "anything"])


def test_version_mismatch_named():
    prof = load_profile("seed-pinned")
    bad = prof.mismatches({"torch": "2.11.0", "triton": "3.1.0", "flash-linear-attention": None, "ray": "2.60.0"})
    assert any("torch: required ==2.5.1, found 2.11.0" in b for b in bad)
    assert any("flash-linear-attention" in b and "not installed" in b for b in bad)
    assert not any(b.startswith("triton") or b.startswith("ray") for b in bad)


def test_unknown_profile_lists_allowed():
    with pytest.raises(ProfileError, match="allowed: .*current"):
        load_profile("nope")


def test_runtime_env_carries_pins():
    env = load_profile("current").runtime_env()
    assert "flash-linear-attention==0.6.0" in env["pip"]
    assert env["env_vars"]["LINGRID_ENV_PROFILE"] == "current"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    return tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_pyproject_installs_what_the_current_profile_checks():
    """One source of truth: every pin of configs/env/current.txt is pyproject's own requirement, with the
    same specifier, so `pip install lingrid` gives an environment that passes the check at trial start."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    deps = {canonicalize_name(r.name): r for r in map(Requirement, _pyproject()["project"]["dependencies"])}
    for line in load_profile("current").requirements:
        want = Requirement(line)
        have = deps.get(canonicalize_name(want.name))
        assert have is not None, f"{want.name} is pinned in configs/env/current.txt but not a dependency"
        assert have.specifier == want.specifier, (want.name, str(have.specifier), str(want.specifier))


def test_gpu_extra_has_what_fused_backends_import_and_ci_extras_build_nothing_for_cuda():
    from packaging.requirements import Requirement

    from grid.models.registry import all_mixers

    extras = _pyproject()["project"]["optional-dependencies"]
    gpu = {Requirement(r).name.replace("-", "_") for r in extras["gpu"]}
    needed = {m for spec in all_mixers() for m in spec.fused_requires}
    assert needed and needed <= gpu  # mamba and mamba2 need mamba_ssm
    cuda_builds = {"mamba-ssm", "causal-conv1d", "flash-attn"}
    for extra in ("test", "data", "plots"):  # what CI installs on a CPU machine
        assert not {Requirement(r).name for r in extras[extra]} & cuda_builds, extra


def test_this_installed_environment_passes_the_current_profile():
    import sys

    if sys.platform != "linux":
        pytest.skip("triton (pinned by the profile) exists for Linux only")
    assert load_profile("current").mismatches() == []


def test_one_version_parser_decides_the_gated_backward_block():
    """grid/env/versions.py reads every version string (profiles and the fused-kernel check alike)."""
    from grid.env.kernels import gated_bwd_blocked
    from grid.env.versions import version_tuple

    assert version_tuple("3.7.0+git1a2b") == (3, 7, 0) and version_tuple("2.6.0+cu124") == (2, 6, 0)
    assert version_tuple(None) == version_tuple("not a version") == ()
    hopper = (9, 0)
    assert gated_bwd_blocked("3.6.0", hopper, has_tilelang=False)
    assert not gated_bwd_blocked("3.7.1", hopper, has_tilelang=False)
    assert not gated_bwd_blocked("3.6.0", hopper, has_tilelang=True) and not gated_bwd_blocked("3.6.0", (8, 0), False)
