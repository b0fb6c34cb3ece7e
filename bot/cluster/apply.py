"""Server-side apply of an app's manifests, in stages, reporting what changed.

Namespaces and CustomResourceDefinitions go first so that the objects living in them, or
made of them, can be applied in the same run (the staging flux's kustomize-controller uses).

Before anything is written, the live state of every object is read once and judged by
`bot.cluster.ownership`: one object that belongs to another repository or app (or exists
unmanaged, unless the policy allows adoption) refuses the whole set. The same snapshot then
tells created from configured from unchanged, so the check costs no extra request. What it
cannot close is the moment between that read and the writes: an object created by someone
else in that window is overwritten. Merges of one repository are serialized by the caller, so
only two repositories racing to create the same name at the same instant could meet there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from bot.cluster.model import (
    ApplyReport,
    ClusterError,
    Conflict,
    ObjectRef,
    Owner,
    OwnershipConflict,
)
from bot.cluster.ownership import ownership_annotations, ownership_labels, refusal
from bot.refs import REVISION_LABEL

Obj = dict[str, Any]
Snapshot = dict[ObjectRef, Obj]


class Served(Protocol):
    """What apply needs to know of an API resource: whether its objects live in a namespace."""

    namespaced: bool


class ApplyTarget(Protocol):
    """The calls apply makes on a cluster, and nothing more.

    `bot.cluster.client.Cluster` is one. Declaring the need here, rather than importing the
    client, lets the client call apply at top level without the two modules importing each
    other, and lets a test hand apply a recording fake.
    """

    sleep: Callable[[float], None]

    def serves(self, api_version: str, kind: str) -> bool: ...

    def resource(self, api_version: str, kind: str, for_object: str | None = None) -> Served: ...

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        ...

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[Obj]: ...

    def server_side_apply(self, obj: Obj) -> Obj: ...

    def refresh_discovery(self) -> None: ...


FIRST_KINDS = ("Namespace", "CustomResourceDefinition")
APPLY_CONCURRENCY = 8
LIST_THRESHOLD = 20  # from this many objects, one LIST per kind beats a GET per object
CRD_ESTABLISH_TIMEOUT_S = 10.0


def apply(
    cluster: ApplyTarget,
    objects: Iterable[Obj],
    *,
    app: str,
    revision: str,
    default_namespace: str,
    owner: Owner,
    adopt: bool = False,
) -> ApplyReport:
    """Applies every object with field manager `coalmine` as `owner`'s; safe to run twice.

    Raises OwnershipConflict, having written nothing, when any object may not be taken.
    """
    if owner.app != app:
        raise ValueError(f"owner app {owner.app!r} is not the applied app {app!r}")
    manifests = [labelled(obj, owner, revision) for obj in objects]
    first = [obj for obj in manifests if obj["kind"] in FIRST_KINDS]
    rest = [obj for obj in manifests if obj["kind"] not in FIRST_KINDS]
    defined_here = kinds_defined_by(first)
    _check_kinds_known(cluster, rest, defined_here=defined_here)
    # A kind only a CRD of this same set will define has no live objects to judge yet.
    existing = [obj for obj in manifests if cluster.serves(obj["apiVersion"], obj["kind"])]
    for obj in existing:
        _set_namespace(cluster, obj, default_namespace)
    live = _snapshot(cluster, existing, many=len(manifests) >= LIST_THRESHOLD)
    _refuse_conflicts(existing, live, owner, adopt)
    report = ApplyReport()
    for obj in first:
        kind, ref = _apply_one(cluster, obj, default_namespace, live)
        getattr(report, kind).append(ref)
    crds = [obj for obj in first if obj["kind"] == "CustomResourceDefinition"]
    if crds:
        _wait_established(cluster, crds)
        cluster.refresh_discovery()
    # Objects of one stage don't depend on each other: apply them concurrently, reporting in
    # manifest order so the PR comment stays stable from run to run.
    for obj in rest:
        _set_namespace(cluster, obj, default_namespace)
    with ThreadPoolExecutor(max_workers=APPLY_CONCURRENCY) as pool:
        outcomes = list(pool.map(
            lambda o: _apply_one(cluster, o, default_namespace, live), rest))
    for kind, ref in outcomes:
        getattr(report, kind).append(ref)
    return report


def labelled(obj: Obj, owner: Owner, revision: str) -> Obj:
    """A copy carrying the owner's labels and annotation; the manifest's own values for those
    keys are overwritten, so a manifest cannot name another owner.

    Only what apply changes is copied (the object, its metadata, labels and annotations); the
    rest (spec, data...) is shared with the caller's manifest and only ever read here.
    """
    for required in ("apiVersion", "kind"):
        if not obj.get(required):
            raise ClusterError(f"manifest without {required}: {_describe(obj)}")
    if not (obj.get("metadata") or {}).get("name"):
        raise ClusterError(f"{obj['kind']} without metadata.name cannot be applied")
    meta = dict(obj["metadata"])
    meta["labels"] = {**(meta.get("labels") or {}), **ownership_labels(owner),
                      REVISION_LABEL: revision}
    meta["annotations"] = {**(meta.get("annotations") or {}), **ownership_annotations(owner)}
    return {**obj, "metadata": meta}


def _snapshot(cluster: ApplyTarget, objects: list[Obj], *, many: bool) -> Snapshot:
    """The live state of the objects that exist: one LIST per kind and namespace when there
    are many, else one GET each (concurrently)."""
    if many:
        return _live_objects(cluster, objects)
    refs = [ObjectRef.of(obj) for obj in objects]
    with ThreadPoolExecutor(max_workers=APPLY_CONCURRENCY) as pool:
        found = list(pool.map(
            lambda r: cluster.get(r.api_version, r.kind, r.namespace, r.name), refs))
    return {ref: obj for ref, obj in zip(refs, found, strict=True) if obj is not None}


def _refuse_conflicts(objects: list[Obj], live: Snapshot, owner: Owner, adopt: bool) -> None:
    conflicts = []
    for obj in objects:
        ref = ObjectRef.of(obj)
        reason = refusal(live.get(ref), owner, adopt=adopt)
        if reason is not None:
            conflicts.append(Conflict(ref, reason))
    if conflicts:
        raise OwnershipConflict(conflicts)


def _describe(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind') or '?'} {meta.get('name') or '?'}"


def kinds_defined_by(first: list[Obj]) -> set[tuple[str, str]]:
    """(apiVersion, kind) pairs that CRDs in this same set will make available."""
    defined = set()
    for crd in first:
        if crd["kind"] != "CustomResourceDefinition":
            continue
        spec = crd.get("spec", {})
        for version in spec.get("versions", []):
            defined.add((f"{spec.get('group')}/{version.get('name')}", spec["names"]["kind"]))
    return defined


def _check_kinds_known(
    cluster: ApplyTarget, objects: list[Obj], defined_here: set[tuple[str, str]]
) -> None:
    """Fails before anything is written when a kind is neither served nor defined here."""
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) not in defined_here:
            cluster.resource(obj["apiVersion"], obj["kind"], for_object=_describe(obj))


def _set_namespace(cluster: ApplyTarget, obj: Obj, default_namespace: str) -> None:
    resource = cluster.resource(obj["apiVersion"], obj["kind"], for_object=_describe(obj))
    meta = obj["metadata"]
    if resource.namespaced:
        meta["namespace"] = meta.get("namespace") or default_namespace
    else:
        meta.pop("namespace", None)


def _live_objects(cluster: ApplyTarget, objects: list[Obj]) -> dict[ObjectRef, Obj]:
    """The live state of many objects with one LIST per kind and namespace, not a GET each."""
    groups = {(o["apiVersion"], o["kind"], o["metadata"].get("namespace")) for o in objects}
    live: dict[ObjectRef, Obj] = {}
    for api_version, kind, namespace in sorted(groups, key=str):
        for item in cluster.list(api_version, kind, namespace):
            live[ObjectRef(api_version, kind, namespace, item["metadata"]["name"])] = item
    return live


def _apply_one(
    cluster: ApplyTarget, obj: Obj, default_namespace: str, live: Snapshot
) -> tuple[str, ObjectRef]:
    """("created" | "configured" | "unchanged", ref) for one applied object; `live` holds the
    state before the apply, so no GET is needed."""
    _set_namespace(cluster, obj, default_namespace)
    ref = ObjectRef.of(obj)
    before = live.get(ref)
    after = cluster.server_side_apply(obj)
    if before is None:
        return "created", ref
    return ("unchanged" if _same(before, after) else "configured"), ref


def _same(before: Obj, after: Obj) -> bool:
    """Unchanged when the version did not move, or when only a controller's status write did."""
    if before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion"):
        return True
    return _desired_state(before) == _desired_state(after)


def _desired_state(obj: Obj) -> Obj:
    meta = {
        k: v
        for k, v in obj.get("metadata", {}).items()
        if k not in ("resourceVersion", "managedFields")
    }
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


def _wait_established(cluster: ApplyTarget, crds: list[Obj]) -> None:
    """New CRDs serve their kinds only once Established; applying custom objects earlier fails."""
    deadline = time.monotonic() + CRD_ESTABLISH_TIMEOUT_S
    pending = [crd["metadata"]["name"] for crd in crds]
    while pending:
        pending = [
            name
            for name in pending
            if not _established(
                cluster.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, name)
            )
        ]
        if pending and time.monotonic() > deadline:
            raise ClusterError(
                f"CustomResourceDefinition {pending[0]} not established after "
                f"{CRD_ESTABLISH_TIMEOUT_S:g} s"
            )
        if pending:
            cluster.sleep(0.1)


def _established(crd: Obj | None) -> bool:
    conditions = (crd or {}).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
