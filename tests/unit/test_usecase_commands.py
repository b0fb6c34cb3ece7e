"""The command use case (`handlers.commands.on_command`) against in-memory ports.

Each row is one behaviour: what the payload says, what the forge API really holds, who may do
what, which rollouts the PR has; then the replies, the acknowledgement and the engine events the
command caused. The payload is what a signed but forged webhook could carry, so rows where it
and the API disagree check that the API wins. tests/integration/test_commands_verified.py runs
the same trust rules against the real forge adapters and their HTTP fakes.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import pytest

from bot.events import PullRequestComment
from bot.forge.base import CommentFacts, Permission
from bot.refs import RepoRef
from bot.rollout import model as m
from handlers.commands import HELP, CommandSettings, on_command
from tests.fakes import FakeClaims, FakeForge, FakeRollouts

PR, COMMENT = 7, 1001
BOT = "coalmine-bot"
WEB, API = "coalmine:rollout:github:org/app:web", "coalmine:rollout:github:org/app:api"
DENIED = "your command was not run"


@dataclass(frozen=True)
class Case:
    """One row: the world, the comment (payload and API), and what must follow."""

    body: str  # what the forge API holds
    author: str = "alice"  # the comment's real author, per the API
    payload_body: str | None = None  # what the payload claims; None: the same as `body`
    payload_author: str | None = None
    on_pr: int = PR  # the PR the API says the comment is on
    permissions: dict[str, Permission] = field(
        default_factory=lambda: {"alice": "write", "reader": "read", "root": "admin"})
    apps: dict[str, str] = field(default_factory=lambda: {"web": WEB})
    replies: tuple[str, ...] = ()  # a fragment of each reply, in order
    dispatched: tuple[tuple[str, m.Event], ...] = ()
    acknowledged: bool = False


CASES = {
    "permission denied replies and changes nothing": Case(
        "/abort", author="reader",
        replies=(("@reader commands need write permission on this repository (you have read); "
                 f"{DENIED}."),)),
    "forged author is replaced by the API's and denied": Case(
        "/abort", author="reader", payload_author="root", replies=("@reader ",)),
    "forged author is replaced by the API's and admitted": Case(
        "/pause", author="alice", payload_author="mallory", acknowledged=True,
        dispatched=((WEB, m.Pause("alice")),)),
    "comment of another PR does nothing": Case("/abort", on_pr=PR + 1),
    "forged body holds no command: nothing happens": Case("LGTM", payload_body="/abort"),
    "the API's body is what runs": Case(
        "/pause", payload_body="/abort", acknowledged=True,
        dispatched=((WEB, m.Pause("alice")),)),
    "payload without a command is not even read": Case("/abort", payload_body="thanks!"),
    "the bot's own comment is ignored": Case("/abort", author=BOT, payload_author=BOT),
    "the bot's own comment under a forged author is ignored": Case(
        "/abort", author=BOT.upper(), payload_author="alice"),
    "a payload naming the bot is not even read": Case("/abort", payload_author=BOT),
    "/help replies the help": Case("/help", acknowledged=True, replies=(HELP,)),
    "/status lists each rollout's state": Case(
        "/status", apps={"web": WEB, "api": API}, acknowledged=True,
        replies=("| `api` | pending: waiting to start |\n| `web` | success: promoted |",)),
    "/status without rollouts says so": Case(
        "/status", apps={}, acknowledged=True,
        replies=("No canary rollout was started by this PR.",)),
    "several apps need a name": Case(
        "/promote", apps={"web": WEB, "api": API}, acknowledged=True,
        replies=(("this PR rolls out several apps; name one: `/promote <app>` with one of "
                 "`api`, `web`."),)),
    "several apps: the named one is acted on": Case(
        "/promote api", apps={"web": WEB, "api": API}, acknowledged=True,
        dispatched=((API, m.Promote("alice")),)),
    "an app the PR did not roll out is named": Case(
        "/abort db", acknowledged=True,
        replies=("@alice no rollout of `db` on this PR; valid apps: `web`.",)),
    "no rollout on the PR: nothing to act on": Case(
        "/retry", apps={}, acknowledged=True,
        replies=(("@alice no canary rollout was started by this PR, so `/retry` has nothing "
                 "to act on."),)),
    "a malformed command is explained and the others run": Case(
        "/promote --fast\n/pause", acknowledged=True, replies=("`/promote --fast`",),
        dispatched=((WEB, m.Pause("alice")),)),
    "/promote steps on": Case(
        "/promote", acknowledged=True, dispatched=((WEB, m.Promote("alice")),)),
    "/promote --full promotes now": Case(
        "/promote --full", acknowledged=True, dispatched=((WEB, m.PromoteFull("alice")),)),
    "/abort aborts, naming who": Case(
        "/abort", acknowledged=True, dispatched=((WEB, m.Abort("alice", "aborted by @alice")),)),
    "/retry retries": Case("/retry", acknowledged=True, dispatched=((WEB, m.Retry("alice")),)),
    "/pause pauses": Case("/pause", acknowledged=True, dispatched=((WEB, m.Pause("alice")),)),
    "/resume resumes": Case("/resume", acknowledged=True,
                            dispatched=((WEB, m.Resume("alice")),)),
}


def comment_event(case: Case, *, forge: str = "github") -> PullRequestComment:
    repo = RepoRef(forge, "org/app", f"https://{forge}.example/org/app.git")  # type: ignore[arg-type]
    return PullRequestComment(
        repo=repo, number=PR, comment_id=COMMENT,
        body=case.body if case.payload_body is None else case.payload_body,
        author=case.author if case.payload_author is None else case.payload_author,
        author_id=None, author_is_bot=False, delivery="delivery-1")


def world(case: Case, *, forge: str = "github") -> tuple[FakeForge, FakeRollouts]:
    fake = FakeForge(name=forge, permissions=dict(case.permissions),
                     comments={COMMENT: CommentFacts(COMMENT, case.author, None, case.body,
                                                     case.on_pr)})
    rollouts = FakeRollouts(by_pr={PR: dict(case.apps)},
                            statuses={WEB: ("success", "promoted"),
                                      API: ("pending", "waiting to start")})
    return fake, rollouts


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_command(case: Case) -> None:
    forge, rollouts = world(case)

    on_command(comment_event(case), forge=forge, rollouts=rollouts, claims=FakeClaims(),
               settings=CommandSettings(bot_name=BOT))

    replies = forge.replies()
    assert len(replies) == len(case.replies), replies
    for reply, fragment in zip(replies, case.replies, strict=True):
        assert fragment in reply
    assert forge.acknowledged() == ([COMMENT] if case.acknowledged else [])
    assert rollouts.dispatched == [(key, event, PR) for key, event in case.dispatched]


def test_refusals_are_logged_with_the_delivery(caplog) -> None:
    case = CASES["comment of another PR does nothing"]
    forge, rollouts = world(case)
    with caplog.at_level(logging.WARNING, logger="handlers.commands"):
        on_command(comment_event(case), forge=forge, rollouts=rollouts, claims=FakeClaims(),
                   settings=CommandSettings(bot_name=BOT))
    assert "delivery-1" in caplog.text and f"is on #{PR + 1}" in caplog.text


def test_a_missing_comment_does_nothing(caplog) -> None:
    case = Case("/abort")
    forge, rollouts = world(case)
    forge.comments.clear()
    with caplog.at_level(logging.WARNING, logger="handlers.commands"):
        on_command(comment_event(case), forge=forge, rollouts=rollouts, claims=FakeClaims(),
                   settings=CommandSettings(bot_name=BOT))
    assert forge.calls == [] and rollouts.dispatched == []
    assert "does not confirm the comment" in caplog.text


def test_the_bot_is_recognised_before_anything_is_read() -> None:
    forge, rollouts = world(Case("/abort", author=BOT))
    on_command(comment_event(Case("/abort", author=BOT)), forge=forge, rollouts=rollouts, claims=FakeClaims(),
               settings=CommandSettings(bot_name=BOT))
    assert forge.reads == [] and forge.calls == []


GITLAB_ROLES = {
    # minimum, member's exact level, admitted?, the role the reply names
    "Owner admits only Owners: Maintainer denied": (50, 40, False, "Maintainer"),
    "Owner admits an Owner": (50, 50, True, ""),
    "Maintainer minimum: Developer denied": (40, 30, False, "Developer"),
    "Developer minimum: Reporter denied": (30, 20, False, "Reporter"),
    "Reporter minimum admits a Reporter": (20, 20, True, ""),
    "Reporter minimum: a non-member denied": (20, 0, False, "no access"),
}


@pytest.mark.parametrize(("minimum", "level", "admitted", "have"), GITLAB_ROLES.values(),
                         ids=GITLAB_ROLES.keys())
def test_gitlab_roles_are_compared_exactly(minimum: int, level: int, admitted: bool,
                                           have: str) -> None:
    """The exact level decides, never the four-level normalisation (which says "admin" for
    both Maintainer and Owner)."""
    case = Case("/help", author="member", permissions={"member": "admin"})
    forge, rollouts = world(case, forge="gitlab")
    forge.levels["member"] = level

    on_command(comment_event(case, forge="gitlab"), forge=forge, rollouts=rollouts, claims=FakeClaims(),
               settings=CommandSettings(bot_name=BOT, gitlab_min_access=minimum))

    if admitted:
        assert forge.replies() == [HELP] and forge.acknowledged() == [COMMENT]
        return
    role = {50: "Owner", 40: "Maintainer", 30: "Developer", 20: "Reporter"}[minimum]
    assert forge.replies() == [(f"@member commands need the {role} role or above on this "
                               f"project (you have {have}); {DENIED}.")]
    assert forge.acknowledged() == []


@pytest.mark.parametrize(("need", "have", "admitted"), [
    ("write", "read", False), ("write", "write", True), ("admin", "write", False),
    ("read", "read", True)])
def test_github_minimum_permission(need: str, have: Permission, admitted: bool) -> None:
    case = Case("/help", author="member", permissions={"member": have})
    forge, rollouts = world(case)
    on_command(comment_event(case), forge=forge, rollouts=rollouts, claims=FakeClaims(),
               settings=CommandSettings(bot_name=BOT, github_min_permission=need))
    assert (forge.replies() == [HELP]) is admitted


def test_a_comment_redelivered_under_another_delivery_id_runs_once() -> None:
    case = CASES["forged author is replaced by the API's and admitted"]
    forge, rollouts = world(case)
    claims = FakeClaims()
    for delivery in ("delivery-1", "delivery-2"):
        event = dataclasses.replace(comment_event(case), delivery=delivery)
        on_command(event, forge=forge, rollouts=rollouts, claims=claims,
                   settings=CommandSettings(bot_name=BOT))
    assert forge.acknowledged() == [COMMENT]
    assert len(rollouts.dispatched) == len(case.dispatched) == 1
