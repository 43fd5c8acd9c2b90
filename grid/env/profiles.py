"""Environment profiles (configs/env/*.txt): pinned package sets for GPU workers, checked, not assumed.

A profile is a pip requirements file with two comment headers:
    # lingrid environment profile: <name>
    # architectures: all | mixer, mixer, ...
Cluster submission passes it as the Ray `runtime_env` (pip list); every trial checks the versions
it actually runs against it at start and fails fast, naming each mismatch; rows record what ran.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import InvalidVersion

from grid.env.versions import package_version, parse_version
from grid.paths import REPO

PROFILE_DIR = REPO / "configs" / "env"


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class EnvProfile:
    name: str
    requirements: tuple[str, ...]
    architectures: frozenset[str] | None  # None = all

    def check_architectures(self, mixers) -> None:
        """Reject a grid before it starts if this profile cannot run one of its mixers."""
        if self.architectures is None:
            return
        bad = sorted(set(mixers) - self.architectures)
        if bad:
            raise ProfileError(f"environment profile {self.name!r} cannot run mixer(s) {bad}; "
                               f"allowed: {sorted(self.architectures)}")

    def mismatches(self, versions: dict[str, str | None] | None = None) -> list[str]:
        """Requirements that the installed (or given) versions do not satisfy, one message each."""
        out = []
        for line in self.requirements:
            req = Requirement(line)
            have = (versions or {}).get(req.name) if versions is not None else package_version(req.name)
            if have is None:
                out.append(f"{req.name}: required {req.specifier or 'installed'}, not installed")
                continue
            try:
                ok = req.specifier.contains(parse_version(have), prereleases=True)
            except InvalidVersion:
                ok = False
            if not ok:
                out.append(f"{req.name}: required {req.specifier}, found {have}")
        return out

    def check_installed(self) -> None:
        bad = self.mismatches()
        if bad:
            raise ProfileError(f"this worker does not match environment profile {self.name!r}: " + "; ".join(bad))

    def runtime_env(self) -> dict:
        return {"pip": list(self.requirements), "env_vars": {"LINGRID_ENV_PROFILE": self.name}}


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.txt"))


def load_profile(name_or_path: str) -> EnvProfile:
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.txt"
    if not path.exists():
        raise ProfileError(f"env_profile={name_or_path!r} not found; allowed: {profile_names()} or a path to a .txt")
    name, archs, reqs = path.stem, None, []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if m := re.match(r"#\s*lingrid environment profile:\s*(\S+)", line):
            name = m.group(1)
        elif m := re.match(r"#\s*architectures:\s*(.+)", line):
            value = m.group(1).strip()
            archs = None if value == "all" else frozenset(a.strip() for a in value.split(",") if a.strip())
        elif line and not line.startswith("#"):
            Requirement(line)  # validate early
            reqs.append(line)
    return EnvProfile(name, tuple(reqs), archs)


__all__ = ["PROFILE_DIR", "EnvProfile", "ProfileError", "load_profile", "profile_names"]
