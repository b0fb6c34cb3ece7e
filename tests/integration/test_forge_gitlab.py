"""GitLabForge against FakeGitLab over real HTTP: every protocol method, limits and retries."""

from __future__ import annotations

import traceback

import pytest

from bot.forge.base import ForgeError, RepoRef
from bot.forge.gitlab import GitLabForge
from tests.harness.fixtures_forges import (
    FEATURE_BRANCH,
    GITLAB_BOT,
    GITLAB_PROJECT,
    GITLAB_TOKEN,
)

SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
MARKER = "<!-- coalmine:rollout web -->"
MR = 1  # the merge request the fixture opens


# -- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [("pending", "running"), ("success", "success"), ("failure", "failed"), ("error", "failed")],
)
def test_status_states_map_to_gitlab(gitlab_forge, gitlab_repo, fake_gitlab, state, expected):
    gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", state, "d", target_url="https://x")

    status = fake_gitlab.latest_statuses(GITLAB_PROJECT, SHA)["coalmine/web"]
    assert (status["status"], status["target_url"]) == (expected, "https://x")


def test_status_description_is_cut_to_255(gitlab_forge, gitlab_repo, fake_gitlab):
    gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", "success", "why " * 100)

    description = fake_gitlab.latest_statuses(GITLAB_PROJECT, SHA)["coalmine/web"]["description"]
    assert len(description) == 255 and description.endswith("…")


def test_setting_the_same_open_state_twice_is_not_an_error(gitlab_forge, gitlab_repo, fake_gitlab):
    gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", "pending", "step 1")
    gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", "pending", "step 2")
    gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", "success", "done")

    refused = fake_gitlab.calls[1]
    assert (refused.status, refused.rejected_by) == (400, "rule")
    records = fake_gitlab.statuses(GITLAB_PROJECT, SHA)
    assert [(r["status"], r["description"]) for r in records] == [("success", "done")]


def test_a_finished_status_can_be_restarted(gitlab_forge, gitlab_repo, fake_gitlab):
    gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", "failure", "aborted")
    gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", "pending", "retrying")

    latest = fake_gitlab.latest_statuses(GITLAB_PROJECT, SHA)["coalmine/web"]
    assert (latest["status"], latest["description"]) == ("running", "retrying")


def test_other_status_errors_still_raise(gitlab_forge, gitlab_repo, fake_gitlab):
    fake_gitlab.fail_next(1, 400, body={"message": "400 Bad request - ref is invalid"})

    with pytest.raises(ForgeError, match="ref is invalid"):
        gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", "pending", "x")


# -- notes ------------------------------------------------------------------------------------


def test_upsert_creates_once_then_edits_the_same_note(gitlab_forge, gitlab_repo, fake_gitlab):
    fake_gitlab.add_note(GITLAB_PROJECT, MR, f"quoting {MARKER}", username="mallory")
    for i in range(45):  # more than two pages of 20
        fake_gitlab.add_note(GITLAB_PROJECT, MR, f"chatter {i}")

    first = gitlab_forge.upsert_comment(gitlab_repo, MR, MARKER, f"{MARKER}\nstep 1")
    second = gitlab_forge.upsert_comment(gitlab_repo, MR, MARKER, f"{MARKER}\nstep 2")
    third = gitlab_forge.upsert_comment(gitlab_repo, MR, MARKER, f"{MARKER}\nstep 3")

    assert first == second == third
    ours = [
        n for n in fake_gitlab.notes(GITLAB_PROJECT, MR) if n["author"]["username"] == GITLAB_BOT
    ]
    assert [(n["id"], n["body"]) for n in ours] == [(first, f"{MARKER}\nstep 3")]
    assert len(fake_gitlab.calls_to("PUT", r".*/notes/\d+")) == 2
    pages = {c.query.get("page", "1") for c in fake_gitlab.calls_to("GET", r".*/notes")}
    assert pages == {"1", "2", "3"}


def test_over_long_note_keeps_the_marker_and_the_tail(gitlab_forge, gitlab_repo, fake_gitlab):
    body = MARKER + "\n" + "x" * 1_000_100 + "\nFINAL VERDICT"

    note_id = gitlab_forge.upsert_comment(gitlab_repo, MR, MARKER, body)
    again = gitlab_forge.upsert_comment(gitlab_repo, MR, MARKER, body)

    stored = fake_gitlab.notes(GITLAB_PROJECT, MR)[-1]["body"]
    assert again == note_id
    assert len(stored) <= 1_000_000
    assert stored.startswith(MARKER) and stored.endswith("FINAL VERDICT")
    assert "removed to fit" in stored


def test_comment_posts_a_new_note_each_time(gitlab_forge, gitlab_repo, fake_gitlab):
    first = gitlab_forge.comment(gitlab_repo, MR, "Aborted by @alice")
    second = gitlab_forge.comment(gitlab_repo, MR, "Aborted by @alice")

    assert first != second
    bodies = [n["body"] for n in fake_gitlab.notes(GITLAB_PROJECT, MR)]
    assert bodies == ["Aborted by @alice"] * 2


def test_acknowledge_awards_one_thumbsup(gitlab_forge, gitlab_repo, fake_gitlab):
    command = fake_gitlab.add_note(GITLAB_PROJECT, MR, "/promote", username="alice")

    gitlab_forge.acknowledge(gitlab_repo, MR, command)
    gitlab_forge.acknowledge(gitlab_repo, MR, command)

    awards = fake_gitlab.award_emoji(GITLAB_PROJECT, command)
    assert [(a["name"], a["user"]["username"]) for a in awards] == [("thumbsup", GITLAB_BOT)]


# -- permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [(50, "admin"), (40, "admin"), (30, "write"), (20, "read"), (10, "read"), (5, "none")],
)
def test_access_levels_fold_into_four_permissions(
    gitlab_forge, gitlab_repo, fake_gitlab, level, expected
):
    fake_gitlab.set_access(GITLAB_PROJECT, "alice", level)
    assert gitlab_forge.permission(gitlab_repo, "alice") == expected


def test_a_known_user_id_skips_the_user_lookup(gitlab_forge, gitlab_repo, fake_gitlab):
    fake_gitlab.set_access(GITLAB_PROJECT, "alice", 30)
    alice = fake_gitlab.add_user("alice")

    assert gitlab_forge.permission(gitlab_repo, "alice", user_id=alice) == "write"
    assert fake_gitlab.calls_to("GET", r"/api/v4/users") == []


def test_non_members_and_unknown_users_have_no_permission(gitlab_forge, gitlab_repo, fake_gitlab):
    fake_gitlab.add_user("outsider")
    assert gitlab_forge.permission(gitlab_repo, "outsider") == "none"
    assert gitlab_forge.permission(gitlab_repo, "ghost") == "none"


# -- merge requests ---------------------------------------------------------------------------


def test_find_pull_request_returns_the_newest_for_the_branch(
    gitlab_forge, gitlab_repo, fake_gitlab
):
    bot = {"author": GITLAB_BOT}
    fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch="revert-abc", state="merged",
                                  **bot)
    fake_gitlab.add_merge_request(
        GITLAB_PROJECT, source_branch="revert-abc", state="closed", title="newer", **bot
    )
    mine = fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch="mine", **bot)

    found = gitlab_forge.find_pull_request(gitlab_repo, "revert-abc")
    own = gitlab_forge.find_pull_request(gitlab_repo, "mine")

    assert found is not None and (found.title, found.state) == ("newer", "closed")
    assert own is not None and (own.number, own.state) == (mine, "open")
    # The fixture's MR (iid MR) was opened by a person: never taken for one of the bot's.
    assert gitlab_forge.find_pull_request(gitlab_repo, FEATURE_BRANCH) is None
    assert gitlab_forge.find_pull_request(gitlab_repo, "nothing") is None


def test_open_pull_request_with_labels_is_idempotent(gitlab_forge, gitlab_repo, fake_gitlab):
    opened = gitlab_forge.open_pull_request(
        gitlab_repo, "revert-3f78", "main", "Revert web", "Analysis failed", ["coalmine", "revert"]
    )
    again = gitlab_forge.open_pull_request(
        gitlab_repo, "revert-3f78", "main", "Revert web", "Analysis failed", ["coalmine", "revert"]
    )

    assert again == opened
    assert (opened.head, opened.base, opened.state) == ("revert-3f78", "main", "open")
    mrs = fake_gitlab.merge_requests(GITLAB_PROJECT)
    assert [(m["iid"], m["labels"]) for m in mrs] == [(MR, []), (2, ["coalmine", "revert"])]
    assert mrs[1]["description"] == "Analysis failed"


def test_project_is_addressed_by_id_when_known(gitlab_forge, fake_gitlab):
    project_id = fake_gitlab.add_project("other/app")
    fake_gitlab.add_merge_request("other/app", source_branch="x")
    repo = RepoRef("gitlab", "renamed/meanwhile", "https://g/other/app.git", project_id=project_id)

    gitlab_forge.comment(repo, 1, "hi")

    assert fake_gitlab.calls[-1].path == f"/api/v4/projects/{project_id}/merge_requests/1/notes"
    assert fake_gitlab.notes("other/app", 1)[0]["body"] == "hi"


# -- credentials and failures -----------------------------------------------------------------


def test_clone_url_carries_the_token(gitlab_forge, gitlab_repo):
    assert gitlab_forge.authenticated_clone_url(gitlab_repo) == (
        f"https://oauth2:{GITLAB_TOKEN}@gitlab.example/{GITLAB_PROJECT}.git"
    )
    assert gitlab_forge.secrets() == [GITLAB_TOKEN]


def test_a_bad_token_fails_without_leaking_it(fake_gitlab, gitlab_repo):
    forge = GitLabForge(fake_gitlab.api_url, "glpat-wrong-secret", bot_username="x")

    with pytest.raises(ForgeError, match="401") as caught:
        forge.comment(gitlab_repo, MR, "hello")

    assert "glpat-wrong-secret" not in "".join(traceback.format_exception(caught.value))


def test_an_unknown_project_is_a_forge_error(gitlab_forge, fake_gitlab):
    repo = RepoRef("gitlab", "nobody/nothing", "https://g/nobody/nothing.git")
    with pytest.raises(ForgeError, match="404"):
        gitlab_forge.find_pull_request(repo, "x")


def test_a_502_is_retried(gitlab_forge, gitlab_repo, fake_gitlab):
    fake_gitlab.fail_next(2, 502)

    gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", "success", "done")

    assert [c.status for c in fake_gitlab.calls] == [502, 502, 201]


def test_a_429_waits_for_retry_after(gitlab_forge, gitlab_repo, fake_gitlab):
    fake_gitlab.fail_next(1, 429, headers={"Retry-After": "1"})

    gitlab_forge.comment(gitlab_repo, MR, "hello")

    throttled, retried = fake_gitlab.calls
    assert (throttled.status, retried.status) == (429, 201)
    assert retried.at - throttled.at >= 1.0


def test_a_dropped_connection_is_retried(gitlab_forge, gitlab_repo, fake_gitlab):
    fake_gitlab.drop_next(1)

    note = gitlab_forge.comment(gitlab_repo, MR, "hello")

    assert [c.rejected_by for c in fake_gitlab.calls] == ["fault", None]
    assert fake_gitlab.notes(GITLAB_PROJECT, MR)[0]["id"] == note
