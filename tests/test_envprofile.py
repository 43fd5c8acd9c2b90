import pytest

from grid.envprofile import ProfileError, load_profile, profile_names


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
