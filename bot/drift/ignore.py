"""Fields a drift check leaves out: Argo CD's `ignoreDifferences` forms, per app.

```yaml
ignoreDifferences:
  - group: apps              # "" (or left out) for the core group
    kind: Deployment
    name: web                # optional
    namespace: shop          # optional
    jsonPointers: [/spec/replicas]
    managedFieldsManagers: [kube-controller-manager]
```

A JSON pointer (RFC 6901) names one field; a manager named in `managedFieldsManagers` has
every field it owns in the live object's server-side apply `managedFields` left out. Both are
removed from the live object and from what Coalmine's apply would store before the two are
compared, so an ignored field never shows as drift (as Argo CD normalises both sides). Pure.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.errors import ConfigError

Obj = dict[str, Any]
_KEYS = {"group", "kind", "name", "namespace", "jsonPointers", "managedFieldsManagers"}


@dataclass(frozen=True)
class IgnoreRule:
    group: str
    kind: str
    name: str | None = None
    namespace: str | None = None
    json_pointers: tuple[str, ...] = ()
    managers: tuple[str, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]
        meta = obj.get("metadata") or {}
        return (group == self.group and obj.get("kind") == self.kind
                and self.name in (None, meta.get("name"))
                and self.namespace in (None, meta.get("namespace")))


def parse_ignore(raw: Any, source: str, key: str) -> tuple[IgnoreRule, ...]:
    """The app's `ignoreDifferences` list; ConfigError names the entry and key at fault."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(source, key, "must be a list of {group, kind, name?, namespace?, "
                                       "jsonPointers?, managedFieldsManagers?}")
    rules = []
    for i, entry in enumerate(raw):
        at = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(source, at, "must be a mapping")
        unknown = set(entry) - _KEYS
        if unknown:
            first = min(unknown, key=str)
            why = ("jqPathExpressions are not supported; use jsonPointers" if
                   first == "jqPathExpressions" else
                   f"unknown key (allowed: {', '.join(sorted(_KEYS))})")
            raise ConfigError(source, f"{at}.{first}", why)
        kind = entry.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ConfigError(source, f"{at}.kind", "is required")
        group = entry.get("group") or ""
        texts = {k: entry.get(k) for k in ("name", "namespace")}
        for name in ("group", "name", "namespace"):
            value = group if name == "group" else texts[name]
            if value is not None and not isinstance(value, str):
                raise ConfigError(source, f"{at}.{name}", "must be a string")
        pointers = _strings(entry.get("jsonPointers"), source, f"{at}.jsonPointers")
        for j, pointer in enumerate(pointers):
            if not pointer.startswith("/"):
                raise ConfigError(source, f"{at}.jsonPointers[{j}]",
                                  f"{pointer!r} is not a JSON pointer (it starts with /)")
        managers = _strings(entry.get("managedFieldsManagers"), source,
                            f"{at}.managedFieldsManagers")
        if not pointers and not managers:
            raise ConfigError(source, at, "needs jsonPointers or managedFieldsManagers")
        rules.append(IgnoreRule(group, kind, texts["name"], texts["namespace"], pointers,
                                managers))
    return tuple(rules)


def _strings(raw: Any, source: str, key: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
        raise ConfigError(source, key, "must be a list of strings")
    return tuple(raw)


def without_ignored(obj: Obj, rules: tuple[IgnoreRule, ...], live: Obj | None) -> Obj:
    """A copy of `obj` without the fields the matching rules ignore; the managers' fields are
    read from `live`'s managedFields (the one place the cluster records who owns what)."""
    matching = [r for r in rules if r.matches(obj)]
    if not matching:
        return obj
    out = copy.deepcopy(obj)
    for rule in matching:
        for pointer in rule.json_pointers:
            remove_pointer(out, pointer)
        for entry in ((live or {}).get("metadata") or {}).get("managedFields") or []:
            if entry.get("manager") in rule.managers and isinstance(entry.get("fieldsV1"), dict):
                remove_fields(out, entry["fieldsV1"])
    return out


def remove_pointer(obj: Any, pointer: str) -> None:
    """Delete the field or list item at the RFC 6901 `pointer`, if it is there."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(obj, dict):
            if part not in obj:
                return
            if last:
                del obj[part]
                return
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            if last:
                del obj[int(part)]
                return
            obj = obj[int(part)]
        else:
            return


def remove_fields(obj: Any, fields: Mapping[str, Any]) -> None:
    """Delete from `obj` the leaves of a server-side apply field set (`fieldsV1`): `f:name` a
    field, `k:{…}` the list item with those keys, `v:…` the item with that value, `i:N` an
    index; `.` (the set or item itself) leaves what others own under it alone."""
    for key, sub in fields.items():
        sub = sub if isinstance(sub, Mapping) else {}
        children = {k: v for k, v in sub.items() if k != "."}
        if key.startswith("f:") and isinstance(obj, dict):
            name = key[2:]
            if name not in obj:
                continue
            if children:
                remove_fields(obj[name], children)
            else:
                del obj[name]
        elif key[:2] in ("k:", "v:", "i:") and isinstance(obj, list):
            for index, item in reversed(list(enumerate(obj))):
                if not _item_matches(key, index, item):
                    continue
                if children:
                    remove_fields(item, children)
                else:
                    del obj[index]


def _item_matches(key: str, index: int, item: Any) -> bool:
    kind, text = key[:2], key[2:]
    if kind == "i:":
        return text.isdigit() and int(text) == index
    try:
        wanted = json.loads(text)
    except ValueError:
        return False
    if kind == "v:":
        return bool(item == wanted)
    return isinstance(item, dict) and isinstance(wanted, dict) and all(
        item.get(k) == v for k, v in wanted.items())
