"""GitLab adapter of the `Forge` protocol, on python-gitlab.

Retries are Coalmine's `RetryPolicy`, as for GitHub (5xx, dropped connections and 429, waiting
as `Retry-After` or `RateLimit-Reset` asks, but never longer than the policy's cap: a longer wait
ends the call with an error and the job's own retry comes back later). python-gitlab's own
retries are off, because they sleep for whatever the server asks, an hour included, holding the
worker. Beyond that this module only maps Coalmine's vocabulary to GitLab's: statuses to `pending/running/success/failed`, MR notes for comments, access levels to
four permissions (and, through `access_level`, the exact level, so a configured minimum role is
compared exactly). Every failure becomes a `ForgeError` (`NotFound` for a 404) without the token
in it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import gitlab
import gitlab.exceptions
import requests

from bot import metrics
from bot.forge.base import (
    CheckResult,
    CommentFacts,
    ForgeError,
    NotFound,
    Permission,
    PullRequest,
    PullRequestFacts,
    RepoFacts,
    RepoRef,
    StatusState,
    truncate_keeping_tail,
)
from bot.forge.retry import RetryPolicy
from bot.gate import CheckState

# Coalmine's "pending" means "rollout under way", which GitLab shows as running.
_STATES = {"pending": "running", "success": "success", "failure": "failed", "error": "failed"}
STATUS_DESCRIPTION_MAX = 255
NOTE_BODY_MAX = 1_000_000
ACK_EMOJI = "thumbsup"
# Owner 50, Maintainer 40, Developer 30, Reporter 20, Planner 15, Guest 10, Minimal access 5.
ADMIN_LEVEL = 40
WRITE_LEVEL = 30
READ_LEVEL = 10

T = TypeVar("T")


class _GitlabWithoutSleeps(gitlab.Gitlab):
    """python-gitlab with its own retries off: they sleep for whatever `Retry-After` says, with
    no cap, and the flag that stops them is only taken per request, not by the client."""

    def http_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.update(obey_rate_limit=False, retry_transient_errors=False)
        return super().http_request(*args, **kwargs)


class GitLabForge:
    """`Forge` for gitlab.com or a self-managed GitLab at `url` (without /api/v4)."""

    name = "gitlab"

    def __init__(
        self, url: str, token: str, bot_username: str | None = None, *, timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._token = token
        self._bot_username = bot_username
        self._retry = retry or RetryPolicy()
        self._gl = _GitlabWithoutSleeps(url, private_token=token, timeout=timeout_s)
        # The last answer's headers on this thread: python-gitlab's errors carry only the
        # status, and the wait the server asks for is in the headers.
        self._answered = threading.local()
        self._gl.session.hooks["response"].extend([metrics.gitlab_response, self._remember])

    # -- Forge ----------------------------------------------------------------------------
    def set_status(
        self,
        repo: RepoRef,
        sha: str,
        context: str,
        state: StatusState,
        description: str,
        target_url: str | None = None,
    ) -> None:
        data = {
            "state": _STATES[state],
            "name": context,
            "description": _shorten(description, STATUS_DESCRIPTION_MAX),
        }
        if target_url:
            data["target_url"] = target_url

        def post() -> None:
            commit = self._project(repo).commits.get(sha, lazy=True)
            try:
                commit.statuses.create(data)
            except gitlab.exceptions.GitlabCreateError as exc:
                # GitLab refuses to re-enter the state a status is already in; it is set.
                if exc.response_code != 400 or "Cannot transition status" not in str(exc):
                    raise

        self._guard(f"setting status {context!r} on {sha[:12]} in {repo.full_name}", post)

    def upsert_comment(
        self, repo: RepoRef, number: int, marker: str, body: str, known_id: int | None = None
    ) -> int:
        body = truncate_keeping_tail(body, NOTE_BODY_MAX, marker)
        author = self.bot_username

        def upsert() -> int:
            mr = self._project(repo).mergerequests.get(number, lazy=True)
            if known_id is not None and _edit_own_note(mr, number, known_id, body, author):
                return known_id
            notes = mr.notes.list(get_all=True, sort="asc", order_by="created_at")
            for note in notes:
                if marker in note.body and note.author["username"] == author:
                    if note.body != body:
                        note.body = body
                        note.save()
                    return int(note.id)
            return int(mr.notes.create({"body": body}).id)

        return self._guard(f"updating the note on !{number} in {repo.full_name}", upsert)

    def comment(self, repo: RepoRef, number: int, body: str) -> int:
        body = truncate_keeping_tail(body, NOTE_BODY_MAX)

        def create() -> int:
            mr = self._project(repo).mergerequests.get(number, lazy=True)
            return int(mr.notes.create({"body": body}).id)

        return self._guard(f"commenting on !{number} in {repo.full_name}", create)

    def permission(self, repo: RepoRef, username: str, user_id: int | None = None) -> Permission:
        return _permission_for(self.access_level(repo, username, user_id))

    def access_level(self, repo: RepoRef, username: str, user_id: int | None = None) -> int:
        """The exact level (10 Guest … 50 Owner), inherited ones included; 0 for non-members."""

        def fetch() -> int:
            uid = user_id
            if uid is None:
                users = self._gl.users.list(username=username, get_all=False)
                if not users:
                    return 0
                uid = int(users[0].id)
            try:
                member = self._project(repo).members_all.get(uid)
            except gitlab.exceptions.GitlabGetError as exc:
                if exc.response_code == 404:  # not a member, directly or through a group
                    return 0
                raise
            return int(member.access_level)

        return self._guard(f"reading the access of {username} to {repo.full_name}", fetch)

    def acknowledge(self, repo: RepoRef, number: int, comment_id: int) -> None:
        def award() -> None:
            mr = self._project(repo).mergerequests.get(number, lazy=True)
            note = mr.notes.get(comment_id, lazy=True)
            try:
                note.awardemojis.create({"name": ACK_EMOJI})
            except gitlab.exceptions.GitlabCreateError as exc:
                if "has already been taken" not in str(exc):  # awarded by an earlier run
                    raise

        self._guard(f"awarding an emoji on note {comment_id} in {repo.full_name}", award)

    def find_pull_request(self, repo: RepoRef, head: str) -> PullRequest | None:
        author = self.bot_username

        def find() -> PullRequest | None:
            project = self._project(repo)
            found = project.mergerequests.list(
                source_branch=head, state="all", order_by="created_at", sort="desc", get_all=False
            )
            own = [mr.attributes for mr in found if _is_own_branch(mr.attributes, author)]
            return _to_pull_request(own[0]) if own else None

        return self._guard(f"looking for a merge request from {head} in {repo.full_name}", find)

    def open_pull_request(
        self, repo: RepoRef, head: str, base: str, title: str, body: str, labels: list[str]
    ) -> PullRequest:
        author = self.bot_username

        def open_() -> PullRequest:
            project = self._project(repo)
            data = {
                "source_branch": head,
                "target_branch": base,
                "title": title,
                "description": body,
                "labels": labels,
            }
            try:
                return _to_pull_request(project.mergerequests.create(data).attributes)
            except gitlab.exceptions.GitlabCreateError as exc:
                # A second call for the same branch: GitLab refuses, the first MR is the answer.
                if exc.response_code != 409:
                    raise
                existing = [
                    mr.attributes
                    for mr in project.mergerequests.list(
                        source_branch=head, target_branch=base, state="opened", get_all=False
                    )
                    if _is_own_branch(mr.attributes, author)
                ]
                if not existing:
                    raise
                return _to_pull_request(existing[0])

        return self._guard(f"opening a merge request from {head} in {repo.full_name}", open_)

    def repository_facts(self, repo: RepoRef) -> RepoFacts:
        def fetch() -> RepoFacts:
            key: int | str = repo.project_id if repo.project_id is not None else repo.full_name
            data = self._gl.projects.get(key).attributes
            return RepoFacts(int(data["id"]), data["path_with_namespace"], data["default_branch"])

        return self._guard(f"reading the project {repo.full_name}", fetch)

    def pull_request_facts(self, repo: RepoRef, number: int) -> PullRequestFacts:
        def fetch() -> PullRequestFacts:
            return _mr_facts(self._project(repo).mergerequests.get(number).attributes)

        return self._guard(f"reading merge request !{number} in {repo.full_name}", fetch)

    def comment_facts(self, repo: RepoRef, number: int, comment_id: int) -> CommentFacts:
        def fetch() -> CommentFacts:
            mr = self._project(repo).mergerequests.get(number, lazy=True)
            data = mr.notes.get(comment_id).attributes
            where = f"note {comment_id} on !{number} in {repo.full_name}"
            if data.get("noteable_iid") != number or data.get("noteable_type") != "MergeRequest":
                raise NotFound(f"GitLab: {where} is not on that merge request")
            if data.get("system"):  # "merged", "added 1 commit": written by GitLab, not a person
                raise NotFound(f"GitLab: {where} is a system note")
            author = data.get("author") or {}
            uid = author.get("id")
            return CommentFacts(int(data["id"]), str(author.get("username") or ""),
                                uid if isinstance(uid, int) else None, data.get("body") or "",
                                number)

        return self._guard(f"reading note {comment_id} on !{number} in {repo.full_name}", fetch)

    def commit_checks(self, repo: RepoRef, sha: str) -> list[CheckResult]:
        """The commit's statuses (each CI job is one, by its name; external CI posts them too)
        and its newest pipeline, as "pipeline"."""
        def fetch() -> list[CheckResult]:
            project = self._project(repo)
            statuses = project.commits.get(sha, lazy=True).statuses.list(get_all=True)
            found = [_job_check(s.attributes) for s in statuses]
            pipelines = project.pipelines.list(sha=sha, per_page=1, page=1)
            if pipelines:
                data = pipelines[0].attributes
                found.append(CheckResult("pipeline", _ci_state(str(data.get("status"))),
                                         url=str(data.get("web_url") or ""), kind="pipeline",
                                         detail=str(data.get("status"))))
            return found

        return self._guard(f"reading the CI results of {sha[:12]} in {repo.full_name}", fetch)

    def authenticated_clone_url(self, repo: RepoRef) -> str:
        parts = urlsplit(repo.clone_url)
        if parts.scheme not in ("http", "https"):
            return repo.clone_url  # local paths (tests) carry no credentials
        host = parts.netloc.rsplit("@", 1)[-1]
        netloc = f"oauth2:{quote(self._token, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))

    def secrets(self) -> list[str]:
        return [self._token]

    # -- identity -------------------------------------------------------------------------
    @property
    def bot_username(self) -> str:
        """The account the token belongs to, to recognise the bot's own notes."""
        if self._bot_username is None:

            def whoami() -> str:
                self._gl.auth()
                assert self._gl.user is not None
                return str(self._gl.user.username)

            self._bot_username = self._guard("finding the bot's username", whoami)
        return self._bot_username

    def token_facts(self) -> dict[str, Any]:
        """The token as GitLab describes it (GET /personal_access_tokens/self: name, scopes,
        active, expires_at), for `coalmine doctor`."""
        found = self._guard("reading the token", lambda: self._gl.http_get(
            "/personal_access_tokens/self"))
        return dict(found) if isinstance(found, dict) else {}

    # -- plumbing -------------------------------------------------------------------------
    def _project(self, repo: RepoRef) -> Any:
        key: int | str = repo.project_id if repo.project_id is not None else repo.full_name
        return self._gl.projects.get(key, lazy=True)

    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._answered.headers = response.headers

    def _guard(self, what: str, work: Callable[[], T]) -> T:
        """Run `work`, again after a transient failure as the retry policy says, turning the
        last failure into a `ForgeError` (`NotFound` for a 404) without the token in it."""
        attempt = 0
        while True:
            attempt += 1
            self._answered.headers = {}
            try:
                return work()
            except gitlab.exceptions.GitlabError as exc:
                code = exc.response_code
                wait = (self._retry.delay(code, self._answered.headers, attempt)
                        if code else None)
                if wait is None:
                    if code == 404:
                        raise NotFound(self._scrub(f"GitLab: {what} failed: {exc}")) from exc
                    raise ForgeError(
                        self._scrub(f"GitLab: {what} failed: {code or ''} {exc}")) from exc
            except requests.RequestException as exc:
                metrics.forge_call("gitlab", None)  # no answer, so the response hook saw nothing
                wait = self._retry.delay(None, {}, attempt)
                if wait is None:
                    raise ForgeError(self._scrub(f"GitLab: {what} failed: {exc!r}")) from exc
            self._retry.sleep(wait)

    def _scrub(self, message: str) -> str:
        return message.replace(self._token, "***")


# GitLab's CI states: a skipped job or one allowed to fail does not block a merge.
_CI_PASSING = {"success", "skipped"}
_CI_FAILING = {"failed", "canceled"}


def _ci_state(status: str, allow_failure: bool = False) -> CheckState:
    if status in _CI_PASSING or (allow_failure and status in _CI_FAILING):
        return "success"
    return "failure" if status in _CI_FAILING else "pending"


def _job_check(data: dict[str, Any]) -> CheckResult:
    status = str(data.get("status") or "pending")
    return CheckResult(str(data.get("name") or "default"),
                       _ci_state(status, bool(data.get("allow_failure"))),
                       url=str(data.get("target_url") or ""), kind="job", detail=status)


def _edit_own_note(mr: Any, number: int, note_id: int, body: str, author: str) -> bool:
    """Edit note `note_id` of `mr` in one call; False when it is gone (404) or is not
    `author`'s note on !`number`, so the caller looks it up by marker instead.

    The URL names the MR, so GitLab answers 404 for a note of another MR; the author check
    catches a stale record (say, the bot's account changed), which is then forgotten.
    """
    try:
        edited = mr.notes.update(note_id, {"body": body})
    except gitlab.exceptions.GitlabUpdateError as exc:
        if exc.response_code == 404:  # deleted by someone: find it by marker, or create it
            return False
        raise
    username = str((edited.get("author") or {}).get("username") or "")
    return edited.get("noteable_iid") == number and username.casefold() == author.casefold()


def _permission_for(access_level: int) -> Permission:
    if access_level >= ADMIN_LEVEL:
        return "admin"
    if access_level >= WRITE_LEVEL:
        return "write"
    if access_level >= READ_LEVEL:
        return "read"
    return "none"


def _is_own_branch(mr: dict[str, Any], author: str) -> bool:
    """Opened by `author` from a branch of the target project itself, not from a fork."""
    source = mr.get("source_project_id")
    same_project = source is not None and source == mr.get("target_project_id", mr.get("project_id"))
    login = str((mr.get("author") or {}).get("username", ""))
    return same_project and login.casefold() == author.casefold()


def _merged_commit(mr: dict[str, Any]) -> str | None:
    """The commit a merged MR put on its target branch, whatever the project's merge method.

    A merge commit when GitLab made one; with squash and fast-forward, the squash commit; with a
    plain fast-forward, the MR's head commit, which became the target's tip. The webhook parser
    (bot.events) picks the same commit from the hook, so the two agree.
    """
    if mr.get("state") != "merged":
        return None
    return mr.get("merge_commit_sha") or mr.get("squash_commit_sha") or mr.get("sha") or None


def _mr_facts(data: dict[str, Any]) -> PullRequestFacts:
    pull = _to_pull_request(data)
    source = data.get("source_project_id")
    return PullRequestFacts(
        number=pull.number,
        state=pull.state,
        merged=pull.state == "merged",
        merge_sha=_merged_commit(data),
        base=pull.base,
        head=pull.head,
        title=pull.title,
        url=pull.url,
        head_repo_id=source if isinstance(source, int) else None,
        author=str((data.get("author") or {}).get("username") or ""),
        head_sha=data.get("sha") or None,
    )


def _to_pull_request(data: dict[str, Any]) -> PullRequest:
    state = {"opened": "open", "locked": "open"}.get(data["state"], data["state"])
    return PullRequest(
        number=int(data["iid"]),
        url=data["web_url"],
        head=data["source_branch"],
        base=data["target_branch"],
        title=data["title"],
        state=state,
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
