"""What reporting costs in forge calls: the sticky comment and the statuses, against the fakes.

A rollout reports on nearly every tick, mostly without change. These tests count the requests
the HTTP fakes receive from the real adapters: an unchanged comment or status makes none, a
changed comment is one edit by its remembered id (no listing), a deleted comment is created
again, and statuses are posted only when they differ from the last one posted, with the
outbox's retries intact.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import pytest
from redis import Redis

from bot import services
from bot.config import load_settings
from bot.forge.base import ForgeError, RepoRef
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.forge.retry import RetryPolicy
from bot.queue import SCHEDULED_KEY, RQJobQueue
from bot.report import comment
from handlers import outbox
from tests.harness.fixtures_forges import (
    GITHUB_BOT,
    GITHUB_REPO,
    GITHUB_TOKEN,
    GITLAB_PROJECT,
    GITLAB_TOKEN,
)
from tests.harness.github import JsonFakeServer

PR = 1  # the PR/MR each forge fixture opens
SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
CONTEXT = "coalmine/web"
GH_STATUS = rf"/repos/{GITHUB_REPO}/statuses/\w+"
GH_LIST = rf"/repos/{GITHUB_REPO}/issues/{PR}/comments"
GH_EDIT = rf"/repos/{GITHUB_REPO}/issues/comments/\d+"
GL_NOTES = r"/api/v4/projects/[^/]+/merge_requests/1/notes"


def section(summary: str) -> dict[str, Any]:
    return {"app": "web", "sha": SHA, "state": "pending", "summary": summary}


def requests_after(fake: JsonFakeServer, mark: int) -> list[tuple[str, str]]:
    return [(c.method, c.path) for c in fake.calls[mark:]]


def publish(redis: Redis, forge: Any, repo: RepoRef, summary: str) -> int:
    comment.save_section(redis, repo, PR, "web", section(summary))
    return comment.publish(redis, forge, repo, PR)


# -- the sticky comment on GitHub ----------------------------------------------------------------


def test_an_unchanged_comment_makes_no_call(redis_client, github_forge, github_repo, fake_github):
    first = publish(redis_client, github_forge, github_repo, "step 1")
    mark = len(fake_github.calls)

    again = publish(redis_client, github_forge, github_repo, "step 1")

    assert again == first
    assert requests_after(fake_github, mark) == []


def test_a_changed_comment_is_one_edit_by_id_without_listing(
    redis_client, github_forge, github_repo, fake_github
):
    first = publish(redis_client, github_forge, github_repo, "step 1")
    mark = len(fake_github.calls)

    second = publish(redis_client, github_forge, github_repo, "step 2")

    assert second == first
    assert requests_after(fake_github, mark) == [
        ("PATCH", f"/repos/{GITHUB_REPO}/issues/comments/{first}")]
    [only] = fake_github.comments(GITHUB_REPO, PR)
    assert only["id"] == first and "step 2" in only["body"]


def test_a_deleted_comment_is_created_again_and_remembered(
    redis_client, github_forge, github_repo, fake_github
):
    first = publish(redis_client, github_forge, github_repo, "step 1")
    fake_github.delete_comment(GITHUB_REPO, first)
    mark = len(fake_github.calls)

    second = publish(redis_client, github_forge, github_repo, "step 2")

    assert second != first
    assert [m for m, _ in requests_after(fake_github, mark)] == ["PATCH", "GET", "POST"]
    [only] = fake_github.comments(GITHUB_REPO, PR)
    assert only["id"] == second and "step 2" in only["body"]
    mark = len(fake_github.calls)
    publish(redis_client, github_forge, github_repo, "step 3")
    assert requests_after(fake_github, mark) == [
        ("PATCH", f"/repos/{GITHUB_REPO}/issues/comments/{second}")]


def test_the_preview_comment_is_a_second_sticky_comment_with_the_same_discipline(
    redis_client, github_forge, github_repo, fake_github
):
    deploy_id = publish(redis_client, github_forge, github_repo, "step 1")
    marker = "<!-- coalmine:pr-preview -->"
    first = comment.publish_body(redis_client, github_forge, github_repo, PR, marker,
                                 f"{marker}\npreview of abc")
    assert first != deploy_id
    mark = len(fake_github.calls)
    assert comment.publish_body(redis_client, github_forge, github_repo, PR, marker,
                                f"{marker}\npreview of abc") == first
    assert requests_after(fake_github, mark) == []  # unchanged: no call
    comment.publish_body(redis_client, github_forge, github_repo, PR, marker,
                         f"{marker}\npreview of def")
    assert requests_after(fake_github, mark) == [
        ("PATCH", f"/repos/{GITHUB_REPO}/issues/comments/{first}")]
    bodies = {c["id"]: c["body"] for c in fake_github.comments(GITHUB_REPO, PR)}
    assert bodies[first].endswith("preview of def") and "step 1" in bodies[deploy_id]
    assert publish(redis_client, github_forge, github_repo, "step 1") == deploy_id


def test_a_comment_quoting_the_marker_is_never_taken_for_the_bots(
    redis_client, github_forge, github_repo, fake_github
):
    other = fake_github.add_comment(GITHUB_REPO, PR, f"look: {comment.MARKER}", login="mallory")

    own = publish(redis_client, github_forge, github_repo, "step 1")
    publish(redis_client, github_forge, github_repo, "step 2")

    assert own != other
    bodies = {c["id"]: c["body"] for c in fake_github.comments(GITHUB_REPO, PR)}
    assert bodies[other] == f"look: {comment.MARKER}" and "step 2" in bodies[own]


def remember_comment(redis: Redis, repo: RepoRef, comment_id: int) -> None:
    """A stale record, as one left by the bot's former account would be."""
    key = f"coalmine:pr:{repo.forge}:{repo.full_name}:{PR}:posted"
    redis.hset(key, comment.MARKER, json.dumps({"id": comment_id, "sha256": "stale"}))


def test_a_refused_edit_by_id_is_forgotten_and_the_comment_found_by_marker(
    redis_client, github_forge, github_repo, fake_github
):
    other = fake_github.add_comment(GITHUB_REPO, PR, "a person's words", login="mallory")
    remember_comment(redis_client, github_repo, other)

    with pytest.raises(ForgeError, match="403"):  # not the bot's comment: GitHub refuses
        publish(redis_client, github_forge, github_repo, "step 1")
    own = publish(redis_client, github_forge, github_repo, "step 1")

    assert own != other
    bodies = {c["id"]: c["body"] for c in fake_github.comments(GITHUB_REPO, PR)}
    assert bodies[other] == "a person's words" and "step 1" in bodies[own]


def test_an_edit_by_id_answered_with_someone_elses_comment_is_not_kept(
    redis_client, github_forge, github_repo, fake_github
):
    # An admin bot may edit anyone's comment: the answer, not a refusal, shows it is not its own.
    fake_github.set_permission(GITHUB_REPO, GITHUB_BOT, "admin")
    other = fake_github.add_comment(GITHUB_REPO, PR, "a person's words", login="mallory")
    remember_comment(redis_client, github_repo, other)

    own = publish(redis_client, github_forge, github_repo, "step 1")
    mark = len(fake_github.calls)
    publish(redis_client, github_forge, github_repo, "step 2")

    assert own != other
    assert requests_after(fake_github, mark) == [
        ("PATCH", f"/repos/{GITHUB_REPO}/issues/comments/{own}")]
    authors = {c["id"]: c["user"]["login"] for c in fake_github.comments(GITHUB_REPO, PR)}
    assert authors[own] == GITHUB_BOT


def test_a_comment_edited_after_its_lock_expired_is_edited_again(
    redis_client, fake_github, github_repo
):
    """The lock ran out during a slow edit: another job may have posted a newer body that this
    edit then overwrote, so the next publish must not trust the remembered hash."""
    lock_key = f"coalmine:pr-lock:github:{GITHUB_REPO}:{PR}"
    forge = GitHubForge(api_url=fake_github.api_url, token=GITHUB_TOKEN,
                        retry=RetryPolicy(sleep=lambda _s: redis_client.delete(lock_key)))
    first = publish(redis_client, forge, github_repo, "step 1")
    fake_github.fail_next(1, 502, match="PATCH")  # the retry's wait is where the lock expires

    publish(redis_client, forge, github_repo, "step 2")
    mark = len(fake_github.calls)
    publish(redis_client, forge, github_repo, "step 2")

    assert requests_after(fake_github, mark) == [
        ("PATCH", f"/repos/{GITHUB_REPO}/issues/comments/{first}")]


# -- the sticky note on GitLab ---------------------------------------------------------------


def test_gitlab_unchanged_note_makes_no_call_and_a_change_is_one_put(
    redis_client, gitlab_forge, gitlab_repo, fake_gitlab
):
    first = publish(redis_client, gitlab_forge, gitlab_repo, "step 1")
    mark = len(fake_gitlab.calls)

    assert publish(redis_client, gitlab_forge, gitlab_repo, "step 1") == first
    assert requests_after(fake_gitlab, mark) == []
    assert publish(redis_client, gitlab_forge, gitlab_repo, "step 2") == first
    [(method, path)] = requests_after(fake_gitlab, mark)
    assert method == "PUT" and path.endswith(f"/merge_requests/{PR}/notes/{first}")
    [only] = fake_gitlab.notes(GITLAB_PROJECT, PR)
    assert "step 2" in only["body"]


def test_gitlab_deleted_note_is_created_again(redis_client, gitlab_forge, gitlab_repo,
                                              fake_gitlab):
    first = publish(redis_client, gitlab_forge, gitlab_repo, "step 1")
    fake_gitlab.delete_note(GITLAB_PROJECT, first)
    mark = len(fake_gitlab.calls)

    second = publish(redis_client, gitlab_forge, gitlab_repo, "step 2")

    assert second != first
    assert [m for m, _ in requests_after(fake_gitlab, mark)] == ["PUT", "GET", "POST"]
    [only] = fake_gitlab.notes(GITLAB_PROJECT, PR)
    assert only["id"] == second and "step 2" in only["body"]


# -- statuses through the outbox -------------------------------------------------------------


@pytest.fixture
def make_services(redis_url, tmp_path, fake_github, fake_gitlab
                  ) -> Iterator[Callable[..., services.Services]]:
    """Services whose forges are the given adapters (their retry waits are not spent)."""

    def build(github: GitHubForge, gitlab: GitLabForge | None = None) -> services.Services:
        settings = load_settings({"COALMINE_DATA_DIR": str(tmp_path / "data"),
                                  "GITHUB_TOKEN": GITHUB_TOKEN,
                                  "GITHUB_API_URL": fake_github.api_url,
                                  "GITLAB_TOKEN": GITLAB_TOKEN,
                                  "GITLAB_URL": fake_gitlab.api_url})
        redis = Redis.from_url(redis_url)
        svc = services.Services(settings, redis, RQJobQueue(redis),
                                _forges={"github": github, "gitlab": gitlab})
        return services.install(svc)

    try:  # flush jobs look the services up, as an RQ worker's would
        yield build
    finally:
        services.uninstall()


def post(svc: services.Services, repo: RepoRef, state: str = "pending",
         description: str = "canary at 50 %", url: str | None = "https://coalmine/d/1") -> None:
    outbox.post_status(svc, repo, PR, SHA, CONTEXT, state, description, url)  # type: ignore[arg-type]


def test_an_unchanged_status_is_posted_once_and_every_change_is_posted(
    make_services, github_forge, github_repo, fake_github
):
    svc = make_services(github_forge)

    post(svc, github_repo)
    post(svc, github_repo)
    assert len(fake_github.calls_to("POST", GH_STATUS)) == 1
    post(svc, github_repo, description="canary at 100 %")
    post(svc, github_repo, description="canary at 100 %", url="https://coalmine/d/2")
    post(svc, github_repo, "success", description="canary at 100 %", url="https://coalmine/d/2")
    post(svc, github_repo, "success", description="canary at 100 %", url="https://coalmine/d/2")

    posted = [(s["state"], s["description"], s["target_url"])
              for s in fake_github.statuses(GITHUB_REPO, SHA)]
    assert posted == [
        ("pending", "canary at 50 %", "https://coalmine/d/1"),
        ("pending", "canary at 100 %", "https://coalmine/d/1"),
        ("pending", "canary at 100 %", "https://coalmine/d/2"),
        ("success", "canary at 100 %", "https://coalmine/d/2"),
    ]


def test_gitlab_unchanged_status_is_posted_once(make_services, github_forge, gitlab_forge,
                                                gitlab_repo, fake_gitlab):
    svc = make_services(github_forge, gitlab_forge)

    post(svc, gitlab_repo)
    post(svc, gitlab_repo)
    post(svc, gitlab_repo, "success")

    statuses = fake_gitlab.calls_to("POST", r"/api/v4/projects/[^/]+/statuses/\w+")
    assert [c.json["state"] for c in statuses] == ["running", "success"]


def test_a_failed_status_is_retried_later_and_the_desired_one_wins(
    make_services, github_forge, github_repo, fake_github, redis_client
):
    svc = make_services(github_forge)
    fake_github.fail_next(5, 502, match="/statuses/")  # every attempt of the adapter

    post(svc, github_repo, description="canary at 50 %")
    assert redis_client.zcard(SCHEDULED_KEY) == 1  # the outbox's flush, later
    post(svc, github_repo, description="canary at 50 %")  # not skipped: it never arrived
    post(svc, github_repo, description="canary at 100 %")
    outbox.flush(asdict(github_repo), PR, SHA, 1)  # the late retry: nothing left to post

    posted = [s["description"] for s in fake_github.statuses(GITHUB_REPO, SHA)]
    assert posted == ["canary at 50 %", "canary at 100 %"]


def test_a_flush_posts_only_what_differs_from_what_was_posted(
    make_services, github_forge, github_repo, fake_github
):
    svc = make_services(github_forge)
    post(svc, github_repo)
    fake_github.fail_next(5, 502, match="/comments")  # the comment fails, the status did not

    outbox.post_comment(svc, github_repo, PR, SHA)
    outbox.flush(asdict(github_repo), PR, SHA, 1)

    assert len(fake_github.calls_to("POST", GH_STATUS)) == 1
    assert len(fake_github.comments(GITHUB_REPO, PR)) == 1


def test_a_status_set_while_another_is_posted_is_not_lost(
    make_services, fake_github, github_repo
):
    """Caller A sets "50 %" while B holds the lock posting "100 %": A sees "50 %" as already
    posted and leaves; B must notice the desired state changed under it and post "50 %"."""
    svc: services.Services

    def meanwhile(_seconds: float) -> None:  # B's retry wait, after a 502
        post(svc, github_repo, description="canary at 50 %")

    forge = GitHubForge(api_url=fake_github.api_url, token=GITHUB_TOKEN,
                        retry=RetryPolicy(sleep=meanwhile))
    svc = make_services(forge)
    post(svc, github_repo, description="canary at 50 %")
    fake_github.fail_next(1, 502, match="/statuses/")

    post(svc, github_repo, description="canary at 100 %")

    latest = fake_github.latest_statuses(GITHUB_REPO, SHA)[CONTEXT]
    assert latest["description"] == "canary at 50 %"


def test_a_status_posted_after_its_lock_expired_is_posted_again(
    make_services, fake_github, github_repo, redis_client
):
    """Another post may have crossed this one on the wire: what the forge shows is unknown."""
    lock_key = f"coalmine:status-lock:github:{GITHUB_REPO}:{SHA}"
    forge = GitHubForge(api_url=fake_github.api_url, token=GITHUB_TOKEN,
                        retry=RetryPolicy(sleep=lambda _s: redis_client.delete(lock_key)))
    svc = make_services(forge)
    fake_github.fail_next(1, 502, match="/statuses/")

    post(svc, github_repo)
    post(svc, github_repo)

    assert len([c for c in fake_github.calls_to("POST", GH_STATUS) if c.status == 201]) == 2


def test_an_unchanged_status_is_skipped_before_the_lock(
    make_services, github_forge, github_repo, fake_github, redis_client
):
    """The skip costs one round trip: a tick whose status did not change must not wait on
    another job's slow post of the same commit."""
    svc = make_services(github_forge)
    post(svc, github_repo)
    held = redis_client.lock(f"coalmine:status-lock:github:{GITHUB_REPO}:{SHA}", timeout=60)
    assert held.acquire(blocking=False)

    post(svc, github_repo)

    held.release()
    assert len(fake_github.calls_to("POST", GH_STATUS)) == 1
    assert redis_client.zcard(SCHEDULED_KEY) == 0  # not put off as "stayed locked" either
