"""GitHub adapter of the `Forge` protocol, on gidgethub driven synchronously.

Each call runs a gidgethub coroutine to its end over the adapter's one long-lived HTTP client
(bot.forge.github_transport: no event loop, connections kept alive and shared by the worker's
threads); GitHub's JSON answers are read into forge values by bot.forge.github_payloads.

Auth is either one token, or a GitHub App whose installation tokens are fetched on demand and
cached until a minute before they expire. Failures surface as `ForgeError` after the retries of
`RetryPolicy`, with every credential this adapter holds scrubbed from the message.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import gidgethub
import gidgethub.abc
import gidgethub.apps
import httpx

from bot.forge.base import (
    CHECK_SUMMARY_MAX,
    CheckResult,
    CheckRunFacts,
    CheckRunSpec,
    CommentFacts,
    Forbidden,
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
from bot.forge.github_payloads import (
    check_run,
    check_run_body,
    check_run_facts,
    int_or_none,
    is_own_branch,
    issue_number,
    pull_facts,
    status_check,
    to_pull_request,
    url_parts,
    with_credentials,
)
from bot.forge.github_transport import BlockingGitHubAPI, run_blocking, tls_context
from bot.forge.retry import RetryPolicy

DEFAULT_API_URL = "https://api.github.com"
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
        self._http = httpx.Client(timeout=timeout_s, verify=tls_context())

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
            lambda gh: gh.post(url, {**url_parts(repo), "sha": sha}, data=data),
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
            url_vars = {**url_parts(repo), "number": number, "per_page": 100}
            async for existing in gh.getiter(url, url_vars):
                if marker in existing["body"] and existing["user"]["login"] == author:
                    if existing["body"] != body:
                        await gh.patch(
                            "/repos/{owner}/{repo}/issues/comments/{id}",
                            {**url_parts(repo), "id": existing["id"]},
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
                answer = await gh.getitem(url, {**url_parts(repo), "username": username})
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
                url, {**url_parts(repo), "id": comment_id}, data={"content": ACK_REACTION}
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
                created = await gh.post("/repos/{owner}/{repo}/pulls", url_parts(repo), data=data)
                pull = to_pull_request(created)
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
                    {**url_parts(repo), "number": pull.number},
                    data={"labels": labels},
                )
            return pull

        return self._call(repo, f"opening a pull request from {head}", open_)

    def repository_facts(self, repo: RepoRef) -> RepoFacts:
        async def fetch(gh: gidgethub.abc.GitHubAPI) -> RepoFacts:
            data = await gh.getitem("/repos/{owner}/{repo}", url_parts(repo))
            return RepoFacts(int(data["id"]), data["full_name"], data["default_branch"])

        return self._call(repo, "reading the repository", fetch)

    def pull_request_facts(self, repo: RepoRef, number: int) -> PullRequestFacts:
        async def fetch(gh: gidgethub.abc.GitHubAPI) -> PullRequestFacts:
            url = "/repos/{owner}/{repo}/pulls/{number}"
            return pull_facts(await gh.getitem(url, {**url_parts(repo), "number": number}))

        return self._call(repo, f"reading pull request #{number}", fetch)

    def comment_facts(self, repo: RepoRef, number: int, comment_id: int) -> CommentFacts:
        async def fetch(gh: gidgethub.abc.GitHubAPI) -> CommentFacts:
            url = "/repos/{owner}/{repo}/issues/comments/{id}"
            data = await gh.getitem(url, {**url_parts(repo), "id": comment_id})
            found = issue_number(data.get("issue_url") or "")
            if found != number:
                # Ids are global: a real comment elsewhere must not pass for one on #number.
                raise NotFound(f"GitHub: comment {comment_id} is not on #{number} of "
                               f"{repo.full_name} (it is on #{found})")
            user = data.get("user") or {}
            return CommentFacts(int(data["id"]), str(user.get("login") or ""),
                                int_or_none(user.get("id")), data.get("body") or "", found)

        return self._call(repo, f"reading comment {comment_id} on #{number}", fetch)

    def commit_checks(self, repo: RepoRef, sha: str) -> list[CheckResult]:
        """The combined status (the latest status per context) and the latest check run per
        name: branch protection counts both, and CI writes either (Actions: check runs)."""
        async def fetch(gh: gidgethub.abc.GitHubAPI) -> list[CheckResult]:
            parts = {**url_parts(repo), "ref": sha}
            combined = await gh.getitem("/repos/{owner}/{repo}/commits/{ref}/status{?per_page}",
                                        {**parts, "per_page": 100})
            found = [status_check(s) for s in combined.get("statuses") or []]
            url = "/repos/{owner}/{repo}/commits/{ref}/check-runs{?filter,per_page,page}"
            page = 1
            while True:
                runs = await gh.getitem(url, {**parts, "filter": "latest", "per_page": 100,
                                              "page": page})
                batch = runs.get("check_runs") or []
                found += [check_run(r) for r in batch]
                if len(batch) < 100:
                    return found
                page += 1

        return self._call(repo, f"reading the checks of {sha[:12]}", fetch)

    # -- CheckRuns (App mode only) ---------------------------------------------------------
    def check_runs_app(self) -> int | None:
        """The App's id in App mode; None with a token, which cannot write check runs."""
        return None if self._app_id is None else int(self._app_id)

    def create_check_run(self, repo: RepoRef, sha: str, run: CheckRunSpec) -> int:
        data = {**check_run_body(run, CHECK_SUMMARY_MAX), "head_sha": sha}

        async def create(gh: gidgethub.abc.GitHubAPI) -> int:
            created = await gh.post("/repos/{owner}/{repo}/check-runs", url_parts(repo),
                                    data=data)
            return int(created["id"])

        return self._call(repo, f"creating check run {run.name!r} on {sha[:12]}", create)

    def update_check_run(self, repo: RepoRef, run_id: int, run: CheckRunSpec) -> None:
        data = check_run_body(run, CHECK_SUMMARY_MAX)
        url = "/repos/{owner}/{repo}/check-runs/{id}"
        self._call(repo, f"updating check run {run_id}",
                   lambda gh: gh.patch(url, {**url_parts(repo), "id": run_id}, data=data))

    def check_run_facts(self, repo: RepoRef, run_id: int) -> CheckRunFacts:
        async def fetch(gh: gidgethub.abc.GitHubAPI) -> CheckRunFacts:
            url = "/repos/{owner}/{repo}/check-runs/{id}"
            return check_run_facts(await gh.getitem(url, {**url_parts(repo), "id": run_id}))

        return self._call(repo, f"reading check run {run_id}", fetch)

    def authenticated_clone_url(self, repo: RepoRef) -> str:
        token = self._guard(f"getting a clone token for {repo.full_name}",
                            lambda: self._token_for(repo))
        return with_credentials(repo.clone_url, "x-access-token", token)

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

    def credential_grants(self) -> dict[str, Any]:
        """What the credential is and may do, as far as GitHub tells (`coalmine doctor`):
        a token's login and, for a classic token, its scopes (the `X-OAuth-Scopes` header of
        GET /user; None when GitHub sends none, as for fine-grained tokens); an App's slug and
        the permissions it asks of installations (GET /app)."""
        if self._token is None:
            app = self._guard("reading the App", lambda: self._api().getitem(
                "/app", jwt=self._app_jwt()))
            return {"kind": "app", "login": f"{app['slug']}[bot]",
                    "permissions": dict(app.get("permissions") or {})}

        async def who() -> httpx.Response:
            answer = self._http.get(f"{self._api_url}/user", headers={
                "Authorization": f"token {self._token}", "Accept": "application/vnd.github+json"})
            answer.raise_for_status()
            return answer

        answer = self._guard("reading the token's user", who)
        scopes = answer.headers.get("X-OAuth-Scopes")
        return {"kind": "token", "login": str(answer.json().get("login") or ""),
                "scopes": None if scopes is None else
                sorted(s.strip() for s in scopes.split(",") if s.strip())}

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
            return run_blocking(work())
        except gidgethub.HTTPException as exc:
            if exc.status_code == 404:
                raise NotFound(self._scrub(f"GitHub: {what} failed: 404 {exc}")) from exc
            if exc.status_code == 403 and not isinstance(exc, gidgethub.RateLimitExceeded):
                raise Forbidden(self._scrub(f"GitHub: {what} failed: 403 {exc}")) from exc
            raise ForgeError(
                self._scrub(f"GitHub: {what} failed: {exc.status_code} {exc}")
            ) from exc
        except (gidgethub.GitHubException, httpx.HTTPError) as exc:
            raise ForgeError(self._scrub(f"GitHub: {what} failed: {exc!r}")) from exc

    def _api(self, token: str | None = None) -> gidgethub.abc.GitHubAPI:
        return BlockingGitHubAPI(self._http, self._retry, oauth_token=token,
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
                "/repos/{owner}/{repo}/installation", url_parts(repo), jwt=self._app_jwt()
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
        created = await gh.post(url, {**url_parts(repo), "number": number}, data={"body": body})
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
            {**url_parts(repo), "id": comment_id},
            data={"body": body},
        )
    except gidgethub.BadRequest as exc:
        if exc.status_code == 404:  # deleted by someone: find it by marker, or create it
            return False
        raise
    login = str((edited.get("user") or {}).get("login") or "")
    on_number = issue_number(edited.get("issue_url") or "") == number
    return on_number and login.casefold() == author.casefold()


async def _find_pull(
    gh: gidgethub.abc.GitHubAPI, repo: RepoRef, head: str, author: str, state: str = "all"
) -> PullRequest | None:
    """The newest PR from `head` in `repo` itself that `author` (the bot) opened."""
    owner = repo.full_name.split("/", 1)[0]
    url = "/repos/{owner}/{repo}/pulls{?head,state,per_page}"
    url_vars = {**url_parts(repo), "head": f"{owner}:{head}", "state": state, "per_page": 10}
    async for found in gh.getiter(url, url_vars):  # newest first: GitHub's default order
        if is_own_branch(found, repo, author):
            return to_pull_request(found)
    return None


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
