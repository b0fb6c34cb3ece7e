"""The strategy fields around the steps, read once for both strategies and both sources.

An Argo Rollout's `spec.strategy.canary` / `spec.strategy.blueGreen` and a `.coalmine.yaml`
app's `canary:` / `blueGreen:` share these: the Services a rollout pins to a track, the pods'
metadata per track, the scale-down delays and the Deployments' surge. Reading them here keeps
the two sources accepting and refusing exactly the same values, each error naming its key.
"""

from __future__ import annotations

import re
from typing import Any

from bot.rollout.fields import At, as_mapping, as_text, as_whole, key_names, shown
from bot.rollout.model import PodMetadata

_PERCENT = re.compile(r"(\d+)%?")


def service_name(raw: Any, at: At) -> str:
    """A Service's name, or "" when the key is absent."""
    return "" if raw is None else as_text(raw, at)


def flag(raw: Any, at: At, default: bool) -> bool:
    if raw is None:
        return default
    if not isinstance(raw, bool):
        at.fail(f"must be true or false, got {shown(raw)}")
    return raw


def seconds(raw: Any, at: At) -> int | None:
    """A whole number of seconds (Argo's int32 fields), None when absent."""
    return None if raw is None else as_whole(raw, at, 0)


def int_or_percent(raw: Any, at: At) -> int | str | None:
    """Argo's IntOrString for maxSurge/maxUnavailable: 2 or "25%". A bare "25" is a percentage,
    as Kubernetes reads any string (REFERENCE: Argo stores its default as the bare "25")."""
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            at.fail(f"{raw} must be >= 0")
        return raw
    if isinstance(raw, str):
        match = _PERCENT.fullmatch(raw.strip())
        if match:
            return f"{int(match.group(1))}%"
    at.fail(f"{shown(raw)} is neither a whole number nor a percentage like \"25%\"")


def pod_metadata(raw: Any, at: At) -> PodMetadata | None:
    """`canaryMetadata` and friends: {labels: {...}, annotations: {...}} of strings."""
    if raw is None:
        return None
    raw = as_mapping(raw, at, "a mapping with labels and/or annotations")
    unknown = key_names(set(raw) - {"labels", "annotations"})
    if unknown:
        at.key(unknown[0]).fail("unknown key (allowed: labels, annotations)")
    return PodMetadata(labels=_string_pairs(raw.get("labels"), at.key("labels")),
                       annotations=_string_pairs(raw.get("annotations"), at.key("annotations")))


def _string_pairs(raw: Any, at: At) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    raw = as_mapping(raw, at, "a mapping of strings")
    pairs = []
    for key, value in sorted(raw.items(), key=lambda item: str(item[0])):
        if not isinstance(value, str):
            at.key(str(key)).fail(f"must be a string, got {shown(value)} (quote it)")
        pairs.append((str(key), value))
    return tuple(pairs)
