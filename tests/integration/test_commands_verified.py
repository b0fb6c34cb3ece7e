"""The command job believes the forge API, not the payload: author, body, PR and GitLab role.

`handlers.commands.run` runs in-process against the real adapters, the GitHub and GitLab fakes
and a real Redis. Each event below is what a signed but forged webhook could carry: anyone holding
the (shared) webhook secret chooses its author, author id, body and comment id.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from redis import Redis

from bot import services
from bot.config import load_settings
from bot.events import PullRequestComment
from bot.forge.base import RepoRef
from bot.queue import RQJobQueue
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord, RolloutStore, rollout_key
from handlers import commands
from tests.harness.fixtures_forges import (
    GITHUB_BOT,
    GITHUB_REPO,
    GITHUB_TOKEN,
    GITLAB_BOT,
    GITLAB_PROJECT,
    GITLAB_TOKEN,
)
from tests.harness.processes import wait_until

PR = 1  # the PR/MR each forge fixture opens
DENIED = "your command was not run"


@pytest.fixture
def install(redis_url, fake_github, fake_gitlab, tmp_path
            ) -> Iterator[Callable[..., services.Services]]:
    """Install services pointed at the fakes; `gitlab_min` is permissions.gitlab."""

    def build(gitlab_min: str = "developer") -> services.Services:
        settings = load_settings({
            "COALMINE_DATA_DIR": str(tmp_path / "data"),
            "GITHUB_TOKEN": GITHUB_TOKEN, "GITHUB_API_URL": fake_github.api_url,
            "GITHUB_BOT_LOGIN": GITHUB_BOT,
            "GITLAB_TOKEN": GITLAB_TOKEN, "GITLAB_URL": fake_gitlab.api_url,
            "GITLAB_BOT_USERNAME": GITLAB_BOT,
            "COALMINE_GITLAB_MIN_ACCESS": gitlab_min,
        })
        redis = Redis.from_url(redis_url)
        return services.install(services.Services(settings, redis, RQJobQueue(redis)))

    try:
        yield build
    finally:
        services.uninstall()


def github_event(comment_id: int, *, author: str, body: str = "/help", number: int = PR,
                 author_id: int | None = None) -> PullRequestComment:
    repo = RepoRef("github", GITHUB_REPO, f"https://github.example/{GITHUB_REPO}.git")
    return PullRequestComment(repo=repo, number=number, comment_id=comment_id, body=body,
                              author=author, author_id=author_id, author_is_bot=False,
                              delivery="delivery-gh-1")


def gitlab_event(note_id: int, *, author: str, author_id: int | None, body: str = "/help",
                 number: int = PR) -> PullRequestComment:
    repo = RepoRef("gitlab", GITLAB_PROJECT, f"https://gitlab.example/{GITLAB_PROJECT}.git")
    return PullRequestComment(repo=repo, number=number, comment_id=note_id, body=body,
                              author=author, author_id=author_id, author_is_bot=False,
                              delivery="delivery-gl-1")


def bot_replies_github(fake_github, number: int = PR) -> list[str]:
    return [c["body"] for c in fake_github.comments(GITHUB_REPO, number)
            if c["user"]["login"] == GITHUB_BOT]


def bot_replies_gitlab(fake_gitlab, number: int = PR) -> list[str]:
    return [n["body"] for n in fake_gitlab.notes(GITLAB_PROJECT, number)
            if n["author"]["username"] == GITLAB_BOT]


# -- GitHub -----------------------------------------------------------------------------------


def test_a_forged_author_is_replaced_by_the_real_one(install, fake_github):
    """The payload names an admin; the comment is a reader's: the reader is denied."""
    install()
    fake_github.set_permission(GITHUB_REPO, "alice", "admin")
    fake_github.set_permission(GITHUB_REPO, "reader", "read")
    comment_id = fake_github.add_comment(GITHUB_REPO, PR, "/abort", login="reader")

    commands.run(github_event(comment_id, author="alice", body="/abort"))

    (reply,) = bot_replies_github(fake_github)
    assert reply.startswith("@reader ") and DENIED in reply and "(you have read)" in reply
    assert fake_github.reactions(GITHUB_REPO, comment_id) == []


def test_the_real_author_runs_the_command_whatever_the_payload_says(install, fake_github):
    install()
    fake_github.set_permission(GITHUB_REPO, "alice", "write")
    comment_id = fake_github.add_comment(GITHUB_REPO, PR, "/help", login="alice")

    commands.run(github_event(comment_id, author="mallory"))

    (reply,) = bot_replies_github(fake_github)
    assert reply == commands.HELP
    assert [r["content"] for r in fake_github.reactions(GITHUB_REPO, comment_id)] == ["+1"]


def test_the_same_comment_delivered_again_under_another_id_runs_once(install, fake_github):
    """A repository hook and an organisation hook both pointing here deliver each comment
    twice, under two delivery ids (so the webhook's own claim lets both in); a signed body
    replayed under a fresh id is the same. A command is not idempotent: it runs once."""
    install()
    fake_github.set_permission(GITHUB_REPO, "alice", "write")
    comment_id = fake_github.add_comment(GITHUB_REPO, PR, "/help", login="alice")

    commands.run(github_event(comment_id, author="alice"))
    commands.run(dataclasses.replace(github_event(comment_id, author="alice"),
                                     delivery="delivery-gh-2"))

    assert bot_replies_github(fake_github) == [commands.HELP]
    assert [r["content"] for r in fake_github.reactions(GITHUB_REPO, comment_id)] == ["+1"]
    # Another comment with the same command is another command.
    again = fake_github.add_comment(GITHUB_REPO, PR, "/help", login="alice")
    commands.run(github_event(again, author="alice"))
    assert bot_replies_github(fake_github) == [commands.HELP, commands.HELP]


def test_a_comment_of_another_pr_does_nothing(install, fake_github, caplog):
    """A maintainer's real `/help` on PR 2, replayed as if typed on PR 1: nothing happens."""
    install()
    fake_github.set_permission(GITHUB_REPO, "alice", "admin")
    other = fake_github.add_pull(GITHUB_REPO, head="other")
    comment_id = fake_github.add_comment(GITHUB_REPO, other, "/help", login="alice")

    with caplog.at_level(logging.WARNING, logger="handlers.commands"):
        commands.run(github_event(comment_id, author="alice"))

    assert bot_replies_github(fake_github) == [] and bot_replies_github(fake_github, other) == []
    assert fake_github.reactions(GITHUB_REPO, comment_id) == []
    assert "delivery-gh-1" in caplog.text and f"on #{other}" in caplog.text


def test_a_forged_body_does_nothing(install, fake_github, caplog):
    """The payload carries `/abort`; the comment the forge holds says only "LGTM"."""
    install()
    fake_github.set_permission(GITHUB_REPO, "alice", "admin")
    comment_id = fake_github.add_comment(GITHUB_REPO, PR, "LGTM", login="alice")

    with caplog.at_level(logging.WARNING, logger="handlers.commands"):
        commands.run(github_event(comment_id, author="alice", body="/abort"))

    assert bot_replies_github(fake_github) == []
    assert fake_github.reactions(GITHUB_REPO, comment_id) == []
    assert "delivery-gh-1" in caplog.text and "no command" in caplog.text


def test_a_missing_comment_does_nothing(install, fake_github, caplog):
    install()
    with caplog.at_level(logging.WARNING, logger="handlers.commands"):
        commands.run(github_event(987654, author="alice"))
    assert bot_replies_github(fake_github) == []
    assert "delivery-gh-1" in caplog.text and "does not confirm" in caplog.text


def test_a_command_never_acts_on_a_rollout_taken_over_meanwhile(install, fake_github):
    """`/promote` found PR 1's rollout; before it got the lock PR 2's merge took the rollout."""
    svc = install()
    fake_github.set_permission(GITHUB_REPO, "alice", "write")
    fake_github.add_pull(GITHUB_REPO, head="two")
    repo = RepoRef("github", GITHUB_REPO, f"https://github.example/{GITHUB_REPO}.git",
                   repo_id=1)
    key = rollout_key("github", GITHUB_REPO, "web")
    strategy = m.CanaryStrategy(workload=m.WorkloadRef("Deployment", "web"),
                                steps=(m.PauseStep(None),))
    mine = dataclasses.replace(m.new_state(app="web", revision="b" * 40, stable_revision="a" * 40,
                                           pr=PR, strategy=strategy), phase="Paused")
    context = RolloutContext(repo=repo, number=PR, app="web", namespace="shop", deployment={},
                             stable={}, replicas=1, template_hash="h")
    store = RolloutStore(svc.redis)
    store.save(key, RolloutRecord(mine, context), None)
    store.index_pr(repo.forge, repo.full_name, PR, key)
    comment_id = fake_github.add_comment(GITHUB_REPO, PR, "/promote", login="alice")
    taken = dataclasses.replace(mine, pr=2, revision="c" * 40)

    with store.locked(key):
        worker = threading.Thread(
            target=commands.run, args=(github_event(comment_id, author="alice", body="/promote"),))
        worker.start()
        # Accepted (reacted to), then looked up PR 1's rollout; now it waits for the lock.
        wait_until(lambda: fake_github.reactions(GITHUB_REPO, comment_id), 10, 0.05)
        time.sleep(0.5)
        store.save(key, RolloutRecord(taken, context), None)
    worker.join(30)

    after = store.load(key)
    assert after is not None and after.state == taken
    assert any("now belongs to #2" in body for body in bot_replies_github(fake_github))


# -- GitLab -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("minimum", "level", "have"), [
    ("owner", 40, "Maintainer"),
    ("maintainer", 30, "Developer"),
    ("developer", 20, "Reporter"),
    ("reporter", 0, "no access"),
])
def test_gitlab_roles_are_compared_exactly(install, fake_gitlab, minimum, level, have):
    install(gitlab_min=minimum)
    if level:
        fake_gitlab.set_access(GITLAB_PROJECT, "member", level)
    uid = fake_gitlab.add_user("member")
    note_id = fake_gitlab.add_note(GITLAB_PROJECT, PR, "/help", username="member")

    commands.run(gitlab_event(note_id, author="member", author_id=uid))

    (reply,) = bot_replies_gitlab(fake_gitlab)
    assert reply == (f"@member commands need the {minimum.capitalize()} role or above on this "
                     f"project (you have {have}); {DENIED}.")
    assert fake_gitlab.award_emoji(GITLAB_PROJECT, note_id) == []


@pytest.mark.parametrize(("minimum", "level"), [("owner", 50), ("reporter", 20)])
def test_gitlab_roles_at_the_minimum_are_admitted(install, fake_gitlab, minimum, level):
    install(gitlab_min=minimum)
    fake_gitlab.set_access(GITLAB_PROJECT, "member", level)
    note_id = fake_gitlab.add_note(GITLAB_PROJECT, PR, "/help", username="member")

    commands.run(gitlab_event(note_id, author="member", author_id=fake_gitlab.add_user("member")))

    assert bot_replies_gitlab(fake_gitlab) == [commands.HELP]
    assert [a["name"] for a in fake_gitlab.award_emoji(GITLAB_PROJECT, note_id)] == ["thumbsup"]


def test_gitlab_forged_author_and_id_are_replaced(install, fake_gitlab):
    """The finding: a forged note naming a maintainer (and the maintainer's id) ran a command."""
    install()
    fake_gitlab.set_access(GITLAB_PROJECT, "maintainer", 40)
    fake_gitlab.set_access(GITLAB_PROJECT, "reader", 20)
    note_id = fake_gitlab.add_note(GITLAB_PROJECT, PR, "/abort", username="reader")

    commands.run(gitlab_event(note_id, author="maintainer", body="/abort",
                              author_id=fake_gitlab.add_user("maintainer")))

    (reply,) = bot_replies_gitlab(fake_gitlab)
    assert reply.startswith("@reader ") and "(you have Reporter)" in reply


def test_gitlab_system_note_does_nothing(install, fake_gitlab, caplog):
    install()
    fake_gitlab.set_access(GITLAB_PROJECT, "alice", 50)
    note_id = fake_gitlab.add_note(GITLAB_PROJECT, PR, "/help", username="alice", system=True)

    with caplog.at_level(logging.WARNING, logger="handlers.commands"):
        commands.run(gitlab_event(note_id, author="alice", author_id=None))

    assert bot_replies_gitlab(fake_gitlab) == []
    assert "delivery-gl-1" in caplog.text and "system note" in caplog.text


def test_gitlab_note_of_another_mr_does_nothing(install, fake_gitlab, caplog):
    install()
    fake_gitlab.set_access(GITLAB_PROJECT, "alice", 50)
    other = fake_gitlab.add_merge_request(GITLAB_PROJECT, source_branch="other")
    note_id = fake_gitlab.add_note(GITLAB_PROJECT, other, "/help", username="alice")

    with caplog.at_level(logging.WARNING, logger="handlers.commands"):
        commands.run(gitlab_event(note_id, author="alice", author_id=None))

    assert bot_replies_gitlab(fake_gitlab) == [] and bot_replies_gitlab(fake_gitlab, other) == []
    assert "delivery-gl-1" in caplog.text
