"""Reading a repository's deploy policy from its `repos:` entry of the server config.

Coalmine serves only the repositories listed under `repos:` (deny by default: see bot.tenancy).
Each entry states where its repository may deploy:

    repos:
      acme/gitops:                    # owner/name, "owner/*", or "github:owner/name" for one forge
        namespaces: [shop, "team-*"]  # required: names or globs
        deployBranch: main            # default: the repository's default branch
        clusters: [default]           # cluster names from `clusters:`, or "*"; default [default]
        allowKinds: ["*"]             # namespaced kinds it may deploy; default ["*"]
        denyKinds: []                 # kinds it may never deploy (namespaced or not); default []
        clusterScopedKinds: []        # cluster-scoped kinds it may deploy; default []
        serviceAccount: shop/deployer # every cluster call impersonates it (RBAC enforces too)
        adopt: false                  # may take over live objects no repository owns

Kind entries are strings written as in manifests, without the version:

    "Deployment"        that kind in any API group
    "apps/Deployment"   that kind in one group ("core/Service" for the core group, apiVersion v1)
    "apps/*", "*"       every kind in a group, every kind at all
    "rbac.authorization.k8s.io/Cluster*"   `*` may stand for any part of a group or kind

How the parsed `Policy` judges a merge's objects is bot.policy's part. Every mistake here is a
ConfigError naming the key at fault.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from bot.errors import ConfigError
from bot.policy import (
    ANY,
    CORE_GROUP_ALIAS,
    DEFAULT_POLICY,
    SYSTEM_NAMESPACES,
    KindPattern,
    Policy,
)

POLICY_KEYS = (
    "deployBranch",
    "clusters",
    "namespaces",
    "allowKinds",
    "denyKinds",
    "clusterScopedKinds",
    "serviceAccount",
    "adopt",
)
REQUIRED_KEYS = ("namespaces",)

_NAMESPACE_PATTERN = re.compile(r"^[a-z0-9*]([-a-z0-9*]{0,61}[a-z0-9*])?$")
_GROUP_PATTERN = re.compile(r"^[a-z0-9*]([-a-z0-9.*]*[a-z0-9*])?$")
_KIND_PATTERN = re.compile(r"^[A-Z*][A-Za-z0-9*]*$")
_VERSION_LIKE = re.compile(r"^v\d+((alpha|beta)\d+)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def parse_policy(
    raw: Mapping[str, Any] | None,
    source: str,
    repo: str,
    *,
    own_namespace: str | None = None,
) -> Policy:
    """The policy of `repo` from its `repos:` entry; ConfigError names the key at fault.

    `own_namespace` is Coalmine's own namespace, which no repository may deploy into.
    """
    base = f"repos.{repo}"
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(source, base, "must be a mapping")
    for key in raw:
        if key not in POLICY_KEYS:
            allowed = ", ".join(POLICY_KEYS)
            raise ConfigError(source, f"{base}.{key}", f"unknown key (allowed: {allowed})")
    for key in REQUIRED_KEYS:
        if raw.get(key) is None:
            raise ConfigError(source, f"{base}.{key}",
                              "is required: list the namespaces this repository may deploy into")
    protected = SYSTEM_NAMESPACES | ({own_namespace} if own_namespace else set())

    branch = raw.get("deployBranch")
    if branch is not None and (not isinstance(branch, str) or not branch.strip()):
        raise ConfigError(source, f"{base}.deployBranch", "must be a branch name")

    defaults = DEFAULT_POLICY
    clusters = _names(raw, "clusters", source, base, _check_cluster) or defaults.clusters
    namespaces = _names(raw, "namespaces", source, base, _check_namespace) or defaults.namespaces
    for i, pattern in enumerate(namespaces):
        if pattern in protected:
            raise ConfigError(source, f"{base}.namespaces[{i}]", _protected_reason(pattern,
                                                                                  own_namespace))
    account = _service_account(raw.get("serviceAccount"), source, f"{base}.serviceAccount")
    adopt = raw.get("adopt", False)
    if not isinstance(adopt, bool):
        raise ConfigError(source, f"{base}.adopt", "must be true or false")
    allow = _kinds(raw, "allowKinds", source, base, allow_empty=False) or defaults.allow_kinds
    deny = _kinds(raw, "denyKinds", source, base, allow_empty=True) or ()
    scoped = _kinds(raw, "clusterScopedKinds", source, base, allow_empty=True) or ()
    return Policy(
        deploy_branch=branch.strip() if branch else None,
        clusters=clusters,
        namespaces=namespaces,
        allow_kinds=allow,
        deny_kinds=deny,
        cluster_scoped_kinds=scoped,
        service_account=account,
        adopt=adopt,
        protected_namespaces=frozenset(protected),
    )


def _protected_reason(namespace: str, own_namespace: str | None) -> str:
    if namespace == own_namespace:
        return f"{namespace!r} is Coalmine's own namespace, which no repository may deploy into"
    return f"{namespace!r} is a system namespace, which no repository may deploy into"


def _service_account(value: Any, source: str, key: str) -> str | None:
    """`namespace/name` of the ServiceAccount to impersonate, checked as Kubernetes names."""
    if value is None:
        return None
    if not isinstance(value, str) or value.count("/") != 1:
        raise ConfigError(source, key, "must be written namespace/name, e.g. shop/deployer")
    namespace, name = value.split("/")
    if not _DNS_LABEL.match(namespace) or not _DNS_SUBDOMAIN.match(name):
        raise ConfigError(source, key, f"{value!r} is not a namespace/name of a ServiceAccount")
    return value


def _entries(raw: Mapping[str, Any], key: str, source: str, base: str) -> list[str] | None:
    """The strings of a list key, None when the key is absent."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ConfigError(source, f"{base}.{key}", "must be a list")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(source, f"{base}.{key}[{i}]", "must be a non-empty string")
    return [item.strip() for item in value]


def _names(
    raw: Mapping[str, Any],
    key: str,
    source: str,
    base: str,
    check: Callable[[str], str | None],
) -> tuple[str, ...] | None:
    entries = _entries(raw, key, source, base)
    if entries is None:
        return None
    if not entries:
        raise ConfigError(source, f"{base}.{key}", 'must not be empty (use ["*"] to allow all)')
    for i, entry in enumerate(entries):
        problem = check(entry)
        if problem:
            raise ConfigError(source, f"{base}.{key}[{i}]", problem)
    return tuple(entries)


def _check_cluster(name: str) -> str | None:
    if "*" in name and name != ANY:
        return f"{name!r}: clusters are named exactly, or \"*\" for all of them"
    return None


def _check_namespace(pattern: str) -> str | None:
    if not _NAMESPACE_PATTERN.match(pattern):
        return (
            f"{pattern!r} is not a namespace name or pattern "
            "(lower-case letters, digits, '-' and '*')"
        )
    return None


def _kinds(
    raw: Mapping[str, Any], key: str, source: str, base: str, *, allow_empty: bool
) -> tuple[KindPattern, ...] | None:
    entries = _entries(raw, key, source, base)
    if entries is None:
        return None
    if not entries and not allow_empty:
        raise ConfigError(source, f"{base}.{key}", 'must not be empty (leave it out to allow "*")')
    patterns = []
    for i, entry in enumerate(entries):
        try:
            patterns.append(parse_kind_pattern(entry))
        except ValueError as exc:
            raise ConfigError(source, f"{base}.{key}[{i}]", str(exc)) from None
    return tuple(patterns)


def parse_kind_pattern(text: str) -> KindPattern:
    """`Kind`, `group/Kind` or `core/Kind`; ValueError says how to write it instead."""
    if text == ANY:
        return KindPattern(None, ANY)
    parts = text.split("/")
    if len(parts) > 2:
        raise ValueError(f"{text!r}: write group/Kind without the version, e.g. apps/Deployment")
    group, kind = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    if group is not None:
        if _VERSION_LIKE.match(group):
            raise ValueError(f"{text!r}: {group!r} is a version: write core/{kind} or {kind}")
        if not _GROUP_PATTERN.match(group):
            raise ValueError(f"{text!r}: {group!r} is not an API group")
        group = "" if group == CORE_GROUP_ALIAS else group
    if not _KIND_PATTERN.match(kind):
        raise ValueError(
            f"{text!r}: {kind!r} is not a kind: write it as in manifests "
            "(Deployment, not deployments)"
        )
    return KindPattern(group, kind)
