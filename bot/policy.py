"""Per-repository deploy policy: which clusters, namespaces and kinds a repository may deploy.

A GitOps repository is trusted with what it merges, but not with the whole cluster: Coalmine's
service account can usually do more than any one repository should (like an Argo CD Project,
the policy narrows one shared set of credentials per repository). The policy lives in the
server config under `repos.<owner/name>`, is read by `bot.policy_parse.parse_policy` (which
documents the keys) and is checked against the rendered manifests by `check` before anything is
applied.

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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

ANY = "*"
CORE_GROUP_ALIAS = "core"
DEFAULT_CLUSTER = "default"
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


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
