"""GitHub adapter of the `Forge` protocol, on gidgethub driven synchronously.

gidgethub builds requests and reads answers (URL templates, pagination, App JWTs, errors) in
coroutines whose only I/O is its `_request` and `sleep` hooks. Here those hooks block on one
long-lived `httpx.Client` per adapter, so a call's coroutine never waits on an event loop and is
simply run to its end: no event loop, thread or client is built per call, and connections
(with their TLS sessions) are kept alive between calls and shared by the worker's threads.

Auth is either one token, or a GitHub App whose installation tokens are fetched on demand and
cached until a minute before they expire. Failures surface as `ForgeError` after the retries of
`RetryPolicy`, with every credential this adapter holds scrubbed from the message.
"""

from __future__ import annotations

import functools
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import certifi
import gidgethub
import gidgethub.abc
import gidgethub.apps
import httpx

from bot.forge.base import (
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

DEFAULT_API_URL = "https://api.github.com"
USER_AGENT = "coalmine"
STATUS_DESCRIPTION_MAX = 140
STATUS_CONTEXT_MAX = 255
COMMENT_BODY_MAX = 65536
TOKEN_REFRESH_MARGIN_S = 60.0
ACK_REACTION = "+1"
# GitHub already folds roles into four levels in `permission`; role names are the fallback.
_ROLE_TO_PERMISSION: dict[str, Permission] = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}

T = TypeVar("T")


class _BlockingGitHubAPI(gidgethub.abc.GitHubAPI):
    """gidgethub over a shared blocking `httpx.Client`; throttling and transient failures follow
    a `RetryPolicy`. Cheap to build: one per call, around the adapter's one HTTP client."""

    def __init__(self, http: httpx.Client, policy: RetryPolicy, **kwargs: Any) -> None:
        super().__init__(USER_AGENT, **kwargs)
        self._http = http
        self._policy = policy

    async def sleep(self, seconds: float) -> None:
        self._policy.sleep(seconds)

    async def handle_rate_limit_error(
        self, *, method: str, url: str, exception: gidgethub.HTTPException, attempt: int
    ) -> bool:
        delay = self._policy.delay(int(exception.status_code), exception.headers, attempt)
        if delay is None:
            return False
        await self.sleep(delay)
        return True

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self._http.request(method, url, headers=dict(headers), content=body)
                return answer.status_code, answer.headers, answer.content
            except httpx.TransportError:
                delay = self._policy.delay(None, {}, attempt)
                if delay is None:
                    raise
                await self.sleep(delay)


class GitHubForge:
    """`Forge` for github.com or GitHub Enterprise (`api_url` such as https://ghe/api/v3)."""

    name = "github"

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        token: str | None = None,
        app_id: int | str | None = None,
        private_key: str | None = None,
        bot_login: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 30.0,
    ) -> None:
        if (token is None) == (app_id is None or private_key is None):
            raise ValueError("give either token, or app_id together with private_key")
        self._api_url = api_url.rstrip("/")
        self._token = token
        self._app_id = None if app_id is None else str(app_id)
        self._private_key = private_key
        self._bot_login = bot_login
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._installation_tokens: dict[int, tuple[str, float]] = {}  # id → (token, expires)
        self._installation_ids: dict[str, int] = {}  # repo full name → installation id
        self._issued_tokens: set[str] = set()
        # The one HTTP client of this adapter: its pool keeps connections alive between calls.
        self._http = httpx.Client(timeout=timeout_s, verify=_tls_context())

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
        data: dict[str, Any] = {
            "state": state,
            "context": context[:STATUS_CONTEXT_MAX],
            "description": _shorten(description, STATUS_DESCRIPTION_MAX),
        }
        if target_url:
            data["target_url"] = target_url
        url = "/repos/{owner}/{repo}/statuses/{sha}"
        self._call(
            repo,
            f"setting status {context!r} on {sha[:12]}",
            lambda gh: gh.post(url, {**_parts(repo), "sha": sha}, data=data),
        )

    def upsert_comment(
        self, repo: RepoRef, number: int, marker: str, body: str, known_id: int | None = None
    ) -> int:
        body = truncate_keeping_tail(body, COMMENT_BODY_MAX, marker)
        author = self.bot_login

        async def upsert(gh: gidgethub.abc.GitHubAPI) -> int:
            if known_id is not None and await _edit_own_comment(
                gh, repo, number, known_id, body, author
            ):
                return known_id
            url = "/repos/{owner}/{repo}/issues/{number}/comments{?per_page}"
            url_vars = {**_parts(repo), "number": number, "per_page": 100}
            async for existing in gh.getiter(url, url_vars):
                if marker in existing["body"] and existing["user"]["login"] == author:
                    if existing["body"] != body:
                        await gh.patch(
                            "/repos/{owner}/{repo}/issues/comments/{id}",
                            {**_parts(repo), "id": existing["id"]},
                            data={"body": body},
                        )
                    return int(existing["id"])
            return await self._post_comment(gh, repo, number, body)

        return self._call(repo, f"updating the comment on #{number}", upsert)

    def comment(self, repo: RepoRef, number: int, body: str) -> int:
        body = truncate_keeping_tail(body, COMMENT_BODY_MAX)
        return self._call(
            repo,
            f"commenting on #{number}",
            lambda gh: self._post_comment(gh, repo, number, body),
        )

    def permission(self, repo: RepoRef, username: str, user_id: int | None = None) -> Permission:
        async def fetch(gh: gidgethub.abc.GitHubAPI) -> Permission:
            url = "/repos/{owner}/{repo}/collaborators/{username}/permission"
            try:
                answer = await gh.getitem(url, {**_parts(repo), "username": username})
            except gidgethub.BadRequest as exc:
                if exc.status_code == 404:  # not a user, or unknown to this repository
                    return "none"
                raise
            level = answer.get("permission")
            if level in ("admin", "write", "read", "none"):
                return level
            return _ROLE_TO_PERMISSION.get(answer.get("role_name", ""), "none")

        return self._call(repo, f"reading the permission of {username}", fetch)

    def acknowledge(self, repo: RepoRef, number: int, comment_id: int) -> None:
        url = "/repos/{owner}/{repo}/issues/comments/{id}/reactions"
        self._call(
            repo,
            f"reacting to comment {comment_id}",
            lambda gh: gh.post(
                url, {**_parts(repo), "id": comment_id}, data={"content": ACK_REACTION}
            ),
        )

    def find_pull_request(self, repo: RepoRef, head: str) -> PullRequest | None:
        author = self.bot_login
        return self._call(
            repo,
            f"looking for a pull request from {head}",
            lambda gh: _find_pull(gh, repo, head, author),
        )

    def open_pull_request(
        self, repo: RepoRef, head: str, base: str, title: str, body: str, labels: list[str]
    ) -> PullRequest:
        author = self.bot_login

        async def open_(gh: gidgethub.abc.GitHubAPI) -> PullRequest:
            data = {"title": title, "head": head, "base": base, "body": body}
            try:
                created = await gh.post("/repos/{owner}/{repo}/pulls", _parts(repo), data=data)
                pull = _to_pull_request(created)
            except gidgethub.BadRequest as exc:
                # A second call for the same head: GitHub refuses, the first PR is the answer.
                if exc.status_code != 422 or "already exists" not in str(exc):
                    raise
                existing = await _find_pull(gh, repo, head, author, state="open")
                if existing is None:
                    raise
                pull = existing
            if labels:
                await gh.post(
                    "/repos/{owner}/{repo}/issues/{number}/labels",
                    {**_parts(repo), "number": pull.number},
                    data={"labels": labels},
                )
            return pull

        return self._call(repo, f"opening a pull request from {head}", open_)

    def repository_facts(self, repo: RepoRef) -> RepoFacts:
        async def fetch(gh: gidgethub.abc.GitHubAPI) -> RepoFacts:
            data = await gh.getitem("/repos/{owner}/{repo}", _parts(repo))
            return RepoFacts(int(data["id"]), data["full_name"], data["default_branch"])

        return self._call(repo, "reading the repository", fetch)

    def pull_request_facts(self, repo: RepoRef, number: int) -> PullRequestFacts:
        async def fetch(gh: gidgethub.abc.GitHubAPI) -> PullRequestFacts:
            url = "/repos/{owner}/{repo}/pulls/{number}"
            return _pull_facts(await gh.getitem(url, {**_parts(repo), "number": number}))

        return self._call(repo, f"reading pull request #{number}", fetch)

    def comment_facts(self, repo: RepoRef, number: int, comment_id: int) -> CommentFacts:
        async def fetch(gh: gidgethub.abc.GitHubAPI) -> CommentFacts:
            url = "/repos/{owner}/{repo}/issues/comments/{id}"
            data = await gh.getitem(url, {**_parts(repo), "id": comment_id})
            found = _issue_number(data.get("issue_url") or "")
            if found != number:
                # Ids are global: a real comment elsewhere must not pass for one on #number.
                raise NotFound(f"GitHub: comment {comment_id} is not on #{number} of "
                               f"{repo.full_name} (it is on #{found})")
            user = data.get("user") or {}
            return CommentFacts(int(data["id"]), str(user.get("login") or ""),
                                _int_or_none(user.get("id")), data.get("body") or "", found)

        return self._call(repo, f"reading comment {comment_id} on #{number}", fetch)

    def authenticated_clone_url(self, repo: RepoRef) -> str:
        token = self._guard(f"getting a clone token for {repo.full_name}",
                            lambda: self._token_for(repo))
        return _with_credentials(repo.clone_url, "x-access-token", token)

    def secrets(self) -> list[str]:
        held = [self._token, self._private_key, *self._issued_tokens]
        return [s for s in held if s]

    # -- identity -------------------------------------------------------------------------
    @property
    def bot_login(self) -> str:
        """The account this adapter acts as ("<slug>[bot]" for an App), to skip its own comments."""
        if self._bot_login is None:
            self._bot_login = self._guard("finding the bot's login", self._who_am_i)
        return self._bot_login

    def close(self) -> None:
        """Close the adapter's connections (a process exit does as much)."""
        self._http.close()

    async def _who_am_i(self) -> str:
        if self._token is not None:
            return str((await self._api(self._token).getitem("/user"))["login"])
        app = await self._api().getitem("/app", jwt=self._app_jwt())
        return f"{app['slug']}[bot]"

    # -- plumbing -------------------------------------------------------------------------
    def _call(
        self,
        repo: RepoRef,
        what: str,
        operation: Callable[[gidgethub.abc.GitHubAPI], Awaitable[T]],
    ) -> T:
        async def run() -> T:
            return await operation(self._api(await self._token_for(repo)))

        return self._guard(f"{what} in {repo.full_name}", run)

    def _guard(self, what: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `work` to its end, turning every failure into a scrubbed `ForgeError`."""
        try:
            return _run_blocking(work())
        except gidgethub.HTTPException as exc:
            if exc.status_code == 404:
                raise NotFound(self._scrub(f"GitHub: {what} failed: 404 {exc}")) from exc
            raise ForgeError(
                self._scrub(f"GitHub: {what} failed: {exc.status_code} {exc}")
            ) from exc
        except (gidgethub.GitHubException, httpx.HTTPError) as exc:
            raise ForgeError(self._scrub(f"GitHub: {what} failed: {exc!r}")) from exc

    def _api(self, token: str | None = None) -> gidgethub.abc.GitHubAPI:
        return _BlockingGitHubAPI(self._http, self._retry, oauth_token=token,
                                  base_url=self._api_url)

    def _app_jwt(self) -> str:
        assert self._app_id is not None and self._private_key is not None
        return gidgethub.apps.get_jwt(app_id=self._app_id, private_key=self._private_key)

    async def _token_for(self, repo: RepoRef) -> str:
        if self._token is not None:
            return self._token
        installation_id = repo.installation_id or self._installation_ids.get(repo.full_name)
        if installation_id is None:
            found = await self._api().getitem(
                "/repos/{owner}/{repo}/installation", _parts(repo), jwt=self._app_jwt()
            )
            installation_id = int(found["id"])
        self._installation_ids[repo.full_name] = installation_id
        cached = self._installation_tokens.get(installation_id)
        if cached is not None and self._clock() < cached[1] - TOKEN_REFRESH_MARGIN_S:
            return cached[0]
        assert self._app_id is not None and self._private_key is not None
        issued = await gidgethub.apps.get_installation_access_token(
            self._api(),
            installation_id=str(installation_id),
            app_id=self._app_id,
            private_key=self._private_key,
        )
        token = str(issued["token"])
        expires = datetime.fromisoformat(issued["expires_at"]).timestamp()
        self._issued_tokens.add(token)
        self._installation_tokens[installation_id] = (token, expires)
        return token

    async def _post_comment(
        self, gh: gidgethub.abc.GitHubAPI, repo: RepoRef, number: int, body: str
    ) -> int:
        url = "/repos/{owner}/{repo}/issues/{number}/comments"
        created = await gh.post(url, {**_parts(repo), "number": number}, data={"body": body})
        return int(created["id"])

    def _scrub(self, message: str) -> str:
        for secret in self.secrets():
            message = message.replace(secret, "***")
        return message


async def _edit_own_comment(
    gh: gidgethub.abc.GitHubAPI, repo: RepoRef, number: int, comment_id: int, body: str,
    author: str,
) -> bool:
    """Edit comment `comment_id` in one call; False when it is gone (404) or is not `author`'s
    comment on `number`, so the caller looks it up by marker instead.

    The id comes from an earlier upsert, so the second case means a stale record (say, the
    bot's account changed): it is reported as gone, and never edited again once forgotten.
    """
    try:
        edited = await gh.patch(
            "/repos/{owner}/{repo}/issues/comments/{id}",
            {**_parts(repo), "id": comment_id},
            data={"body": body},
        )
    except gidgethub.BadRequest as exc:
        if exc.status_code == 404:  # deleted by someone: find it by marker, or create it
            return False
        raise
    login = str((edited.get("user") or {}).get("login") or "")
    on_number = _issue_number(edited.get("issue_url") or "") == number
    return on_number and login.casefold() == author.casefold()


async def _find_pull(
    gh: gidgethub.abc.GitHubAPI, repo: RepoRef, head: str, author: str, state: str = "all"
) -> PullRequest | None:
    """The newest PR from `head` in `repo` itself that `author` (the bot) opened."""
    owner = repo.full_name.split("/", 1)[0]
    url = "/repos/{owner}/{repo}/pulls{?head,state,per_page}"
    url_vars = {**_parts(repo), "head": f"{owner}:{head}", "state": state, "per_page": 10}
    async for found in gh.getiter(url, url_vars):  # newest first: GitHub's default order
        if _is_own_branch(found, repo, author):
            return _to_pull_request(found)
    return None


def _is_own_branch(pull: dict[str, Any], repo: RepoRef, author: str) -> bool:
    """Opened by `author` from a branch of `repo` itself, not from a fork of it."""
    source = (pull.get("head") or {}).get("repo") or {}  # null when the fork was deleted
    if repo.repo_id is not None:
        same_repo = source.get("id") == repo.repo_id
    else:
        same_repo = str(source.get("full_name", "")).casefold() == repo.full_name.casefold()
    login = str((pull.get("user") or {}).get("login", ""))
    return same_repo and login.casefold() == author.casefold()


def _pull_facts(data: dict[str, Any]) -> PullRequestFacts:
    merged = data.get("merged") is True
    # GitHub fills merge_commit_sha for open PRs too (a test merge): it counts only once merged.
    source = (data.get("head") or {}).get("repo") or {}
    return PullRequestFacts(
        number=int(data["number"]),
        state="merged" if merged else str(data["state"]),
        merged=merged,
        merge_sha=data.get("merge_commit_sha") if merged else None,
        base=data["base"]["ref"],
        head=data["head"]["ref"],
        title=data.get("title") or "",
        url=data.get("html_url") or "",
        head_repo_id=_int_or_none(source.get("id")),
        author=str((data.get("user") or {}).get("login") or ""),
    )


def _issue_number(issue_url: str) -> int | None:
    found = re.search(r"/issues/(\d+)$", issue_url)
    return int(found.group(1)) if found else None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _run_blocking(work: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine whose awaits all complete at once (blocking I/O underneath).

    No event loop is needed for such a coroutine: its first step runs it to the end. One that
    does suspend was handed a real awaitable, which this adapter never does; it is closed and
    reported rather than left half-run.
    """
    try:
        work.send(None)
    except StopIteration as finished:
        return finished.value
    work.close()
    raise RuntimeError("a GitHub call waited on an event loop; the adapter's I/O must block")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One CA bundle load per process: building it costs ~0.1 s, more than most API calls."""
    return ssl.create_default_context(cafile=certifi.where())


def _to_pull_request(data: dict[str, Any]) -> PullRequest:
    state = "merged" if data.get("merged_at") else data["state"]
    return PullRequest(
        number=int(data["number"]),
        url=data["html_url"],
        head=data["head"]["ref"],
        base=data["base"]["ref"],
        title=data["title"],
        state=state,
    )


def _parts(repo: RepoRef) -> dict[str, str]:
    owner, name = repo.full_name.split("/", 1)
    return {"owner": owner, "repo": name}


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _with_credentials(url: str, user: str, secret: str) -> str:
    """`url` with `user:secret@` in it; other schemes (local paths in tests) carry none."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user, safe='')}:{quote(secret, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
