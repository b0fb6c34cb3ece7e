"""The narrow interface Coalmine needs from a code forge.

Everything above the adapters talks to this protocol only, so GitHub and GitLab stay
interchangeable and the handlers never learn which one they drive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from bot.gate import CheckResult  # a value of the core (the CI gate's), as RepoRef is
from bot.refs import RepoRef  # a value type of the core; adapters may import it from here

StatusState = Literal["pending", "success", "failure", "error"]
Permission = Literal["admin", "write", "read", "none"]


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


class NotFound(ForgeError):
    """The forge answered 404, or the object exists but not where the caller said it is.

    A comment id that belongs to another PR, or a GitLab system note, is "not found" as the
    caller's comment: the payload that named it is not to be believed.
    """


class Forbidden(ForgeError):
    """The forge answered 403 for a reason other than throttling: the credential may not do
    this here (an App installed without a permission), so retrying will not help."""


@dataclass(frozen=True)
class RepoFacts:
    """A repository as the forge API describes it (never as a webhook payload claims)."""

    id: int  # stable across renames and transfers
    full_name: str
    default_branch: str


@dataclass(frozen=True)
class PullRequestFacts:
    """A PR/MR as the forge API describes it."""

    number: int
    state: str  # "open" | "closed" | "merged"
    merged: bool
    merge_sha: str | None  # the commit the merge put on `base`; None unless merged
    base: str
    head: str
    title: str
    url: str
    head_repo_id: int | None = None  # where the source branch lives; differs for forks
    author: str = ""
    head_sha: str | None = None  # the source branch's newest commit, as the forge sees it


@dataclass(frozen=True)
class CommentFacts:
    """A PR/MR comment as the forge API describes it: who really wrote what, and where."""

    id: int
    author: str
    author_id: int | None
    body: str
    number: int  # the PR/MR it is on


class CommitChecks(Protocol):
    """A forge that reports the CI results of a commit (both adapters are one)."""

    def commit_checks(self, repo: RepoRef, sha: str) -> list[CheckResult]:
        """Every CI result on `sha`, the latest of each name. GitHub: the combined commit
        status and the check runs; GitLab: the commit statuses (CI jobs included) and its
        newest pipeline."""


# GitLab's access levels by name; `permissions.gitlab` in the server config names one of these.
GITLAB_ROLES: dict[int, str] = {
    0: "no access",
    5: "Minimal Access",
    10: "Guest",
    15: "Planner",
    20: "Reporter",
    30: "Developer",
    40: "Maintainer",
    50: "Owner",
}


def gitlab_role(level: int) -> str:
    """The name GitLab shows for `level` (the highest named level not above it)."""
    return GITLAB_ROLES[max(known for known in GITLAB_ROLES if known <= max(level, 0))]


class AccessLevels(Protocol):
    """A forge with numeric roles (GitLab): the exact level, so limits compare exactly."""

    def access_level(self, repo: RepoRef, username: str, user_id: int | None = None) -> int:
        """The user's effective access level on the project (inherited included); 0 if none."""


# GitHub's limits on a check run's requested actions (REST API "Create a check run").
CHECK_ACTIONS_MAX = 3
CHECK_ACTION_LABEL_MAX = 20
CHECK_ACTION_DESCRIPTION_MAX = 40
CHECK_ACTION_IDENTIFIER_MAX = 20
CHECK_SUMMARY_MAX = 65535  # output.summary
CHECK_TITLE_MAX = 255  # Coalmine's own cap: the title is one line above the summary

CheckStatus = Literal["in_progress", "completed"]
CheckConclusion = Literal["success", "failure", "neutral", "cancelled"]


@dataclass(frozen=True)
class CheckAction:
    """A button on a check run; a click comes back as `requested_action` naming `identifier`."""

    label: str
    description: str
    identifier: str

    def __post_init__(self) -> None:
        for field_name, limit in (("label", CHECK_ACTION_LABEL_MAX),
                                  ("description", CHECK_ACTION_DESCRIPTION_MAX),
                                  ("identifier", CHECK_ACTION_IDENTIFIER_MAX)):
            value = getattr(self, field_name)
            if not value or len(value) > limit:
                raise ValueError(f"check run action {field_name} {value!r} must be 1 to {limit}"
                                 " characters (GitHub's limit)")


@dataclass(frozen=True)
class CheckRunSpec:
    """What a check run should show: the whole of it, so an update is the same call as a
    create. `conclusion` is set exactly when `status` is completed."""

    name: str
    status: CheckStatus
    title: str
    summary: str  # Markdown; adapters cut it to CHECK_SUMMARY_MAX keeping the tail
    conclusion: CheckConclusion | None = None
    actions: tuple[CheckAction, ...] = ()
    details_url: str | None = None

    def __post_init__(self) -> None:
        if (self.status == "completed") != (self.conclusion is not None):
            raise ValueError("a check run has a conclusion exactly when it is completed")
        if len(self.actions) > CHECK_ACTIONS_MAX:
            raise ValueError(f"a check run offers at most {CHECK_ACTIONS_MAX} actions")


@dataclass(frozen=True)
class CheckRunFacts:
    """A check run as the forge API describes it (never as a webhook payload claims)."""

    id: int
    app_id: int | None  # the App that created it
    head_sha: str
    name: str
    status: str
    conclusion: str | None


@runtime_checkable
class CheckRuns(Protocol):
    """A forge that shows a deploy as a check run with buttons (GitHub, as an App only: check
    runs are written with an installation token). Use `check_runs_of` to reach it."""

    def check_runs_app(self) -> int | None:
        """The id of the App whose check runs this adapter writes; None when it writes none
        (token mode), in which case the other methods must not be called."""

    def create_check_run(self, repo: RepoRef, sha: str, run: CheckRunSpec) -> int:
        """Create a check run on `sha`; returns its id."""

    def update_check_run(self, repo: RepoRef, run_id: int, run: CheckRunSpec) -> None:
        """Make check run `run_id` show `run` (actions replaced, an empty tuple removes them);
        NotFound when it does not exist in `repo`."""

    def check_run_facts(self, repo: RepoRef, run_id: int) -> CheckRunFacts:
        """Check run `run_id` of `repo` as the API holds it; NotFound when it is not there."""


def check_runs_of(forge: object) -> CheckRuns | None:
    """The forge's check-run capability when it can write check runs now, else None (GitLab,
    GitHub with a token: they keep commit statuses only)."""
    if isinstance(forge, CheckRuns) and forge.check_runs_app() is not None:
        return forge
    return None


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

    def upsert_comment(
        self, repo: RepoRef, number: int, marker: str, body: str, known_id: int | None = None
    ) -> int:
        """Edit the bot's own PR comment holding the hidden `marker`, or create it; returns its id.

        `body` must already contain `marker`; adapters truncate over-long bodies keeping the tail
        (see `truncate_keeping_tail`). Comments by anyone else are never matched, even when they
        quote the marker.

        `known_id` saves listing the PR's comments: it is edited directly, in one call. Pass only
        an id this method returned for the same `repo`, `number` and `marker` (never one from a
        webhook payload, which could name anyone's comment). When that edit answers 404 (the
        comment was deleted), or the answer shows a comment that is not the bot's on `number`,
        the comment is found by its marker or created, as without `known_id`, and the id
        returned may differ.
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
        """The newest PR from the bot's own branch `head` in `repo` itself, or None.

        Only a PR whose source branch lives in `repo` (not a fork) and that the bot opened
        counts: anyone can open a PR from a branch of that name, and it must not be taken for
        the bot's (the revert PR is looked up by its branch before it is created).
        """

    def repository_facts(self, repo: RepoRef) -> RepoFacts:
        """The repository's id, current name and default branch; NotFound on 404."""

    def pull_request_facts(self, repo: RepoRef, number: int) -> PullRequestFacts:
        """Whether the PR is merged, by which commit, between which branches; NotFound on 404."""

    def comment_facts(self, repo: RepoRef, number: int, comment_id: int) -> CommentFacts:
        """The comment's real author and body; NotFound when it is missing, not on PR
        `number`, or not a person's comment (a GitLab system note)."""

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
