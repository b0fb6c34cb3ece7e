"""Deletes objects an app used to own but that left its manifests.

The inventory is the labels apply sets: managed-by, the owning repository (forge and id) and
the app, so objects of another repository that names its app the same are never selected.
Each candidate must also pass the caller's `may_delete` (the repository's policy: namespaces
and kinds), and is deleted with its uid and resourceVersion as preconditions after its labels
were checked, so an object that changed hands in between is looked at again, not deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from bot.cluster.model import ClusterError, ObjectRef, Owner
from bot.cluster.ownership import owned_by, selector

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class DeleteTarget(Protocol):
    """What an owned delete needs of a cluster: read the object, delete it under preconditions
    (`bot.cluster.client.Cluster`; the rollout shell's cluster port)."""

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        ...

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
               preconditions: Mapping[str, str] | None = None) -> Any: ...


class PruneTarget(Protocol):
    """The calls prune makes on a cluster (`bot.cluster.client.Cluster` is one); declared here
    so that the client can call prune without the two modules importing each other."""

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        ...

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[Obj]: ...

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        propagation_policy: str = "Background",
        *,
        preconditions: Mapping[str, str] | None = None,
    ) -> bool: ...


DELETE_ATTEMPTS = 3  # re-reads of an object that kept changing between check and delete

# Kinds looked at on every prune, besides those in `keep`. Order is deletion order: workloads
# and their configuration first, cluster-scoped objects after, Namespaces and CRDs last
# (deleting those takes everything inside with them).
PRUNABLE_KINDS: tuple[tuple[str, str], ...] = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("batch/v1", "CronJob"),
    ("batch/v1", "Job"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
)
LAST_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "Namespace"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
)


def prune(
    cluster: PruneTarget,
    app: str,
    keep: Iterable[ObjectRef],
    *,
    owner: Owner,
    may_delete: Callable[[ObjectRef], bool],
    kinds: Iterable[tuple[str, str]] | None = None,
    namespaces: Iterable[str] | None = None,
) -> list[ObjectRef]:
    """Deletes the owner's objects of `app` not in `keep`; returns what was deleted.

    `namespaces` None lists namespaced kinds across the cluster; otherwise only in those
    namespaces (what an identity holding a Role per namespace can list). A kind the identity
    is forbidden to list is skipped with a warning: it could not delete there either.
    """
    pruned = []
    for live in candidates(cluster, app, keep, owner=owner, may_delete=may_delete, kinds=kinds,
                           namespaces=namespaces):
        if delete_if_owned(cluster, live, owner):
            pruned.append(ObjectRef.of(live))
    return pruned


def candidates(
    cluster: PruneTarget,
    app: str,
    keep: Iterable[ObjectRef],
    *,
    owner: Owner,
    may_delete: Callable[[ObjectRef], bool],
    kinds: Iterable[tuple[str, str]] | None = None,
    namespaces: Iterable[str] | None = None,
) -> list[Obj]:
    """The live objects `prune` would delete, in deletion order, deleting nothing (the PR
    preview's "would be pruned")."""
    if owner.app != app:
        raise ValueError(f"owner app {owner.app!r} is not the pruned app {app!r}")
    keep = set(keep)
    kept = {ref.identity() for ref in keep}
    scopes: list[str | None] = [None] if namespaces is None else sorted(set(namespaces))
    found = []
    for api_version, kind in _kinds_to_scan(keep, kinds):
        for live in _listed(cluster, api_version, kind, selector(owner), scopes):
            ref = ObjectRef.of(live)
            if ref.identity() in kept or not may_delete(ref):
                continue
            found.append(live)
    return found


def _listed(
    cluster: PruneTarget, api_version: str, kind: str, labels: str, scopes: list[str | None]
) -> list[Obj]:
    """The owner's live objects of one kind; cluster-scoped kinds are listed once."""
    found: dict[ObjectRef, Obj] = {}
    for namespace in scopes:
        try:
            items = cluster.list(api_version, kind, namespace, label_selector=labels)
        except ClusterError as err:
            if err.status == 403:
                log.warning("prune skips %s %s: %s", api_version, kind, err)
                continue
            if (api_version, kind) in PRUNABLE_KINDS + LAST_KINDS:
                raise
            return []  # a custom kind whose CRD is gone has nothing left to prune
        for item in items:
            found.setdefault(ObjectRef.of(item), item)
    return list(found.values())


def delete_if_owned(cluster: DeleteTarget, live: Obj, owner: Owner) -> bool:
    """Deletes `live` only while it is still the owner's, and only that very object (uid and
    resourceVersion as preconditions, re-read and re-checked when it changed meanwhile); True
    when this call deleted it. Prune uses it, and so does the rollout's clean-up, whose object
    names derive from names a repository chooses."""
    ref = ObjectRef.of(live)
    current: Obj | None = live
    for _ in range(DELETE_ATTEMPTS):
        if current is None:
            return False
        if not owned_by(current, owner):
            log.warning("%s left alone: it is not (or no longer) owned by %s app %s",
                        ref, owner.repository, owner.app)
            return False
        meta = current["metadata"]
        preconditions = {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
        try:
            return cluster.delete(
                ref.api_version, ref.kind, ref.namespace, ref.name, preconditions=preconditions
            )
        except ClusterError as err:
            if err.status != 409:
                raise
        current = cluster.get(ref.api_version, ref.kind, ref.namespace, ref.name)
    raise ClusterError(
        f"{ref}: it kept changing while being deleted; left for the next attempt"
    )


def _kinds_to_scan(
    keep: set[ObjectRef], kinds: Iterable[tuple[str, str]] | None
) -> list[tuple[str, str]]:
    """Built-in kinds, then custom kinds seen in `keep` or asked for, then the last kinds."""
    ordered = list(PRUNABLE_KINDS)
    extra = [*(kinds or ()), *sorted({(ref.api_version, ref.kind) for ref in keep})]
    for kind in extra:
        if kind not in ordered and kind not in LAST_KINDS:
            ordered.append(kind)
    return ordered + list(LAST_KINDS)
