"""The field-level difference between a live object and what a dry-run apply would store.

Both sides come from the same API server (the live object, and its answer to a dry-run apply
of the PR's manifest), so defaults and normalisation are already the same on both; what is
left to ignore is what changes on every write or every commit and says nothing to a reviewer:
server-owned metadata, status, Coalmine's revision label and template hash.

Secrets are special: their values never leave this module. A Secret's `data` and
`stringData` are compared per key, and only the key and whether it was added, removed or
changed is kept (`hidden=True`, no value). The same holds for the last-applied annotation,
which can hold a whole Secret and is ignored everywhere. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from bot.preview.model import FieldChange, ObjectChange
from bot.refs import REVISION_LABEL
from bot.rollout.traffic import TEMPLATE_HASH_ANNOTATION

Obj = dict[str, Any]

SERVER_METADATA = frozenset({
    "managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink",
    "deletionTimestamp", "deletionGracePeriodSeconds",
})
IGNORED_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    TEMPLATE_HASH_ANNOTATION,
})
IGNORED_LABELS = frozenset({REVISION_LABEL})
SECRET_FIELDS = ("data", "stringData")


def comparable(obj: Mapping[str, Any]) -> Obj:
    """The object without status, server metadata and the per-commit labels/annotations."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_METADATA}
    for key, ignored in (("labels", IGNORED_LABELS), ("annotations", IGNORED_ANNOTATIONS)):
        if isinstance(meta.get(key), Mapping):
            kept = {k: v for k, v in meta[key].items() if k not in ignored}
            if kept:
                meta[key] = kept
            else:
                meta.pop(key)
    out["metadata"] = meta
    return out


def is_secret(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1"


def object_change(ref: str, live: Mapping[str, Any] | None,
                  answer: Mapping[str, Any]) -> ObjectChange:
    """create / change (with its fields) / unchanged, from the live object and the answer."""
    secret = is_secret(answer)
    if live is None:
        fields = tuple(secret_changes({}, answer)) if secret else ()
        return ObjectChange(ref, "create", fields)
    before, after = comparable(live), comparable(answer)
    fields: list[FieldChange] = []
    if secret:
        for key in SECRET_FIELDS:
            before.pop(key, None)
            after.pop(key, None)
        fields += secret_changes(live, answer)
    fields = field_changes(before, after) + fields
    return ObjectChange(ref, "change" if fields else "unchanged", tuple(fields))


def field_changes(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """Every leaf that differs, with a dotted path; lists of named items (containers, ports,
    env) are matched by name, other lists of equal length item by item."""
    if before == after:
        return []
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        out: list[FieldChange] = []
        for key in sorted(set(before) | set(after), key=str):
            at = f"{path}{key}" if str(key).startswith("[") else (
                f"{path}.{key}" if path else str(key))
            if key not in after:
                out.append(FieldChange(at, "removed", before=before[key]))
            elif key not in before:
                out.append(FieldChange(at, "added", after=after[key]))
            else:
                out += field_changes(before[key], after[key], at)
        return out
    if isinstance(before, list) and isinstance(after, list):
        named = _by_name(before), _by_name(after)
        if named[0] is not None and named[1] is not None:
            return field_changes(named[0], named[1], path)
        if len(before) == len(after):
            out = []
            for i, (b, a) in enumerate(zip(before, after, strict=True)):
                out += field_changes(b, a, f"{path}[{i}]")
            return out
    return [FieldChange(path, "changed", before=before, after=after)]


def _by_name(items: list[Any]) -> dict[str, Any] | None:
    """{"[name=x]": item} when every item is a mapping with a distinct string name."""
    names = [i.get("name") if isinstance(i, Mapping) else None for i in items]
    if not items or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        return None
    return {f"[name={n}]": item for n, item in zip(names, items, strict=True)}


def secret_changes(live: Mapping[str, Any], answer: Mapping[str, Any]) -> list[FieldChange]:
    """Which keys of a Secret are added, removed or changed: never a value."""
    old, new = secret_values(live), secret_values(answer)
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(FieldChange(f"data.{key}", "removed", hidden=True))
        elif key not in old:
            out.append(FieldChange(f"data.{key}", "added", hidden=True))
        elif old[key] != new[key]:
            out.append(FieldChange(f"data.{key}", "changed", hidden=True))
    return out


def secret_values(obj: Mapping[str, Any]) -> dict[str, bytes]:
    """key → value as bytes, from `data` (base64) and `stringData` (text, which wins, as the
    API server merges it)."""
    values: dict[str, bytes] = {}
    data = obj.get("data")
    if isinstance(data, Mapping):
        for key, value in data.items():
            try:
                values[str(key)] = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                values[str(key)] = str(value).encode()
    text = obj.get("stringData")
    if isinstance(text, Mapping):
        for key, value in text.items():
            values[str(key)] = str(value).encode()
    return values


def hide_secret_values(text: str, obj: Mapping[str, Any]) -> str:
    """`text` (a server's error about `obj`) with every value of the Secret `obj` masked, in
    whichever form it might be echoed (as given, decoded)."""
    if not is_secret(obj):
        return text
    shown = set()
    for field in SECRET_FIELDS:
        values = obj.get(field)
        if isinstance(values, Mapping):
            shown |= {str(v) for v in values.values()}
    shown |= {v.decode(errors="replace") for v in secret_values(obj).values()}
    for value in sorted((v for v in shown if v), key=len, reverse=True):
        text = text.replace(value, "***")
    return text
