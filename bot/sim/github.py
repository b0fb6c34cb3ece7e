"""A stateful fake of the GitHub REST API, checked against GitHub's own OpenAPI description.

gidgethub talks to it over a real socket through its base-URL setting. Every request is matched
to an operation of `openapi/github-subset.json` (unknown route → 404), its parameters and JSON body
are validated with `jsonschema` against that operation (→ 422, as GitHub answers; skipped where
jsonschema is not installed: the image's `coalmine demo`), then a handler
keyed by the operation id updates the in-memory state. Rules GitHub enforces beyond its schema
(140-character status descriptions, 65536-character comments, one open PR per head) are checked
by the handlers. Every call is recorded with who rejected it, so a test can prove *why* a request
failed.

`JsonFakeServer` is the forge-agnostic part (server lifecycle, recording, injected faults); the
GitLab fake builds on it too.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt

try:  # the test extra; without it (the image) `coalmine demo` runs this fake unvalidated
    import jsonschema
except ImportError:
    jsonschema = None

SUBSET_PATH = Path(__file__).with_name("openapi") / "github-subset.json"
DOCS_URL = "https://docs.github.com/rest"


@dataclass
class Call:
    """One request as the fake saw it, and what became of it."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival, to measure back-off between attempts
    status: int = 0
    rejected_by: str | None = None  # "fault", "route", "auth", "openapi", "rule", "state"


@dataclass
class Request:
    method: str
    path: str  # raw, still percent-encoded (GitLab puts encoded project paths in it)
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    json: Any
    base_url: str  # scheme://host:port the client used, for Link headers and html URLs


@dataclass
class Reply(Exception):
    """Raised (or returned) by handlers; raising lets validation bail out from any depth."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    rejected_by: str | None = None


@dataclass
class _Fault:
    remaining: int
    status: int | None  # None: close the connection without answering
    headers: dict[str, str]
    body: Any
    match: str | None  # substring of "METHOD /path"


class JsonFakeServer:
    """Threaded loopback HTTP server speaking JSON, recording calls, with injectable faults."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1001)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> JsonFakeServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- faults ---------------------------------------------------------------------------
    def fail_next(
        self,
        n: int = 1,
        status: int = 502,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        match: str | None = None,
    ) -> None:
        """Answer the next `n` requests (whose "METHOD /path" contains `match`) with `status`."""
        default_body = {"message": _STATUS_MESSAGES.get(status, "Injected failure")}
        with self._lock:
            self._faults.append(
                _Fault(
                    n, status, dict(headers or {}), default_body if body is None else body, match
                )
            )

    def drop_next(self, n: int = 1, *, match: str | None = None) -> None:
        """Close the connection on the next `n` matching requests without any response."""
        with self._lock:
            self._faults.append(_Fault(n, None, {}, None, match))

    def calls_to(self, method: str, path_pattern: str) -> list[Call]:
        """Recorded calls whose method matches and whose path matches the regex fully."""
        return [c for c in self.calls if c.method == method and re.fullmatch(path_pattern, c.path)]

    # -- for subclasses -------------------------------------------------------------------
    def next_id(self) -> int:
        return next(self._ids)

    def dispatch(self, request: Request) -> Reply:
        raise NotImplementedError

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        key = f"{method} {path}"
        for fault in self._faults:
            if fault.remaining > 0 and (fault.match is None or fault.match in key):
                fault.remaining -= 1
                return fault
        return None

    def _serve(self, request: Request) -> Reply | None:
        """Answer one request; None means drop the connection."""
        call = Call(
            request.method,
            request.path,
            dict(request.query),
            copy.deepcopy(request.json),
            dict(request.headers),
            time.monotonic(),
        )
        with self._lock:
            self.calls.append(call)
            fault = self._take_fault(request.method, request.path)
            if fault is not None:
                call.rejected_by = "fault"
                if fault.status is None:
                    return None
                call.status = fault.status
                return Reply(fault.status, fault.body, dict(fault.headers), "fault")
            try:
                reply = self.dispatch(request)
            except Reply as raised:
                reply = raised
            call.status = reply.status
            call.rejected_by = reply.rejected_by
            return reply


_STATUS_MESSAGES = {
    403: "API rate limit exceeded",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Server Error",
    503: "Service Unavailable",
}


def _handler_for(fake: JsonFakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One buffered write per reply and no Nagle: otherwise every response waits out the
        # peer's delayed ACK (~40 ms).
        wbufsize = -1
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Silence per-request logging; `fake.calls` is the record."""

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            base_url = f"http://{headers.get('host', '127.0.0.1')}"
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                self._send(Reply(400, {"message": "Problems parsing JSON"}, {}, "openapi"))
                return
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            request = Request(self.command, split.path, query, headers, body, base_url)
            reply = fake._serve(request)
            if reply is None:
                self.close_connection = True
                return
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            if reply.body is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    return Handler


def paginate(request: Request, items: list[Any], *, default_per_page: int = 30) -> Reply:
    """Slice `items` by page/per_page and add a GitHub/GitLab-style Link header."""
    per_page = max(1, min(int(request.query.get("per_page") or default_per_page), 100))
    page = max(1, int(request.query.get("page") or 1))
    last = max(1, -(-len(items) // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]

    def link(to: int, rel: str) -> str:
        query = {**request.query, "per_page": str(per_page), "page": str(to)}
        return f'<{request.base_url}{request.path}?{urlencode(query)}>; rel="{rel}"'

    links = []
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        links += [link(1, "first"), link(page - 1, "prev")]
    headers = {"Link": ", ".join(links)} if links else {}
    return Reply(200, chunk, headers)


def now_iso(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# GitHub
# ---------------------------------------------------------------------------------------------

# Endpoints an App calls as itself (RS256 JWT), not with an installation token.
# The permissions a GitHub App for Coalmine asks for (deploy/README.md), as GET /app lists them.
APP_PERMISSIONS = {"contents": "write", "pull_requests": "write", "issues": "write",
                   "statuses": "write", "checks": "write", "metadata": "read"}
JWT_OPERATIONS = frozenset(
    {
        "apps/get-authenticated",
        "apps/create-installation-access-token",
        "apps/get-repo-installation",
    }
)

ROLE_TO_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}


@dataclass
class _Operation:
    operation_id: str
    method: str
    pattern: re.Pattern[str]
    parameters: list[dict[str, Any]]
    body_schema: dict[str, Any] | None
    body_required: bool


class OpenApiCatalogue:
    """Routes and validators built from the committed OpenAPI subset."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._components = _nullable_to_json_schema(document.get("components", {}))
        self._operations: list[_Operation] = []
        for template, methods in document["paths"].items():
            pattern = re.compile(
                "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
            )
            for method, operation in methods.items():
                body = operation.get("requestBody") or {}
                schema = body.get("content", {}).get("application/json", {}).get("schema")
                self._operations.append(
                    _Operation(
                        operation["operationId"],
                        method.upper(),
                        pattern,
                        [self._resolve(p) for p in operation.get("parameters", [])],
                        _nullable_to_json_schema(schema) if schema else None,
                        bool(body.get("required")),
                    )
                )

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" not in node:
            return node
        _, _, section, name = node["$ref"].split("/", 3)
        return self._components[section][name]

    def match(self, method: str, path: str) -> tuple[_Operation, dict[str, str]]:
        for operation in self._operations:
            found = operation.pattern.match(path)
            if found and operation.method == method:
                return operation, found.groupdict()
        raise Reply(404, {"message": "Not Found", "documentation_url": DOCS_URL}, {}, "route")

    def validate(
        self, operation: _Operation, path_params: dict[str, str], request: Request
    ) -> dict[str, Any]:
        """Typed parameters of a valid request; raises a GitHub-shaped Reply otherwise."""
        values: dict[str, Any] = {}
        for param in operation.parameters:
            source = path_params if param["in"] == "path" else request.query
            if param["in"] not in ("path", "query") or param["name"] not in source:
                if param.get("required"):
                    _invalid(f"Missing required parameter '{param['name']}'.")
                continue
            raw = source[param["name"]]
            value = _coerce(raw, param["schema"])
            error = _first_error(param["schema"], value, self._components)
            if value is None or error:
                if param["in"] == "path":  # GitHub routes a malformed id nowhere
                    raise Reply(404, {"message": "Not Found"}, {}, "openapi")
                _invalid(f"Invalid value for parameter '{param['name']}': {error or raw!r}.")
            values[param["name"]] = value
        if operation.body_schema is not None:
            if request.json is None and operation.body_required:
                _invalid("Request body is required.")
            if request.json is not None:
                error = _first_error(operation.body_schema, request.json, self._components)
                if error:
                    _invalid(error)
        return values


def _invalid(detail: str) -> NoReturn:
    body = {"message": f"Invalid request.\n\n{detail}", "documentation_url": DOCS_URL}
    raise Reply(422, body, {}, "openapi")


def _coerce(raw: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        return int(raw) if re.fullmatch(r"-?\d+", raw) else None
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw)
    return raw


def _first_error(schema: dict[str, Any], value: Any, components: dict[str, Any]) -> str | None:
    if jsonschema is None:
        return None
    # Inlining the components lets "#/components/..." refs resolve inside the schema itself.
    validator = jsonschema.Draft7Validator({**schema, "components": components})
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "body"
    return f"For '{where}', {error.message}"


def _nullable_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` is not JSON Schema; express it as a union with null."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _nullable_to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        if isinstance(converted.get("type"), str):
            converted["type"] = [converted["type"], "null"]
            if "enum" in converted:
                converted["enum"] = [*converted["enum"], None]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


def _validation_failed(resource: str, field_name: str, message: str, code: str = "custom") -> Reply:
    body = {
        "message": "Validation Failed",
        "errors": [{"resource": resource, "code": code, "field": field_name, "message": message}],
        "documentation_url": DOCS_URL,
    }
    return Reply(422, body, {}, "rule")


def _not_found() -> Reply:
    return Reply(404, {"message": "Not Found", "documentation_url": DOCS_URL}, {}, "state")


@dataclass
class _App:
    app_id: int
    slug: str
    public_key: str
    permissions: dict[str, str] = field(default_factory=dict)


@dataclass
class _Repo:
    id: int
    full_name: str
    default_branch: str
    private: bool
    roles: dict[str, str] = field(default_factory=dict)
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)  # number → issue or PR
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)  # id → comment
    reactions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # sha → oldest first
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    check_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # sha → oldest first

    @property
    def owner(self) -> str:
        return self.full_name.split("/")[0]


class FakeGitHub(JsonFakeServer):
    """In-memory GitHub: repos, collaborators, comments, statuses, reactions, PRs, labels, Apps.

    Tests arrange state with the `add_*`/`set_*` methods and read it back with the accessors;
    adapters change it only over HTTP.
    """

    STATUS_DESCRIPTION_MAX = 140
    STATUS_CONTEXT_MAX = 255
    COMMENT_BODY_MAX = 65536

    def __init__(self, *, token_ttl_s: float = 3600.0, path_prefix: str = "") -> None:
        """`path_prefix="/api/v3"` serves the API where GitHub Enterprise Server has it."""
        super().__init__()
        self.path_prefix = path_prefix
        self.api = OpenApiCatalogue(json.loads(SUBSET_PATH.read_text(encoding="utf-8")))
        self.token_ttl_s = token_ttl_s
        self._repos: dict[str, _Repo] = {}
        self._tokens: dict[str, tuple[str, float | None]] = {}  # token → (login, expires)
        self._scopes: dict[str, str] = {}  # classic token → its X-OAuth-Scopes header
        self._users: dict[str, int] = {}
        self._apps: dict[int, _App] = {}
        self._installations: dict[int, tuple[int, set[str]]] = {}  # id → (app, repos)
        self._token_installations: dict[str, int] = {}  # installation token → installation id
        self._forks: dict[str, int] = {}  # full name of a fork PRs come from → its repo id
        self.issued_tokens: list[str] = []
        self._handlers: dict[str, Callable[[Request, _Repo | None, dict[str, Any]], Reply]] = {
            "apps/get-authenticated": self._get_app,
            "apps/create-installation-access-token": self._create_installation_token,
            "users/get-authenticated": self._get_user,
            "repos/get": self._get_repo,
            "apps/get-repo-installation": self._get_repo_installation,
            "repos/get-collaborator-permission-level": self._get_permission,
            "repos/create-commit-status": self._create_status,
            "repos/get-combined-status-for-ref": self._combined_status,
            "repos/list-commit-statuses-for-ref": self._list_statuses,
            "checks/list-for-ref": self._list_check_runs,
            "checks/create": self._create_check_run,
            "checks/update": self._update_check_run,
            "checks/get": self._get_check_run,
            "issues/list-comments": self._list_comments,
            "issues/create-comment": self._create_comment,
            "issues/get-comment": self._get_comment,
            "issues/update-comment": self._update_comment,
            "reactions/list-for-issue-comment": self._list_reactions,
            "reactions/create-for-issue-comment": self._create_reaction,
            "issues/list-labels-on-issue": self._list_issue_labels,
            "issues/add-labels": self._add_labels,
            "pulls/list": self._list_pulls,
            "pulls/create": self._create_pull,
            "pulls/get": self._get_pull,
        }

    # -- arranging state ------------------------------------------------------------------
    def add_repo(
        self, full_name: str, *, default_branch: str = "main", private: bool = True
    ) -> None:
        with self._lock:
            self._repos[full_name] = _Repo(self.next_id(), full_name, default_branch, private)

    def add_token(self, token: str, login: str, scopes: str | None = None) -> None:
        """A personal/bot access token acting as `login`; `scopes` ("repo, read:org") makes it
        a classic token, whose GET /user answer carries them in `X-OAuth-Scopes` as GitHub
        does (None: a fine-grained token, which GitHub sends no such header for)."""
        with self._lock:
            self._tokens[token] = (login, None)
            self._user_id(login)
            if scopes is not None:
                self._scopes[token] = scopes

    def add_app(self, app_id: int, public_key_pem: str, *, slug: str = "coalmine",
                permissions: dict[str, str] | None = None) -> None:
        """An App; `permissions` as GET /app lists them (default: what Coalmine needs)."""
        with self._lock:
            self._apps[app_id] = _App(app_id, slug, public_key_pem, dict(
                APP_PERMISSIONS if permissions is None else permissions))

    def add_installation(self, installation_id: int, app_id: int, repos: list[str]) -> None:
        with self._lock:
            self._installations[installation_id] = (app_id, set(repos))

    def set_permission(self, full_name: str, login: str, role: str) -> None:
        """Give `login` a repository role: admin, maintain, write, triage, read or none."""
        assert role in ROLE_TO_PERMISSION, role
        with self._lock:
            self._repo(full_name).roles[login] = role
            self._user_id(login)

    def add_pull(
        self,
        full_name: str,
        *,
        head: str,
        base: str = "main",
        title: str = "Change",
        body: str = "",
        state: str = "open",
        author: str = "alice",
        merge_sha: str | None = None,
        head_repo: str | None = None,
        head_sha: str | None = None,
    ) -> int:
        """An existing PR (state open, closed or merged); returns its number.

        `merge_sha` is the merge commit of a merged PR (a random one when not given);
        `head_repo` the full name of the fork its branch comes from (default: the repo itself).
        """
        with self._lock:
            repo = self._repo(full_name)
            if head_repo is not None and ":" not in head:
                head = f"{head_repo.split('/')[0]}:{head}"
            pull = self._new_pull(repo, self.url, head, base, title, body, author, head_repo)
            if head_sha is not None:
                pull["head"]["sha"] = head_sha
            if state != "open":
                pull["state"] = "closed"
                pull["closed_at"] = now_iso()
            if state == "merged":
                pull["merged"] = True
                pull["merged_at"] = now_iso()
                pull["merge_commit_sha"] = merge_sha or secrets.token_hex(20)
            return pull["number"]

    def set_head_sha(self, full_name: str, number: int, sha: str) -> None:
        """What a push to the PR's branch leaves: its head is `sha`."""
        with self._lock:
            self._repo(full_name).issues[number]["head"]["sha"] = sha

    def add_comment(self, full_name: str, number: int, body: str, *, login: str = "alice") -> int:
        """A comment by someone else (a human, another bot); returns its id."""
        with self._lock:
            return self._new_comment(self._repo(full_name), self.url, number, body, login)["id"]

    def delete_comment(self, full_name: str, comment_id: int) -> None:
        """What a person deleting the comment in the UI leaves behind."""
        with self._lock:
            del self._repo(full_name).comments[comment_id]

    def add_status(self, full_name: str, sha: str, context: str, state: str, *,
                   target_url: str | None = None, login: str = "ci-bot") -> None:
        """A commit status posted by someone else (a CI service), as its API call would."""
        with self._lock:
            self._repo(full_name).statuses.setdefault(sha, []).append({
                "id": self.next_id(), "state": state, "description": f"{context}: {state}",
                "target_url": target_url, "context": context, "created_at": now_iso(),
                "updated_at": now_iso(), "creator": self._user(login)})

    def add_check_run(self, full_name: str, sha: str, name: str, *, status: str = "queued",
                      conclusion: str | None = None, app: str = "github-actions") -> int:
        """A check run of a GitHub App (Actions, say) on `sha`; returns its id. A re-run adds
        another run of the same name, which then hides the older one (`filter=latest`)."""
        with self._lock:
            run_id = self.next_id()
            self._repo(full_name).check_runs.setdefault(sha, []).append({
                "id": run_id, "head_sha": sha, "name": name, "status": status,
                "conclusion": conclusion, "started_at": now_iso(),
                "completed_at": now_iso() if status == "completed" else None,
                "html_url": f"{self.url}/{full_name}/runs/{run_id}",
                "details_url": f"{self.url}/{full_name}/runs/{run_id}",
                "app": {"id": 15368, "slug": app, "name": app}})
            return run_id

    def set_check_run(self, full_name: str, run_id: int, *, status: str,
                      conclusion: str | None = None) -> None:
        """What the App's update of the run leaves: its status, and once completed, its
        conclusion."""
        with self._lock:
            for runs in self._repo(full_name).check_runs.values():
                for run in runs:
                    if run["id"] == run_id:
                        run.update(status=status, conclusion=conclusion,
                                   completed_at=now_iso() if status == "completed" else None)

    # -- reading state --------------------------------------------------------------------
    def check_runs(self, full_name: str, sha: str) -> list[dict[str, Any]]:
        """Every check run on `sha` (an App's own included), oldest first."""
        with self._lock:
            return copy.deepcopy(self._repo(full_name).check_runs.get(sha, []))

    def comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        with self._lock:
            repo = self._repo(full_name)
            return [copy.deepcopy(c) for c in repo.comments.values() if c["_number"] == number]

    def statuses(self, full_name: str, sha: str) -> list[dict[str, Any]]:
        """Every status posted for `sha`, oldest first."""
        with self._lock:
            return copy.deepcopy(self._repo(full_name).statuses.get(sha, []))

    def latest_statuses(self, full_name: str, sha: str) -> dict[str, dict[str, Any]]:
        """The current status per context, as GitHub shows it on the commit."""
        return {s["context"]: s for s in self.statuses(full_name, sha)}

    def pulls(self, full_name: str) -> list[dict[str, Any]]:
        with self._lock:
            repo = self._repo(full_name)
            return [copy.deepcopy(i) for i in repo.issues.values() if "head" in i]

    def issue_labels(self, full_name: str, number: int) -> list[str]:
        with self._lock:
            return [label["name"] for label in self._repo(full_name).issues[number]["labels"]]

    def reactions(self, full_name: str, comment_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._repo(full_name).reactions.get(comment_id, []))

    # -- dispatch -------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        """The base URL to give gidgethub."""
        return self.url + self.path_prefix

    def dispatch(self, request: Request) -> Reply:
        if not request.path.startswith(self.path_prefix):
            return Reply(404, {"message": "Not Found"}, {}, "route")
        path = request.path.removeprefix(self.path_prefix)
        operation, path_params = self.api.match(request.method, path)
        login = self._authenticate(operation.operation_id, request)
        params = self.api.validate(operation, path_params, request)
        params["_login"] = login
        repo = None
        if "owner" in params:
            repo = self._repos.get(f"{params['owner']}/{params['repo']}")
            if repo is None:
                return _not_found()
        reply = self._handlers[operation.operation_id](request, repo, params)
        reply.headers.setdefault("X-RateLimit-Limit", "5000")
        reply.headers.setdefault("X-RateLimit-Remaining", "4999")
        reply.headers.setdefault("X-RateLimit-Reset", str(int(time.time()) + 3600))
        return reply

    def _authenticate(self, operation_id: str, request: Request) -> str:
        """The caller's login (or "app:<id>" for an App JWT); 401 like GitHub otherwise."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if not credential:
            raise Reply(401, {"message": "Requires authentication"}, {}, "auth")
        if operation_id in JWT_OPERATIONS:
            if scheme.lower() != "bearer":
                raise Reply(401, {"message": "A JSON web token could not be decoded"}, {}, "auth")
            return f"app:{self._verify_app_jwt(credential)}"
        identity = self._tokens.get(credential)
        if identity is None or (identity[1] is not None and identity[1] <= time.time()):
            raise Reply(
                401, {"message": "Bad credentials", "documentation_url": DOCS_URL}, {}, "auth"
            )
        return identity[0]

    def _verify_app_jwt(self, token: str) -> int:
        try:
            issuer = int(jwt.decode(token, options={"verify_signature": False})["iss"])
            app = self._apps[issuer]
            claims = jwt.decode(
                token, app.public_key, algorithms=["RS256"], options={"require": ["exp", "iat"]}
            )
        except (jwt.PyJWTError, KeyError, ValueError) as exc:
            message = f"A JSON web token could not be decoded ({type(exc).__name__})"
            raise Reply(401, {"message": message}, {}, "auth") from exc
        if claims["exp"] - claims["iat"] > 600 + 60:
            raise Reply(
                401,
                {"message": "Expiration time' claim ('exp') is too far in the future"},
                {},
                "auth",
            )
        return app.app_id

    # -- helpers --------------------------------------------------------------------------
    def _repo(self, full_name: str) -> _Repo:
        return self._repos[full_name]

    def _user_id(self, login: str) -> int:
        return self._users.setdefault(login, self.next_id())

    def _user(self, login: str) -> dict[str, Any]:
        kind = "Bot" if login.endswith("[bot]") else "User"
        return {"login": login, "id": self._user_id(login), "type": kind}

    def _repo_json(self, repo: _Repo, base_url: str) -> dict[str, Any]:
        return {
            "id": repo.id,
            "name": repo.full_name.split("/")[1],
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": self._user(repo.owner),
            "default_branch": repo.default_branch,
            "html_url": f"{base_url}/{repo.full_name}",
            "clone_url": f"{base_url}/{repo.full_name}.git",
        }

    def _issue(self, repo: _Repo, number: int) -> dict[str, Any]:
        issue = repo.issues.get(number)
        if issue is None:
            raise _not_found()
        return issue

    def _comment(self, repo: _Repo, comment_id: int) -> dict[str, Any]:
        comment = repo.comments.get(comment_id)
        if comment is None:
            raise _not_found()
        return comment

    @staticmethod
    def _public(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if not k.startswith("_")}

    # -- Apps and users -------------------------------------------------------------------
    def _get_app(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        app = self._apps[int(p["_login"].removeprefix("app:"))]
        return Reply(200, {"id": app.app_id, "slug": app.slug, "name": app.slug,
                           "permissions": app.permissions})

    def _create_installation_token(
        self, request: Request, repo: _Repo | None, p: dict[str, Any]
    ) -> Reply:
        app_id = int(p["_login"].removeprefix("app:"))
        installation = self._installations.get(p["installation_id"])
        if installation is None or installation[0] != app_id:
            return _not_found()
        token = "ghs_" + secrets.token_hex(18)
        expires = time.time() + self.token_ttl_s
        self._tokens[token] = (f"{self._apps[app_id].slug}[bot]", expires)
        self._token_installations[token] = p["installation_id"]
        self.issued_tokens.append(token)
        body = {"token": token, "expires_at": now_iso(expires), "repository_selection": "selected"}
        return Reply(201, body)

    def _get_user(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        token = request.headers.get("authorization", "").partition(" ")[2]
        scopes = self._scopes.get(token)
        return Reply(200, self._user(p["_login"]),
                     {} if scopes is None else {"X-OAuth-Scopes": scopes})

    def _get_repo(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        return Reply(200, self._repo_json(repo, request.base_url))

    def _get_repo_installation(
        self, request: Request, repo: _Repo | None, p: dict[str, Any]
    ) -> Reply:
        assert repo is not None
        app_id = int(p["_login"].removeprefix("app:"))
        for installation_id, (owner_app, repos) in self._installations.items():
            if owner_app == app_id and repo.full_name in repos:
                return Reply(200, {"id": installation_id, "app_id": app_id})
        return _not_found()

    def _get_permission(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        role = repo.roles.get(p["username"])
        if role is None:
            message = f"{p['username']} is not a user"
            return Reply(404, {"message": message, "documentation_url": DOCS_URL}, {}, "state")
        body = {
            "permission": ROLE_TO_PERMISSION[role],
            "role_name": role,
            "user": self._user(p["username"]),
        }
        return Reply(200, body)

    # -- statuses -------------------------------------------------------------------------
    def _create_status(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        body = request.json
        description = body.get("description") or ""
        context = body.get("context", "default")
        if len(description) > self.STATUS_DESCRIPTION_MAX:
            message = (
                f"description is too long (maximum is {self.STATUS_DESCRIPTION_MAX} characters)"
            )
            return _validation_failed("Status", "description", message)
        if len(context) > self.STATUS_CONTEXT_MAX:
            message = f"context is too long (maximum is {self.STATUS_CONTEXT_MAX} characters)"
            return _validation_failed("Status", "context", message)
        status = {
            "id": self.next_id(),
            "state": body["state"],
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "context": context,
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "creator": self._user(p["_login"]),
        }
        repo.statuses.setdefault(p["sha"], []).append(status)
        return Reply(201, status)

    def _combined_status(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        latest = {s["context"]: s for s in repo.statuses.get(p["ref"], [])}
        states = {s["state"] for s in latest.values()}
        if states & {"error", "failure"}:
            combined = "failure"
        elif not states or "pending" in states:
            combined = "pending"
        else:
            combined = "success"
        body = {
            "state": combined,
            "sha": p["ref"],
            "total_count": len(latest),
            "statuses": list(latest.values()),
        }
        return Reply(200, body)

    def _list_statuses(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        return paginate(request, list(reversed(repo.statuses.get(p["ref"], []))))

    def _list_check_runs(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        """GitHub's answer: newest first, by default only the latest run of each name."""
        assert repo is not None
        runs = list(reversed(repo.check_runs.get(p["ref"], [])))
        if p.get("filter", "latest") == "latest":
            seen: set[str] = set()
            runs = [r for r in runs if not (r["name"] in seen or seen.add(r["name"]))]
        for key in ("check_name", "status"):
            if p.get(key):
                runs = [r for r in runs if r["name" if key == "check_name" else key] == p[key]]
        page = paginate(request, runs)
        return Reply(200, {"total_count": len(runs), "check_runs": page.body}, page.headers)

    # -- check runs written by an App -------------------------------------------------------
    def _calling_app(self, request: Request, repo: _Repo) -> dict[str, Any] | Reply:
        """The App behind the request's installation token, as a check run's `app` shows it;
        GitHub refuses check-run writes by anyone else, and by an App not installed on `repo`."""
        token = request.headers.get("authorization", "").partition(" ")[2]
        installation = self._installations.get(self._token_installations.get(token, -1))
        if installation is None:
            return Reply(403, {"message": "You must authenticate via a GitHub App.",
                               "documentation_url": DOCS_URL}, {}, "auth")
        app_id, repos = installation
        if repo.full_name not in repos:
            return Reply(403, {"message": "Resource not accessible by integration",
                               "documentation_url": DOCS_URL}, {}, "auth")
        app = self._apps[app_id]
        if app.permissions.get("checks") != "write":  # installed without Checks: write
            return Reply(403, {"message": "Resource not accessible by integration",
                               "documentation_url": DOCS_URL}, {}, "auth")
        return {"id": app.app_id, "slug": app.slug, "name": app.slug}

    def _find_check_run(self, repo: _Repo, run_id: int) -> dict[str, Any] | None:
        return next((r for runs in repo.check_runs.values() for r in runs if r["id"] == run_id),
                    None)

    @staticmethod
    def _check_run_fields(body: dict[str, Any]) -> dict[str, Any] | Reply:
        """The fields a create or update sets, with GitHub's rule that a completed run has a
        conclusion (and that a conclusion completes it)."""
        fields = {k: body[k] for k in ("name", "details_url", "status", "conclusion", "output",
                                       "actions") if k in body}
        if fields.get("conclusion"):
            fields["status"] = "completed"
        elif fields.get("status") == "completed":
            return _validation_failed("CheckRun", "conclusion",
                                      "conclusion is required when status is completed",
                                      "missing_field")
        if fields.get("status") == "completed":
            fields["completed_at"] = now_iso()
        return fields

    def _create_check_run(self, request: Request, repo: _Repo | None,
                          p: dict[str, Any]) -> Reply:
        assert repo is not None
        app = self._calling_app(request, repo)
        if isinstance(app, Reply):
            return app
        fields = self._check_run_fields(request.json)
        if isinstance(fields, Reply):
            return fields
        run_id = self.next_id()
        sha = request.json["head_sha"]
        run = {"id": run_id, "head_sha": sha, "name": request.json["name"], "status": "queued",
               "conclusion": None, "started_at": now_iso(), "completed_at": None,
               "html_url": f"{self.url}/{repo.full_name}/runs/{run_id}",
               "url": f"{request.base_url}/repos/{repo.full_name}/check-runs/{run_id}",
               "details_url": None, "output": {}, "actions": [], "app": app, **fields}
        repo.check_runs.setdefault(sha, []).append(run)
        return Reply(201, run)

    def _update_check_run(self, request: Request, repo: _Repo | None,
                          p: dict[str, Any]) -> Reply:
        assert repo is not None
        app = self._calling_app(request, repo)
        if isinstance(app, Reply):
            return app
        run = self._find_check_run(repo, p["check_run_id"])
        if run is None:
            return _not_found()
        if run["app"]["id"] != app["id"]:  # only the App that created a run may change it
            return Reply(403, {"message": f"Invalid app_id `{app['id']}` - check run can only "
                               "be modified by the GitHub App that created it.",
                               "documentation_url": DOCS_URL}, {}, "auth")
        fields = self._check_run_fields(request.json)
        if isinstance(fields, Reply):
            return fields
        run.update(fields)
        return Reply(200, run)

    def _get_check_run(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        run = self._find_check_run(repo, p["check_run_id"])
        return _not_found() if run is None else Reply(200, run)

    # -- comments and reactions -----------------------------------------------------------
    def _new_comment(
        self, repo: _Repo, base_url: str, number: int, body: str, login: str
    ) -> dict[str, Any]:
        self._issue(repo, number)
        comment_id = self.next_id()
        comment = {
            "id": comment_id,
            "body": body,
            "user": self._user(login),
            "html_url": f"{base_url}/{repo.full_name}/issues/{number}#issuecomment-{comment_id}",
            "issue_url": f"{base_url}{self.path_prefix}/repos/{repo.full_name}/issues/{number}",
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "_number": number,
        }
        repo.comments[comment_id] = comment
        return comment

    def _check_comment_body(self, body: str) -> None:
        if len(body) > self.COMMENT_BODY_MAX:
            message = f"Body is too long (maximum is {self.COMMENT_BODY_MAX} characters)"
            raise _validation_failed("IssueComment", "data", message, code="unprocessable")

    def _list_comments(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        self._issue(repo, p["issue_number"])
        found = [
            self._public(c) for c in repo.comments.values() if c["_number"] == p["issue_number"]
        ]
        return paginate(request, found)

    def _create_comment(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        self._check_comment_body(request.json["body"])
        comment = self._new_comment(
            repo, request.base_url, p["issue_number"], request.json["body"], p["_login"]
        )
        return Reply(201, self._public(comment))

    def _get_comment(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        return Reply(200, self._public(self._comment(repo, p["comment_id"])))

    def _update_comment(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        comment = self._comment(repo, p["comment_id"])
        if comment["user"]["login"] != p["_login"] and repo.roles.get(p["_login"]) != "admin":
            return Reply(403, {"message": "Resource not accessible by integration"}, {}, "state")
        self._check_comment_body(request.json["body"])
        comment["body"] = request.json["body"]
        comment["updated_at"] = now_iso()
        return Reply(200, self._public(comment))

    def _list_reactions(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        self._comment(repo, p["comment_id"])
        return paginate(request, repo.reactions.get(p["comment_id"], []))

    def _create_reaction(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        self._comment(repo, p["comment_id"])
        existing = repo.reactions.setdefault(p["comment_id"], [])
        content = request.json["content"]
        for reaction in existing:
            if reaction["user"]["login"] == p["_login"] and reaction["content"] == content:
                return Reply(200, reaction)
        reaction = {"id": self.next_id(), "content": content, "user": self._user(p["_login"])}
        existing.append(reaction)
        return Reply(201, reaction)

    # -- labels ---------------------------------------------------------------------------
    def _list_issue_labels(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        return paginate(request, self._issue(repo, p["issue_number"])["labels"])

    def _add_labels(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        issue = self._issue(repo, p["issue_number"])
        for item in request.json.get("labels", []):
            name = item if isinstance(item, str) else item["name"]
            label = repo.labels.setdefault(
                name, {"id": self.next_id(), "name": name, "color": "ededed"}
            )
            if label not in issue["labels"]:
                issue["labels"].append(label)
        return Reply(200, issue["labels"])

    # -- pulls ----------------------------------------------------------------------------
    def _source_repo(self, repo: _Repo, base_url: str, head_owner: str,
                     head_repo: str | None) -> dict[str, Any]:
        """`head.repo` of a PR: the repository itself, or the fork the branch lives in."""
        name = head_repo or f"{head_owner}/{repo.full_name.split('/')[1]}"
        if name in self._repos:
            return self._repo_json(self._repos[name], base_url)
        fork = _Repo(self._forks.setdefault(name, self.next_id()), name, repo.default_branch,
                     repo.private)
        return {**self._repo_json(fork, base_url), "fork": True}

    def _new_pull(
        self,
        repo: _Repo,
        base_url: str,
        head: str,
        base: str,
        title: str,
        body: str,
        login: str,
        head_repo: str | None = None,
    ) -> dict[str, Any]:
        number = max(repo.issues, default=0) + 1
        head_ref = head.split(":", 1)[-1]
        head_owner = head.split(":", 1)[0] if ":" in head else repo.owner
        source = self._source_repo(repo, base_url, head_owner, head_repo)
        pull = {
            "id": self.next_id(),
            "number": number,
            "state": "open",
            "title": title,
            "body": body,
            "user": self._user(login),
            "html_url": f"{base_url}/{repo.full_name}/pull/{number}",
            "head": {"ref": head_ref, "label": f"{head_owner}:{head_ref}", "sha": "0" * 40,
                     "repo": source},
            "base": {"ref": base, "label": f"{repo.owner}:{base}",
                     "repo": self._repo_json(repo, base_url)},
            "labels": [],
            "created_at": now_iso(),
            "closed_at": None,
            "merged": False,
            "merged_at": None,
            # GitHub fills this for an open PR too: the commit of its test merge.
            "merge_commit_sha": secrets.token_hex(20),
        }
        repo.issues[number] = pull
        return pull

    def _list_pulls(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        state = p.get("state", "open")
        found = [
            pull
            for pull in repo.issues.values()
            if "head" in pull
            and (state == "all" or pull["state"] == state)
            and ("head" not in p or pull["head"]["label"] == p["head"])
            and ("base" not in p or pull["base"]["ref"] == p["base"])
        ]
        descending = p.get("direction", "desc" if p.get("sort", "created") == "created" else "asc")
        found.sort(key=lambda pull: pull["number"], reverse=descending == "desc")
        return paginate(request, found)

    def _create_pull(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        body = request.json
        if "title" not in body and "issue" not in body:
            return _validation_failed(
                "PullRequest", "title", "title is missing", code="missing_field"
            )
        pull = self._new_pull(
            repo,
            request.base_url,
            body["head"],
            body["base"],
            body.get("title", ""),
            body.get("body") or "",
            p["_login"],
        )
        duplicates = [
            other
            for other in repo.issues.values()
            if other is not pull
            and "head" in other
            and other["state"] == "open"
            and other["head"]["label"] == pull["head"]["label"]
            and other["base"]["ref"] == pull["base"]["ref"]
        ]
        if duplicates:
            del repo.issues[pull["number"]]
            message = f"A pull request already exists for {pull['head']['label']}."
            return _validation_failed("PullRequest", "head", message)
        return Reply(201, pull)

    def _get_pull(self, request: Request, repo: _Repo | None, p: dict[str, Any]) -> Reply:
        assert repo is not None
        pull = repo.issues.get(p["pull_number"])
        if pull is None or "head" not in pull:
            return _not_found()
        return Reply(200, pull)
