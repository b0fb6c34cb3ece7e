"""PR comment commands: `/promote`, `/abort`, `/retry`, `/pause`, `/resume`, `/status`, `/help`.

The payload only says which comment to read: the job reads it by id through the forge API and
acts on the API's author and body, because one webhook secret signs every hook a maintainer set
up, so a signed payload may name anyone as the author. A comment that is missing, on another PR,
or holds no command changes nothing and is logged with the delivery id.

The commenter's permission is checked through the forge API when the command runs (not when the
webhook arrives), because a permission can change between the two and the webhook path must stay
fast. GitLab roles are compared exactly against the configured minimum. A denied command gets a
reply saying why and changes nothing.

`on_command` is the use case: it receives the narrow ports below as arguments (declared here, as
a Prow plugin declares the client it needs), so tests drive it with in-memory fakes
(tests/unit/test_usecase_commands.py). `run` is the RQ entry point, enqueued by dotted path: the
only code here that reaches for the process's adapters (`services.current()`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from bot import keys, services
from bot.commands import Command, CommandError, parse
from bot.drift.report import drift_lines
from bot.events import PullRequestComment
from bot.forge.base import AccessLevels, CommentFacts, NotFound, Permission, gitlab_role
from bot.logs import job_context
from bot.refs import RepoRef
from bot.report.markdown import code, escape
from bot.rollout import engine
from bot.rollout import model as m
from bot.rollout.store import RolloutStore
from handlers import drift, gate, merged, rollout

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CommandSpec:
    """One PR command: how it is written, what it does (the `/help` line), and the engine event
    it stands for (None: answered here, not by the rollout)."""

    usage: str
    does: str
    event: Callable[[str], m.Event] | None = None


# Every command, in the order `/help` lists them; `bot.commands` parses the syntax.
COMMANDS: dict[str, CommandSpec] = {
    "promote": CommandSpec("/promote [app]",
                           "end the current pause or analysis step and go to the next step",
                           m.Promote),
    "promote --full": CommandSpec("/promote --full [app]",
                                  "skip every remaining step and promote the canary now",
                                  m.PromoteFull),
    "abort": CommandSpec("/abort [app]",
                         "move all traffic back to stable, remove the canary, open a revert PR",
                         lambda user: m.Abort(user, f"aborted by @{user}")),
    "retry": CommandSpec("/retry [app]", "start an aborted rollout again from its first step",
                         m.Retry),
    "pause": CommandSpec("/pause [app]", "hold the rollout at its current step", m.Pause),
    "resume": CommandSpec("/resume [app]", "release a `/pause`", m.Resume),
    "status": CommandSpec("/status", "reply with the state of this PR's rollouts, and check "
                                     "the cluster for drift from the last deployed commit"),
    "deploy": CommandSpec("/deploy", "deploy this PR's merge now without waiting for the CI "
                                     "gate (recorded in the comment: who and when)"),
    "help": CommandSpec("/help", "this text"),
}

HELP = "\n".join([
    "Coalmine commands (at the start of a line; the app name is needed when the PR deployed",
    "several apps):",
    "",
    "| command | what it does |",
    "|---|---|",
    *(f"| `{spec.usage}` | {spec.does} |" for spec in COMMANDS.values()),
])

_RANK_GITHUB = {"none": 0, "read": 1, "write": 2, "admin": 3}


# --------------------------------------------------------------------------- ports


class CommandForge(Protocol):
    """What a command needs of the forge (every `bot.forge.base.Forge` has it).

    On GitLab the forge must also be an `AccessLevels`, so roles compare exactly.
    """

    def comment_facts(self, repo: RepoRef, number: int, comment_id: int) -> CommentFacts:
        """The comment's real author, body and PR; NotFound when it is not a person's comment
        on PR `number`."""

    def permission(self, repo: RepoRef, username: str, user_id: int | None = None) -> Permission:
        """The user's permission on the repository, normalised to four levels."""

    def comment(self, repo: RepoRef, number: int, body: str) -> int:
        """Post a reply on the PR."""

    def acknowledge(self, repo: RepoRef, number: int, comment_id: int) -> None:
        """Mark the command comment as accepted."""


class RolloutPort(Protocol):
    """The rollouts a command can reach: by PR, fed one engine event, described for /status."""

    def rollouts_of_pr(self, repo: RepoRef, number: int) -> dict[str, str]:
        """app name → rollout key for the rollouts PR `number` started or holds a claim on."""

    def dispatch(self, key: str, event: m.Event, *, pr: int | None = None) -> object:
        """Feed `event` to the rollout under its lock; it acts only if the rollout is still
        `pr`'s (a newer merge may have taken it since the lookup)."""

    def status_of(self, key: str) -> tuple[str, str] | None:
        """(state, description) of the stored rollout, None when it is gone."""


class CommandClaims(Protocol):
    """Once per comment: a command is not idempotent (`/promote` twice skips two steps)."""

    def first_run(self, repo: RepoRef, comment_id: int) -> bool:
        """True the first time comment `comment_id`'s commands run, False ever after."""


class GatePort(Protocol):
    """The CI gate a `/deploy` overrides, and the drift check `/status` runs."""

    def override(self, repo: RepoRef, number: int, user: str) -> str:
        """Record `user`'s override of the PR's gated merge and deploy it; the reply."""

    def drift(self, repo: RepoRef) -> list[str]:
        """Check the repository's deployed apps for drift now; a line per app."""


@dataclass(frozen=True)
class CommandSettings:
    """The settings a command reads: who the bot is and who may steer a rollout."""

    bot_name: str | None  # the forge account Coalmine comments as; its comments are never run
    github_min_permission: str = "write"
    gitlab_min_access: int = 30  # exact GitLab access level (30 Developer … 50 Owner)


# --------------------------------------------------------------------------- RQ entry point


@job_context(lambda event: {"delivery": event.delivery, "forge": event.repo.forge,
                              "repo": event.repo.full_name, "pr": event.number})
def run(event: PullRequestComment) -> None:
    """RQ entry point: the process's adapters, as ports, to `on_command`."""
    svc = services.current()
    forge = svc.forge(event.repo)
    settings = CommandSettings(
        bot_name=svc.bot_name(event.repo),
        github_min_permission=svc.settings.github_min_permission,
        gitlab_min_access=svc.settings.gitlab_min_access,
    )
    on_command(event, forge=forge, rollouts=EngineRollouts(svc), settings=settings,
               gates=MergeGates(svc), claims=RedisClaims(svc))


@dataclass(frozen=True)
class RedisClaims:
    """`CommandClaims` in Redis, kept as long as a delivery id is (the webhook's own claim)."""

    svc: services.Services

    def first_run(self, repo: RepoRef, comment_id: int) -> bool:
        return bool(self.svc.redis.set(keys.command_claim(repo.forge, comment_id), "1",
                                       nx=True, ex=self.svc.settings.delivery_ttl_s))


@dataclass(frozen=True)
class EngineRollouts:
    """`RolloutPort` over the rollout use case and its store (the adapter `run` passes)."""

    svc: services.Services

    def rollouts_of_pr(self, repo: RepoRef, number: int) -> dict[str, str]:
        return rollout.rollouts_of_pr(self.svc, repo, number)

    def dispatch(self, key: str, event: m.Event, *, pr: int | None = None) -> object:
        return rollout.dispatch(key, event, pr=pr)

    def status_of(self, key: str) -> tuple[str, str] | None:
        record = RolloutStore(self.svc.redis).load(key)
        return None if record is None else engine.status(record.state)


@dataclass(frozen=True)
class MergeGates:
    """`GatePort` over handlers.gate and handlers.drift."""

    svc: services.Services

    def override(self, repo: RepoRef, number: int, user: str) -> str:
        reply, held = gate.override(self.svc, repo, number, user)
        if held is not None:
            self.svc.queue.enqueue(merged.run, held)
        return reply

    def drift(self, repo: RepoRef) -> list[str]:
        return [f"{code(a.app)}: {escape(line)}"
                for a, line in drift_lines(drift.check_repo(self.svc, repo))]


# --------------------------------------------------------------------------- the use case


def on_command(event: PullRequestComment, *, forge: CommandForge, rollouts: RolloutPort,
               settings: CommandSettings, claims: CommandClaims,
               gates: GatePort | None = None) -> None:
    """Run the commands of the comment the forge confirms, as its real author, if permitted."""
    # Skipping on the payload's word is safe (nothing happens); acting on it is not.
    if _is_bot(settings, event.author) or not parse(event.body):
        return
    trusted = verified(forge, event)
    if trusted is None or _is_bot(settings, trusted.author):
        return
    commands = parse(trusted.body)
    if not commands:
        _refuse(trusted, "the comment the forge holds has no command")
        return
    allowed, why = permitted(forge, trusted.repo, trusted.author, trusted.author_id, settings)
    if not allowed:
        forge.comment(trusted.repo, trusted.number, denial(trusted.author, why))
        return
    if not claims.first_run(trusted.repo, trusted.comment_id):
        _refuse(trusted, "its commands ran already (the same comment delivered again)")
        return
    forge.acknowledge(trusted.repo, trusted.number, trusted.comment_id)
    # No lease here: unlike a merge, a command is not idempotent (/promote twice skips two
    # steps), so one lost with a killed worker is left for its author to repeat.
    for command in commands:
        if isinstance(command, CommandError):
            forge.comment(trusted.repo, trusted.number,
                          f"@{trusted.author} {code(command.line)}: {escape(command.reason)}. "
                          "Comment `/help` for the commands.")
            continue
        _execute(forge, rollouts, trusted, command, gates)


def verified(forge: CommandForge, event: PullRequestComment) -> PullRequestComment | None:
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


def _is_bot(settings: CommandSettings, author: str) -> bool:
    own = settings.bot_name
    return bool(own) and author.lower() == str(own).lower()


class PermissionForge(Protocol):
    """What the permission check reads (a GitLab forge must also be an `AccessLevels`)."""

    def permission(self, repo: RepoRef, username: str, user_id: int | None = None) -> Permission:
        """The user's permission on the repository, normalised to four levels."""


def permitted(forge: PermissionForge, repo: RepoRef, user: str, user_id: int | None,
              settings: CommandSettings) -> tuple[bool, str]:
    """Whether `user` may steer rollouts of `repo` now, read through the forge API, and why
    not. Comment commands and check run buttons share it, so one minimum holds for both."""
    if repo.forge == "gitlab":
        return _permitted_gitlab(cast(AccessLevels, forge), repo, user, user_id,
                                 settings.gitlab_min_access)
    level = forge.permission(repo, user, user_id)
    need = settings.github_min_permission
    ok = _RANK_GITHUB[level] >= _RANK_GITHUB[need]
    return ok, f"commands need {need} permission on this repository (you have {level})"


def denial(user: str, why: str) -> str:
    """The PR reply to a command (or a button click) the user may not give."""
    return f"@{user} {why}; your command was not run."


def _permitted_gitlab(forge: AccessLevels, repo: RepoRef, user: str, user_id: int | None,
                      need: int) -> tuple[bool, str]:
    """GitLab's exact access level against the configured minimum (Owner admits only Owners)."""
    level = forge.access_level(repo, user, user_id)
    return level >= need, (f"commands need the {gitlab_role(need)} role or above on this "
                           f"project (you have {gitlab_role(level)})")


def _execute(forge: CommandForge, rollouts: RolloutPort, event: PullRequestComment,
             command: Command, gates: GatePort | None = None) -> None:
    repo, number = event.repo, event.number
    if command.name == "help":
        forge.comment(repo, number, HELP)
        return
    if command.name == "deploy":
        forge.comment(repo, number, gates.override(repo, number, event.author) if gates else
                      f"@{event.author} the CI gate is not available here.")
        return
    apps = rollouts.rollouts_of_pr(repo, number)
    if command.name == "status":
        text = _status_text(rollouts, apps)
        drifted = gates.drift(repo) if gates else []
        if drifted:
            text += "\n\n**Drift** (checked now against the last deployed commit):\n\n" + \
                "\n".join(f"- {line}" for line in drifted)
        forge.comment(repo, number, text)
        return
    if not apps:
        forge.comment(repo, number, f"@{event.author} no canary rollout was started by this "
                      f"PR, so {code(str(command))} has nothing to act on.")
        return
    app = _chosen_app(forge, event, command, apps)
    if app is not None:
        rollouts.dispatch(apps[app], event_for(command, event.author), pr=number)


def _chosen_app(forge: CommandForge, event: PullRequestComment, command: Command,
                apps: dict[str, str]) -> str | None:
    """The app the command names (or the PR's only one); None after replying why not."""
    names = ", ".join(code(a) for a in sorted(apps))
    if command.app is None and len(apps) > 1:
        forge.comment(event.repo, event.number, f"@{event.author} this PR rolls out several "
                      f"apps; name one: {code('/' + command.name + ' <app>')} with one of "
                      f"{names}.")
        return None
    app = command.app or next(iter(apps))
    if app not in apps:
        forge.comment(event.repo, event.number, f"@{event.author} no rollout of {code(app)} on "
                      f"this PR; valid apps: {names}.")
        return None
    return app


def event_for(command: Command, user: str) -> m.Event:
    """The engine event a rollout command stands for, attributed to `user` (see COMMANDS)."""
    spec = COMMANDS["promote --full" if command.name == "promote" and command.full
                    else command.name]
    assert spec.event is not None, f"/{command.name} is answered without the rollout"
    return spec.event(user)


def _status_text(rollouts: RolloutPort, apps: dict[str, str]) -> str:
    if not apps:
        return "No canary rollout was started by this PR."
    lines = ["| app | state |", "|---|---|"]
    for app, key in sorted(apps.items()):
        found = rollouts.status_of(key)
        if found is None:
            continue
        state, description = found
        lines.append(f"| {code(app)} | {escape(state)}: {escape(description)} |")
    return "\n".join(lines)
