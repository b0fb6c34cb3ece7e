"""Small reads and copies of live Kubernetes objects that every router needs.

The routers write whole objects by server-side apply, so a live object becomes an apply object
by dropping what the API server sets (resourceVersion, uid, managedFields, status...). Live
objects are untrusted shapes: the readers here answer None or empty rather than fail on a
missing or oddly typed field, and the routers raise RouterError where a field really matters.
"""

from __future__ import annotations

import copy
from typing import Any

from bot.rollout.routers.model import Obj, ObjectKey, RouterError

_SERVER_META = (
    "resourceVersion",
    "uid",
    "managedFields",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def apply_copy(obj: Obj, key: ObjectKey | None = None) -> Obj:
    """A deep copy of `obj` fit for a whole-object server-side apply."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    for field in _SERVER_META:
        meta.pop(field, None)
    if key is not None:
        out["apiVersion"] = key.api_version
        out["kind"] = key.kind
        meta["name"] = key.name
        meta["namespace"] = key.namespace
    return out


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def spec_of(obj: Obj) -> dict[str, Any]:
    """The object's spec, created when absent (on copies only)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    return spec


def as_int(value: Any) -> int | None:
    """A whole number from a live field (ints, floats Istio's client wrote, numeric strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def controller_of(obj: Obj) -> str | None:
    """'Kind/name' of the controller owning `obj`, if any (Argo's IsControlledBy test)."""
    for ref in items(mapping(obj.get("metadata")).get("ownerReferences")):
        ref = mapping(ref)
        if ref.get("controller") is True:
            return f"{ref.get('kind')}/{ref.get('name')}"
    return None


def refuse_controlled(key: ObjectKey, live: Obj | None) -> None:
    """Argo writes the objects it creates only while its Rollout controls them; Coalmine never
    sets an owner, so an object another controller owns (an Argo Rollout, say) is not its."""
    owner = live and controller_of(live)
    if owner:
        raise RouterError(
            f"{key.label}: controlled by {owner}; Coalmine will not take over an object another "
            "controller owns (delete it, or remove its ownerReference)"
        )


def is_object(obj: Obj, key: ObjectKey, default_namespace: str) -> bool:
    """Whether a Git manifest is the live object `key` (any version of the same API group)."""
    meta = mapping(obj.get("metadata"))
    return (
        obj.get("kind") == key.kind
        and _group(str(obj.get("apiVersion", ""))) == _group(key.api_version)
        and meta.get("name") == key.name
        and (meta.get("namespace") or default_namespace) == key.namespace
    )


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]
