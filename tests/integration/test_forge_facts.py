"""What the forge API says, read by the real adapters from the GitHub and GitLab fakes.

The handlers trust these facts instead of webhook payloads, so each one is pinned here: the
repository's stable id, whether a PR is merged and by which commit (for every GitLab merge
method), who really wrote a comment and on which PR, 404s as `NotFound`, exact GitLab access
levels, and that a revert PR is only ever the bot's own, from the repository itself.
"""

from __future__ import annotations

import dataclasses

import pytest

from bot.forge.base import ForgeError, NotFound, gitlab_role
from tests.harness.fixtures_forges import (
    FEATURE_BRANCH,
    GITHUB_BOT,
    GITHUB_REPO,
    GITLAB_BOT,
    GITLAB_PROJECT,
)

PR = 1  # the pull request / merge request each fixture opens
MERGE_SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
REVERT_BRANCH = "coalmine/revert-6dcb09b"


# -- GitHub: repository and pull request ------------------------------------------------------


def test_github_repository_facts(github_forge, github_repo, fake_github):
    facts = github_forge.repository_facts(github_repo)
    listed = fake_github.calls_to("GET", rf"/repos/{GITHUB_REPO}")
    assert (facts.full_name, facts.default_branch) == (GITHUB_REPO, "main")
    assert isinstance(facts.id, int) and listed and listed[-1].status == 200


def test_github_unknown_repository_is_not_found(github_forge, github_repo):
    with pytest.raises(NotFound, match="404"):
        github_forge.repository_facts(dataclasses.replace(github_repo, full_name="acme/nope"))


def test_github_open_pr_has_no_merge_commit(github_forge, github_repo):
    # GitHub fills merge_commit_sha for open PRs (a test merge); it must not count.
    facts = github_forge.pull_request_facts(github_repo, PR)
    repo_id = github_forge.repository_facts(github_repo).id
    assert (facts.state, facts.merged, facts.merge_sha) == ("open", False, None)
    assert (facts.head, facts.base, facts.author) == (FEATURE_BRANCH, "main", "alice")
    assert facts.head_repo_id == repo_id and facts.url.endswith(f"/pull/{PR}")


def test_github_merged_pr_names_its_merge_commit(github_forge, github_repo, fake_github):
    number = fake_github.add_pull(GITHUB_REPO, head="bump", state="merged", merge_sha=MERGE_SHA,
                                  title="Bump web")
    facts = github_forge.pull_request_facts(github_repo, number)
    assert (facts.number, facts.state, facts.merged, facts.merge_sha, facts.title) == (
        number, "merged", True, MERGE_SHA, "Bump web")


def test_github_closed_pr_is_not_merged(github_forge, github_repo, fake_github):
    number = fake_github.add_pull(GITHUB_REPO, head="dropped", state="closed")
    facts = github_forge.pull_request_facts(github_repo, number)
    assert (facts.state, facts.merged, facts.merge_sha) == ("closed", False, None)


def test_github_fork_pr_names_the_fork(github_forge, github_repo, fake_github):
    number = fake_github.add_pull(GITHUB_REPO, head="feature", head_repo="mallory/shop")
    facts = github_forge.pull_request_facts(github_repo, number)
    assert facts.head_repo_id not in (None, github_forge.repository_facts(github_repo).id)


def test_github_unknown_pr_is_not_found(github_forge, github_repo):
    with pytest.raises(NotFound):
        github_forge.pull_request_facts(github_repo, 999)


# -- GitHub: comments -------------------------------------------------------------------------


def test_github_comment_facts_name_the_real_author(github_forge, github_repo, fake_github):
    fake_github.set_permission(GITHUB_REPO, "reader", "read")
    comment_id = fake_github.add_comment(GITHUB_REPO, PR, "/promote", login="reader")
    facts = github_forge.comment_facts(github_repo, PR, comment_id)
    assert (facts.id, facts.author, facts.body, facts.number) == (
        comment_id, "reader", "/promote", PR)
    assert isinstance(facts.author_id, int)


def test_github_comment_on_another_pr_is_not_found(github_forge, github_repo, fake_github):
    other = fake_github.add_pull(GITHUB_REPO, head="other")
    comment_id = fake_github.add_comment(GITHUB_REPO, other, "/abort")
    with pytest.raises(NotFound, match=f"on #{other}"):
        github_forge.comment_facts(github_repo, PR, comment_id)


def test_github_unknown_comment_is_not_found(github_forge, github_repo):
    with pytest.raises(NotFound):
        github_forge.comment_facts(github_repo, PR, 424242)


def test_github_other_failures_stay_plain_forge_errors(github_forge, github_repo, fake_github):
    fake_github.fail_next(10, 500, match="/pulls/")
    with pytest.raises(ForgeError) as raised:
        github_forge.pull_request_facts(github_repo, PR)
    assert not isinstance(raised.value, NotFound)


# -- GitHub: the revert PR is the bot's own ---------------------------------------------------


def test_github_revert_lookup_takes_the_bots_own_pr(github_forge, github_repo, fake_github):
    number = fake_github.add_pull(GITHUB_REPO, head=REVERT_BRANCH, author=GITHUB_BOT)
    found = github_forge.find_pull_request(github_repo, REVERT_BRANCH)
    assert found is not None and found.number == number


def test_github_revert_lookup_ignores_an_outsiders_pr(github_forge, github_repo, fake_github):
    fake_github.add_pull(GITHUB_REPO, head=REVERT_BRANCH, author="mallory")
    assert github_forge.find_pull_request(github_repo, REVERT_BRANCH) is None


def test_github_revert_lookup_skips_to_the_bots_pr(github_forge, github_repo, fake_github):
    own = fake_github.add_pull(GITHUB_REPO, head=REVERT_BRANCH, author=GITHUB_BOT)
    fake_github.add_pull(GITHUB_REPO, head=REVERT_BRANCH, author="mallory", state="closed")
    found = github_forge.find_pull_request(github_repo, REVERT_BRANCH)
    assert found is not None and found.number == own


def test_github_revert_lookup_ignores_a_fork(github_forge, github_repo, fake_github):
    # A fork under the same owner matches the `owner:branch` filter; its head repo differs.
    fake_github.add_pull(GITHUB_REPO, head=REVERT_BRANCH, author=GITHUB_BOT,
                         head_repo="acme/shop-fork")
    assert github_forge.find_pull_request(github_repo, REVERT_BRANCH) is None
    with_id = dataclasses.replace(github_repo,
                                  repo_id=github_forge.repository_facts(github_repo).id)
    assert github_forge.find_pull_request(with_id, REVERT_BRANCH) is None


# -- GitLab: project and merge request --------------------------------------------------------


def test_gitlab_project_facts_by_path_and_by_id(gitlab_forge, gitlab_repo):
    facts = gitlab_forge.repository_facts(gitlab_repo)
    assert (facts.full_name, facts.default_branch) == (GITLAB_PROJECT, "main")
    by_id = dataclasses.replace(gitlab_repo, full_name="renamed/elsewhere", project_id=facts.id)
    assert gitlab_forge.repository_facts(by_id) == facts


def test_gitlab_unknown_project_is_not_found(gitlab_forge, gitlab_repo):
    with pytest.raises(NotFound):
        gitlab_forge.repository_facts(dataclasses.replace(gitlab_repo, full_name="acme/nope"))


def test_gitlab_open_mr_has_no_merge_commit(gitlab_forge, gitlab_repo):
    facts = gitlab_forge.pull_request_facts(gitlab_repo, PR)
    project_id = gitlab_forge.repository_facts(gitlab_repo).id
    assert (facts.state, facts.merged, facts.merge_sha) == ("open", False, None)
    assert (facts.head, facts.base, facts.author) == (FEATURE_BRANCH, "main", "alice")
    assert facts.head_repo_id == project_id and facts.url.endswith(f"/merge_requests/{PR}")


@pytest.mark.parametrize("method", ["merge", "squash", "ff"])
def test_gitlab_merged_mr_names_the_commit_on_the_target(gitlab_forge, gitlab_repo, fake_gitlab,
                                                        method):
    """Merge commit, squash with fast-forward, plain fast-forward: each lands another field."""
    iid = fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch="bump", state="merged",
                                        merge_sha=MERGE_SHA, merge_method=method)
    facts = gitlab_forge.pull_request_facts(gitlab_repo, iid)
    assert (facts.number, facts.state, facts.merged, facts.merge_sha) == (
        iid, "merged", True, MERGE_SHA)


def test_gitlab_fork_mr_names_the_fork(gitlab_forge, gitlab_repo, fake_gitlab):
    fork = fake_gitlab.add_project("mallory/shop")
    iid = fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch="x", source_project_id=fork)
    assert gitlab_forge.pull_request_facts(gitlab_repo, iid).head_repo_id == fork


def test_gitlab_unknown_mr_is_not_found(gitlab_forge, gitlab_repo):
    with pytest.raises(NotFound):
        gitlab_forge.pull_request_facts(gitlab_repo, 999)


# -- GitLab: notes ----------------------------------------------------------------------------


def test_gitlab_note_facts_name_the_real_author(gitlab_forge, gitlab_repo, fake_gitlab):
    note_id = fake_gitlab.add_note(GITLAB_PROJECT, PR, "/abort", username="reader")
    facts = gitlab_forge.comment_facts(gitlab_repo, PR, note_id)
    assert (facts.id, facts.author, facts.author_id, facts.body, facts.number) == (
        note_id, "reader", fake_gitlab.add_user("reader"), "/abort", PR)


def test_gitlab_note_on_another_mr_is_not_found(gitlab_forge, gitlab_repo, fake_gitlab):
    other = fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch="other")
    note_id = fake_gitlab.add_note(GITLAB_PROJECT, other, "/abort")
    with pytest.raises(NotFound):
        gitlab_forge.comment_facts(gitlab_repo, PR, note_id)


def test_gitlab_system_note_is_refused(gitlab_forge, gitlab_repo, fake_gitlab):
    note_id = fake_gitlab.add_note(GITLAB_PROJECT, PR, "/promote", system=True)
    with pytest.raises(NotFound, match="system note"):
        gitlab_forge.comment_facts(gitlab_repo, PR, note_id)


def test_gitlab_unknown_note_is_not_found(gitlab_forge, gitlab_repo):
    with pytest.raises(NotFound):
        gitlab_forge.comment_facts(gitlab_repo, PR, 424242)


# -- GitLab: exact access levels --------------------------------------------------------------


@pytest.mark.parametrize("level", [10, 20, 30, 40, 50])
def test_gitlab_access_level_is_exact(gitlab_forge, gitlab_repo, fake_gitlab, level):
    fake_gitlab.set_access(GITLAB_PROJECT, "member", level)
    assert gitlab_forge.access_level(gitlab_repo, "member") == level


def test_gitlab_non_members_have_level_zero(gitlab_forge, gitlab_repo, fake_gitlab):
    fake_gitlab.add_user("stranger")
    assert gitlab_forge.access_level(gitlab_repo, "stranger") == 0
    assert gitlab_forge.access_level(gitlab_repo, "nobody-at-all") == 0


@pytest.mark.parametrize(("level", "name"), [
    (0, "no access"), (10, "Guest"), (20, "Reporter"), (30, "Developer"), (40, "Maintainer"),
    (50, "Owner"), (60, "Owner"),
])
def test_gitlab_role_names(level, name):
    assert gitlab_role(level) == name


# -- GitLab: the revert MR is the bot's own ---------------------------------------------------


def test_gitlab_revert_lookup_takes_the_bots_own_mr(gitlab_forge, gitlab_repo, fake_gitlab):
    iid = fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch=REVERT_BRANCH,
                                        author=GITLAB_BOT)
    found = gitlab_forge.find_pull_request(gitlab_repo, REVERT_BRANCH)
    assert found is not None and found.number == iid


def test_gitlab_revert_lookup_ignores_an_outsiders_mr(gitlab_forge, gitlab_repo, fake_gitlab):
    """The finding: an outsider's MR from a branch named coalmine/revert-<sha> was taken."""
    fork = fake_gitlab.add_project("mallory/shop")
    fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch=REVERT_BRANCH, author="mallory",
                                  source_project_id=fork)
    fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch=REVERT_BRANCH, author="mallory")
    assert gitlab_forge.find_pull_request(gitlab_repo, REVERT_BRANCH) is None


def test_gitlab_revert_lookup_ignores_a_fork(gitlab_forge, gitlab_repo, fake_gitlab):
    fork = fake_gitlab.add_project("acme/shop-fork")
    fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch=REVERT_BRANCH, author=GITLAB_BOT,
                                  source_project_id=fork)
    assert gitlab_forge.find_pull_request(gitlab_repo, REVERT_BRANCH) is None


def test_gitlab_revert_lookup_skips_to_the_bots_mr(gitlab_forge, gitlab_repo, fake_gitlab):
    """A newer outsider MR with the same branch name does not hide the bot's own."""
    own = fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch=REVERT_BRANCH,
                                        author=GITLAB_BOT)
    fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch=REVERT_BRANCH, author="mallory",
                                  state="closed")
    found = gitlab_forge.find_pull_request(gitlab_repo, REVERT_BRANCH)
    assert found is not None and found.number == own
