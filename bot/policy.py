"""Per-repository deploy policy: which clusters, namespaces and kinds a repository may deploy.

A GitOps repository is trusted with what it merges, but not with the whole cluster: Coalmine's
service account can usually do more than any one repository should (like an Argo CD Project,
the policy narrows one shared set of credentials per repository). The policy lives in the
server config under `repos.<owner/name>`, is parsed by `parse_policy` and is checked against the
rendered manifests by `check` before anything is applied.

Keys (each optional; a missing key takes the default shown, and so does a repository that has
no entry at all):

    repos:
      acme/gitops:
        deployBranch: main            # default: the repository's default branch
        clusters: [default]           # cluster names from `clusters:`, or "*"; default [default]
        namespaces: ["*"]             # names or globs ("team-*"); default ["*"]
        allowKinds: ["*"]             # namespaced kinds it may deploy; default ["*"]
        denyKinds: []                 # kinds it may never deploy (namespaced or not); default []
        clusterScopedKinds: []        # cluster-scoped kinds it may deploy; default []

Kind entries are strings written as in manifests, without the version:

    "Deployment"        that kind in any API group
    "apps/Deployment"   that kind in one group ("core/Service" for the core group, apiVersion v1)
    "apps/*", "*"       every kind in a group, every kind at all
    "rbac.authorization.k8s.io/Cluster*"   `*` may stand for any part of a group or kind

How an object is judged (every failed rule is reported, not only the first):

- the app's cluster must be in `clusters` (the app's cluster is "default" when it names none);
- a kind matching `denyKinds` is refused, wherever it lives;
- a namespaced object must match `allowKinds`, and its namespace (its own, or the app's
  namespace when it has none) must match `namespaces`;
- a cluster-scoped object must match `clusterScopedKinds` — except a Namespace, which is allowed
  when its name matches `namespaces`, because a repository that may deploy into `team-a` may as
  well create it;
- kube-system, kube-public and kube-node-lease are matched only by an entry that names them
  exactly: `*` or `kube-*` never grants them.

So the default policy — for a repository without an entry, or an entry with only
`deployBranch` — is: the default cluster only, any namespace but the system ones, any namespaced
kind, and no cluster-scoped kind but the Namespaces of those namespaces (no ClusterRoles, no
ClusterRoleBindings, no CustomResourceDefinitions). Something broader has to be written down.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from bot.config import ConfigError, Settings

ANY = "*"
CORE_GROUP_ALIAS = "core"
DEFAULT_CLUSTER = "default"
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
POLICY_KEYS = (
    "deployBranch",
    "clusters",
    "namespaces",
    "allowKinds",
    "denyKinds",
    "clusterScopedKinds",
)

_NAMESPACE_PATTERN = re.compile(r"^[a-z0-9*]([-a-z0-9*]{0,61}[a-z0-9*])?$")
_GROUP_PATTERN = re.compile(r"^[a-z0-9*]([-a-z0-9.*]*[a-z0-9*])?$")
_KIND_PATTERN = re.compile(r"^[A-Z*][A-Za-z0-9*]*$")
_VERSION_LIKE = re.compile(r"^v\d+((alpha|beta)\d+)?$")


@dataclass(frozen=True)
class KindPattern:
    """One `allowKinds`-style entry; `group` None means any group, "" the core group."""

    group: str | None
    kind: str

    def matches(self, group: str, kind: str) -> bool:
        group_ok = self.group is None or fnmatchcase(group, self.group)
        return group_ok and fnmatchcase(kind, self.kind)

    def __str__(self) -> str:
        if self.group is None:
            return self.kind
        return f"{self.group or CORE_GROUP_ALIAS}/{self.kind}"


@dataclass(frozen=True)
class Policy:
    deploy_branch: str | None = None
    clusters: tuple[str, ...] = (DEFAULT_CLUSTER,)
    namespaces: tuple[str, ...] = (ANY,)
    allow_kinds: tuple[KindPattern, ...] = (KindPattern(None, ANY),)
    deny_kinds: tuple[KindPattern, ...] = ()
    cluster_scoped_kinds: tuple[KindPattern, ...] = ()

    def allows_cluster(self, cluster: str) -> bool:
        return ANY in self.clusters or cluster in self.clusters

    def allows_namespace(self, namespace: str) -> bool:
        if namespace in SYSTEM_NAMESPACES:
            return namespace in self.namespaces
        return any(fnmatchcase(namespace, pattern) for pattern in self.namespaces)


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Violation:
    object: str  # "ClusterRole admin-all", "Deployment shop/web"
    rule: str  # why it is refused, naming the policy key to change

    def __str__(self) -> str:
        return f"{self.object}: {self.rule}"


# --------------------------------------------------------------------------- parsing


def parse_policy(raw: Mapping[str, Any] | None, source: str, repo: str) -> Policy:
    """The policy of `repo` from its `repos:` entry; ConfigError names the key at fault."""
    base = f"repos.{repo}"
    if raw is None:
        return DEFAULT_POLICY
    if not isinstance(raw, Mapping):
        raise ConfigError(source, base, "must be a mapping")
    for key in raw:
        if key not in POLICY_KEYS:
            allowed = ", ".join(POLICY_KEYS)
            raise ConfigError(source, f"{base}.{key}", f"unknown key (allowed: {allowed})")

    branch = raw.get("deployBranch")
    if branch is not None and (not isinstance(branch, str) or not branch.strip()):
        raise ConfigError(source, f"{base}.deployBranch", "must be a branch name")

    defaults = DEFAULT_POLICY
    clusters = _names(raw, "clusters", source, base, _check_cluster) or defaults.clusters
    namespaces = _names(raw, "namespaces", source, base, _check_namespace) or defaults.namespaces
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
    )


def policy_for(settings: Settings, repo: str, source: str = "COALMINE_CONFIG") -> Policy:
    """The policy of `repo` (owner/name, matched case-insensitively as forges do)."""
    wanted = repo.casefold()
    for name, entry in settings.repos.items():
        if name.casefold() == wanted:
            return parse_policy(entry.raw, source, name)
    return DEFAULT_POLICY


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


# --------------------------------------------------------------------------- checking


def check(
    policy: Policy,
    objects: Iterable[Mapping[str, Any]],
    *,
    cluster: str,
    default_namespace: str,
    cluster_scoped: Callable[[str, str], bool],
) -> list[Violation]:
    """Every way the app's objects break the policy; empty when they may be applied.

    `cluster_scoped(apiVersion, kind)` answers from discovery; whatever it raises for a kind the
    cluster does not serve propagates, since an unknown kind cannot be judged.
    """
    violations = []
    if not policy.allows_cluster(cluster):
        allowed = ", ".join(policy.clusters)
        violations.append(
            Violation(f"cluster {cluster}", f"cluster {cluster!r} is not in clusters ({allowed})")
        )
    for obj in objects:
        violations.extend(_check_object(policy, obj, default_namespace, cluster_scoped))
    return violations


def _check_object(
    policy: Policy,
    obj: Mapping[str, Any],
    default_namespace: str,
    cluster_scoped: Callable[[str, str], bool],
) -> list[Violation]:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata") or {}
    name = meta.get("name") or "?"
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        unjudged = "has no apiVersion or kind, so it cannot be judged"
        return [Violation(f"{kind or '?'} {name}", unjudged)]
    group = api_version.rpartition("/")[0]
    qualified = f"{group or CORE_GROUP_ALIAS}/{kind}"
    found = []

    denied = _first_match(policy.deny_kinds, group, kind)
    if cluster_scoped(api_version, kind):
        label = f"{kind} {name}"
        if denied:
            found.append(Violation(label, f"kind {qualified} matches denyKinds entry {denied}"))
        if kind == "Namespace" and group == "":
            if not policy.allows_namespace(name):
                found.append(Violation(label, _namespace_rule(policy, name)))
        elif not _first_match(policy.cluster_scoped_kinds, group, kind):
            found.append(
                Violation(label, f"cluster-scoped kind {qualified} is not in clusterScopedKinds")
            )
        return found

    namespace = meta.get("namespace") or default_namespace
    label = f"{kind} {namespace}/{name}"
    if denied:
        found.append(Violation(label, f"kind {qualified} matches denyKinds entry {denied}"))
    elif not _first_match(policy.allow_kinds, group, kind):
        found.append(Violation(label, f"kind {qualified} is not in allowKinds"))
    if not policy.allows_namespace(namespace):
        found.append(Violation(label, _namespace_rule(policy, namespace)))
    return found


def _first_match(patterns: Iterable[KindPattern], group: str, kind: str) -> KindPattern | None:
    return next((p for p in patterns if p.matches(group, kind)), None)


def _namespace_rule(policy: Policy, namespace: str) -> str:
    allowed = ", ".join(policy.namespaces)
    if namespace in SYSTEM_NAMESPACES:
        return f"namespace {namespace!r} is a system namespace: namespaces must name it exactly"
    return f"namespace {namespace!r} is not in namespaces ({allowed})"
