"""The merge's trust logic (`handlers.merged.verify`, `deploy_in_order`) against in-memory ports.

`verify` believes the forge API, never the payload: the PR must be merged, by the payload's
commit, into the deploy branch, of a repository the server serves (by its forge id).
`deploy_in_order` then, under the branch lock, deploys only a commit on the branch that is newer
than the last one processed. Rendering and applying sit behind the Deployer port (a recording
fake here); tests/e2e/test_trust.py and test_deploy.py run the whole path for real.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import pytest

from bot.config import Settings
from bot.events import MergedPullRequest
from bot.forge.base import PullRequestFacts, RepoFacts
from bot.policy import Policy
from bot.refs import RepoRef
from bot.tenancy import Tenant
from handlers.merged import REPO_SECTION, Verified, deploy_in_order, verify
from tests.fakes import FakeDeployer, FakeForge, FakeLock, FakeMarkers, FakeMirrors, FakeTenants

REPO_ID, PR = 42, 7
OLD, SHA, NEW = "a" * 40, "b" * 40, "c" * 40  # in this order on main
TENANT = Tenant("github", REPO_ID, "org/app", "org/app", Policy())
PAYLOAD_REPO = RepoRef("github", "org/old-name", "https://github.com/org/app.git")


def merge_event(sha: str = SHA, repo: RepoRef = PAYLOAD_REPO) -> MergedPullRequest:
    return MergedPullRequest(repo=repo, number=PR, title="payload title", url="", merge_sha=sha,
                             base_branch="main", head_branch="payload-head", author="alice",
                             merged_by="alice", delivery="delivery-1")


def pull(**changes: object) -> PullRequestFacts:
    facts = PullRequestFacts(number=PR, state="merged", merged=True, merge_sha=SHA, base="main",
                             head="feature", title="Ship it", url="https://github.com/pr/7")
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def forge_with(facts: PullRequestFacts | None = None) -> FakeForge:
    return FakeForge(repo=RepoFacts(REPO_ID, "org/app", "main"),
                     pulls={PR: facts or pull()})


# --------------------------------------------------------------------------- verify

REFUSED = {
    "forged merge: the PR is not merged": (
        pull(state="open", merged=False, merge_sha=None), TENANT, "is open with merge commit none"),
    "forged merge: closed unmerged, though the commit matches": (
        pull(state="closed", merged=False), TENANT, "is closed with merge commit"),
    "forged merge: another merge commit": (
        pull(merge_sha=NEW), TENANT, f"merge commit {NEW[:12]}, not {SHA[:12]}"),
    "forged merge: merged into another branch": (
        pull(base="feature-x"), TENANT, "merged into 'feature-x', not the deploy branch 'main'"),
    "the policy's deploy branch, not the default one, counts": (
        pull(), dataclasses.replace(TENANT, policy=Policy(deploy_branch="release")),
        "not the deploy branch 'release'"),
    "unserved repository": (pull(), "github repository org/app is not served",
                            "org/app is not served"),
}


@pytest.mark.parametrize(("facts", "tenant", "logged"), REFUSED.values(), ids=REFUSED.keys())
def test_verify_refuses(facts: PullRequestFacts, tenant: Tenant | str, logged: str,
                        caplog) -> None:
    forge = forge_with(facts)
    with caplog.at_level(logging.WARNING, logger="handlers.merged"):
        assert verify(merge_event(), forge=forge,
                      tenants=FakeTenants({REPO_ID: tenant})) is None
    assert logged in caplog.text and "delivery-1" in caplog.text
    assert forge.calls == []


def test_verify_refuses_a_repository_the_forge_does_not_know(caplog) -> None:
    forge = forge_with()
    forge.repo = None
    with caplog.at_level(logging.WARNING, logger="handlers.merged"):
        assert verify(merge_event(), forge=forge, tenants=FakeTenants({REPO_ID: TENANT})) is None
    assert "does not confirm the repository" in caplog.text


def test_verify_refuses_a_pull_request_the_forge_does_not_know() -> None:
    forge = forge_with()
    forge.pulls.clear()
    assert verify(merge_event(), forge=forge, tenants=FakeTenants({REPO_ID: TENANT})) is None


def test_verify_takes_the_apis_facts_over_the_payloads() -> None:
    """The repository's id and current name, the PR's title, URL and head come from the API."""
    found = verify(merge_event(), forge=forge_with(), tenants=FakeTenants({REPO_ID: TENANT}))

    assert found is not None
    assert found.tenant == TENANT and found.branch == "main"
    repo = found.event.repo
    assert (repo.full_name, repo.repo_id, repo.default_branch) == ("org/app", REPO_ID, "main")
    assert (found.event.title, found.event.url, found.event.head_branch) == (
        "Ship it", "https://github.com/pr/7", "feature")


def test_verify_accepts_the_policys_deploy_branch() -> None:
    tenant = dataclasses.replace(TENANT, policy=Policy(deploy_branch="release"))
    found = verify(merge_event(), forge=forge_with(pull(base="release")),
                   tenants=FakeTenants({REPO_ID: tenant}))
    assert found is not None and found.branch == "release"


# --------------------------------------------------------------------------- deploy_in_order


@dataclass
class World:
    forge: FakeForge
    mirrors: FakeMirrors
    markers: FakeMarkers
    lock: FakeLock
    deployer: FakeDeployer

    def run(self, sha: str = SHA, *, clone_url: str = PAYLOAD_REPO.clone_url) -> None:
        repo = dataclasses.replace(PAYLOAD_REPO, full_name="org/app", repo_id=REPO_ID,
                                   clone_url=clone_url)
        deploy_in_order(Verified(merge_event(sha, repo), TENANT, "main"), forge=self.forge,
                        mirrors=self.mirrors, markers=self.markers, lock=self.lock,
                        deployer=self.deployer, settings=Settings())

    @property
    def marker(self) -> tuple[str, bool] | None:
        return self.markers.marks.get(("github", REPO_ID, "main"))


def world(marker: tuple[str, bool] | None = None, *, on_main: tuple[str, ...] = (OLD, SHA, NEW),
          complete: bool = True) -> World:
    lock = FakeLock()
    markers = FakeMarkers(lock=lock)
    if marker is not None:
        markers.marks[("github", REPO_ID, "main")] = marker
    return World(forge_with(), FakeMirrors(branches={"main": list(on_main)}), markers, lock,
                 FakeDeployer(complete=complete))


ORDER = {
    # marker before, commits on main, deploy succeeds?, deployed?, marker after
    "first merge deploys": (None, (OLD, SHA), True, True, (SHA, True)),
    "newer commit deploys": ((OLD, True), (OLD, SHA), True, True, (SHA, True)),
    "already deployed changes nothing": ((SHA, True), (OLD, SHA), True, False, (SHA, True)),
    "incomplete previous attempt is retried": ((SHA, False), (OLD, SHA), True, True, (SHA, True)),
    "a failed deploy is remembered as incomplete": (None, (OLD, SHA), False, True, (SHA, False)),
    "commit not on the branch changes nothing": ((OLD, True), (OLD, NEW), True, False,
                                                 (OLD, True)),
    "older commit is superseded": ((NEW, True), (OLD, SHA, NEW), True, False, (NEW, True)),
    "older commit is superseded even by an incomplete newer one": (
        (NEW, False), (OLD, SHA, NEW), True, False, (NEW, False)),
}


@pytest.mark.parametrize(("before", "on_main", "complete", "deployed", "after"),
                         ORDER.values(), ids=ORDER.keys())
def test_deploy_in_order(before: tuple[str, bool] | None, on_main: tuple[str, ...],
                         complete: bool, deployed: bool, after: tuple[str, bool]) -> None:
    w = world(before, on_main=on_main, complete=complete)

    w.run()

    assert [event.merge_sha for event, _ in w.deployer.deployed] == ([SHA] if deployed else [])
    assert w.marker == after
    assert w.lock.acquired == [("github", REPO_ID, "main")] and not w.lock.held


def test_superseded_status_names_the_newer_commit() -> None:
    w = world((NEW, True))
    w.run()
    (app, outcome), = w.deployer.reports
    assert app == REPO_SECTION and outcome.state == "success"
    assert outcome.summary == (f"not applied: superseded: newer commit {NEW[:7]} of the deploy "
                               "branch is already deployed")


def test_superseded_is_reported_per_app_of_the_commits_config() -> None:
    w = world((NEW, True))
    w.mirrors.files[(SHA, ".coalmine.yaml")] = (
        "apps:\n  - name: web\n    path: deploy/web\n    namespace: shop\n"
        "  - name: api\n    path: deploy/api\n    namespace: shop\n")
    w.run()
    assert [app for app, _ in w.deployer.reports] == ["web", "api"]
    assert all(NEW[:7] in outcome.summary for _, outcome in w.deployer.reports)


def test_commit_not_on_the_branch_is_logged_and_not_reported(caplog) -> None:
    w = world(on_main=(OLD,))
    with caplog.at_level(logging.WARNING, logger="handlers.merged"):
        w.run()
    assert f"{SHA[:12]} is not on main" in caplog.text and "delivery-1" in caplog.text
    assert w.deployer.reports == [] and w.deployer.deployed == [] and w.marker is None


def test_a_clone_url_off_the_forges_host_is_refused_before_any_fetch() -> None:
    w = world()
    w.run(clone_url="https://evil.example/org/app.git")
    (app, outcome), = w.deployer.reports
    assert app == REPO_SECTION and outcome.error_title == "Refused clone URL"
    assert w.mirrors.clone_urls == [] and w.deployer.deployed == [] and w.marker is None


def test_git_is_asked_with_the_forges_authenticated_url() -> None:
    w = world((OLD, True))
    w.run()
    assert w.mirrors.clone_urls and all(
        url == "https://x-access-token:secret@github.com/org/app.git"
        for url in w.mirrors.clone_urls)


def test_the_marker_is_read_and_written_only_under_the_branch_lock() -> None:
    """FakeMarkers raises when used while FakeLock is not held."""
    w = world((OLD, True))
    w.run()
    assert w.marker == (SHA, True)
    with pytest.raises(AssertionError, match="outside the branch lock"):
        w.markers.last("github", REPO_ID, "main")
