"""PR comment commands: `/promote`, `/abort`, `/retry`, `/pause`, `/resume`, `/status`, `/help`.

The payload only says which comment to read: the job reads it by id through the forge API and
acts on the API's author and body, because one webhook secret signs every hook a maintainer set
up, so a signed payload may name anyone as the author. A comment that is missing, on another PR,
or holds no command changes nothing and is logged with the delivery id.

The commenter's permission is checked through the forge API when the command runs (not when the
webhook arrives), because a permission can change between the two and the webhook path must stay
fast. GitLab roles are compared exactly against the configured minimum. A denied command gets a
reply saying why and changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import cast

from bot import services
from bot.commands import Command, CommandError, parse
from bot.events import PullRequestComment
from bot.forge.base import AccessLevels, Forge, NotFound, gitlab_role
from bot.report.markdown import code, escape
from bot.rollout import engine
from bot.rollout import model as m
from bot.rollout.store import RolloutStore
from handlers import rollout

log = logging.getLogger(__name__)

HELP = """Coalmine commands (at the start of a line; the app name is needed when the PR deployed
several apps):

| command | what it does |
|---|---|
| `/promote [app]` | end the current pause or analysis step and go to the next step |
| `/promote --full [app]` | skip every remaining step and promote the canary now |
| `/abort [app]` | move all traffic back to stable, remove the canary, open a revert PR |
| `/retry [app]` | start an aborted rollout again from its first step |
| `/pause [app]` | hold the rollout at its current step |
| `/resume [app]` | release a `/pause` |
| `/status` | reply with the state of this PR's rollouts |
| `/help` | this text |"""

_RANK_GITHUB = {"none": 0, "read": 1, "write": 2, "admin": 3}


def run(event: PullRequestComment) -> None:
    """RQ entry point."""
    svc = services.current()
    forge = svc.forge(event.repo)
    # Skipping on the payload's word is safe (nothing happens); acting on it is not.
    if _is_bot(forge, event.author) or not parse(event.body):
        return
    trusted = verified(forge, event)
    if trusted is None or _is_bot(forge, trusted.author):
        return
    commands = parse(trusted.body)
    if not commands:
        _refuse(trusted, "the comment the forge holds has no command")
        return
    event = trusted
    allowed, why = _permitted(svc, forge, event)
    if not allowed:
        forge.comment(event.repo, event.number,
                      f"@{event.author} {why}; your command was not run.")
        return
    forge.acknowledge(event.repo, event.number, event.comment_id)
    # No lease here: unlike a merge, a command is not idempotent (/promote twice skips two
    # steps), so one lost with a killed worker is left for its author to repeat.
    for command in commands:
        if isinstance(command, CommandError):
            forge.comment(event.repo, event.number,
                          f"@{event.author} {code(command.line)}: {escape(command.reason)}. "
                          "Comment `/help` for the commands.")
            continue
        _execute(svc, forge, event, command)


def verified(forge: Forge, event: PullRequestComment) -> PullRequestComment | None:
    """The event with the author and body the forge API holds for its comment; None refuses it.

    The comment must be on the PR the event names: a real command typed on another PR (or
    another project's MR) must not be replayed against this one.
    """
    try:
        facts = forge.comment_facts(event.repo, event.number, event.comment_id)
    except NotFound as exc:
        _refuse(event, f"the forge does not confirm the comment: {exc}")
        return None
    if facts.number != event.number or facts.id != event.comment_id:
        _refuse(event, f"the forge says comment {facts.id} is on #{facts.number}")
        return None
    return dataclasses.replace(event, author=facts.author, author_id=facts.author_id,
                               body=facts.body)


def _refuse(event: PullRequestComment, why: str) -> None:
    log.warning("command on %s #%s (comment %s) ignored (delivery %s): %s",
                event.repo.full_name, event.number, event.comment_id, event.delivery or "-", why)


def _is_bot(forge: Forge, author: str) -> bool:
    own = getattr(forge, "bot_login", None) or getattr(forge, "bot_username", None)
    return bool(own) and author.lower() == str(own).lower()


def _permitted(svc: services.Services, forge: Forge, event: PullRequestComment) -> tuple[bool, str]:
    settings = svc.settings
    if event.repo.forge == "gitlab":
        return _permitted_gitlab(cast(AccessLevels, forge), event, settings.gitlab_min_access)
    level = forge.permission(event.repo, event.author, event.author_id)
    need = settings.github_min_permission
    ok = _RANK_GITHUB[level] >= _RANK_GITHUB[need]
    return ok, f"commands need {need} permission on this repository (you have {level})"


def _permitted_gitlab(forge: AccessLevels, event: PullRequestComment,
                      need: int) -> tuple[bool, str]:
    """GitLab's exact access level against the configured minimum (Owner admits only Owners)."""
    level = forge.access_level(event.repo, event.author, event.author_id)
    return level >= need, (f"commands need the {gitlab_role(need)} role or above on this "
                           f"project (you have {gitlab_role(level)})")


def _execute(svc: services.Services, forge: Forge, event: PullRequestComment,
             command: Command) -> None:
    repo, number = event.repo, event.number
    if command.name == "help":
        forge.comment(repo, number, HELP)
        return
    apps = rollout.rollouts_of_pr(svc, repo, number)
    if command.name == "status":
        forge.comment(repo, number, _status_text(svc, apps))
        return
    if not apps:
        forge.comment(repo, number, f"@{event.author} no canary rollout was started by this "
                      f"PR, so {code(str(command))} has nothing to act on.")
        return
    app = command.app
    if app is None:
        if len(apps) > 1:
            names = ", ".join(code(a) for a in sorted(apps))
            forge.comment(repo, number, f"@{event.author} this PR rolls out several apps; name "
                          f"one: {code('/' + command.name + ' <app>')} with one of {names}.")
            return
        app = next(iter(apps))
    if app not in apps:
        names = ", ".join(code(a) for a in sorted(apps))
        forge.comment(repo, number, f"@{event.author} no rollout of {code(app)} on this PR; "
                      f"valid apps: {names}.")
        return
    rollout.dispatch(apps[app], _event_for(command, event.author), pr=number)


def _event_for(command: Command, user: str) -> m.Event:
    if command.name == "promote":
        return m.PromoteFull(user) if command.full else m.Promote(user)
    return {"abort": m.Abort(user, f"aborted by @{user}"), "retry": m.Retry(user),
            "pause": m.Pause(user), "resume": m.Resume(user)}[command.name]


def _status_text(svc: services.Services, apps: dict[str, str]) -> str:
    if not apps:
        return "No canary rollout was started by this PR."
    store = RolloutStore(svc.redis)
    lines = ["| app | state |", "|---|---|"]
    for app, key in sorted(apps.items()):
        record = store.load(key)
        if record is None:
            continue
        state, description = engine.status(record.state)
        lines.append(f"| {code(app)} | {escape(state)}: {escape(description)} |")
    return "\n".join(lines)
