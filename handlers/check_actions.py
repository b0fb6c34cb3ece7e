"""A click on a check run's Promote, Promote fully or Abort button (GitHub App mode).

GitHub sends the click as a `check_run` webhook with action `requested_action`. The payload is
believed for nothing but the check run's id and the button's identifier:

- the run is read by id through the API, in the repository the delivery names: it must exist
  there, on the commit Coalmine recorded, and have been created by this App;
- Redis maps the run's id (recorded when Coalmine created the run) to the repository, PR, commit
  and rollout it steers; a run Coalmine never created, or one recorded for another repository,
  changes nothing;
- the identifier must be one of the three buttons;
- the clicker's permission is read through the API with the same minimum as a PR comment
  command (`handlers.commands.permitted`), and a denial gets the same reply on the PR.

Then the click feeds the engine the same event the comment command feeds
(`handlers.commands.event_for`), attributed to the clicker, through the same
`handlers.rollout.dispatch(key, event, pr=...)`, so history and the PR record it the same way.

The clicker (`sender`) is the one thing no API confirms: GitHub has no endpoint that reads a
requested action back. It is believed only in App mode, where only the App's own webhook
(whose secret the operator holds) receives `requested_action` events; with a token set-up the
edge refuses these events, and the job refuses them again (README: threat model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, cast

from bot import services
from bot.commands import Command
from bot.events import CheckRunAction
from bot.forge.base import CheckRunFacts, NotFound, Permission, check_runs_of
from bot.logs import job_context
from bot.refs import RepoRef
from bot.report import check_runs
from bot.report.check_runs import CheckRunTarget
from bot.report.markdown import code
from bot.rollout import engine
from bot.rollout import model as m
from bot.rollout.store import RolloutStore
from handlers import rollout
from handlers.commands import CommandSettings, denial, event_for, permitted

log = logging.getLogger(__name__)

# Button identifier → the PR command it stands for (bot.report.check_runs.ACTIONS).
COMMAND_OF: dict[str, Command] = {
    check_runs.PROMOTE: Command("promote"),
    check_runs.PROMOTE_FULL: Command("promote", full=True),
    check_runs.ABORT: Command("abort"),
}


# --------------------------------------------------------------------------- ports


class ClickForge(Protocol):
    """What a click needs of the forge (GitHub as an App)."""

    def check_runs_app(self) -> int | None:
        """This App's id; None when check runs are not written (token mode)."""

    def check_run_facts(self, repo: RepoRef, run_id: int) -> CheckRunFacts:
        """The run as the API holds it in `repo`; NotFound when it is not there."""

    def permission(self, repo: RepoRef, username: str, user_id: int | None = None) -> Permission:
        """The user's permission on the repository, normalised to four levels."""

    def comment(self, repo: RepoRef, number: int, body: str) -> int:
        """Post a reply on the PR."""


class ClickRollouts(Protocol):
    """The check runs Coalmine recorded and the rollouts they steer."""

    def target(self, run_id: int) -> CheckRunTarget | None:
        """What Coalmine recorded for run `run_id` when it created it; None if it did not."""

    def current(self, key: str) -> tuple[str, bool] | None:
        """(revision, finished) of the stored rollout `key`; None when there is none."""

    def dispatch(self, key: str, event: m.Event, *, pr: int | None = None) -> object:
        """Feed `event` to the rollout under its lock (acts only while it is still `pr`'s)."""


# --------------------------------------------------------------------------- RQ entry point


@job_context(lambda event: {"delivery": event.delivery, "forge": event.repo.forge,
                              "repo": event.repo.full_name})
def run(event: CheckRunAction) -> None:
    """RQ entry point: the process's adapters, as ports, to `on_check_action`."""
    svc = services.current()
    forge = svc.forge(event.repo)
    settings = CommandSettings(bot_name=None,
                               github_min_permission=svc.settings.github_min_permission,
                               gitlab_min_access=svc.settings.gitlab_min_access)
    if check_runs_of(forge) is None:
        _refuse(event, "Coalmine does not run as a GitHub App here, so it has no check runs")
        return
    on_check_action(event, forge=cast(ClickForge, forge), rollouts=StoredClicks(svc),
                    settings=settings)


@dataclass(frozen=True)
class StoredClicks:
    """`ClickRollouts` over Redis (the recorded targets, the rollout store) and the engine."""

    svc: services.Services

    def target(self, run_id: int) -> CheckRunTarget | None:
        return check_runs.load_target(self.svc.redis, "github", run_id)

    def current(self, key: str) -> tuple[str, bool] | None:
        record = RolloutStore(self.svc.redis).load(key)
        if record is None:
            return None
        return record.state.revision, engine.is_finished(record.state)

    def dispatch(self, key: str, event: m.Event, *, pr: int | None = None) -> object:
        return rollout.dispatch(key, event, pr=pr)


# --------------------------------------------------------------------------- the use case


def on_check_action(event: CheckRunAction, *, forge: ClickForge, rollouts: ClickRollouts,
                    settings: CommandSettings) -> None:
    """Act on the click if the API confirms the run is this App's, Redis maps it to a rollout
    of this repository, and the clicker may steer it; otherwise change nothing."""
    app_id = forge.check_runs_app()
    if app_id is None:
        _refuse(event, "Coalmine does not run as a GitHub App here, so it has no check runs")
        return
    command = COMMAND_OF.get(event.identifier)
    if command is None:
        _refuse(event, f"{event.identifier!r} is not one of Coalmine's buttons")
        return
    target = _confirmed_target(event, forge, rollouts, app_id)
    if target is None:
        return
    allowed, why = permitted(forge, event.repo, event.sender, event.sender_id, settings)
    if not allowed:
        forge.comment(event.repo, target.number, denial(event.sender, why))
        return
    current = rollouts.current(target.rollout_key)
    if current is None or current[0] != target.sha or current[1]:
        forge.comment(event.repo, target.number,
                      f"@{event.sender} the rollout of {code(target.app)} at "
                      f"{code(target.sha[:7])} is no longer running, so {code(str(command))} "
                      "from its check run changed nothing.")
        return
    rollouts.dispatch(target.rollout_key, event_for(command, event.sender), pr=target.number)


def _confirmed_target(event: CheckRunAction, forge: ClickForge, rollouts: ClickRollouts,
                      app_id: int) -> CheckRunTarget | None:
    """The recorded target of the clicked run once the API and Redis agree it is this App's
    run in this repository; None (logged) otherwise."""
    try:
        facts = forge.check_run_facts(event.repo, event.check_run_id)
    except NotFound as exc:
        _refuse(event, f"the forge does not confirm the check run: {exc}")
        return None
    if facts.id != event.check_run_id or facts.app_id != app_id:
        _refuse(event, f"check run {facts.id} was created by app {facts.app_id}, not by this "
                       f"App ({app_id})")
        return None
    target = rollouts.target(event.check_run_id)
    if target is None:
        _refuse(event, "Coalmine recorded no such check run")
        return None
    # By name: the API read above was scoped to this name, and the payload's repository id is
    # as unconfirmed as the rest of it.
    if target.repo.casefold() != event.repo.full_name.casefold():
        _refuse(event, f"the check run was recorded for {target.repo}")
        return None
    if facts.head_sha != target.sha:
        _refuse(event, f"the check run is on {facts.head_sha[:12]}, recorded on "
                       f"{target.sha[:12]}")
        return None
    return target


def _refuse(event: CheckRunAction, why: str) -> None:
    log.warning("check run action %r on run %s of %s by %s ignored (delivery %s): %s",
                event.identifier, event.check_run_id, event.repo.full_name, event.sender,
                event.delivery or "-", why)
