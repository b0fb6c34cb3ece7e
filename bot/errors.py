"""Error types shared across layers, kept apart from the modules that raise them so that pure
modules can raise them without importing an adapter (and without import cycles): ConfigError
for policy and repository entries that bot.config builds on, ManifestError for the YAML loader
(bot.yamlload) that both bot.config and bot.manifests use."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration mistake, phrased for the person who has to fix it."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source, self.key, self.reason = source, key, reason
        super().__init__(f"{source}: {key}: {reason}" if key else f"{source}: {reason}")


class ManifestError(Exception):
    """The manifests cannot be rendered; the message says where and why, for people to fix."""
