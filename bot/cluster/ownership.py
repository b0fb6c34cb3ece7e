"""Who owns a live object, and whether an owner may write or delete it. Pure: no I/O.

Ownership is recorded on every applied object by labels (`managed-by`, the owner label holding
forge and repository id, the app label) and, for people, the repository annotation. These rules
keep two repositories, or two apps of one repository, from silently claiming one object (the
same guarantee Argo CD's resource tracking gives): server-side apply with forced conflicts
would otherwise hand any object to whoever applies it last.
"""

from __future__ import annotations

from typing import Any

from bot.cluster.model import Owner
from bot.refs import (
    APP_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    OWNER_LABEL,
    REPOSITORY_ANNOTATION,
)

Obj = dict[str, Any]


def ownership_labels(owner: Owner) -> dict[str, str]:
    """The labels that make an object the owner's (the revision label is set beside them)."""
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, OWNER_LABEL: owner.label_value, APP_LABEL: owner.app}


def ownership_annotations(owner: Owner) -> dict[str, str]:
    return {REPOSITORY_ANNOTATION: owner.repository}


def selector(owner: Owner) -> str:
    """The label selector of exactly the owner's objects."""
    return ",".join(f"{key}={value}" for key, value in ownership_labels(owner).items())


def refusal(live: Obj | None, owner: Owner, *, adopt: bool) -> str | None:
    """Why `owner` may not apply over `live` (the rest of a sentence naming the object), or None.

    - nothing live, or live and already the owner's (same repository id and app): allowed;
    - owned by another repository, or by another app of the same one: refused;
    - labelled managed-by coalmine and with the same app label but no owner label: written by
      a Coalmine from before owner labels existed. Allowed, so that upgrading Coalmine does not
      strand every deployed app; the apply then records the owner and the object is fenced
      from then on. (Until it is re-applied, any served repository with an app of that name
      could claim it first: upgrade, then let each repository deploy once.)
    - live without Coalmine's managed-by label (made by hand, by another tool, or Coalmine's
      own install): refused unless the repository's policy allows adoption.
    """
    if live is None:
        return None
    meta = live.get("metadata") or {}
    labels = meta.get("labels") or {}
    owner_value = labels.get(OWNER_LABEL)
    app = labels.get(APP_LABEL)
    if owner_value is not None:
        if owner_value == owner.label_value and app == owner.app:
            return None
        return f"is owned by {_owner_words(meta)}"
    if labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
        if app == owner.app:
            return None
        return (f"is managed by Coalmine for app {app or '(none)'} with no owning repository "
                "recorded")
    if adopt:
        return None
    return ("exists and is not managed by Coalmine (set adopt: true in the repository's policy "
            "to take it over)")


def owned_by(live: Obj, owner: Owner) -> bool:
    """Whether the live object carries all of the owner's labels (checked before a delete)."""
    labels = (live.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in ownership_labels(owner).items())


def _owner_words(meta: Obj) -> str:
    """`github:acme/other app web`; the label names the repository when the annotation is gone."""
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    repository = annotations.get(REPOSITORY_ANNOTATION) or labels.get(OWNER_LABEL)
    return f"{repository} app {labels.get(APP_LABEL) or '(none)'}"
