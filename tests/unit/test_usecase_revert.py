"""The revert PR after an abort, with an in-memory forge and revert-branch pusher."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from bot.forge.base import PullRequest
from bot.gitrepo import RevertResult
from bot.refs import RepoRef
from bot.report.markdown import escape
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord
from handlers.revert import REVERT_LABEL, revert_pr
from tests.fakes.forge import FakeForge

REPO = RepoRef("github", "acme/gitops", "https://github.example/acme/gitops.git", repo_id=7)
SHA = "b" * 40
BRANCH = f"coalmine/revert-{SHA[:7]}"


@dataclass
class FakeBranches:
    outcome: str = "created"
    files: tuple[str, ...] = ()
    pushed: list[tuple[str, str, str]] = field(default_factory=list)  # (base, sha, branch)

    def create_revert_branch(self, repo_key: str, clone_url: str, base_branch: str,
                             merge_sha: str, branch_name: str, author_name: str,
                             author_email: str) -> RevertResult:
        self.pushed.append((base_branch, merge_sha, branch_name))
        return RevertResult(branch_name, self.outcome, None, self.files)  # type: ignore[arg-type]


def aborted(reason: str = "step 2 analysis failed",
            evidence: tuple[str, ...] = ()) -> RolloutRecord:
    strategy = m.CanaryStrategy(workload=m.WorkloadRef("Deployment", "web"), steps=())
    state = dataclasses.replace(
        m.new_state(app="web", revision=SHA, stable_revision="a" * 40, pr=42, strategy=strategy),
        phase="Aborted", aborted_reason=reason, evidence=evidence)
    context = RolloutContext(repo=REPO, number=42, app="web", namespace="shop", deployment={},
                             stable={}, replicas=1, template_hash="h", title="Ship web 2",
                             url="https://github.example/acme/gitops/pull/42",
                             base_branch="main")
    return RolloutRecord(state, context)


def test_opens_a_labelled_revert_pr_that_says_why():
    forge, branches = FakeForge(), FakeBranches()
    outcome = revert_pr(forge, branches, aborted(evidence=("success-rate: 0.91 (Failed)",)))
    assert branches.pushed == [("main", SHA, BRANCH)]
    (call,) = [c for c in forge.calls if c[0] == "open_pull_request"]
    _, head, base, title, body, labels = call
    assert (head, base, labels) == (BRANCH, "main", (REVERT_LABEL,))
    assert title == 'Revert "Ship web 2"'
    assert f"**Reason:** {escape('step 2 analysis failed')}" in body
    assert f"> {escape('success-rate: 0.91 (Failed)')}" in body
    assert outcome["state"] == "opened" and outcome["url"].startswith("https://forge.example/")


@pytest.mark.parametrize(("existing", "reused"), [("open", True), ("closed", False)])
def test_an_open_revert_pr_is_reused_a_closed_one_is_not(existing, reused):
    forge, branches = FakeForge(), FakeBranches(outcome="exists")
    forge.pulls_by_head[BRANCH] = PullRequest(9, "https://forge.example/pr/9", BRANCH, "main",
                                              "Revert", existing)
    outcome = revert_pr(forge, branches, aborted())
    assert (outcome == {"state": "opened", "url": "https://forge.example/pr/9",
                        "number": 9}) is reused
    assert (branches.pushed == []) is reused


def test_a_conflict_is_explained_on_the_pr_and_opens_nothing():
    forge, branches = FakeForge(), FakeBranches(outcome="conflict", files=("deploy/web.yaml",))
    outcome = revert_pr(forge, branches, aborted())
    assert outcome == {"state": "conflict", "files": ["deploy/web.yaml"]}
    (reply,) = forge.replies()
    assert "conflicts with later changes on `main` in `deploy/web.yaml`" in reply
    assert not [c for c in forge.calls if c[0] == "open_pull_request"]


def test_nothing_to_revert_opens_nothing():
    forge, branches = FakeForge(), FakeBranches(outcome="nothing_to_revert")
    assert revert_pr(forge, branches, aborted())["state"] == "not needed"
    assert forge.calls == []


def test_markup_in_the_abort_reason_is_escaped():
    forge = FakeForge()
    revert_pr(forge, FakeBranches(), aborted(reason="@everyone <img src=x>"))
    body = next(c[4] for c in forge.calls if c[0] == "open_pull_request")
    assert "\\@everyone \\<img" in body  # neither a mention nor markup once rendered
    assert " @everyone" not in body and " <img" not in body
