"""An open PR/MR (opened, reopened, pushed to): what its merge would do, told on the PR.

The payload only says where to look. `verify` asks the forge API which repository this is (its
id decides the tenant and policy, as for a merge), that the PR is open, targets the deploy
branch, and that its head is the very commit the payload names; anything else is refused
and logged. The preview of a fork's PR is made the same way and can do no more: the head is
only rendered and sent to the cluster as a server-side dry run (`dryRun=All`, as the
repository's ServiceAccount), never applied; no rollout, analysis, metric query or revert is
started, and nothing of another owner's live objects, nor any Secret value, is shown.

`preview` renders each app at the head, checks the repository's policy and the content rules
(bot.content_rules), validates each object with the cluster's dry run, diffs the answer
against the live object (bot.preview.diff), lists what prune would delete, and says what the
merge will start (bot.preview.plan). `publish` sets `coalmine/preview` on the head commit
(failure when the merge would fail) and edits the one preview comment (bot.preview.render),
unless the PR moved on meanwhile. All three take narrow ports (Protocols below), so
tests/unit/test_usecase_preview.py drives them with in-memory fakes; `run` is the RQ entry
point and the only code here that reaches for the process's adapters.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from redis.exceptions import RedisError

from bot import content_rules, services, tenancy
from bot.cluster.model import ClusterError, DryRun, ObjectRef, Owner
from bot.config import REPO_CONFIG_FILE, AppConfig, ConfigError, Settings, parse_repo_config
from bot.errors import ManifestError
from bot.events import PullRequestUpdated
from bot.forge.base import ForgeError, StatusState
from bot.gitrepo import repo_key
from bot.logs import job_context
from bot.manifests import render_sourced
from bot.policy import Policy, check, scope_judge
from bot.preview.diff import hide_secret_values, object_change
from bot.preview.model import AppPreview, ObjectChange, Preview
from bot.preview.plan import merge_plan
from bot.preview.render import MARKER, status_line
from bot.preview.render import render as render_comment
from bot.refs import RepoRef
from bot.report import comment, status
from bot.rollout import traffic
from bot.rollout.plan import split
from bot.rollout.strategy import StrategyError
from handlers import outbox, trust
from handlers.deploy import keep_traffic, may_prune, prune_scopes, router_made

log = logging.getLogger(__name__)
Obj = dict[str, Any]
STATUS_CONTEXT = status.context("preview")


# --------------------------------------------------------------------------- ports


class PreviewFacts(trust.Facts, Protocol):
    """What the preview asks the forge: the facts it trusts, and where to fetch from."""

    def authenticated_clone_url(self, repo: RepoRef) -> str:
        """Clone URL carrying the bot's credentials. Never log it."""


class Tree(Protocol):
    """One commit's files, checked out."""

    def config_text(self) -> str | None:
        """`.coalmine.yaml`; None when absent; ConfigError when it is not a regular file."""

    def render(self, app_path: str) -> list[tuple[Obj, str]]:
        """The app's objects, each with its file (bot.manifests.render_sourced); ManifestError
        names the file."""


class Sources(Protocol):
    def checkout(self, repo: RepoRef, clone_url: str, sha: str) -> AbstractContextManager[Tree]:
        ...


class PreviewCluster(Protocol):
    """The reads and the dry run a preview makes; nothing here can change the cluster."""

    def discovered(self, api_version: str, kind: str) -> bool | None:
        """Whether the kind is cluster-scoped; None when the cluster does not serve it."""

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        ...

    def dry_run(self, objects: Iterable[Obj], *, revision: str, default_namespace: str,
                owner: Owner, adopt: bool = False) -> list[DryRun]: ...

    def prune_candidates(self, app: str, keep: Iterable[ObjectRef], *, owner: Owner,
                         may_delete: Callable[[ObjectRef], bool],
                         namespaces: Iterable[str] | None = None) -> list[ObjectRef]: ...


class Clusters(Protocol):
    def cluster(self, name: str | None, *, impersonate: str | None = None) -> PreviewCluster:
        """The named cluster as the repository's ServiceAccount (when the policy names one)."""


class PreviewReport(Protocol):
    def status(self, repo: RepoRef, number: int, sha: str, state: StatusState,
               description: str) -> None: ...

    def comment(self, repo: RepoRef, number: int, body: str) -> None: ...


class Verified(NamedTuple):
    """An open PR as the forge API confirms it, with its tenant."""

    event: PullRequestUpdated  # repository and branches as the API says; head_sha confirmed
    tenant: tenancy.Tenant
    fork: bool


# --------------------------------------------------------------------------- RQ entry point


@job_context(lambda event: {"delivery": event.delivery, "forge": event.repo.forge,
                              "repo": event.repo.full_name, "pr": event.number,
                              "sha": event.head_sha})
def run(event: PullRequestUpdated) -> None:
    """RQ entry point: the process's adapters, as ports, to verify, preview and publish."""
    svc = services.current()
    forge = svc.forge(event.repo)
    report = AdapterReport(svc)
    verified = verify(event, forge=forge, tenants=svc.tenants, settings=svc.settings)
    if verified is None:
        return
    trusted = verified.event
    report.status(trusted.repo, trusted.number, trusted.head_sha, "pending",
                  "previewing what the merge would do")
    try:
        found = preview(verified, forge=forge, sources=MirrorSources(svc),
                        clusters=AdapterClusters(svc), settings=svc.settings)
    except RedisError:
        raise
    except Exception as exc:
        log.exception("preview of %s#%s failed", trusted.repo.full_name, trusted.number)
        reason = services.redactor().redact(f"{type(exc).__name__}: {exc}")
        report.status(trusted.repo, trusted.number, trusted.head_sha, "error",
                      status.clip(f"preview failed: {reason}"))
        raise
    publish(verified, found, forge=forge, report=report)


# --------------------------------------------------------------------------- the use case


def verify(event: PullRequestUpdated, *, forge: PreviewFacts, tenants: trust.TenantResolver,
           settings: Settings) -> Verified | None:
    """The event as the forge API confirms it, with its tenant; None refuses it (logged)."""
    def refuse(why: str) -> None:
        log.warning("preview of %s #%s refused (delivery %s): %s", event.repo.full_name,
                    event.number, event.delivery or "-", why)

    confirmed = trust.confirm(event.repo, event.number, forge=forge, tenants=tenants)
    if isinstance(confirmed, str):
        return refuse(confirmed)
    repo, tenant, branch, pull = confirmed
    if pull.state != "open":
        return refuse(f"the forge says the PR is {pull.state}, not open")
    if pull.base != branch:
        return refuse(f"the PR targets {pull.base!r}, not the deploy branch {branch!r}")
    if not pull.head_sha or pull.head_sha != event.head_sha:
        return refuse(f"the forge says the PR's head is {(pull.head_sha or 'unknown')[:12]}, "
                      f"not {event.head_sha[:12]} (a newer push is previewed on its own)")
    if not settings.clone_host_allowed(repo.forge, repo.clone_url):
        return refuse(f"the clone URL's host of {repo.clone_url!r} is not the forge's "
                      "(allow more hosts with COALMINE_GIT_HOSTS)")
    trusted = dataclasses.replace(event, repo=repo, base_branch=pull.base,
                                  head_branch=pull.head, head_sha=pull.head_sha)
    fork = pull.head_repo_id is not None and pull.head_repo_id != repo.repo_id
    return Verified(trusted, tenant, fork)


def preview(verified: Verified, *, forge: PreviewFacts, sources: Sources, clusters: Clusters,
            settings: Settings) -> Preview:
    """What merging the PR's head would do, app by app; changes nothing anywhere."""
    event, tenant, _fork = verified
    sha = event.head_sha
    with sources.checkout(event.repo, forge.authenticated_clone_url(event.repo), sha) as tree:
        try:
            text = tree.config_text()
            if text is None:
                return Preview(sha, no_config=True)
            config = parse_repo_config(text, settings)
        except ConfigError as exc:
            return Preview(sha, config_error=str(exc))
        owner_of = _owner_factory(event.repo)
        return Preview(sha, tuple(
            preview_app(app, tree, policy=tenant.policy, server_rules=settings.rules,
                        clusters=clusters, owner=owner_of(app.name), sha=sha)
            for app in config.apps))


def preview_app(app: AppConfig, tree: Tree, *, policy: Policy, server_rules: content_rules.ContentRules,
                clusters: Clusters, owner: Owner, sha: str) -> AppPreview:
    """One app: render, content rules, policy, dry run, diff, prune candidates and plan."""
    rules = content_rules.tighten(server_rules, app.rules)
    base = AppPreview(app.name, app.cluster or "default",
                      rules_in_force=tuple(content_rules.describe(rules)))
    try:
        sourced = tree.render(app.path)
        objects, plan = split([o for o, _ in sourced], app, [f for _, f in sourced])
    except ManifestError as exc:
        return dataclasses.replace(base, error=str(exc), error_title="Invalid manifests")
    except StrategyError as exc:
        return dataclasses.replace(base, error=str(exc), error_title="Invalid rollout strategy")
    checked = objects + ([plan.deployment] if plan else [])
    broken = tuple(content_rules.check(rules, checked, source=app.path,
                                       default_namespace=app.namespace,
                                       files=content_rules.file_index(sourced)))
    base = dataclasses.replace(base, rules=broken)
    cluster = clusters.cluster(app.cluster, impersonate=policy.impersonate_user)
    try:
        # The router's objects too: the rollout would write them as the repository.
        policed = checked + (traffic.router_objects(plan.strategy, plan.name, plan.namespace)
                             if plan else [])
        refused = check(policy, policed, cluster=app.cluster or "default",
                        default_namespace=app.namespace,
                        cluster_scoped=scope_judge(cluster.discovered, policed))
        if refused:  # nothing is read or dry-run where the repository may not deploy
            return dataclasses.replace(base, policy=tuple(str(v) for v in refused))
        live, held = None, []
        if plan is not None:  # as the merge applies them (handlers.deploy.deploy_app)
            objects = keep_traffic(cluster, plan, objects)
            held = [*router_made(plan, objects),
                    traffic.canary_ref(plan.deployment, plan.namespace)]
            live = cluster.get("apps/v1", "Deployment", plan.namespace, plan.name)
        desired = objects + ([traffic.as_stable(plan.deployment, plan.strategy.stable_metadata)]
                             if plan else [])
        results = cluster.dry_run(desired, revision=sha, default_namespace=app.namespace,
                                  owner=owner, adopt=policy.adopt)
        changes = [_change(result, obj) for result, obj in zip(results, desired, strict=True)]
        if app.prune:
            keep = {result.ref for result in results} | set(held)  # the rollout's, not prune's
            doomed = cluster.prune_candidates(
                app.name, keep, owner=owner, may_delete=lambda ref: may_prune(policy, ref),
                namespaces=prune_scopes(policy, app.namespace, keep))
            changes += [ObjectChange(str(ref), "prune") for ref in doomed]
    except ClusterError as exc:
        return dataclasses.replace(base, error=str(exc), error_title="Cluster error")
    return dataclasses.replace(base, changes=tuple(changes), plan=merge_plan(plan, live))


def _change(result: DryRun, obj: Obj) -> ObjectChange:
    ref = str(result.ref)
    if result.refused is not None:
        return ObjectChange(ref, "refused", note=result.refused)
    if result.error is not None:
        return ObjectChange(ref, "invalid", note=hide_secret_values(result.error, obj))
    if result.skipped is not None or result.answer is None:
        return ObjectChange(ref, "unchecked", note=result.skipped or "")
    return object_change(ref, result.live, result.answer)


def publish(verified: Verified, found: Preview, *, forge: PreviewFacts,
            report: PreviewReport) -> None:
    """`coalmine/preview` on the head commit, then the preview comment, unless the PR's head
    moved on meanwhile (the newer push's own job writes the comment then)."""
    event = verified.event
    state: StatusState = found.state
    report.status(event.repo, event.number, event.head_sha, state,
                  status.clip(status_line(found)))
    try:
        head = forge.pull_request_facts(event.repo, event.number).head_sha
    except ForgeError as exc:
        log.warning("cannot re-read %s#%s before commenting: %s", event.repo.full_name,
                    event.number, exc)
        head = event.head_sha
    if head != event.head_sha:
        log.info("%s#%s moved on to %s; the preview of %s is not commented",
                 event.repo.full_name, event.number, (head or "?")[:7], event.head_sha[:7])
        return
    report.comment(event.repo, event.number, render_comment(found))


def _owner_factory(repo: RepoRef) -> Callable[[str], Owner]:
    assert repo.repo_id is not None, "verify() sets the id from the forge API"
    return lambda app: Owner(repo.forge, repo.repo_id or 0, repo.full_name, app)


# --------------------------------------------------------------------------- adapters


class CheckedOut:
    """`Tree` over a worktree on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def config_text(self) -> str | None:
        path = self.root / REPO_CONFIG_FILE
        if path.is_symlink():
            raise ConfigError(REPO_CONFIG_FILE, "", "must be a regular file in the repository, "
                                                    "not a symbolic link")
        return path.read_text(errors="replace") if path.is_file() else None

    def render(self, app_path: str) -> list[tuple[Obj, str]]:
        return render_sourced(self.root, app_path)


@dataclasses.dataclass(frozen=True)
class MirrorSources:
    """`Sources` over the git mirrors: the head commit in a throwaway worktree."""

    svc: services.Services

    @contextmanager
    def checkout(self, repo: RepoRef, clone_url: str, sha: str) -> Iterator[Tree]:
        with self.svc.mirrors.checkout(repo_key(repo), clone_url, sha) as tree:
            yield CheckedOut(Path(tree))


@dataclasses.dataclass(frozen=True)
class _ClusterView:
    """`PreviewCluster` over `bot.cluster.client.Cluster` (its reads and dry run only)."""

    inner: Any

    def discovered(self, api_version: str, kind: str) -> bool | None:
        try:
            return not self.inner.resource(api_version, kind).namespaced
        except ClusterError:
            return None

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        return self.inner.get(api_version, kind, namespace, name)

    def dry_run(self, objects: Iterable[Obj], **kwargs: Any) -> list[DryRun]:
        return self.inner.dry_run(objects, **kwargs)

    def prune_candidates(self, app: str, keep: Iterable[ObjectRef], **kwargs: Any
                         ) -> list[ObjectRef]:
        return self.inner.prune_candidates(app, keep, **kwargs)


@dataclasses.dataclass(frozen=True)
class AdapterClusters:
    svc: services.Services

    def cluster(self, name: str | None, *, impersonate: str | None = None) -> PreviewCluster:
        return _ClusterView(self.svc.cluster(name, impersonate=impersonate))


@dataclasses.dataclass(frozen=True)
class AdapterReport:
    """Statuses through the outbox (retried, never posted twice); the comment under the PR's
    comment lock, found by its own marker, not sent again when unchanged (bot.report.comment)."""

    svc: services.Services

    def status(self, repo: RepoRef, number: int, sha: str, state: StatusState,
               description: str) -> None:
        outbox.post_status(self.svc, repo, number, sha, STATUS_CONTEXT, state, description,
                           None)

    def comment(self, repo: RepoRef, number: int, body: str) -> None:
        comment.publish_body(self.svc.redis, self.svc.forge(repo), repo, number, MARKER, body)
