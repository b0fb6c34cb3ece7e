"""What applying an app would do, asked of the cluster without changing it.

Each object is labelled exactly as `bot.cluster.apply` would label it and sent as a
server-side apply with `dryRun=All`: the API server runs its defaulting, admission and schema
validation against the live object and answers what it would store, storing nothing. That is
the only write-shaped request made, and it goes through the same (impersonated) connection
as a real apply, so the repository's RBAC decides what it may even ask.

Ownership is judged before anything is sent: an object that another repository or app owns
(or an unmanaged one, unless the policy allows adoption) is reported as refused and nothing
of its live content is kept, so a PR cannot read another team's objects through a preview.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from bot.cluster.apply import FIRST_KINDS, kinds_defined_by, labelled
from bot.cluster.model import ClusterError, DryRun, ObjectRef, Owner
from bot.cluster.ownership import refusal

Obj = dict[str, Any]


class Served(Protocol):
    namespaced: bool


class DryRunTarget(Protocol):
    """The calls a dry run makes (`bot.cluster.client.Cluster` is one)."""

    def serves(self, api_version: str, kind: str) -> bool: ...

    def resource(self, api_version: str, kind: str, for_object: str | None = None) -> Served: ...

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        ...

    def dry_run_apply(self, obj: Obj) -> Obj: ...


def dry_run(cluster: DryRunTarget, objects: Iterable[Obj], *, owner: Owner, revision: str,
            default_namespace: str, adopt: bool = False) -> list[DryRun]:
    """One DryRun per object, in manifest order; cluster errors other than the object's own
    refusal (unreachable, forbidden to read) propagate as ClusterError."""
    manifests = [labelled(obj, owner, revision) for obj in objects]
    first = [obj for obj in manifests if obj["kind"] in FIRST_KINDS]
    defined_here = kinds_defined_by(first)
    created_namespaces = {obj["metadata"]["name"] for obj in manifests
                          if (obj["apiVersion"], obj["kind"]) == ("v1", "Namespace")}
    results = []
    for obj in manifests:
        results.append(_one(cluster, obj, owner, default_namespace, adopt, defined_here,
                            created_namespaces))
    return results


def _one(cluster: DryRunTarget, obj: Obj, owner: Owner, default_namespace: str, adopt: bool,
         defined_here: set[tuple[str, str]], created_namespaces: set[str]) -> DryRun:
    api_version, kind = obj["apiVersion"], obj["kind"]
    meta = obj["metadata"]
    if not cluster.serves(api_version, kind):
        ref = ObjectRef(api_version, kind, meta.get("namespace") or default_namespace,
                        meta["name"])
        if (api_version, kind) in defined_here:
            return DryRun(ref, skipped="its CustomResourceDefinition is created by this merge")
        return DryRun(ref, error=f"the cluster does not serve kind {kind!r} in "
                                 f"{api_version!r} (is its CustomResourceDefinition installed?)")
    if cluster.resource(api_version, kind, for_object=f"{kind} {meta['name']}").namespaced:
        meta["namespace"] = meta.get("namespace") or default_namespace
    else:
        meta.pop("namespace", None)
    ref = ObjectRef.of(obj)
    live = cluster.get(api_version, kind, ref.namespace, ref.name)
    reason = refusal(live, owner, adopt=adopt)
    if reason is not None:
        return DryRun(ref, refused=f"{ref} {reason}")
    try:
        answer = cluster.dry_run_apply(obj)
    except ClusterError as err:
        if err.status == 404 and ref.namespace in created_namespaces and live is None:
            return DryRun(ref, skipped=f"its namespace {ref.namespace} is created by this merge")
        if err.status in (400, 403, 409, 422):  # the object's own fault, or not allowed
            return DryRun(ref, live=live, error=str(err))
        raise
    return DryRun(ref, live=live, answer=answer)
