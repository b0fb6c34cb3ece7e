"""A stateful fake of the GitLab REST API v4, as python-gitlab uses it.

It serves the few resources Coalmine touches — projects (by id or URL-encoded path), members,
users, merge requests, MR notes and their award emoji, commit statuses, labels — with GitLab's
answers where they matter to an adapter: `PRIVATE-TOKEN` auth (401), 404s named like GitLab's,
offset pagination headers (`X-Page`, `X-Next-Page`, `X-Total`, `Link`), 409 for a second open MR
from one branch, and the commit-status state machine that refuses pending→pending and
running→running with "Cannot transition status". Calls are recorded and faults injected through
`JsonFakeServer`.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from tests.harness.github import JsonFakeServer, Reply, Request, now_iso, paginate

API_PREFIX = "/api/v4"
_MR = r"/projects/(?P<project>[^/]+)/merge_requests/(?P<iid>\d+)"
_NOTES = _MR + "/notes"
_NOTE = _NOTES + r"/(?P<note>\d+)"
_COMMIT = r"/projects/(?P<project>[^/]+)/repository/commits/(?P<sha>\w+)"
STATUS_STATES = ("pending", "running", "success", "failed", "canceled")
STATUS_DESCRIPTION_MAX = 255
# The event GitLab fires for each requested state, and the states it may fire from while a
# status is still open; a finished status is never transitioned, a new one replaces it.
_EVENTS = {
    "pending": "enqueue",
    "running": "run",
    "success": "success",
    "failed": "drop",
    "canceled": "cancel",
}
_ALLOWED_FROM = {
    "pending": set(),
    "running": {"pending"},
    "success": {"pending", "running"},
    "failed": {"pending", "running"},
    "canceled": {"pending", "running"},
}
_FINISHED = {"success", "failed", "canceled"}


def _error(status: int, message: Any, rejected_by: str = "state") -> Reply:
    return Reply(status, {"message": message}, {}, rejected_by)


def _missing(what: str) -> Reply:
    return _error(404, f"404 {what} Not Found")


def _bad_param(message: str) -> Reply:
    return Reply(400, {"error": message}, {}, "rule")


@dataclass
class _Project:
    id: int
    path: str
    default_branch: str
    access: dict[int, int] = field(default_factory=dict)  # user id → access level
    merge_requests: dict[int, dict[str, Any]] = field(default_factory=dict)  # iid → MR
    notes: dict[int, dict[str, Any]] = field(default_factory=dict)  # note id → note
    awards: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # note id → emoji
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # sha → oldest first
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipelines: dict[int, dict[str, Any]] = field(default_factory=dict)  # id → pipeline


Handler = Callable[[Request, dict[str, str], int], Reply]


class FakeGitLab(JsonFakeServer):
    """In-memory GitLab. Arrange with `add_*`/`set_*`, inspect with the accessors."""

    def __init__(self) -> None:
        super().__init__()
        self._tokens: dict[str, int] = {}  # token → user id
        self._token_facts: dict[str, dict[str, Any]] = {}  # token → scopes, expiry
        self._users: dict[str, int] = {}  # username → id
        self._projects: dict[int, _Project] = {}
        routes: list[tuple[str, str, Handler]] = [
            ("GET", r"/user", self._get_current_user),
            ("GET", r"/personal_access_tokens/self", self._get_own_token),
            ("GET", r"/users", self._list_users),
            ("GET", r"/projects/(?P<project>[^/]+)", self._get_project),
            ("GET", r"/projects/(?P<project>[^/]+)/members/all/(?P<user>\d+)", self._get_member),
            ("GET", r"/projects/(?P<project>[^/]+)/merge_requests", self._list_mrs),
            ("POST", r"/projects/(?P<project>[^/]+)/merge_requests", self._create_mr),
            ("GET", r"/projects/(?P<project>[^/]+)/merge_requests/(?P<iid>\d+)", self._get_mr),
            ("GET", r"/projects/(?P<project>[^/]+)/labels", self._list_labels),
            ("GET", _NOTES, self._list_notes),
            ("POST", _NOTES, self._create_note),
            ("GET", _NOTE, self._get_note),
            ("PUT", _NOTE, self._update_note),
            ("GET", _NOTE + "/award_emoji", self._list_awards),
            ("POST", _NOTE + "/award_emoji", self._create_award),
            ("POST", r"/projects/(?P<project>[^/]+)/statuses/(?P<sha>\w+)", self._create_status),
            ("GET", _COMMIT + "/statuses", self._list_statuses),
            ("GET", r"/projects/(?P<project>[^/]+)/pipelines", self._list_pipelines),
        ]
        self._routes = [(m, re.compile(API_PREFIX + p), h) for m, p, h in routes]

    @property
    def api_url(self) -> str:
        """The URL python-gitlab is given (it appends /api/v4 itself)."""
        return self.url

    # -- arranging state ------------------------------------------------------------------
    def add_user(self, username: str) -> int:
        with self._lock:
            return self._users.setdefault(username, self.next_id())

    def add_token(self, token: str, username: str, scopes: tuple[str, ...] = ("api",),
                  expires_at: str | None = None) -> None:
        """A token acting as `username`, described by GET /personal_access_tokens/self."""
        with self._lock:
            self._tokens[token] = self.add_user(username)
            self._token_facts[token] = {"scopes": list(scopes), "expires_at": expires_at}

    def add_project(self, path: str, *, default_branch: str = "main") -> int:
        with self._lock:
            project = _Project(self.next_id(), path, default_branch)
            self._projects[project.id] = project
            return project.id

    def set_access(self, path: str, username: str, level: int) -> None:
        """Make `username` a member with `level` (10 Guest … 50 Owner)."""
        with self._lock:
            self._project(path).access[self.add_user(username)] = level

    def add_merge_request(
        self,
        path: str,
        *,
        source_branch: str,
        target_branch: str = "main",
        title: str = "Change",
        state: str = "opened",
        author: str = "alice",
        merge_sha: str | None = None,
        merge_method: Literal["merge", "squash", "ff"] = "merge",
        source_project_id: int | None = None,
        head_sha: str | None = None,
    ) -> int:
        """An existing MR; returns its iid.

        A merged MR records `merge_sha` (random when not given) where GitLab puts it for the
        project's merge method: `merge_commit_sha` for a merge commit, `squash_commit_sha` for
        squash with fast-forward, only the MR's head `sha` for a plain fast-forward.
        `source_project_id` is the fork the source branch lives in (default: the project).
        """
        with self._lock:
            project = self._project(path)
            mr = self._new_mr(project, source_branch, target_branch, title, "", author)
            if source_project_id is not None:
                mr["source_project_id"] = source_project_id
            if head_sha is not None:
                mr["sha"] = head_sha
            mr["state"] = state
            if state == "merged":
                mr["merged_at"] = now_iso()
                landed = merge_sha or secrets.token_hex(20)
                if merge_method == "merge":
                    mr["merge_commit_sha"] = landed
                elif merge_method == "squash":
                    mr.update(squash=True, squash_commit_sha=landed)
                else:
                    mr["sha"] = landed
            return int(mr["iid"])

    def set_head_sha(self, path: str, iid: int, sha: str) -> None:
        """What a push to the MR's source branch leaves: its head is `sha`."""
        with self._lock:
            self._mr(self._project(path), iid)["sha"] = sha

    def add_note(
        self, path: str, iid: int, body: str, *, username: str = "alice", system: bool = False
    ) -> int:
        """A note on MR `iid`; `system=True` makes one GitLab itself writes ("merged", …)."""
        with self._lock:
            note = self._new_note(self._project(path), iid, body, username)
            note["system"] = system
            return int(note["id"])

    def delete_note(self, path: str, note_id: int) -> None:
        """What a person deleting the note in the UI leaves behind."""
        with self._lock:
            del self._project(path).notes[note_id]

    # -- reading state --------------------------------------------------------------------
    def notes(self, path: str, iid: int) -> list[dict[str, Any]]:
        with self._lock:
            notes = self._project(path).notes.values()
            return [copy.deepcopy(n) for n in notes if n["noteable_iid"] == iid]

    def merge_requests(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._project(path).merge_requests.values()))

    def statuses(self, path: str, sha: str) -> list[dict[str, Any]]:
        """Every status record for `sha`, oldest first (replaced ones have "retried": True)."""
        with self._lock:
            return copy.deepcopy(self._project(path).statuses.get(sha, []))

    def latest_statuses(self, path: str, sha: str) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.statuses(path, sha) if not s["retried"]}

    def add_pipeline(self, path: str, sha: str, status: str = "running", *,
                     ref: str = "main") -> int:
        """A CI pipeline for `sha` (GitLab's own CI); returns its id."""
        with self._lock:
            project = self._project(path)
            pipeline_id = self.next_id()
            project.pipelines[pipeline_id] = {
                "id": pipeline_id, "iid": len(project.pipelines) + 1, "project_id": project.id,
                "sha": sha, "ref": ref, "status": status, "source": "push",
                "created_at": now_iso(), "updated_at": now_iso(),
                "web_url": f"{self.url}/{project.path}/-/pipelines/{pipeline_id}"}
            return pipeline_id

    def set_pipeline_status(self, path: str, pipeline_id: int, status: str) -> None:
        with self._lock:
            self._project(path).pipelines[pipeline_id].update(status=status,
                                                              updated_at=now_iso())

    def add_job_status(self, path: str, sha: str, name: str, status: str, *,
                       allow_failure: bool = False, username: str = "ci-runner") -> None:
        """A CI job's commit status (GitLab lists each job of a pipeline among the commit's
        statuses, by the job's name); a later one of the same name replaces it."""
        with self._lock:
            history = self._project(path).statuses.setdefault(sha, [])
            for old in history:
                if old["name"] == name:
                    old["retried"] = True
            job_id = self.next_id()
            history.append({
                "id": job_id, "sha": sha, "ref": "main", "status": status, "name": name,
                "description": None, "allow_failure": allow_failure,
                "target_url": f"{self.url}/{path}/-/jobs/{job_id}", "created_at": now_iso(),
                "finished_at": now_iso() if status in _FINISHED else None,
                "author": self._user_json(self.add_user(username)), "retried": False})

    def award_emoji(self, path: str, note_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._project(path).awards.get(note_id, []))

    # -- dispatch -------------------------------------------------------------------------
    def dispatch(self, request: Request) -> Reply:
        for method, pattern, handler in self._routes:
            found = pattern.fullmatch(request.path)
            if found and method == request.method:
                user_id = self._tokens.get(request.headers.get("private-token", ""))
                if user_id is None:
                    return _error(401, "401 Unauthorized", "auth")
                return handler(request, found.groupdict(), user_id)
        return _error(404, "404 Not Found", "route")

    # -- helpers --------------------------------------------------------------------------
    def _project(self, key: str | int) -> _Project:
        key = unquote(str(key))
        for project in self._projects.values():
            if str(project.id) == key or project.path == key:
                return project
        raise _missing("Project")

    def _user_json(self, user_id: int) -> dict[str, Any]:
        username = next(name for name, uid in self._users.items() if uid == user_id)
        return {"id": user_id, "username": username, "name": username, "state": "active"}

    def _mr(self, project: _Project, iid: str | int) -> dict[str, Any]:
        mr = project.merge_requests.get(int(iid))
        if mr is None:
            raise _missing("Merge Request")
        return mr

    def _note(self, project: _Project, iid: str, note_id: str) -> dict[str, Any]:
        note = project.notes.get(int(note_id))
        if note is None or note["noteable_iid"] != int(iid):
            raise _missing("Note")
        return note

    def _new_mr(
        self, project: _Project, source: str, target: str, title: str, description: str, author: str
    ) -> dict[str, Any]:
        iid = max(project.merge_requests, default=0) + 1
        mr = {
            "id": self.next_id(),
            "iid": iid,
            "project_id": project.id,
            "title": title,
            "description": description,
            "state": "opened",
            "source_branch": source,
            "target_branch": target,
            "source_project_id": project.id,
            "target_project_id": project.id,
            "sha": secrets.token_hex(20),  # the source branch's head commit
            "merge_commit_sha": None,
            "squash_commit_sha": None,
            "squash": False,
            "labels": [],
            "author": self._user_json(self.add_user(author)),
            "web_url": f"{self.url}/{project.path}/-/merge_requests/{iid}",
            "created_at": now_iso(),
            "merged_at": None,
        }
        project.merge_requests[iid] = mr
        return mr

    def _new_note(self, project: _Project, iid: int, body: str, username: str) -> dict[str, Any]:
        self._mr(project, iid)
        note = {
            "id": self.next_id(),
            "body": body,
            "author": self._user_json(self.add_user(username)),
            "system": False,
            "noteable_type": "MergeRequest",
            "noteable_iid": int(iid),
            "created_at": now_iso(),
            "updated_at": now_iso(),
        }
        project.notes[note["id"]] = note
        return note

    # -- users and projects ---------------------------------------------------------------
    def _get_current_user(self, request: Request, args: dict[str, str], me: int) -> Reply:
        return Reply(200, self._user_json(me))

    def _get_own_token(self, request: Request, args: dict[str, str], me: int) -> Reply:
        token = request.headers.get("private-token", "")
        facts = self._token_facts.get(token, {})
        return Reply(200, {"id": me, "name": "coalmine", "revoked": False, "active": True,
                           "user_id": me, "created_at": "2026-01-01T00:00:00.000Z",
                           "expires_at": facts.get("expires_at"),
                           "scopes": facts.get("scopes", ["api"])})

    def _list_users(self, request: Request, args: dict[str, str], me: int) -> Reply:
        wanted = request.query.get("username")
        users = [
            self._user_json(uid)
            for name, uid in self._users.items()
            if wanted is None or name.lower() == wanted.lower()
        ]
        return self._page(request, users)

    def _get_project(self, request: Request, args: dict[str, str], me: int) -> Reply:
        project = self._project(args["project"])
        body = {
            "id": project.id,
            "path_with_namespace": project.path,
            "default_branch": project.default_branch,
            "http_url_to_repo": f"{self.url}/{project.path}.git",
            "web_url": f"{self.url}/{project.path}",
        }
        return Reply(200, body)

    def _get_member(self, request: Request, args: dict[str, str], me: int) -> Reply:
        project = self._project(args["project"])
        level = project.access.get(int(args["user"]))
        if level is None:
            return _error(404, "404 Not found")
        return Reply(200, {**self._user_json(int(args["user"])), "access_level": level})

    def _list_labels(self, request: Request, args: dict[str, str], me: int) -> Reply:
        return self._page(request, list(self._project(args["project"]).labels.values()))

    # -- merge requests -------------------------------------------------------------------
    def _list_mrs(self, request: Request, args: dict[str, str], me: int) -> Reply:
        project = self._project(args["project"])
        state = request.query.get("state", "all")
        found = [
            mr
            for mr in project.merge_requests.values()
            if (state == "all" or mr["state"] == state)
            and all(
                mr[key] == request.query[key]
                for key in ("source_branch", "target_branch")
                if key in request.query
            )
        ]
        found.sort(key=lambda mr: mr["iid"], reverse=request.query.get("sort", "desc") == "desc")
        return self._page(request, found)

    def _create_mr(self, request: Request, args: dict[str, str], me: int) -> Reply:
        project = self._project(args["project"])
        body = request.json or {}
        for required in ("source_branch", "target_branch", "title"):
            if not body.get(required):
                return _bad_param(f"{required} is missing")
        branches = (body["source_branch"], body["target_branch"])
        for mr in project.merge_requests.values():
            if mr["state"] == "opened" and (mr["source_branch"], mr["target_branch"]) == branches:
                taken = "Another open merge request already exists for this source branch"
                return _error(409, [f"{taken}: !{mr['iid']}"], "rule")
        author = self._user_json(me)["username"]
        mr = self._new_mr(
            project,
            body["source_branch"],
            body["target_branch"],
            body["title"],
            body.get("description", ""),
            author,
        )
        labels = body.get("labels") or []
        for name in labels.split(",") if isinstance(labels, str) else labels:
            name = name.strip()
            if name:
                project.labels.setdefault(name, {"id": self.next_id(), "name": name})
                mr["labels"].append(name)
        return Reply(201, mr)

    def _get_mr(self, request: Request, args: dict[str, str], me: int) -> Reply:
        return Reply(200, self._mr(self._project(args["project"]), args["iid"]))

    # -- notes and award emoji ------------------------------------------------------------
    def _list_notes(self, request: Request, args: dict[str, str], me: int) -> Reply:
        project = self._project(args["project"])
        self._mr(project, args["iid"])
        notes = [n for n in project.notes.values() if n["noteable_iid"] == int(args["iid"])]
        notes.sort(key=lambda n: n["id"], reverse=request.query.get("sort", "desc") == "desc")
        return self._page(request, notes)

    def _create_note(self, request: Request, args: dict[str, str], me: int) -> Reply:
        body = (request.json or {}).get("body")
        if not body:
            return _bad_param("body is missing")
        project = self._project(args["project"])
        note = self._new_note(project, int(args["iid"]), body, self._user_json(me)["username"])
        return Reply(201, note)

    def _get_note(self, request: Request, args: dict[str, str], me: int) -> Reply:
        return Reply(200, self._note(self._project(args["project"]), args["iid"], args["note"]))

    def _update_note(self, request: Request, args: dict[str, str], me: int) -> Reply:
        note = self._note(self._project(args["project"]), args["iid"], args["note"])
        body = (request.json or {}).get("body")
        if not body:
            return _bad_param("body is missing")
        if note["author"]["id"] != me:
            return _error(403, "403 Forbidden")
        note["body"] = body
        note["updated_at"] = now_iso()
        return Reply(200, note)

    def _list_awards(self, request: Request, args: dict[str, str], me: int) -> Reply:
        project = self._project(args["project"])
        self._note(project, args["iid"], args["note"])
        return self._page(request, project.awards.get(int(args["note"]), []))

    def _create_award(self, request: Request, args: dict[str, str], me: int) -> Reply:
        project = self._project(args["project"])
        self._note(project, args["iid"], args["note"])
        name = (request.json or {}).get("name")
        if not name:
            return _bad_param("name is missing")
        awards = project.awards.setdefault(int(args["note"]), [])
        if any(a["name"] == name and a["user"]["id"] == me for a in awards):
            return _error(404, "404 Award Emoji Name has already been taken Not Found", "rule")
        award = {"id": self.next_id(), "name": name, "user": self._user_json(me)}
        awards.append(award)
        return Reply(201, award)

    # -- commit statuses ------------------------------------------------------------------
    def _create_status(self, request: Request, args: dict[str, str], me: int) -> Reply:
        project = self._project(args["project"])
        body = request.json or {}
        state = body.get("state")
        if state not in STATUS_STATES:
            return _bad_param("state does not have a valid value")
        description = body.get("description") or ""
        if len(description) > STATUS_DESCRIPTION_MAX:
            return _bad_param(f"description is too long (maximum is {STATUS_DESCRIPTION_MAX})")
        name = body.get("name") or body.get("context") or "default"
        history = project.statuses.setdefault(args["sha"], [])
        current = next(
            (s for s in reversed(history) if s["name"] == name and not s["retried"]), None
        )
        if current is not None and current["status"] not in _FINISHED:
            if current["status"] not in _ALLOWED_FROM[state]:
                event = _EVENTS[state]
                message = (
                    f"Cannot transition status via :{event} from :{current['status']} "
                    f'(Reason(s): Status cannot transition via "{event}")'
                )
                return _error(400, message, "rule")
            current.update(
                status=state,
                description=body.get("description", current["description"]),
                target_url=body.get("target_url", current["target_url"]),
                finished_at=now_iso() if state in _FINISHED else None,
            )
            return Reply(201, current)
        if current is not None:
            current["retried"] = True
        status = {
            "id": self.next_id(),
            "sha": args["sha"],
            "ref": body.get("ref"),
            "status": state,
            "name": name,
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "created_at": now_iso(),
            "finished_at": now_iso() if state in _FINISHED else None,
            "author": self._user_json(me),
            "allow_failure": False,
            "retried": False,
        }
        history.append(status)
        return Reply(201, status)

    def _list_statuses(self, request: Request, args: dict[str, str], me: int) -> Reply:
        history = self._project(args["project"]).statuses.get(args["sha"], [])
        show_all = request.query.get("all") in ("true", "1")
        return self._page(request, [s for s in history if show_all or not s["retried"]])

    def _list_pipelines(self, request: Request, args: dict[str, str], me: int) -> Reply:
        """Newest first, as GitLab orders them by default; `sha` and `ref` filter."""
        pipelines = sorted(self._project(args["project"]).pipelines.values(),
                           key=lambda p: -p["id"])
        for key in ("sha", "ref", "status"):
            if request.query.get(key):
                pipelines = [p for p in pipelines if p[key] == request.query[key]]
        return self._page(request, [copy.deepcopy(p) for p in pipelines])

    # -- pagination -----------------------------------------------------------------------
    @staticmethod
    def _page(request: Request, items: list[Any]) -> Reply:
        reply = paginate(request, items, default_per_page=20)
        per_page = max(1, min(int(request.query.get("per_page") or 20), 100))
        page = max(1, int(request.query.get("page") or 1))
        pages = max(1, -(-len(items) // per_page))
        reply.headers.update(
            {
                "X-Page": str(page),
                "X-Per-Page": str(per_page),
                "X-Next-Page": str(page + 1) if page < pages else "",
                "X-Prev-Page": str(page - 1) if page > 1 else "",
                "X-Total": str(len(items)),
                "X-Total-Pages": str(pages),
            }
        )
        return reply
