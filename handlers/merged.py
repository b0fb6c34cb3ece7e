"""A merged PR/MR: apply each app's manifests at the merge commit and report on the PR.

The payload only says where to look. Before anything is fetched or applied, the job asks the
forge API which repository this is (its stable id decides the policy, see bot.tenancy), whether
the PR is merged, with that merge commit, into the deploy branch; then, under a lock held per
repository and deploy branch across all workers, that the commit is on the deploy branch and
newer than what was deployed last. A mismatch changes nothing and is logged with the delivery id.

The job may run twice (redelivery, retry, crash): server-side apply is idempotent, statuses are
set rather than appended, and the comment is found again by its marker, so a second run only
repeats the same writes — and a run for a commit older than the one deployed is skipped, so
nothing ever moves the cluster back (going back is a new commit: the revert PR).

`verify` and `deploy_in_order` hold the trust logic and receive the narrow ports below as
arguments, so tests drive them with in-memory fakes (tests/unit/test_usecase_merge.py). The
rendering and applying behind `Deployer` (`deploy`, `deploy_app`) still take `Services`: a port
set for cluster, manifests and reports is the next step. `run` is the RQ entry point, enqueued
by dotted path: the only code here that reaches for the process's adapters.

Over 400 lines because render/apply (`deploy`, `deploy_app` and their helpers) still live here
beside the trust logic; they are to move to their own module once they receive ports too.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from redis.exceptions import RedisError

from bot import services, tenancy
from bot.cluster.model import ClusterError, ObjectRef, Owner
from bot.config import REPO_CONFIG_FILE, AppConfig, ConfigError, Settings, parse_repo_config
from bot.deployments import deployment_path, save_deployment
from bot.events import MergedPullRequest
from bot.forge.base import Forge, ForgeError, PullRequestFacts, RepoFacts, StatusState
from bot.gitrepo import GitError, repo_key
from bot.leases import GivenUp, leased
from bot.manifests import ManifestError, render
from bot.policy import Policy, check, scope_judge
from bot.refs import RepoRef
from bot.report import comment, status
from bot.rollout import traffic
from bot.rollout.plan import CanaryPlan, split
from bot.rollout.store import aborted_key, rollout_key
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


# --------------------------------------------------------------------------- ports


class MergeFacts(Protocol):
    """What the merge asks the forge: the facts it trusts, and where to fetch from."""

    def repository_facts(self, repo: RepoRef) -> RepoFacts:
        """The repository's id, current name and default branch; ForgeError when unknown."""

    def pull_request_facts(self, repo: RepoRef, number: int) -> PullRequestFacts:
        """Whether the PR is merged, by which commit, into which branch."""

    def authenticated_clone_url(self, repo: RepoRef) -> str:
        """Clone URL carrying the bot's credentials. Never log it."""


class TenantResolver(Protocol):
    """Which served repository (and policy) a forge-confirmed repository id is (bot.tenancy)."""

    def resolve(self, forge: str, repo_id: int, full_name: str) -> tenancy.Tenant | str:
        """The tenant, or why the repository is refused."""


class Ancestry(Protocol):
    """What the git mirrors tell about commits: on the branch? older? the config at a commit?"""

    def branch_contains(self, repo_key: str, clone_url: str, branch: str, sha: str) -> bool:
        """Whether `sha` is reachable from the remote `branch`, freshly fetched."""

    def is_ancestor(self, repo_key: str, clone_url: str, ancestor: str, descendant: str) -> bool:
        """Whether `ancestor` is `descendant` or one of its ancestors."""

    def file_at(self, repo_key: str, clone_url: str, sha: str, path: str) -> str | None:
        """The text of `path` at `sha`; None when it is not a file there."""


class DeployedMarkers(Protocol):
    """The newest merge commit of a deploy branch that a merge job processed, per repository
    id; read and written only under that branch's `BranchLock`."""

    def last(self, forge: str, repo_id: int, branch: str) -> tuple[str, bool] | None:
        """(sha, complete) of the newest processed commit, None before the first."""

    def record(self, forge: str, repo_id: int, branch: str, sha: str, *,
               complete: bool) -> None:
        """Remember `sha` as the newest processed commit; `complete` False lets a redelivery
        of that same commit try again."""


class BranchLock(Protocol):
    """Serialises the merges of one repository's deploy branch across all workers."""

    def locked(self, forge: str, repo_id: int, branch: str) -> AbstractContextManager[object]:
        """Held while the block runs; waits for another holder."""


class Deployer(Protocol):
    """The rest of the merge: render and apply each app, and report outcomes on the PR."""

    def deploy(self, event: MergedPullRequest, tenant: tenancy.Tenant) -> bool:
        """Deploy every app of the merge commit; True when each one applied (or began its
        canary)."""

    def report(self, event: MergedPullRequest, app: str, outcome: AppOutcome) -> None:
        """Record the outcome, set the app's commit status and refresh the PR's comment."""


class Verified(NamedTuple):
    """A merge as the forge API confirms it, the tenant it deploys as, and its deploy branch."""

    event: MergedPullRequest
    tenant: tenancy.Tenant
    branch: str


# --------------------------------------------------------------------------- RQ entry point


def run(event: MergedPullRequest) -> None:
    """RQ entry point: the process's adapters, as ports, to `verify` and `deploy_in_order`."""
    svc = services.current()
    forge = svc.forge(event.repo)
    deployer = AdapterDeployer(svc, forge)
    verified = None
    try:
        with leased(svc.redis, run, event):
            verified = verify(event, forge=forge, tenants=svc.tenants)
            if verified is None:
                return
            deploy_in_order(verified, forge=forge, mirrors=svc.mirrors,
                            markers=svc.deployed_markers, lock=svc.merge_locks,
                            deployer=deployer, settings=svc.settings)
    except GivenUp as exc:
        _report_given_up(event, exc, forge=forge, tenants=svc.tenants, deployer=deployer)
    except RedisError:
        log.warning("deploy of %s@%s interrupted by a Redis error; its lease re-runs it "
                    "(delivery %s)", event.repo.full_name, event.merge_sha[:7],
                    event.delivery or "-")
        raise
    except Exception as exc:
        log.exception("deploy of %s@%s failed (delivery %s)", event.repo.full_name,
                      event.merge_sha[:7], event.delivery or "-")
        if verified is not None:  # only a PR the forge confirmed hears from Coalmine
            # Report on the PR, not only in a log; the message is redacted of every secret.
            reason = services.redactor().redact(f"{type(exc).__name__}: {exc}")
            deployer.report(verified.event, REPO_SECTION, AppOutcome(
                "error", "Coalmine failed before finishing", error=reason,
                error_title="Internal error"))
        raise


@dataclass(frozen=True)
class AdapterDeployer:
    """`Deployer` over the real adapters: render, apply, canary, statuses and comment."""

    svc: services.Services
    forge: Forge

    def deploy(self, event: MergedPullRequest, tenant: tenancy.Tenant) -> bool:
        return deploy(self.svc, self.forge, event, tenant)

    def report(self, event: MergedPullRequest, app: str, outcome: AppOutcome) -> None:
        _report(self.svc, event, app, outcome)


def _report_given_up(event: MergedPullRequest, given_up: GivenUp, *, forge: MergeFacts,
                     tenants: TenantResolver, deployer: Deployer) -> None:
    """Tell the PR (once the forge confirms it) that its merge was given up, and why."""
    verified = verify(event, forge=forge, tenants=tenants)
    if verified is None:
        return
    deployer.report(verified.event, REPO_SECTION, AppOutcome(
        "failure", f"merge given up after {given_up.attempts} attempts: the worker died while "
                   "deploying", error=(
            f"Coalmine started deploying {event.merge_sha[:7]} {given_up.attempts} times and "
            "the worker running it stopped each time (killed, or out of memory while rendering "
            "or applying). Nothing more is tried for this merge; fix the cause and push again."),
        error_title="Merge given up"))


# --------------------------------------------------------------------------- the use case


def verify(event: MergedPullRequest, *, forge: MergeFacts,
           tenants: TenantResolver) -> Verified | None:
    """The event as the forge API confirms it, its tenant and deploy branch; None refuses it.

    Nothing in a signed payload is taken as true: one webhook secret is shared by every hook a
    maintainer set up, so anyone holding it can sign any payload.
    """
    def refuse(why: str) -> None:
        log.warning("merge of %s #%s refused (delivery %s): %s", event.repo.full_name,
                    event.number, event.delivery or "-", why)

    try:
        facts = forge.repository_facts(event.repo)
    except ForgeError as exc:
        return refuse(f"the forge does not confirm the repository: {exc}")
    tenant = tenants.resolve(event.repo.forge, facts.id, facts.full_name)
    if isinstance(tenant, str):
        return refuse(tenant)
    repo = dataclasses.replace(event.repo, full_name=facts.full_name, repo_id=facts.id,
                               default_branch=facts.default_branch)
    branch = tenant.policy.deploy_branch or facts.default_branch
    try:
        pull = forge.pull_request_facts(repo, event.number)
    except ForgeError as exc:
        return refuse(f"the forge does not confirm the pull request: {exc}")
    if not pull.merged or pull.merge_sha != event.merge_sha:
        return refuse(f"the forge says the PR is {pull.state} with merge commit "
                      f"{(pull.merge_sha or 'none')[:12]}, not {event.merge_sha[:12]}")
    if pull.base != branch:
        return refuse(f"the PR was merged into {pull.base!r}, not the deploy branch {branch!r}")
    trusted = dataclasses.replace(event, repo=repo, base_branch=pull.base, title=pull.title,
                                  url=pull.url or event.url, head_branch=pull.head)
    return Verified(trusted, tenant, branch)


def deploy_in_order(verified: Verified, *, forge: MergeFacts, mirrors: Ancestry,
                    markers: DeployedMarkers, lock: BranchLock, deployer: Deployer,
                    settings: Settings) -> None:
    """Deploy unless the commit is off the branch or not newer than what is deployed.

    The branch's merge lock is held throughout, so this read-check-deploy-write is atomic
    across workers: racing workers, redeliveries, replays and lease re-runs all land here in
    turn.
    """
    event, tenant, branch = verified
    with lock.locked(event.repo.forge, tenant.repo_id, branch):
        if not settings.clone_host_allowed(event.repo.forge, event.repo.clone_url):
            deployer.report(event, REPO_SECTION, AppOutcome(
                "failure", "clone URL is not on the forge's host; nothing fetched",
                error=f"the webhook named the clone URL host of {event.repo.clone_url!r}, "
                      "which is not the configured forge's host (allow more hosts with "
                      "COALMINE_GIT_HOSTS)", error_title="Refused clone URL"))
            return
        key, clone_url = repo_key(event.repo), forge.authenticated_clone_url(event.repo)
        sha = event.merge_sha
        if not mirrors.branch_contains(key, clone_url, branch, sha):
            log.warning("merge of %s #%s refused (delivery %s): %s is not on %s",
                        event.repo.full_name, event.number, event.delivery or "-", sha[:12],
                        branch)
            return
        last = markers.last(event.repo.forge, tenant.repo_id, branch)
        deployed, complete = last if last is not None else ("", False)
        if deployed == sha and complete:
            log.info("%s@%s is already deployed; delivery %s changes nothing",
                     event.repo.full_name, sha[:7], event.delivery or "-")
            return
        if deployed and deployed != sha and mirrors.is_ancestor(key, clone_url, sha, deployed):
            _report_superseded(event, deployed, mirrors=mirrors, clone_url=clone_url,
                               deployer=deployer, settings=settings)
            return
        done = deployer.deploy(event, tenant)
        # A commit that failed to deploy stays the newest attempted (nothing older may follow
        # it), but a redelivery of that same commit may try again.
        markers.record(event.repo.forge, tenant.repo_id, branch, sha, complete=done)


def _report_superseded(event: MergedPullRequest, deployed: str, *, mirrors: Ancestry,
                       clone_url: str, deployer: Deployer, settings: Settings) -> None:
    """Say on the PR that a newer commit already runs, per app when the config can be read."""
    why = f"superseded: newer commit {deployed[:7]} of the deploy branch is already deployed"
    log.info("%s@%s skipped (delivery %s): %s", event.repo.full_name, event.merge_sha[:7],
             event.delivery or "-", why)
    apps = [REPO_SECTION]
    try:
        text = mirrors.file_at(repo_key(event.repo), clone_url, event.merge_sha,
                               REPO_CONFIG_FILE)
        if text is not None:
            apps = [app.name for app in parse_repo_config(text, settings).apps]
    except (ConfigError, GitError):
        pass
    for app in apps:
        deployer.report(event, app, AppOutcome("success", f"not applied: {why}",
                                               notes=[f"nothing was applied: {why}"]))


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


def deploy_app(
    svc: services.Services, event: MergedPullRequest, app: AppConfig, tree: Path, policy: Policy
) -> tuple[AppOutcome, tuple[CanaryPlan, dict[str, Any]] | None]:
    """Apply the app; returns the outcome and, when a canary must run, its plan and stable."""

    objects, plan = split(render(tree, app.path), app)
    cluster = svc.cluster(app.cluster, impersonate=policy.impersonate_user)
    owner = owner_of(event, app.name)
    notes: list[str] = []
    canary: tuple[CanaryPlan, dict[str, Any]] | None = None
    held: list[ObjectRef] = []  # the workload the rollout moves: kept out of apply and prune
    short = ""  # why the workload was held back, for the status line
    violations = _policy_violations(policy, app, cluster,
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
                objects = [*objects, traffic.as_stable(plan.deployment)]
        applied = cluster.apply(
            objects, app=app.name, revision=event.merge_sha, default_namespace=app.namespace,
            owner=owner, adopt=policy.adopt,
        )
        pruned = []
        if app.prune:
            kept = set(applied.refs) | set(held)
            pruned = cluster.prune(app.name, kept, owner=owner,
                                   may_delete=lambda ref: may_prune(policy, ref),
                                   namespaces=_prune_scopes(policy, app.namespace, kept))
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
    marker = svc.redis.get(aborted_key(key))
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


def _prune_scopes(policy: Policy, namespace: str, kept: set[ObjectRef]) -> set[str] | None:
    """Where prune lists: everywhere with Coalmine's own rights; with an impersonated
    ServiceAccount, which holds a Role per namespace, only the namespaces it can be granted."""
    if policy.impersonate_user is None:
        return None
    named = {ns for ns in policy.namespaces if not any(c in ns for c in "*?[")}
    return named | {namespace} | {ref.namespace for ref in kept if ref.namespace}
