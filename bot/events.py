"""Forge payloads normalised into the few typed events Coalmine acts on.

Nothing past these parsers reads a raw payload, so a forge's quirks stay here. Parsers never
raise on odd input: anything that is not exactly an event we act on becomes `Ignored` with a
reason, and a payload that claims to be one but lacks required fields becomes `Malformed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.refs import RepoRef


@dataclass(frozen=True)
class MergedPullRequest:
    repo: RepoRef
    number: int
    title: str
    url: str
    merge_sha: str
    base_branch: str
    head_branch: str
    author: str
    merged_by: str
    delivery: str = ""  # the forge's delivery id, set by the edge, for log lines


@dataclass(frozen=True)
class PullRequestUpdated:
    """A PR/MR opened, reopened or pushed to: what its merge would do is previewed."""

    repo: RepoRef
    number: int
    head_sha: str  # the payload's claim; the job compares it with the forge API's
    base_branch: str
    head_branch: str
    action: str  # the forge's word: opened, synchronize, reopened / open, update, reopen
    delivery: str = ""  # the forge's delivery id, set by the edge, for log lines


@dataclass(frozen=True)
class PullRequestComment:
    repo: RepoRef
    number: int
    comment_id: int
    body: str
    author: str
    author_id: int | None
    author_is_bot: bool
    delivery: str = ""  # the forge's delivery id, set by the edge, for log lines


@dataclass(frozen=True)
class CheckRunAction:
    """A click on a button of a check run (GitHub `check_run` / `requested_action`).

    Only `check_run_id` is used to find what to act on (through the API and Redis); the
    identifier is checked against the known three, and `sender` cannot be confirmed by any API
    (see handlers.check_actions)."""

    repo: RepoRef
    check_run_id: int
    identifier: str
    sender: str
    sender_id: int | None
    delivery: str = ""  # the forge's delivery id, set by the edge, for log lines


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Ignored:
    reason: str


@dataclass(frozen=True)
class Malformed:
    reason: str


Event = (MergedPullRequest | PullRequestUpdated | PullRequestComment | CheckRunAction | Ping
         | Ignored | Malformed)
GITHUB_PREVIEW_ACTIONS = ("opened", "synchronize", "reopened")
GITLAB_PREVIEW_ACTIONS = ("open", "update", "reopen")


class _Missing(Exception):
    pass


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data or data[key] is None:
            raise _Missing(".".join(path))
        data = data[key]
    return data


def _str(data: Any, *path: str) -> str:
    value = _get(data, *path)
    if not isinstance(value, str) or not value:
        raise _Missing(".".join(path))
    return value


def _int(data: Any, *path: str) -> int:
    value = _get(data, *path)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Missing(".".join(path))
    return value


def _opt(data: Any, *path: str) -> Any:
    try:
        return _get(data, *path)
    except _Missing:
        return None


def _opt_str(data: Any, *path: str, default: str = "") -> str:
    """An optional text field; a value of another type is treated as absent, so a forge quirk
    or a forged payload cannot put a list where handlers expect text (`body.splitlines()`)."""
    value = _opt(data, *path)
    return value if isinstance(value, str) and value else default


def _opt_int(data: Any, *path: str) -> int | None:
    value = _opt(data, *path)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- GitHub


def parse_github(event_name: str, payload: Any) -> Event:
    if not isinstance(payload, Mapping):
        return Malformed("the payload is not a JSON object")
    try:
        if event_name == "ping":
            return Ping()
        if event_name == "pull_request":
            return _github_pull_request(payload)
        if event_name == "issue_comment":
            return _github_comment(payload)
        if event_name == "check_run":
            return _github_check_run(payload)
    except _Missing as missing:
        return Malformed(f"{event_name} payload lacks {missing}")
    return Ignored(f"event {event_name!r} is not acted on")


def _github_repo(payload: Mapping[str, Any]) -> RepoRef:
    repo = _get(payload, "repository")
    return RepoRef(
        forge="github",
        full_name=_str(repo, "full_name"),
        clone_url=_str(repo, "clone_url"),
        default_branch=_opt_str(repo, "default_branch", default="main"),
        installation_id=_opt_int(payload, "installation", "id"),
        repo_id=_opt_int(repo, "id"),
    )


def _github_pull_request(payload: Mapping[str, Any]) -> Event:
    action = _opt(payload, "action")
    pr = _get(payload, "pull_request")
    if action in GITHUB_PREVIEW_ACTIONS:
        return PullRequestUpdated(
            repo=_github_repo(payload),
            number=_int(pr, "number"),
            head_sha=_str(pr, "head", "sha"),
            base_branch=_str(pr, "base", "ref"),
            head_branch=_opt_str(pr, "head", "ref"),
            action=str(action),
        )
    if action != "closed":
        return Ignored(f"pull_request action {action!r} is not acted on")
    if _opt(pr, "merged") is not True:
        return Ignored("pull request closed without merging")
    return MergedPullRequest(
        repo=_github_repo(payload),
        number=_int(pr, "number"),
        title=_opt_str(pr, "title"),
        url=_opt_str(pr, "html_url"),
        merge_sha=_str(pr, "merge_commit_sha"),
        base_branch=_str(pr, "base", "ref"),
        head_branch=_opt_str(pr, "head", "ref"),
        author=_opt_str(pr, "user", "login"),
        merged_by=_opt_str(pr, "merged_by", "login"),
    )


def _github_comment(payload: Mapping[str, Any]) -> Event:
    action = _opt(payload, "action")
    if action != "created":
        return Ignored(f"issue_comment action {action!r} never triggers commands")
    issue = _get(payload, "issue")
    if not isinstance(_opt(issue, "pull_request"), Mapping):
        return Ignored("comment on an issue, not a pull request")
    comment = _get(payload, "comment")
    user_type = _opt(comment, "user", "type")
    return PullRequestComment(
        repo=_github_repo(payload),
        number=_int(issue, "number"),
        comment_id=_int(comment, "id"),
        body=_opt_str(comment, "body"),
        author=_str(comment, "user", "login"),
        author_id=_opt_int(comment, "user", "id"),
        author_is_bot=user_type == "Bot",
    )


def _github_check_run(payload: Mapping[str, Any]) -> Event:
    action = _opt(payload, "action")
    if action != "requested_action":
        return Ignored(f"check_run action {action!r} is not acted on")
    return CheckRunAction(
        repo=_github_repo(payload),
        check_run_id=_int(payload, "check_run", "id"),
        identifier=_str(payload, "requested_action", "identifier"),
        sender=_str(payload, "sender", "login"),
        sender_id=_opt_int(payload, "sender", "id"),
    )


# --------------------------------------------------------------------------- GitLab


def parse_gitlab(event_name: str, payload: Any) -> Event:
    if not isinstance(payload, Mapping):
        return Malformed("the payload is not a JSON object")
    kind = payload.get("object_kind")
    try:
        if kind == "merge_request":
            return _gitlab_merge(payload)
        if kind == "note":
            return _gitlab_note(payload)
    except _Missing as missing:
        return Malformed(f"{event_name or kind} payload lacks {missing}")
    if event_name in ("System Hook", "Test Hook") or kind is None:
        return Ignored(f"event {event_name!r} is not acted on")
    return Ignored(f"object_kind {kind!r} is not acted on")


def _gitlab_repo(payload: Mapping[str, Any]) -> RepoRef:
    project = _get(payload, "project")
    return RepoRef(
        forge="gitlab",
        full_name=_str(project, "path_with_namespace"),
        clone_url=_str(project, "git_http_url"),
        default_branch=_opt_str(project, "default_branch", default="main"),
        project_id=_int(project, "id"),
        repo_id=_int(project, "id"),
    )


def _gitlab_merge(payload: Mapping[str, Any]) -> Event:
    attrs = _get(payload, "object_attributes")
    action = _opt(attrs, "action")
    if action in GITLAB_PREVIEW_ACTIONS:
        return _gitlab_preview(payload, attrs, str(action))
    if action != "merge":
        return Ignored(f"merge request action {action!r} is not acted on")
    # A fast-forward merge has no merge commit; the MR's last commit is what landed.
    sha = (
        _opt(attrs, "merge_commit_sha")
        or _opt(attrs, "squash_commit_sha")
        or _opt(attrs, "last_commit", "id")
    )
    if not isinstance(sha, str) or not sha:
        raise _Missing("object_attributes.merge_commit_sha")
    return MergedPullRequest(
        repo=_gitlab_repo(payload),
        number=_int(attrs, "iid"),
        title=_opt_str(attrs, "title"),
        url=_opt_str(attrs, "url"),
        merge_sha=sha,
        base_branch=_str(attrs, "target_branch"),
        head_branch=_opt_str(attrs, "source_branch"),
        author=_opt_str(attrs, "last_commit", "author", "name"),
        merged_by=_opt_str(payload, "user", "username"),
    )


def _gitlab_preview(payload: Mapping[str, Any], attrs: Mapping[str, Any], action: str) -> Event:
    # An update without `oldrev` changed the title, labels or reviewers, not the code; one that
    # moved the target branch changes what the merge would do.
    changes = _opt(payload, "changes")
    retargeted = isinstance(changes, Mapping) and "target_branch" in changes
    if action == "update" and not _opt(attrs, "oldrev") and not retargeted:
        return Ignored("merge request update without new commits")
    return PullRequestUpdated(
        repo=_gitlab_repo(payload),
        number=_int(attrs, "iid"),
        head_sha=_str(attrs, "last_commit", "id"),
        base_branch=_str(attrs, "target_branch"),
        head_branch=_opt_str(attrs, "source_branch"),
        action=action,
    )


def _gitlab_note(payload: Mapping[str, Any]) -> Event:
    attrs = _get(payload, "object_attributes")
    if _opt(attrs, "noteable_type") != "MergeRequest":
        return Ignored("note is not on a merge request")
    action = _opt(attrs, "action")
    # GitLab before 16.11 sends no action; those hooks only fire on creation.
    if action not in (None, "create"):
        return Ignored(f"note action {action!r} never triggers commands")
    user = _get(payload, "user")
    return PullRequestComment(
        repo=_gitlab_repo(payload),
        number=_int(payload, "merge_request", "iid"),
        comment_id=_int(attrs, "id"),
        body=_opt_str(attrs, "note"),
        author=_str(user, "username"),
        author_id=_opt_int(user, "id"),
        author_is_bot=_opt(user, "bot") is True,
    )
