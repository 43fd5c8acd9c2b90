"""Installed package versions, and the one way to read a version string (packaging's PEP 440 parser)."""
from __future__ import annotations

import importlib.metadata as md

from packaging.version import InvalidVersion, Version


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, None when it is not installed."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def fla_version() -> str | None:
    """fla's version under either of its distribution names."""
    return package_version("fla-core") or package_version("flash-linear-attention")


def parse_version(v: str) -> Version:
    """A version string as packaging reads it, without its local part ('2.6.0+cu124' -> 2.6.0);
    InvalidVersion when it is not one."""
    return Version(v.split("+")[0])


def version_tuple(v: str | None) -> tuple[int, ...]:
    """The release numbers of a version string ('3.7.0+git1' -> (3, 7, 0)); () when there is none."""
    if not v:
        return ()
    try:
        return parse_version(v).release
    except InvalidVersion:
        return ()


__all__ = ["fla_version", "package_version", "parse_version", "version_tuple"]
