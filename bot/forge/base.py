"""The narrow interface Coalmine needs from a code forge.

Everything above the adapters talks to this protocol only, so GitHub and GitLab stay
interchangeable and the handlers never learn which one they drive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

StatusState = Literal["pending", "success", "failure", "error"]
Permission = Literal["admin", "write", "read", "none"]


@dataclass(frozen=True)
class RepoRef:
    """Identifies a repository on one forge; built by the event parsers."""

    forge: Literal["github", "gitlab"]
    full_name: str  # "owner/name" on GitHub, "group/sub/project" on GitLab
    clone_url: str  # https URL without credentials
    default_branch: str = "main"
    project_id: int | None = None  # GitLab numeric project id
    installation_id: int | None = None  # GitHub App installation id, when sent


@dataclass(frozen=True)
class PullRequest:
    number: int  # GitHub PR number / GitLab MR iid
    url: str
    head: str
    base: str
    title: str
    state: str  # "open", "closed", "merged"


class ForgeError(Exception):
    """A forge call failed after the adapter's own retries; the message holds no secret."""


class Forge(Protocol):
    """What handlers may ask of a forge. Every method is safe to call twice."""

    name: str

    def set_status(
        self,
        repo: RepoRef,
        sha: str,
        context: str,
        state: StatusState,
        description: str,
        target_url: str | None = None,
    ) -> None:
        """Set (not append) the commit status `context` on `sha`; description is cut to 140."""

    def upsert_comment(self, repo: RepoRef, number: int, marker: str, body: str) -> int:
        """Edit the bot's own PR comment holding the hidden `marker`, or create it; returns its id.

        `body` must already contain `marker`; adapters truncate over-long bodies keeping the tail
        (see `truncate_keeping_tail`). Comments by anyone else are never matched, even when they
        quote the marker.
        """

    def comment(self, repo: RepoRef, number: int, body: str) -> int:
        """Post a new comment (replies to commands, conflict notes); returns its id."""

    def permission(self, repo: RepoRef, username: str, user_id: int | None = None) -> Permission:
        """The user's effective permission on the repository, normalised to four levels.

        Unknown users and non-members are "none". `user_id` (GitLab) saves a user lookup.
        """

    def acknowledge(self, repo: RepoRef, number: int, comment_id: int) -> None:
        """Mark a command comment as accepted (GitHub reaction, GitLab award emoji)."""

    def find_pull_request(self, repo: RepoRef, head: str) -> PullRequest | None:
        """An open or closed PR whose source branch is `head`, newest first, or None."""

    def open_pull_request(
        self, repo: RepoRef, head: str, base: str, title: str, body: str, labels: list[str]
    ) -> PullRequest:
        """Open a PR/MR from `head` into `base` with `labels` (labels created if missing)."""

    def authenticated_clone_url(self, repo: RepoRef) -> str:
        """Clone URL carrying the bot's credentials. Never log it."""

    def secrets(self) -> list[str]:
        """Every credential string this adapter holds, for redaction of logs and errors."""


TRUNCATION_NOTE = (
    "> **Note:** the start of this comment was removed to fit the forge's limit of {limit}"
    " characters.\n\n"
)


def truncate_keeping_tail(body: str, limit: int, marker: str = "") -> str:
    """Fit `body` into a forge's comment-size limit by dropping its start.

    The end of a Coalmine comment holds the newest step and any error, which is what readers
    need (Atlantis keeps the tail for the same reason). The hidden `marker` is put back on top so
    the comment is still found and edited next time; the cut moves to a line start when one is
    near, so Markdown blocks are not entered mid-line.
    """
    if len(body) <= limit:
        return body
    head = (f"{marker}\n" if marker else "") + TRUNCATION_NOTE.format(limit=limit)
    room = limit - len(head)
    tail = body[len(body) - room :]
    newline = tail.find("\n")
    if 0 <= newline < room // 2:
        tail = tail[newline + 1 :]
    return head + tail
