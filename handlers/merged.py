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
rendering and applying behind `Deployer` live in `handlers.deploy`. `run` is the RQ entry point,
enqueued by dotted path: the only code here that reaches for the process's adapters.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol

from redis.exceptions import RedisError

from bot import services, tenancy
from bot.config import REPO_CONFIG_FILE, ConfigError, Settings, parse_repo_config
from bot.events import MergedPullRequest
from bot.forge.base import PullRequestFacts, RepoFacts
from bot.gitrepo import GitError, repo_key
from bot.leases import GivenUp, leased
from bot.logs import job_context
from bot.refs import RepoRef
from handlers import gate, trust
from handlers.deploy import REPO_SECTION, AdapterDeployer, AppOutcome

log = logging.getLogger(__name__)
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


class Gate(Protocol):
    """The CI gate (handlers.gate): asked under the lock before a deploy, told after one."""

    def admit(self, event: MergedPullRequest, repo_id: int, branch: str,
              clone_url: str) -> bool:
        """Deploy now? False: held for CI (a re-check is scheduled) or stopped; reported."""

    def deployed(self, event: MergedPullRequest, repo_id: int, branch: str) -> None:
        """The merge deployed completely (drift detection watches it)."""


class Verified(NamedTuple):
    """A merge as the forge API confirms it, the tenant it deploys as, and its deploy branch."""

    event: MergedPullRequest
    tenant: tenancy.Tenant
    branch: str


# --------------------------------------------------------------------------- RQ entry point


@job_context(lambda event: {"delivery": event.delivery, "forge": event.repo.forge,
                              "repo": event.repo.full_name, "pr": event.number,
                              "sha": event.merge_sha})
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
                            deployer=deployer, settings=svc.settings,
                            gate=gate.adapter(svc, forge, deployer, recheck))
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


@job_context(lambda forge, repo_id, branch, sha: {"forge": forge, "sha": sha})
def recheck(forge: str, repo_id: int, branch: str, sha: str) -> None:
    """RQ job: read a merge's CI checks again (handlers.gate); once they decide, the merge
    runs again and the gate, under the lock, lets it deploy or stops it."""
    svc = services.current()
    decided = gate.read_again(svc, forge, repo_id, branch, sha, recheck)
    if decided is not None:
        svc.queue.enqueue(run, decided)


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

    confirmed = trust.confirm(event.repo, event.number, forge=forge, tenants=tenants)
    if isinstance(confirmed, str):
        return refuse(confirmed)
    repo, tenant, branch, pull = confirmed
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
                    settings: Settings, gate: Gate | None = None) -> None:
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
        if gate is not None and not gate.admit(event, tenant.repo_id, branch, clone_url):
            return  # held for CI (re-checked later, not under this lock) or stopped by it
        done = deployer.deploy(event, tenant)
        # A commit that failed to deploy stays the newest attempted (nothing older may follow
        # it), but a redelivery of that same commit may try again.
        markers.record(event.repo.forge, tenant.repo_id, branch, sha, complete=done)
        if gate is not None and done:
            gate.deployed(event, tenant.repo_id, branch)


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
