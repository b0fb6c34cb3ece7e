"""A merged PR/MR: apply each app's manifests at the merge commit and report on the PR.

The job may run twice (redelivery, retry, crash): server-side apply is idempotent, statuses are
set rather than appended, and the comment is found again by its marker, so a second run only
repeats the same writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot import services
from bot.config import REPO_CONFIG_FILE, AppConfig, ConfigError, parse_repo_config
from bot.deployments import deployment_path, save_deployment
from bot.events import MergedPullRequest
from bot.forge.base import Forge, StatusState
from bot.gitrepo import repo_key
from bot.leases import leased
from bot.report import comment, status
from bot.rollout import traffic
from bot.rollout.plan import CanaryPlan, split
from bot.rollout.store import rollout_key
from bot.rollout.strategy import StrategyError
from handlers import outbox, rollout

log = logging.getLogger(__name__)
REPO_SECTION = "(repository)"


@dataclass
class AppOutcome:
    state: StatusState
    summary: str
    objects: dict[str, list[str]] = field(default_factory=dict)
    health: dict[str, Any] | None = None
    error: str | None = None
    error_title: str = "Failed"
    notes: list[str] = field(default_factory=list)


def run(event: MergedPullRequest) -> None:
    """RQ entry point."""
    svc = services.current()
    forge = svc.forge(event.repo)
    try:
        with leased(svc.redis, run, event):
            deploy(svc, forge, event)
    except Exception as exc:
        # Report on the PR, not only in a log; the message is redacted of every known secret.
        reason = services.redactor().redact(f"{type(exc).__name__}: {exc}")
        log.exception("deploy of %s@%s failed", event.repo.full_name, event.merge_sha[:7])
        _report(svc, event, REPO_SECTION, AppOutcome(
            "error", "Coalmine failed before finishing", error=reason, error_title="Internal error"))
        raise


def deploy(svc: services.Services, forge: Forge, event: MergedPullRequest) -> None:
    from bot.manifests import ManifestError

    if not svc.settings.clone_host_allowed(event.repo.forge, event.repo.clone_url):
        _report(svc, event, REPO_SECTION, AppOutcome(
            "failure", "clone URL is not on the forge's host; nothing fetched",
            error=f"the webhook named the clone URL host of {event.repo.clone_url!r}, which is "
                  "not the configured forge's host (allow more hosts with COALMINE_GIT_HOSTS)",
            error_title="Refused clone URL"))
        return
    clone_url = forge.authenticated_clone_url(event.repo)
    with svc.mirrors.checkout(repo_key(event.repo), clone_url, event.merge_sha) as tree:
        config_file = Path(tree) / REPO_CONFIG_FILE
        if not config_file.is_file():
            log.info("%s has no %s at %s; nothing to deploy",
                     event.repo.full_name, REPO_CONFIG_FILE, event.merge_sha[:7])
            return
        try:
            config = parse_repo_config(config_file.read_text(errors="replace"), svc.settings)
        except ConfigError as exc:
            _report(svc, event, REPO_SECTION, AppOutcome(
                "failure", "invalid configuration; nothing applied",
                error=str(exc), error_title="Invalid configuration"))
            return
        for app in config.apps:
            _set_status(svc, event, app.name, "pending", "applying manifests")
            canary = None
            try:
                outcome, canary = deploy_app(svc, event, app, Path(tree))
            except ManifestError as exc:
                outcome = AppOutcome("failure", "manifests could not be rendered; nothing applied",
                                     error=str(exc), error_title="Invalid manifests")
            except StrategyError as exc:
                outcome = AppOutcome("failure", "invalid rollout strategy; nothing applied",
                                     error=str(exc), error_title="Invalid rollout strategy")
            _report(svc, event, app.name, outcome)
            if canary is not None:
                rollout.start(svc, event, app, *canary)


def deploy_app(
    svc: services.Services, event: MergedPullRequest, app: AppConfig, tree: Path
) -> tuple[AppOutcome, tuple[CanaryPlan, dict[str, Any]] | None]:
    """Apply the app; returns the outcome and, when a canary must run, its plan and stable."""
    from bot.cluster.model import ClusterError, ObjectRef
    from bot.manifests import render

    objects, plan = split(render(tree, app.path), app)
    cluster = svc.cluster(app.cluster)
    notes: list[str] = []
    canary: tuple[CanaryPlan, dict[str, Any]] | None = None
    held: list[ObjectRef] = []  # the workload the rollout moves: kept out of apply and prune
    short = ""  # why the workload was held back, for the status line
    violations = _policy_violations(svc, event, app, cluster,
                                    objects + ([plan.deployment] if plan else []))
    if violations:
        listed = [str(v) for v in violations]
        return AppOutcome(
            "failure", f"policy forbids {len(listed)} object(s); nothing applied: {listed[0]}",
            error="; ".join(listed), error_title="Refused by the repository's policy"), None
    try:
        if plan is not None:
            if plan.strategy.traffic_routing_ignored:
                notes.append("trafficRouting is not supported yet: traffic follows replica "
                             "weights (canary pods / all pods)")
            live = cluster.get("apps/v1", "Deployment", plan.namespace, plan.name)
            if traffic.needs_canary(plan.deployment, live):
                held = [ObjectRef.of(plan.deployment),
                        traffic.canary_ref(plan.deployment, plan.namespace)]
                running = rollout.running_rollout(svc, event.repo, app.name)
                if running is not None and running.context.get("template_hash") == \
                        traffic.template_hash(plan.deployment) and \
                        running.state.revision != event.merge_sha:
                    continuing = f"#{running.context['number']}"
                    short = f"canary of {continuing} continues"
                    notes.append(f"this merge leaves {plan.name} as it is; the canary rollout "
                                 f"started by {continuing} continues there")
                elif _aborted_before(svc, event, app, plan):
                    short = "aborted revision held back; /retry deploys it"
                    notes.append(
                        f"this revision of {plan.name} was aborted before; the stable version "
                        "keeps running. Comment /retry on the aborted PR to deploy it again.")
                else:
                    canary = (plan, live)
            else:
                if rollout.supersede_without_canary(svc, event, app, plan):
                    notes.append("the running canary was superseded: this revision's pod "
                                 "template equals the stable one, so it applies directly")
                objects = [*objects, traffic.as_stable(plan.deployment)]
        applied = cluster.apply(
            objects, app=app.name, revision=event.merge_sha, default_namespace=app.namespace
        )
        pruned = []
        if app.prune:
            pruned = cluster.prune(app.name, set(applied.refs) | set(held))
    except ClusterError as exc:
        return AppOutcome("failure", "apply failed", error=str(exc), error_title="Apply failed",
                          notes=notes), None
    listing = {
        "created": [str(r) for r in applied.created],
        "configured": [str(r) for r in applied.configured],
        "unchanged": [str(r) for r in applied.unchanged],
        "pruned": [str(r) for r in pruned],
    }
    counts = {k: len(v) for k, v in listing.items()}
    timeout = app.health_timeout_s or svc.settings.health_timeout_s
    _set_status(svc, event, app.name, "pending",
                f"applied ({status.applied_summary(counts)}); waiting for rollout")
    health = cluster.wait_healthy(applied.refs, timeout_s=timeout)
    summary = f"{status.applied_summary(counts)}; " + ("healthy" if health.ok else "unhealthy")
    health_dict = {"ok": health.ok, "message": health.message}
    if not health.ok:
        return AppOutcome("failure", f"{summary}: {health.message}", listing, health_dict,
                          notes=notes), None
    if canary is not None:
        return AppOutcome("pending", f"{summary}; canary rollout starting", listing, health_dict,
                          notes=notes), canary
    if short:
        summary = f"{summary}; {short}"
    return AppOutcome("success", summary, listing, health_dict, notes=notes), None


def _policy_violations(svc: services.Services, event: MergedPullRequest, app: AppConfig,
                       cluster: Any, objects: list[dict[str, Any]]) -> list[Any]:
    """What the repository's policy forbids among the objects, before anything is applied."""
    from bot.cluster.model import ClusterError
    from bot.policy import check, policy_for

    defined_here = {
        (crd["spec"].get("group", ""), crd["spec"].get("names", {}).get("kind", "")):
            crd["spec"].get("scope") == "Cluster"
        for crd in objects
        if crd.get("kind") == "CustomResourceDefinition" and isinstance(crd.get("spec"), dict)
    }

    def cluster_scoped(api_version: str, kind: str) -> bool:
        group = api_version.rpartition("/")[0]
        if (group, kind) in defined_here:
            return defined_here[(group, kind)]
        try:
            return not cluster.resource(api_version, kind).namespaced
        except ClusterError:
            return False  # unknown kinds fail the apply with their own clear error

    policy = policy_for(svc.settings, event.repo.full_name)
    return check(policy, objects, cluster=app.cluster or "default",
                 default_namespace=app.namespace, cluster_scoped=cluster_scoped)


def _aborted_before(svc: services.Services, event: MergedPullRequest, app: AppConfig,
                    plan: CanaryPlan) -> bool:
    key = rollout_key(event.repo.forge, event.repo.full_name, app.name)
    marker = svc.redis.get(rollout.aborted_key(key))
    return marker is not None and marker.decode() == traffic.template_hash(plan.deployment)


def _target_url(svc: services.Services, event: MergedPullRequest, app: str) -> str:
    return svc.settings.public_url + deployment_path(
        event.repo.forge, event.repo.full_name, event.merge_sha, app)


def _set_status(svc: services.Services, event: MergedPullRequest, app: str,
                state: StatusState, description: str) -> None:
    outbox.post_status(svc, event.repo, event.number, event.merge_sha, status.context(app),
                       state, status.clip(description), _target_url(svc, event, app))


def _report(svc: services.Services, event: MergedPullRequest, app: str,
            outcome: AppOutcome) -> None:
    """Record the outcome, set the final status and refresh the PR's comment."""
    section = {
        "app": app, "sha": event.merge_sha, "state": outcome.state, "summary": outcome.summary,
        "objects": outcome.objects, "health": outcome.health, "error": outcome.error,
        "error_title": outcome.error_title, "notes": outcome.notes,
    }
    save_deployment(svc.redis, {
        "forge": event.repo.forge, "repo": event.repo.full_name, "sha": event.merge_sha,
        "app": app, "pr": event.number, **section})
    context_app = app
    if app == REPO_SECTION:
        context_app = "config" if outcome.error_title == "Invalid configuration" else "deploy"
    _set_status(svc, event, context_app, outcome.state, outcome.summary)
    comment.save_section(svc.redis, event.repo, event.number, app, section)
    outbox.post_comment(svc, event.repo, event.number, event.merge_sha)
