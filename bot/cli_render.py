"""`coalmine render APP`: the objects a deploy of a checkout would apply for one app.

It runs the deploy's own steps up to the cluster (`.coalmine.yaml`, `bot.manifests`'s
renderer with its limits, `bot.rollout.plan.split`), so it shows what a merge applies, not a
second opinion: Argo `Rollout` and `AnalysisTemplate` documents are read, not applied; the
strategy's workload is shown as the Deployment Coalmine manages (stable track, template hash),
marked as held back for a canary when the merge changes its pod template; the Services the
strategy names are marked as pinned to a track while a rollout runs. The ownership labels
(`coalmine.dev/owner`, `coalmine.dev/revision`) are added at apply time and are not shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.config import REPO_CONFIG_FILE, AppConfig, ConfigError, Settings, parse_repo_config
from bot.manifests import render_sourced
from bot.rollout import traffic
from bot.rollout.plan import CanaryPlan, split

Obj = dict[str, Any]

APPLIED, WORKLOAD, READ = "applied", "workload", "read"


@dataclass(frozen=True)
class Rendered:
    obj: Obj
    source: str  # the file it came from (or "kustomize output of <path>")
    role: str  # APPLIED as shown, WORKLOAD of a rollout strategy, READ only (Argo documents)
    note: str = ""


def app_of(root: Path, name: str, settings: Settings | None = None) -> AppConfig:
    """The app called `name` in the checkout's `.coalmine.yaml`; ConfigError otherwise."""
    path = root / REPO_CONFIG_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(REPO_CONFIG_FILE, "", f"cannot read in {root}: {exc.strerror}") from None
    config = parse_repo_config(text, settings)
    for app in config.apps:
        if app.name == name:
            return app
    names = ", ".join(a.name for a in config.apps)
    raise ConfigError(REPO_CONFIG_FILE, "apps", f"no app named {name!r} (apps: {names})")


@dataclass(frozen=True)
class Planned:
    """An app's render split as a deploy splits it."""

    sourced: list[tuple[Obj, str]]  # every document with its file
    objects: list[Obj]  # applied as they are
    plan: CanaryPlan | None  # the rollout strategy's workload, templates and Services


def plan_app(root: Path, app: AppConfig) -> Planned:
    """ManifestError or StrategyError as a deploy would raise them."""
    sourced = render_sourced(root, app.path)
    objects, plan = split([o for o, _ in sourced], app, [f for _, f in sourced])
    return Planned(sourced, objects, plan)


def render_app(root: Path, app: AppConfig) -> list[Rendered]:
    """Every object of the app in manifest order: applied ones, the workload, then the Argo
    documents that are only read."""
    planned = plan_app(root, app)
    plan = planned.plan
    source_of = {id(o): f for o, f in planned.sourced}
    pinned = set(plan.services) if plan is not None else set()
    out = []
    for obj in planned.objects:
        note = ""
        if obj.get("kind") == "Service" and obj["metadata"]["name"] in pinned:
            note = "the rollout pins this Service's selector to a track while it runs"
        out.append(Rendered(obj, source_of.get(id(obj), app.path), APPLIED, note))
    if plan is not None:
        out.append(Rendered(
            traffic.as_stable(plan.deployment, plan.strategy.stable_metadata),
            _workload_source(planned.sourced, plan), WORKLOAD,
            "held back for a canary: a merge that changes this pod template rolls it out in "
            f"{len(plan.strategy.steps)} step(s) ({plan.strategy.kind}); otherwise it is "
            "applied as shown"))
    kept = {id(o) for o in planned.objects}
    out += [Rendered(o, f, READ, "read by Coalmine, never applied")
            for o, f in planned.sourced if id(o) not in kept and _is_argo(o)]
    return out


def _workload_source(sourced: list[tuple[Obj, str]], plan: CanaryPlan) -> str:
    name = plan.name
    for obj, source in sourced:
        if obj.get("kind") in ("Rollout", "Deployment") and obj["metadata"].get("name") == name:
            return source
    return next((f for o, f in sourced if o.get("kind") == "Rollout"), "")


def _is_argo(obj: Obj) -> bool:
    return str(obj.get("apiVersion", "")).startswith("argoproj.io/")


def as_yaml(rendered: list[Rendered]) -> str:
    """A YAML stream, each document headed by comments: its file and what Coalmine does
    with it (kubectl ignores comments, so the stream can be piped on)."""
    docs = []
    for item in rendered:
        head = [f"# source: {item.source}"]
        if item.role == READ:
            head.append(f"# {item.note}")
        elif item.note:
            head.append(f"# {item.role}: {item.note}")
        body = yaml.safe_dump(item.obj, sort_keys=False, default_flow_style=False)
        if item.role == READ:
            body = "".join(f"# {line}\n" for line in body.splitlines())
        docs.append("---\n" + "\n".join(head) + "\n" + body)
    return "".join(docs)


def as_list(rendered: list[Rendered]) -> list[dict[str, Any]]:
    return [{"source": r.source, "role": r.role, "note": r.note, "object": r.obj}
            for r in rendered]
