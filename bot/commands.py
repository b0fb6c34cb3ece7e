"""Parsing `/promote`-style commands out of PR comments.

Only a command at the start of a line counts, and never inside a fenced or indented code block or
a quote: people paste earlier comments and logs into reviews, and a quoted `/abort` must not abort.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAMES = ("promote", "abort", "retry", "pause", "resume", "status", "help", "deploy")
TAKES_APP = {"promote", "abort", "retry", "pause", "resume"}
_COMMAND = re.compile(r"^/(?P<name>[a-z]+)(?P<rest>(?:[ \t]+\S+)*)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True)
class Command:
    name: str
    app: str | None = None
    full: bool = False

    def __str__(self) -> str:
        parts = ["/" + self.name] + (["--full"] if self.full else []) + ([self.app] if self.app else [])
        return " ".join(parts)


@dataclass(frozen=True)
class CommandError:
    line: str
    reason: str


def parse(body: str) -> list[Command | CommandError]:
    """Commands in `body`, in order; malformed known commands become CommandError."""
    found: list[Command | CommandError] = []
    fence: str | None = None
    for raw in body.splitlines():
        line = raw.rstrip()
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        if raw.startswith(("    ", "\t")) or line.lstrip().startswith(">"):
            continue
        match = _COMMAND.match(line)
        if not match or match.group("name") not in NAMES:
            continue
        found.append(_build(match.group("name"), match.group("rest").split(), line))
    return found


def _build(name: str, args: list[str], line: str) -> Command | CommandError:
    full = False
    if name == "promote" and "--full" in args:
        full = True
        args = [a for a in args if a != "--full"]
    flags = [a for a in args if a.startswith("-")]
    if flags:
        return CommandError(line, f"unknown option {flags[0]!r}")
    if name not in TAKES_APP:
        if args:
            return CommandError(line, f"/{name} takes no arguments")
        return Command(name)
    if len(args) > 1:
        return CommandError(line, f"/{name} takes at most one app name")
    return Command(name, args[0] if args else None, full)


def mentions_command(body: str) -> bool:
    """Cheap check for the webhook path: is there anything worth a job?"""
    return bool(parse(body))
