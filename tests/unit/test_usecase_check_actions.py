"""The check run button use case (`handlers.check_actions.on_check_action`) with in-memory ports.

Each row is a click: what the payload says (repository, run id, identifier, sender), what the
API holds for the run, what Coalmine recorded for it in Redis, the rollout's state and who may
steer; then the replies and the engine events it caused. A signed payload can name any run and
any identifier, so every row where payload, API and record disagree must change nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from bot.events import CheckRunAction
from bot.forge.base import CheckRunFacts, NotFound, Permission
from bot.refs import RepoRef
from bot.report.check_runs import CheckRunTarget
from bot.rollout import model as m
from handlers.check_actions import on_check_action
from handlers.commands import CommandSettings
from tests.fakes import FakeForge

APP_ID, OTHER_APP = 4242, 15368
RUN, PR, SHA = 9001, 7, "a" * 40
REPO = RepoRef("github", "org/app", "https://github.example/org/app.git", repo_id=11)
OTHER_REPO = RepoRef("github", "org/other", "https://github.example/org/other.git", repo_id=12)
KEY = "coalmine:rollout:github:org/app:web"
RECORDED = CheckRunTarget(REPO.full_name, 11, PR, SHA, "web", KEY)
DENIED = "your command was not run"


@dataclass
class ClickForge(FakeForge):
    """FakeForge with check runs: `runs` is what the API answers for a run id in a repo."""

    app_id: int | None = APP_ID
    runs: dict[tuple[str, int], CheckRunFacts] = field(default_factory=dict)

    def check_runs_app(self) -> int | None:
        return self.app_id

    def check_run_facts(self, repo: RepoRef, run_id: int) -> CheckRunFacts:
        self.reads.append("check_run_facts")
        found = self.runs.get((repo.full_name, run_id))
        if found is None:
            raise NotFound(f"no check run {run_id} in {repo.full_name}")
        return found


@dataclass
class Clicks:
    """`ClickRollouts` in memory: recorded targets, rollouts (revision, finished), events fed."""

    targets: dict[int, CheckRunTarget] = field(default_factory=dict)
    rollouts: dict[str, tuple[str, bool]] = field(default_factory=dict)
    fed: list[tuple[str, m.Event, int | None]] = field(default_factory=list)

    def target(self, run_id: int) -> CheckRunTarget | None:
        return self.targets.get(run_id)

    def current(self, key: str) -> tuple[str, bool] | None:
        return self.rollouts.get(key)

    def dispatch(self, key: str, event: m.Event, *, pr: int | None = None) -> object:
        self.fed.append((key, event, pr))
        return None


@dataclass(frozen=True)
class Case:
    identifier: str = "promote"
    sender: str = "alice"
    payload_repo: RepoRef = REPO
    run_app: int | None = APP_ID  # who created the run, per the API
    run_sha: str = SHA
    api_has_run: bool = True
    recorded: CheckRunTarget | None = RECORDED
    rollout: tuple[str, bool] | None = (SHA, False)  # (revision, finished)
    app_mode: bool = True
    permissions: dict[str, Permission] = field(
        default_factory=lambda: {"alice": "write", "reader": "read"})
    replies: tuple[str, ...] = ()
    fed: tuple[tuple[str, m.Event, int | None], ...] = ()


CASES = {
    "a write user's Promote promotes, attributed to them": Case(
        fed=((KEY, m.Promote("alice"), PR),)),
    "Promote fully promotes fully": Case(
        identifier="promote-full", fed=((KEY, m.PromoteFull("alice"), PR),)),
    "Abort aborts, with the comment command's reason": Case(
        identifier="abort", fed=((KEY, m.Abort("alice", "aborted by @alice"), PR),)),
    "a read-only user is denied on the PR as for a comment command": Case(
        sender="reader",
        replies=((f"@reader commands need write permission on this repository (you have "
                  f"read); {DENIED}."),)),
    "an unknown user is denied": Case(sender="mallory", replies=("@mallory ",)),
    "a run id the API does not know changes nothing": Case(api_has_run=False),
    "a run id Coalmine never recorded changes nothing": Case(recorded=None),
    "another App's run (same id recorded) changes nothing": Case(run_app=OTHER_APP),
    "a run the API shows without an app changes nothing": Case(run_app=None),
    "a payload naming another repository changes nothing": Case(payload_repo=OTHER_REPO),
    "a run recorded for another repository changes nothing": Case(
        recorded=CheckRunTarget(OTHER_REPO.full_name, 12, PR, SHA, "web",
                                "coalmine:rollout:github:org/other:web")),
    "a run now on another commit than recorded changes nothing": Case(run_sha="b" * 40),
    "an identifier that is not a button changes nothing": Case(identifier="retry"),
    "a finished rollout is not steered; the clicker is told": Case(
        rollout=(SHA, True), replies=("is no longer running",)),
    "a rollout of a newer commit is not steered": Case(
        rollout=("c" * 40, False), replies=("is no longer running",)),
    "no rollout left is not steered": Case(rollout=None, replies=("is no longer running",)),
    "without App mode nothing is read or changed": Case(app_mode=False),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_check_action(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    forge = ClickForge(permissions=dict(case.permissions),
                       app_id=APP_ID if case.app_mode else None)
    if case.api_has_run:
        # The API scopes a run to its repository: it is found only where it really is.
        forge.runs[(REPO.full_name, RUN)] = CheckRunFacts(RUN, case.run_app, case.run_sha,
                                                          "coalmine/web", "in_progress", None)
    clicks = Clicks(targets={RUN: case.recorded} if case.recorded else {},
                    rollouts={KEY: case.rollout} if case.rollout else {})
    event = CheckRunAction(case.payload_repo, RUN, case.identifier, case.sender, None,
                           delivery="d-1")
    with caplog.at_level(logging.WARNING):
        on_check_action(event, forge=forge, rollouts=clicks,
                        settings=CommandSettings(bot_name=None))
    assert clicks.fed == list(case.fed)
    replies = forge.replies()
    assert len(replies) == len(case.replies), replies
    for reply, fragment in zip(replies, case.replies, strict=True):
        assert fragment in reply
    if not case.fed and not case.replies:
        assert "delivery d-1" in caplog.text  # every refusal is logged with its delivery
    if not case.app_mode:
        assert forge.reads == []
    assert all(call[1] == PR for call in forge.calls)  # replies go to the recorded PR


def test_a_denied_click_reads_the_permission_through_the_api_for_the_sender() -> None:
    forge = ClickForge(permissions={"alice": "write"})
    forge.runs[(REPO.full_name, RUN)] = CheckRunFacts(RUN, APP_ID, SHA, "coalmine/web",
                                                      "in_progress", None)
    clicks = Clicks(targets={RUN: RECORDED}, rollouts={KEY: (SHA, False)})
    on_check_action(CheckRunAction(REPO, RUN, "abort", "reader", 5), forge=forge,
                    rollouts=clicks, settings=CommandSettings(bot_name=None))
    assert forge.reads == ["check_run_facts", "permission"] and clicks.fed == []
    reply = f"@reader commands need write permission on this repository (you have none); {DENIED}."
    assert forge.calls == [("comment", PR, reply)]
