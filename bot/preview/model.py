"""What a PR preview found, as plain values: per app, each object's fate and every check.

The use case (handlers/preview.py) fills these from the cluster's dry run and the checks; the
renderer (bot.preview.render) only reads them. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bot.content_rules import RuleViolation

Action = Literal["create", "change", "unchanged", "prune", "refused", "invalid", "unchecked"]
# The order objects are listed in: what needs attention first.
ACTIONS: tuple[Action, ...] = ("refused", "invalid", "create", "change", "prune", "unchecked",
                               "unchanged")
FAILING_ACTIONS = frozenset({"refused", "invalid"})


@dataclass(frozen=True)
class FieldChange:
    path: str  # "spec.template.spec.containers[name=web].image"
    change: Literal["added", "removed", "changed"]
    before: Any = None
    after: Any = None
    hidden: bool = False  # a Secret's value: only that the key changed is ever shown


@dataclass(frozen=True)
class ObjectChange:
    ref: str  # "Deployment shop/web"
    action: Action
    fields: tuple[FieldChange, ...] = ()
    note: str = ""  # why it is refused, invalid or unchecked


@dataclass(frozen=True)
class AppPreview:
    name: str
    cluster: str = "default"
    changes: tuple[ObjectChange, ...] = ()
    policy: tuple[str, ...] = ()  # what the repository's policy refuses ("Kind ns/name: rule")
    rules: tuple[RuleViolation, ...] = ()
    error: str = ""  # the app could not be previewed at all (render, strategy, cluster)
    error_title: str = ""
    plan: tuple[str, ...] = ()  # what the merge will do, line by line
    rules_in_force: tuple[str, ...] = ()

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def failed(self) -> bool:
        """The merge would fail this app (nothing of it applied), or could not be checked."""
        return bool(self.policy or self.rules or self.error or
                    any(c.action in FAILING_ACTIONS for c in self.changes))


@dataclass(frozen=True)
class Preview:
    sha: str
    apps: tuple[AppPreview, ...] = ()
    config_error: str = ""  # .coalmine.yaml is invalid: nothing would deploy
    no_config: bool = False  # no .coalmine.yaml: nothing would deploy

    @property
    def failed(self) -> bool:
        return bool(self.config_error) or any(app.failed for app in self.apps)

    @property
    def state(self) -> Literal["success", "failure"]:
        return "failure" if self.failed else "success"
