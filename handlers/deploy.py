"""Deploying one verified merge: render each app at the merge commit, check the policy, apply
as the repository's account, prune what the owner no longer declares, wait for health, start a
canary where the strategy asks for one, and report every app on the PR.

`handlers.merged` decides whether and in which order a merge is deployed (the trust logic, with
ports); this module is what runs once it has. It still takes `Services` (cluster, mirrors,
Redis, forge reports); `AdapterDeployer` is the `Deployer` port over it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot import content_rules, services, tenancy
from bot.cluster.model import ClusterError, ObjectRef, Owner
from bot.config import REPO_CONFIG_FILE, AppConfig, ConfigError, parse_repo_config
from bot.deployments import deployment_path, save_deployment
from bot.events import MergedPullRequest
from bot.forge.base import Forge, StatusState
from bot.gitrepo import repo_key
from bot.manifests import ManifestError, render_sourced
from bot.policy import Policy, check, scope_judge
from bot.report import comment, status
from bot.rollout import routers, traffic
from bot.rollout.plan import CanaryPlan, split
from bot.rollout.store import RolloutStore, rollout_key
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
    status_app: str = ""  # the status context's app when not the section's own (REPO_SECTION)


@dataclass(frozen=True)
class AdapterDeployer:
    """`Deployer` over the real adapters: render, apply, canary, statuses and comment."""

    svc: services.Services
    forge: Forge

    def deploy(self, event: MergedPullRequest, tenant: tenancy.Tenant) -> bool:
        return deploy(self.svc, self.forge, event, tenant)

    def report(self, event: MergedPullRequest, app: str, outcome: AppOutcome) -> None:
        _report(self.svc, event, app, outcome)


def deploy(svc: services.Services, forge: Forge, event: MergedPullRequest,
           tenant: tenancy.Tenant) -> bool:
    """Deploy every app of the merge commit; True when each one applied (or began its canary)."""

    clone_url = forge.authenticated_clone_url(event.repo)
    with svc.mirrors.checkout(repo_key(event.repo), clone_url, event.merge_sha) as tree:
        config_file = Path(tree) / REPO_CONFIG_FILE
        if config_file.is_symlink():
            _report(svc, event, REPO_SECTION, AppOutcome(
                "failure", f"{REPO_CONFIG_FILE} is a symbolic link; nothing applied",
                error=f"{REPO_CONFIG_FILE} must be a regular file in the repository, not a "
                      "symbolic link", error_title="Invalid configuration"))
            return False
        if not config_file.is_file():
            log.info("%s has no %s at %s; nothing to deploy",
                     event.repo.full_name, REPO_CONFIG_FILE, event.merge_sha[:7])
            _report(svc, event, REPO_SECTION, _no_config_outcome(Path(tree)))
            return True
        try:
            config = parse_repo_config(config_file.read_text(errors="replace"), svc.settings)
        except ConfigError as exc:
            _report(svc, event, REPO_SECTION, AppOutcome(
                "failure", "invalid configuration; nothing applied",
                error=str(exc), error_title="Invalid configuration"))
            return False
        complete = True
        for app in config.apps:
            _set_status(svc, event, app.name, "pending", "applying manifests")
            canary = None
            try:
                outcome, canary = deploy_app(svc, event, app, Path(tree), tenant.policy)
            except ManifestError as exc:
                outcome = AppOutcome("failure", "manifests could not be rendered; nothing applied",
                                     error=str(exc), error_title="Invalid manifests")
            except StrategyError as exc:
                outcome = AppOutcome("failure", "invalid rollout strategy; nothing applied",
                                     error=str(exc), error_title="Invalid rollout strategy")
            _report(svc, event, app.name, outcome)
            complete = complete and outcome.state in ("success", "pending")
            if canary is not None:
                rollout.start(svc, event, app, *canary, policy=tenant.policy)
        return complete


# A name people give the file by mistake; Coalmine reads only REPO_CONFIG_FILE.
MISNAMED_CONFIG_FILE = ".coalmine.yml"


def _no_config_outcome(tree: Path) -> AppOutcome:
    """What the PR is told when the merge commit has no config: the merge itself is fine, so
    the status is success (GitHub statuses have no neutral state; failure would block merges
    that require Coalmine's checks, pending would never end), on `coalmine/config`; the
    comment says why nothing was deployed and names a misnamed `.coalmine.yml`."""
    summary = f"no {REPO_CONFIG_FILE}: nothing to deploy"
    if os.path.lexists(tree / MISNAMED_CONFIG_FILE):  # named only, never read or followed
        note = (f"This commit has {MISNAMED_CONFIG_FILE} but no {REPO_CONFIG_FILE}: Coalmine "
                f"reads only {REPO_CONFIG_FILE}. Rename the file to deploy its apps.")
        summary = f"no {REPO_CONFIG_FILE} ({MISNAMED_CONFIG_FILE} is not read): nothing to deploy"
    else:
        note = (f"This commit has no {REPO_CONFIG_FILE}, so Coalmine deployed nothing. Add one "
                "at the repository's root to list the apps to deploy (README: Repository config).")
    return AppOutcome("success", summary, notes=[note], status_app="config")


def deploy_app(
    svc: services.Services, event: MergedPullRequest, app: AppConfig, tree: Path, policy: Policy
) -> tuple[AppOutcome, tuple[CanaryPlan, dict[str, Any]] | None]:
    """Apply the app; returns the outcome and, when a canary must run, its plan and stable."""

    sourced = render_sourced(tree, app.path)
    objects, plan = split([o for o, _ in sourced], app, [f for _, f in sourced])
    cluster = svc.cluster(app.cluster, impersonate=policy.impersonate_user)
    owner = owner_of(event, app.name)
    notes: list[str] = []
    canary: tuple[CanaryPlan, dict[str, Any]] | None = None
    held: list[ObjectRef] = []  # the workload the rollout moves: kept out of apply and prune
    short = ""  # why the workload was held back, for the status line
    routed = traffic.router_objects(plan.strategy, plan.name, plan.namespace) if plan else []
    violations = _policy_violations(policy, app, cluster,
                                    objects + ([plan.deployment] if plan else []) + routed)
    if violations:
        listed = [str(v) for v in violations]
        return AppOutcome(
            "failure", f"policy forbids {len(listed)} object(s); nothing applied: {listed[0]}",
            error="; ".join(listed), error_title="Refused by the repository's policy"), None
    broken = content_rules.check(content_rules.tighten(svc.settings.rules, app.rules),
                                 objects + ([plan.deployment] if plan else []),
                                 source=app.path, default_namespace=app.namespace,
                                 files=content_rules.file_index(sourced))
    if broken:
        return AppOutcome(
            "failure", f"content rules: {len(broken)} violation(s), nothing applied: "
                       f"{broken[0].rule} ({broken[0].object})",
            error="; ".join(map(str, broken)), error_title="Refused by the content rules"), None
    try:
        if plan is not None:
            objects = keep_traffic(cluster, plan, objects)
            held += router_made(plan, objects)
            live = cluster.get("apps/v1", "Deployment", plan.namespace, plan.name)
            if traffic.needs_canary(plan.deployment, live):
                held += [ObjectRef.of(plan.deployment),
                         traffic.canary_ref(plan.deployment, plan.namespace)]
                running = rollout.running_rollout(svc, event.repo, app.name)
                if running is not None and running.context.template_hash == \
                        traffic.template_hash(plan.deployment) and \
                        running.state.revision != event.merge_sha:
                    continuing = f"#{running.context.number}"
                    short = f"canary of {continuing} continues"
                    notes.append(f"this merge leaves {plan.name} as it is; the canary rollout "
                                 f"started by {continuing} continues there")
                elif _aborted_before(svc, event, app, plan):
                    short = "aborted revision held back; /retry deploys it"
                    notes.append(
                        f"this revision of {plan.name} was aborted before; the stable version "
                        "keeps running. Comment /retry on this PR or on the aborted one to "
                        "deploy it again.")
                    rollout.hold(svc, event, app, plan, live, policy=policy)
                else:
                    canary = (plan, live)
            else:
                if rollout.supersede_without_canary(svc, event, app, plan, policy):
                    notes.append("the running canary was superseded: this revision's pod "
                                 "template equals the stable one, so it applies directly")
                objects = [*objects, traffic.as_stable(plan.deployment,
                                                       plan.strategy.stable_metadata)]
        applied = cluster.apply(
            objects, app=app.name, revision=event.merge_sha, default_namespace=app.namespace,
            owner=owner, adopt=policy.adopt,
        )
        pruned = []
        if app.prune:
            kept = set(applied.refs) | set(held)
            pruned = cluster.prune(app.name, kept, owner=owner,
                                   may_delete=lambda ref: may_prune(policy, ref),
                                   namespaces=prune_scopes(policy, app.namespace, kept))
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


def keep_traffic(cluster: Any, plan: CanaryPlan, objects: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Git's objects as a later merge applies them without undoing a rollout: the Services
    the strategy pins keep the track they select live (stable when new), and the router's
    objects keep the weights and managed routes live (Argo CD users need ignoreDifferences for
    this; Coalmine applies Git itself, so it does the same on its own)."""
    strategy = plan.strategy
    router_ctx = traffic.router_context(strategy, plan.name, plan.namespace)
    kept = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace") or plan.namespace
        if obj.get("kind") == "Service" and name in plan.services:
            live = cluster.get("v1", "Service", namespace, name)
            obj = traffic.pin_service(obj, traffic.pinned_track(live) or "stable")
        elif strategy.traffic is not None and router_ctx is not None:
            # Match by group, kind and name: Git may write another version of the API than
            # the one the router reads (Istio's v1 vs v1alpha3); the router's version is read.
            group = str(obj.get("apiVersion", "")).rpartition("/")[0]
            key = next((k for k in routers.reads(strategy.traffic, router_ctx)
                        if (k.api_version.rpartition("/")[0], k.kind, k.namespace, k.name)
                        == (group, obj.get("kind"), namespace, name)), None)
            if key is not None:
                live = cluster.get(key.api_version, key.kind, key.namespace, key.name)
                obj = routers.keep_live_traffic(strategy.traffic, router_ctx, obj, live) or obj
        kept.append(obj)
    return kept


def router_made(plan: CanaryPlan, objects: list[dict[str, Any]]) -> list[ObjectRef]:
    """Objects the router creates beside Git's (NGINX's canary Ingress, an SMI TrafficSplit):
    prune must leave them to the rollout."""
    router_ctx = traffic.router_context(plan.strategy, plan.name, plan.namespace)
    if plan.strategy.traffic is None or router_ctx is None:
        return []
    declared = {(o.get("kind"), (o.get("metadata") or {}).get("name")) for o in objects}
    return [ObjectRef(k.api_version, k.kind, k.namespace, k.name)
            for k in routers.reads(plan.strategy.traffic, router_ctx)
            if (k.kind, k.name) not in declared]


def owner_of(event: MergedPullRequest, app: str) -> Owner:
    """Who owns what the app applies: the repository by its forge id, and the app."""
    assert event.repo.repo_id is not None, "verify() sets the id from the forge API"
    return Owner(event.repo.forge, event.repo.repo_id, event.repo.full_name, app)


def may_prune(policy: Policy, ref: ObjectRef) -> bool:
    """Prune deletes only what the policy would let the repository apply now."""
    if ref.namespace is None:
        if (ref.group, ref.kind) == ("", "Namespace"):
            return policy.allows_namespace(ref.name) and policy.allows_kind("", "Namespace",
                                                                             namespaced=False)
        return policy.allows_kind(ref.group, ref.kind, namespaced=False)
    return policy.allows_namespace(ref.namespace) and \
        policy.allows_kind(ref.group, ref.kind, namespaced=True)


def _policy_violations(policy: Policy, app: AppConfig, cluster: Any,
                       objects: list[dict[str, Any]]) -> list[Any]:
    """What the repository's policy forbids among the objects, before anything is applied."""

    def discovered(api_version: str, kind: str) -> bool | None:
        try:
            return not cluster.resource(api_version, kind).namespaced
        except ClusterError:
            return None  # not served (yet): scope_judge takes the strict reading

    return check(policy, objects, cluster=app.cluster or "default",
                 default_namespace=app.namespace,
                 cluster_scoped=scope_judge(discovered, objects))


def _aborted_before(svc: services.Services, event: MergedPullRequest, app: AppConfig,
                    plan: CanaryPlan) -> bool:
    key = rollout_key(event.repo.forge, event.repo.full_name, app.name)
    return RolloutStore(svc.redis).aborted_template(key) == traffic.template_hash(plan.deployment)


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
    context_app = outcome.status_app or app
    if app == REPO_SECTION and not outcome.status_app:
        context_app = "config" if outcome.error_title == "Invalid configuration" else "deploy"
    _set_status(svc, event, context_app, outcome.state, outcome.summary)
    comment.save_section(svc.redis, event.repo, event.number, app, section)
    outbox.post_comment(svc, event.repo, event.number, event.merge_sha)


def prune_scopes(policy: Policy, namespace: str, kept: set[ObjectRef]) -> set[str] | None:
    """Where prune lists: everywhere with Coalmine's own rights; with an impersonated
    ServiceAccount, which holds a Role per namespace, only the namespaces it can be granted."""
    if policy.impersonate_user is None:
        return None
    named = {ns for ns in policy.namespaces if not any(c in ns for c in "*?[")}
    return named | {namespace} | {ref.namespace for ref in kept if ref.namespace}
