"""Parsers on payloads shaped like the forges' documented examples."""

from bot import events
from tests.harness import payloads


def test_github_merged_pull_request_becomes_event():
    ev = events.parse_github("pull_request", payloads.github_pr_merged(installation_id=42))
    assert isinstance(ev, events.MergedPullRequest)
    assert ev.repo.forge == "github" and ev.repo.full_name == "acme/gitops"
    assert ev.repo.installation_id == 42
    assert (ev.number, ev.base_branch, ev.head_branch) == (7, "main", "feature")
    assert ev.merge_sha == "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    assert ev.merged_by == "hubot"


def test_github_closed_without_merge_is_ignored():
    ev = events.parse_github("pull_request", payloads.github_pr_merged(merged=False))
    assert isinstance(ev, events.Ignored) and "without merging" in ev.reason


def test_github_open_pull_request_actions_become_preview_events():
    for action in ("opened", "synchronize", "reopened"):
        ev = events.parse_github("pull_request",
                                 payloads.github_pr_updated(action=action, head_sha="e" * 40))
        assert isinstance(ev, events.PullRequestUpdated), action
        assert (ev.number, ev.head_sha, ev.base_branch, ev.head_branch, ev.action) == \
            (7, "e" * 40, "main", "feature", action)
    for action in ("edited", "labeled", "closed"):
        ev = events.parse_github("pull_request", payloads.github_pr_updated(action=action))
        assert isinstance(ev, events.Ignored), action


def test_github_preview_payload_without_head_sha_is_malformed():
    payload = payloads.github_pr_updated()
    payload["pull_request"]["head"]["sha"] = None
    ev = events.parse_github("pull_request", payload)
    assert isinstance(ev, events.Malformed) and "head.sha" in ev.reason


def test_github_merged_payload_without_sha_is_malformed():
    payload = payloads.github_pr_merged()
    payload["pull_request"]["merge_commit_sha"] = None
    ev = events.parse_github("pull_request", payload)
    assert isinstance(ev, events.Malformed) and "merge_commit_sha" in ev.reason


def test_github_ping_and_unknown_events():
    assert isinstance(events.parse_github("ping", {"zen": "Keep it logically awesome."}), events.Ping)
    assert isinstance(events.parse_github("push", {"ref": "refs/heads/main"}), events.Ignored)
    assert isinstance(events.parse_github("pull_request", ["not", "an", "object"]), events.Malformed)


def test_github_comment_created_on_pr():
    ev = events.parse_github("issue_comment", payloads.github_comment("/promote"))
    assert isinstance(ev, events.PullRequestComment)
    assert (ev.number, ev.comment_id, ev.author, ev.body) == (7, 5001, "alice", "/promote")
    assert not ev.author_is_bot


def test_github_edited_or_deleted_comments_never_trigger():
    for action in ("edited", "deleted"):
        ev = events.parse_github("issue_comment", payloads.github_comment("/abort", action=action))
        assert isinstance(ev, events.Ignored)


def test_github_comment_on_plain_issue_is_ignored():
    ev = events.parse_github("issue_comment", payloads.github_comment("/abort", on_pr=False))
    assert isinstance(ev, events.Ignored)


def test_github_bot_comment_is_marked():
    ev = events.parse_github(
        "issue_comment", payloads.github_comment("/abort", login="coalmine[bot]", user_type="Bot"))
    assert isinstance(ev, events.PullRequestComment) and ev.author_is_bot


def test_github_check_run_requested_action_becomes_event():
    ev = events.parse_github("check_run", payloads.github_check_run_action(
        77, "promote-full", login="bob", installation_id=42))
    assert isinstance(ev, events.CheckRunAction)
    assert (ev.check_run_id, ev.identifier, ev.sender, ev.repo.full_name,
            ev.repo.installation_id) == (77, "promote-full", "bob", "acme/gitops", 42)


def test_github_other_check_run_actions_are_ignored_and_bad_ones_malformed():
    for action in ("created", "completed", "rerequested"):
        payload = {**payloads.github_check_run_action(77), "action": action}
        assert isinstance(events.parse_github("check_run", payload), events.Ignored), action
    payload = payloads.github_check_run_action(77)
    payload["check_run"]["id"] = "77"  # not an integer: not a run id
    assert isinstance(events.parse_github("check_run", payload), events.Malformed)
    del payload["requested_action"]
    assert isinstance(events.parse_github("check_run", payload), events.Malformed)


def test_gitlab_merge_becomes_event():
    ev = events.parse_gitlab("Merge Request Hook", payloads.gitlab_mr_merged())
    assert isinstance(ev, events.MergedPullRequest)
    assert ev.repo.forge == "gitlab" and ev.repo.project_id == 15
    assert ev.repo.full_name == "acme/gitops"
    assert (ev.number, ev.base_branch) == (7, "main")
    assert ev.merge_sha == "6dcb09b5b57875f334f61aebed695e2e4193db5e"


def test_gitlab_fast_forward_merge_uses_last_commit():
    ev = events.parse_gitlab("Merge Request Hook", payloads.gitlab_mr_merged(merge_sha=None))
    assert isinstance(ev, events.MergedPullRequest)
    assert ev.merge_sha == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"


def test_gitlab_other_mr_actions_are_ignored():
    for action in ("close", "approved", "unapproved"):
        ev = events.parse_gitlab("Merge Request Hook", payloads.gitlab_mr_merged(action=action))
        assert isinstance(ev, events.Ignored)


def test_gitlab_open_reopen_and_pushed_update_become_preview_events():
    for action, oldrev in (("open", None), ("reopen", None), ("update", "c" * 40)):
        ev = events.parse_gitlab("Merge Request Hook", payloads.gitlab_mr_updated(
            action=action, head_sha="e" * 40, oldrev=oldrev))
        assert isinstance(ev, events.PullRequestUpdated), action
        assert (ev.number, ev.head_sha, ev.base_branch, ev.action) == (7, "e" * 40, "main",
                                                                       action)


def test_gitlab_update_without_new_commits_is_ignored_unless_retargeted():
    ev = events.parse_gitlab("Merge Request Hook", payloads.gitlab_mr_updated(action="update"))
    assert isinstance(ev, events.Ignored) and "without new commits" in ev.reason
    payload = payloads.gitlab_mr_updated(action="update")
    payload["changes"] = {"target_branch": {"previous": "dev", "current": "main"}}
    assert isinstance(events.parse_gitlab("Merge Request Hook", payload),
                      events.PullRequestUpdated)


def test_gitlab_note_create_update_and_legacy():
    ev = events.parse_gitlab("Note Hook", payloads.gitlab_note("/promote web"))
    assert isinstance(ev, events.PullRequestComment) and ev.author_id == 71
    assert isinstance(
        events.parse_gitlab("Note Hook", payloads.gitlab_note("/abort", action="update")),
        events.Ignored)
    legacy = events.parse_gitlab("Note Hook", payloads.gitlab_note("/abort", action=None))
    assert isinstance(legacy, events.PullRequestComment)


def test_gitlab_note_on_issue_is_ignored():
    ev = events.parse_gitlab("Note Hook", payloads.gitlab_note("/abort", noteable_type="Issue"))
    assert isinstance(ev, events.Ignored)


def test_gitlab_note_missing_user_is_malformed():
    payload = payloads.gitlab_note("/abort")
    del payload["user"]
    assert isinstance(events.parse_gitlab("Note Hook", payload), events.Malformed)
