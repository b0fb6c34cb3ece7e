"""In-memory fakes of the narrow ports of handlers/commands.py and handlers/merged.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bot.events import MergedPullRequest
from bot.rollout import model as m
from bot.tenancy import Tenant


@dataclass
class FakeRollouts:
    """RolloutPort: the PR index and statuses as dicts; every dispatch is recorded."""

    by_pr: dict[int, dict[str, str]] = field(default_factory=dict)  # PR → app → key
    statuses: dict[str, tuple[str, str]] = field(default_factory=dict)  # key → status
    dispatched: list[tuple[str, m.Event, int | None]] = field(default_factory=list)

    def rollouts_of_pr(self, repo: Any, number: int) -> dict[str, str]:
        return dict(self.by_pr.get(number, {}))

    def dispatch(self, key: str, event: m.Event, *, pr: int | None = None) -> None:
        self.dispatched.append((key, event, pr))

    def status_of(self, key: str) -> tuple[str, str] | None:
        return self.statuses.get(key)


@dataclass
class FakeClaims:
    """CommandClaims: the comment ids whose commands ran."""

    ran: set[tuple[str, int]] = field(default_factory=set)

    def first_run(self, repo: Any, comment_id: int) -> bool:
        first = (repo.forge, comment_id) not in self.ran
        self.ran.add((repo.forge, comment_id))
        return first


@dataclass
class FakeTenants:
    """TenantResolver: repository id → its tenant, or the reason it is refused."""

    by_id: dict[int, Tenant | str] = field(default_factory=dict)

    def resolve(self, forge: str, repo_id: int, full_name: str) -> Tenant | str:
        return self.by_id.get(repo_id, f"{forge} repository {full_name} is not served")


@dataclass
class FakeMirrors:
    """Ancestry over branches given as lists of commits, oldest first (a linear history)."""

    branches: dict[str, list[str]] = field(default_factory=dict)
    files: dict[tuple[str, str], str] = field(default_factory=dict)  # (sha, path) → text
    clone_urls: list[str] = field(default_factory=list)  # every URL a caller passed

    def branch_contains(self, repo_key: str, clone_url: str, branch: str, sha: str) -> bool:
        self.clone_urls.append(clone_url)
        return sha in self.branches.get(branch, [])

    def is_ancestor(self, repo_key: str, clone_url: str, ancestor: str, descendant: str) -> bool:
        self.clone_urls.append(clone_url)
        for commits in self.branches.values():
            if ancestor in commits and descendant in commits:
                return commits.index(ancestor) <= commits.index(descendant)
        return False

    def file_at(self, repo_key: str, clone_url: str, sha: str, path: str) -> str | None:
        self.clone_urls.append(clone_url)
        return self.files.get((sha, path))


@dataclass
class FakeLock:
    """BranchLock that records what was locked and knows whether it is held now."""

    acquired: list[tuple[str, int, str]] = field(default_factory=list)
    held: bool = False

    @contextmanager
    def locked(self, forge: str, repo_id: int, branch: str) -> Iterator[None]:
        assert not self.held, "the branch lock is not reentrant"
        self.acquired.append((forge, repo_id, branch))
        self.held = True
        try:
            yield
        finally:
            self.held = False


@dataclass
class FakeMarkers:
    """DeployedMarkers in a dict; with `lock`, every access asserts the lock is held."""

    marks: dict[tuple[str, int, str], tuple[str, bool]] = field(default_factory=dict)
    lock: FakeLock | None = None

    def last(self, forge: str, repo_id: int, branch: str) -> tuple[str, bool] | None:
        self._check_locked()
        return self.marks.get((forge, repo_id, branch))

    def record(self, forge: str, repo_id: int, branch: str, sha: str, *,
               complete: bool) -> None:
        self._check_locked()
        self.marks[(forge, repo_id, branch)] = (sha, complete)

    def _check_locked(self) -> None:
        if self.lock is not None and not self.lock.held:
            raise AssertionError("deployed marker used outside the branch lock")


@dataclass
class FakeDeployer:
    """Deployer that records what it was asked to deploy and report; `complete` is the answer."""

    complete: bool = True
    deployed: list[tuple[MergedPullRequest, Tenant]] = field(default_factory=list)
    reports: list[tuple[str, Any]] = field(default_factory=list)  # (app, AppOutcome)

    def deploy(self, event: MergedPullRequest, tenant: Tenant) -> bool:
        self.deployed.append((event, tenant))
        return self.complete

    def report(self, event: MergedPullRequest, app: str, outcome: Any) -> None:
        self.reports.append((app, outcome))
