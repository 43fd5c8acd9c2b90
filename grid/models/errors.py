"""Errors that name the field, the value and what is allowed (principle 6: fail before GPU time is spent)."""
from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A configuration value is not allowed."""

    def __init__(self, field: str, value, allowed: Iterable | str | None = None, hint: str | None = None):
        msg = f"{field}={value!r} is not allowed"
        if allowed is not None:
            allowed_s = allowed if isinstance(allowed, str) else ", ".join(map(str, allowed))
            msg += f"; allowed: {allowed_s}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
        self.field, self.value = field, value


class BackendUnavailable(RuntimeError):
    """A mixer backend cannot run on this machine; the message says why and how to fix it."""
