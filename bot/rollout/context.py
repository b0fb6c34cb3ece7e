"""What the shell needs to carry out a rollout's actions: where, as whom, and what to report.

The engine never reads this (its own state is `RolloutState`); the shell does, in every job that
touches the rollout, so it is typed rather than a dict of ad-hoc keys. It is stored as plain JSON
beside the state, with the same keys the earlier untyped context used, so records written before
this type existed load unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bot.refs import RepoRef

Obj = dict[str, Any]


@dataclass
class RolloutContext:
    """Facts fixed when the rollout starts, then the few things the shell learns on the way."""

    repo: RepoRef
    number: int  # the PR/MR whose merge started the rollout
    app: str
    namespace: str
    deployment: Obj  # the workload as Git declares it (the template the canary runs)
    stable: Obj  # the live stable workload when the rollout started, to restore after an abort
    replicas: int  # split between the tracks (Git's count, or the live one under an HPA)
    template_hash: str  # of `deployment`'s pod template
    title: str = ""
    url: str = ""
    base_branch: str = ""
    cluster: str | None = None
    # The repository's boundary travels with the rollout: every later write by a tick or a
    # command is made as the same owner, impersonating the same account.
    impersonate: str | None = None
    adopt: bool = False
    stable_revision: str | None = None
    # The Services the strategy pins to a track, as Git has them (bot.rollout.plan).
    services: dict[str, Obj] = field(default_factory=dict)
    # Learned on the way:
    superseded_by_pr: str | None = None  # "#43": the PR whose merge superseded this rollout
    stable_touched: bool = False  # stable was given the new template (completion began)
    restore_pending: str | None = None  # why the last restore after an abort failed; retried
    revert: Obj | None = None  # the revert PR: {"state": "pending" | "opened" | ..., ...}
    # What carries the traffic, as last written: [{"object", "detail", "canary_weight"}], for
    # the PR comment (bot.report.rollout).
    traffic: list[Obj] = field(default_factory=list)

    def to_dict(self) -> Obj:
        # Not dataclasses.asdict: it deep-copies the two Deployments on every save, and the
        # result is only serialised.
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["repo"] = dataclasses.asdict(self.repo)
        # Unset optional facts are left out, as the untyped context did.
        for name in ("superseded_by_pr", "restore_pending", "revert"):
            if data[name] is None:
                del data[name]
        if not self.stable_touched:
            del data["stable_touched"]
        for name in ("services", "traffic"):  # unused by most rollouts: left out when empty
            if not data[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Obj) -> RolloutContext:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {name: value for name, value in data.items() if name in names}
        values["repo"] = RepoRef(**data["repo"])
        values["stable_touched"] = bool(data.get("stable_touched"))
        values["adopt"] = bool(data.get("adopt"))
        return cls(**values)
