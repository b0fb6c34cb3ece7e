"""Deletes objects an app used to own but that left its manifests.

The inventory is the labels apply sets, so nothing outside Coalmine's app is ever touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from bot.cluster.model import (
    APP_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    ClusterError,
    ObjectRef,
)

if TYPE_CHECKING:
    from bot.cluster.client import Cluster

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
    cluster: Cluster,
    app: str,
    keep: Iterable[ObjectRef],
    kinds: Iterable[tuple[str, str]] | None = None,
) -> list[ObjectRef]:
    """Deletes the app's labelled objects not in `keep`; returns what was deleted."""
    keep = set(keep)
    kept = {ref.identity() for ref in keep}
    scan = _kinds_to_scan(keep, kinds)
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{APP_LABEL}={app}"
    pruned = []
    for api_version, kind in scan:
        try:
            live = cluster.list(api_version, kind, label_selector=selector)
        except ClusterError:
            if (api_version, kind) in PRUNABLE_KINDS + LAST_KINDS:
                raise
            continue  # a custom kind whose CRD is gone has nothing left to prune
        for obj in live:
            ref = ObjectRef.of(obj)
            if ref.identity() in kept:
                continue
            if cluster.delete(ref.api_version, ref.kind, ref.namespace, ref.name):
                pruned.append(ref)
    return pruned


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
