"""A forge in memory: `bot.forge.base.Forge` (and GitLab's `AccessLevels`) over dicts.

Reads answer from what the test put in and are named in `reads`; writes are recorded in
`calls` as tuples whose first item is the method name, in order, and change nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.forge.base import (
    CommentFacts,
    NotFound,
    Permission,
    PullRequest,
    PullRequestFacts,
    RepoFacts,
    StatusState,
)
from bot.refs import RepoRef


@dataclass
class FakeForge:
    name: str = "github"
    repo: RepoFacts | None = None  # what repository_facts answers; None: NotFound
    pulls: dict[int, PullRequestFacts] = field(default_factory=dict)
    comments: dict[int, CommentFacts] = field(default_factory=dict)  # by comment id
    permissions: dict[str, Permission] = field(default_factory=dict)  # absent: "none"
    levels: dict[str, int] = field(default_factory=dict)  # GitLab access levels; absent: 0
    pulls_by_head: dict[str, PullRequest] = field(default_factory=dict)  # find_pull_request
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)

    def replies(self) -> list[str]:
        """Bodies of the comments posted, in order."""
        return [call[2] for call in self.calls if call[0] == "comment"]

    def acknowledged(self) -> list[int]:
        return [call[2] for call in self.calls if call[0] == "acknowledge"]

    # -- reads

    def permission(self, repo: RepoRef, username: str, user_id: int | None = None) -> Permission:
        self.reads.append("permission")
        return self.permissions.get(username, "none")

    def access_level(self, repo: RepoRef, username: str, user_id: int | None = None) -> int:
        self.reads.append("access_level")
        return self.levels.get(username, 0)

    def find_pull_request(self, repo: RepoRef, head: str) -> PullRequest | None:
        return self.pulls_by_head.get(head)

    def repository_facts(self, repo: RepoRef) -> RepoFacts:
        self.reads.append("repository_facts")
        if self.repo is None:
            raise NotFound(f"no repository {repo.full_name}")
        return self.repo

    def pull_request_facts(self, repo: RepoRef, number: int) -> PullRequestFacts:
        self.reads.append("pull_request_facts")
        if number not in self.pulls:
            raise NotFound(f"no pull request #{number}")
        return self.pulls[number]

    def comment_facts(self, repo: RepoRef, number: int, comment_id: int) -> CommentFacts:
        """The stored comment wherever it is: the use case must check the PR itself."""
        self.reads.append("comment_facts")
        if comment_id not in self.comments:
            raise NotFound(f"no comment {comment_id}")
        return self.comments[comment_id]

    def authenticated_clone_url(self, repo: RepoRef) -> str:
        return repo.clone_url.replace("https://", "https://x-access-token:secret@")

    def secrets(self) -> list[str]:
        return ["secret"]

    # -- writes

    def set_status(self, repo: RepoRef, sha: str, context: str, state: StatusState,
                   description: str, target_url: str | None = None) -> None:
        self.calls.append(("set_status", sha, context, state, description))

    def upsert_comment(self, repo: RepoRef, number: int, marker: str, body: str,
                       known_id: int | None = None) -> int:
        self.calls.append(("upsert_comment", number, body))
        return known_id or 1

    def comment(self, repo: RepoRef, number: int, body: str) -> int:
        self.calls.append(("comment", number, body))
        return len(self.calls)

    def acknowledge(self, repo: RepoRef, number: int, comment_id: int) -> None:
        self.calls.append(("acknowledge", number, comment_id))

    def open_pull_request(self, repo: RepoRef, head: str, base: str, title: str, body: str,
                          labels: list[str]) -> PullRequest:
        self.calls.append(("open_pull_request", head, base, title, body, tuple(labels)))
        return PullRequest(len(self.calls), f"https://forge.example/pr/{len(self.calls)}",
                           head, base, title, "open")
