"""Per-repository deploy policy: which clusters, namespaces and kinds a repository may deploy.

A GitOps repository is trusted with what it merges, but not with the whole cluster: Coalmine's
service account can usually do more than any one repository should (like an Argo CD Project,
the policy narrows one shared set of credentials per repository). The policy lives in the
server config under `repos.<owner/name>`, is parsed by `parse_policy` and is checked against the
rendered manifests by `check` before anything is applied.

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

How an object is judged (every failed rule is reported, not only the first):

- the app's cluster must be in `clusters` (the app's cluster is "default" when it names none);
- a kind matching `denyKinds` is refused, wherever it lives;
- a namespaced object must match `allowKinds`, and its namespace (its own, or the app's
  namespace when it has none) must match `namespaces`;
- a cluster-scoped object must match `clusterScopedKinds` — except a Namespace, which is allowed
  when its name matches `namespaces`, because a repository that may deploy into `team-a` may as
  well create it;
- whether a kind is cluster-scoped is asked of the cluster's discovery; a kind the cluster does
  not serve yet counts as cluster-scoped (the strictest reading), unless a
  CustomResourceDefinition in the same merge defines it as namespaced in a group that is not
  reserved by Kubernetes (`*.k8s.io`, `*.kubernetes.io`, or a group without a dot) — so a CRD
  cannot make a ClusterRoleBinding look namespaced;
- the system namespaces (kube-system, kube-public, kube-node-lease) and Coalmine's own namespace
  are never deployable: no pattern matches them, and naming one is a configuration error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from bot.errors import ConfigError

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
    service_account: str | None = None  # "namespace/name"
    adopt: bool = False
    protected_namespaces: frozenset[str] = SYSTEM_NAMESPACES

    @property
    def impersonate_user(self) -> str | None:
        """The Kubernetes user name of `service_account`, as `Impersonate-User` wants it."""
        if self.service_account is None:
            return None
        namespace, name = self.service_account.split("/", 1)
        return f"system:serviceaccount:{namespace}:{name}"

    def allows_cluster(self, cluster: str) -> bool:
        return ANY in self.clusters or cluster in self.clusters

    def allows_namespace(self, namespace: str) -> bool:
        if namespace in self.protected_namespaces:
            return False
        return any(fnmatchcase(namespace, pattern) for pattern in self.namespaces)

    def allows_kind(self, group: str, kind: str, *, namespaced: bool) -> bool:
        """Whether the kind may be deployed (and so pruned) at all, wherever it lives."""
        if _first_match(self.deny_kinds, group, kind):
            return False
        if namespaced:
            return _first_match(self.allow_kinds, group, kind) is not None
        if kind == "Namespace" and group == "":
            return True  # judged by name, against `namespaces`
        return _first_match(self.cluster_scoped_kinds, group, kind) is not None


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Violation:
    object: str  # "ClusterRole admin-all", "Deployment shop/web"
    rule: str  # why it is refused, naming the policy key to change

    def __str__(self) -> str:
        return f"{self.object}: {self.rule}"


# --------------------------------------------------------------------------- parsing


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
        return f"namespace {namespace!r} is a system namespace: no repository may deploy there"
    if namespace in policy.protected_namespaces:
        return f"namespace {namespace!r} is Coalmine's own namespace: no repository may deploy there"
    return f"namespace {namespace!r} is not in namespaces ({allowed})"


def reserved_group(group: str) -> bool:
    """API groups that belong to Kubernetes itself: a CRD can never define their kinds."""
    return "." not in group or group.endswith((".k8s.io", ".kubernetes.io"))


def scope_judge(
    discovered: Callable[[str, str], bool | None], objects: Iterable[Mapping[str, Any]]
) -> Callable[[str, str], bool]:
    """`cluster_scoped(apiVersion, kind)` for check(): discovery first, always.

    `discovered` answers True/False from the cluster, or None for a kind it does not serve. Such
    a kind is namespaced only when a CustomResourceDefinition among `objects` says so for a group
    Kubernetes does not reserve; anything else unknown is judged as cluster-scoped, the strictest.
    """
    namespaced_here = set()
    for crd in objects:
        spec = crd.get("spec") if crd.get("kind") == "CustomResourceDefinition" else None
        if isinstance(spec, Mapping) and spec.get("scope") == "Namespaced":
            names = spec.get("names") if isinstance(spec.get("names"), Mapping) else {}
            group, kind = spec.get("group"), names.get("kind")
            if isinstance(group, str) and isinstance(kind, str) and not reserved_group(group):
                namespaced_here.add((group, kind))

    def cluster_scoped(api_version: str, kind: str) -> bool:
        answer = discovered(api_version, kind)
        if answer is not None:
            return answer
        return (api_version.rpartition("/")[0], kind) not in namespaced_here

    return cluster_scoped
