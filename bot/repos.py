"""Which repositories this Coalmine serves: the `repos:` entries of the server config.

Deny by default, like Atlantis' `--repo-allowlist` and Argo CD Projects' source repositories: a
repository deploys only when an entry names it. An entry key is `owner/name`, a glob such as
`owner/*` (`*` stays within one path segment, `**` crosses them, for GitLab subgroups), and may
start with `github:` or `gitlab:` to hold on one forge only. Names match case-insensitively, as
both forges treat them. Pure: the stable-id pins that make a rename keep its policy live in
bot.tenancy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.errors import ConfigError
from bot.policy import Policy
from bot.policy_parse import parse_policy

FORGES = ("github", "gitlab")
_KEY = re.compile(r"^(?:(?P<forge>github|gitlab):)?(?P<name>[A-Za-z0-9_.*-]+(?:/[A-Za-z0-9_.*-]+)+)$")


@dataclass(frozen=True)
class RepoEntry:
    """One `repos:` entry: which repositories it names and the policy they deploy under."""

    key: str  # as written in the config, the entry's identity (pins refer to it)
    forge: str | None  # None: the same name on either forge
    pattern: str  # casefolded owner/name or glob
    policy: Policy

    @property
    def exact(self) -> bool:
        return "*" not in self.pattern

    def matches(self, forge: str, full_name: str) -> bool:
        if self.forge is not None and self.forge != forge:
            return False
        return _glob(self.pattern).fullmatch(full_name.casefold()) is not None


def parse_key(key: str, source: str) -> tuple[str | None, str]:
    """(forge or None, casefolded pattern) of an entry key; ConfigError explains the shape."""
    match = _KEY.match(key)
    if not match or any(part in ("", ".", "..") for part in match["name"].split("/")):
        raise ConfigError(source, f"repos.{key}",
                          "must be owner/name or a glob like owner/*, optionally prefixed "
                          "with github: or gitlab:")
    return match["forge"], match["name"].casefold()


def parse_entries(raw: Any, source: str, *, own_namespace: str | None) -> dict[str, Policy]:
    """`repos:` of the server config: entry key → policy; every mistake names its key."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "repos", "must be a mapping of repository name to settings")
    entries: dict[str, Policy] = {}
    for key, spec in raw.items():
        key = str(key)
        parse_key(key, source)
        entries[key] = parse_policy(spec, source, key, own_namespace=own_namespace)
    return entries


def parse_env_entries(text: str, source: str, *, own_namespace: str | None) -> dict[str, Policy]:
    """The quick start's one variable: `acme/gitops=shop,staging; acme/other=web`.

    Each repository names the namespaces it may deploy into; everything else takes the policy
    defaults (default cluster, any namespaced kind, no cluster-scoped kind).
    """
    entries: dict[str, Policy] = {}
    for item in filter(None, (part.strip() for part in re.split(r"[;\s]+", text))):
        name, sep, namespaces = item.partition("=")
        if not sep or not namespaces.strip(","):
            raise ConfigError(source, name,
                              "name the namespaces it may deploy into: owner/name=ns1,ns2")
        parse_key(name, source)
        raw = {"namespaces": [n for n in namespaces.split(",") if n]}
        entries[name] = parse_policy(raw, source, name, own_namespace=own_namespace)
    return entries


def entries_of(repos: Mapping[str, Policy]) -> list[RepoEntry]:
    """The entries, most specific first: exact names before globs, longer globs first."""
    built = []
    for key, policy in repos.items():
        forge, pattern = parse_key(key, "repos")
        built.append(RepoEntry(key, forge, pattern, policy))
    return sorted(built, key=lambda e: (not e.exact, -len(e.pattern), e.forge is None, e.key))


def match(repos: Mapping[str, Policy], forge: str, full_name: str) -> RepoEntry | None:
    """The most specific entry naming `full_name` on `forge`, or None (not served)."""
    return next((e for e in entries_of(repos) if e.matches(forge, full_name)), None)


def _glob(pattern: str) -> re.Pattern[str]:
    parts = []
    for token in re.split(r"(\*\*|\*)", pattern):
        if token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))
