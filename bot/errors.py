"""The configuration error type, apart from bot.config so that the modules config builds on
(policy, repository entries) can raise it without importing config back."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration mistake, phrased for the person who has to fix it."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source, self.key, self.reason = source, key, reason
        super().__init__(f"{source}: {key}: {reason}" if key else f"{source}: {reason}")
