"""Webhook payloads shaped like the forges' documented examples, plus signing helpers.

The field sets follow GitHub's `pull_request` / `issue_comment` webhook examples and GitLab's
"Merge request events" / "Comment events" examples, so parsers are tested on the real shape.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any


def _github_user(login: str, uid: int = 1, kind: str = "User") -> dict[str, Any]:
    return {
        "login": login, "id": uid, "node_id": "MDQ6VXNlcjE=", "type": kind, "site_admin": False,
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "html_url": f"https://github.com/{login}", "url": f"https://api.github.com/users/{login}",
    }


def _github_repo(full_name: str, clone_url: str, default_branch: str) -> dict[str, Any]:
    owner, name = full_name.split("/", 1)
    return {
        "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": name,
        "full_name": full_name, "private": False, "owner": _github_user(owner, 2, "Organization"),
        "html_url": f"https://github.com/{full_name}", "description": "GitOps repository",
        "fork": False, "url": f"https://api.github.com/repos/{full_name}",
        "clone_url": clone_url, "git_url": f"git://github.com/{full_name}.git",
        "ssh_url": f"git@github.com:{full_name}.git", "default_branch": default_branch,
        "visibility": "public", "archived": False, "disabled": False,
        "pushed_at": "2026-11-22T10:00:00Z", "created_at": "2020-01-01T00:00:00Z",
    }


def github_pr_merged(
    full_name: str = "acme/gitops",
    clone_url: str = "https://github.com/acme/gitops.git",
    number: int = 7,
    merge_sha: str = "6dcb09b5b57875f334f61aebed695e2e4193db5e",
    base: str = "main",
    head: str = "feature",
    title: str = "Bump web to v2",
    merged: bool = True,
    action: str = "closed",
    default_branch: str = "main",
    installation_id: int | None = None,
    padding: int = 0,
) -> dict[str, Any]:
    pr = {
        "url": f"https://api.github.com/repos/{full_name}/pulls/{number}",
        "id": 1000 + number, "node_id": "MDExOlB1bGxSZXF1ZXN0MQ==",
        "html_url": f"https://github.com/{full_name}/pull/{number}",
        "diff_url": f"https://github.com/{full_name}/pull/{number}.diff",
        "number": number, "state": "closed", "locked": False, "title": title,
        "user": _github_user("octocat"), "body": "Please pull these awesome changes" + " " * padding,
        "created_at": "2026-11-20T19:01:12Z", "updated_at": "2026-11-22T19:01:12Z",
        "closed_at": "2026-11-22T19:01:12Z",
        "merged_at": "2026-11-22T19:01:12Z" if merged else None,
        "merge_commit_sha": merge_sha, "assignees": [], "requested_reviewers": [], "labels": [],
        "draft": False,
        "head": {"label": f"octocat:{head}", "ref": head, "sha": "a" * 40,
                 "user": _github_user("octocat"),
                 "repo": _github_repo(full_name, clone_url, default_branch)},
        "base": {"label": f"acme:{base}", "ref": base, "sha": "b" * 40,
                 "user": _github_user("acme", 2, "Organization"),
                 "repo": _github_repo(full_name, clone_url, default_branch)},
        "author_association": "MEMBER", "merged": merged, "mergeable": None,
        "merged_by": _github_user("hubot", 3) if merged else None,
        "comments": 1, "commits": 3, "additions": 10, "deletions": 2, "changed_files": 2,
    }
    payload: dict[str, Any] = {
        "action": action, "number": number, "pull_request": pr,
        "repository": _github_repo(full_name, clone_url, default_branch),
        "sender": _github_user("hubot", 3),
    }
    if installation_id is not None:
        payload["installation"] = {"id": installation_id, "node_id": "MDIzOkludGVncmF0aW9u"}
    return payload


def github_pr_updated(
    action: str = "opened",
    head_sha: str = "a" * 40,
    full_name: str = "acme/gitops",
    clone_url: str = "https://github.com/acme/gitops.git",
    number: int = 7,
    base: str = "main",
    head: str = "feature",
    head_repo: str | None = None,
) -> dict[str, Any]:
    """An open PR's `pull_request` event (opened, synchronize, reopened); `head_repo` names the
    fork the head branch comes from."""
    payload = github_pr_merged(full_name=full_name, clone_url=clone_url, number=number,
                               base=base, head=head, merged=False, action=action)
    pr = payload["pull_request"]
    pr.update(state="open", closed_at=None, merged_by=None)
    pr["head"]["sha"] = head_sha
    if head_repo is not None:
        fork = _github_repo(head_repo, f"https://github.com/{head_repo}.git", "main")
        fork.update(id=7777, fork=True)
        pr["head"].update(repo=fork, label=f"{head_repo.split('/')[0]}:{head}")
    if action == "synchronize":
        payload.update(before="c" * 40, after=head_sha)
    return payload


def github_comment(
    body: str,
    full_name: str = "acme/gitops",
    clone_url: str = "https://github.com/acme/gitops.git",
    number: int = 7,
    comment_id: int = 5001,
    login: str = "alice",
    user_type: str = "User",
    action: str = "created",
    on_pr: bool = True,
) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "url": f"https://api.github.com/repos/{full_name}/issues/{number}",
        "html_url": f"https://github.com/{full_name}/pull/{number}", "id": 2000 + number,
        "number": number, "title": "Bump web to v2", "user": _github_user("octocat"),
        "labels": [], "state": "closed", "locked": False, "comments": 2,
        "author_association": "MEMBER", "body": "",
    }
    if on_pr:
        issue["pull_request"] = {
            "url": f"https://api.github.com/repos/{full_name}/pulls/{number}",
            "html_url": f"https://github.com/{full_name}/pull/{number}",
        }
    return {
        "action": action, "issue": issue,
        "comment": {
            "url": f"https://api.github.com/repos/{full_name}/issues/comments/{comment_id}",
            "html_url": f"https://github.com/{full_name}/pull/{number}#issuecomment-{comment_id}",
            "id": comment_id, "node_id": "MDEyOklzc3VlQ29tbWVudDE=",
            "user": _github_user(login, 40 + len(login), user_type),
            "created_at": "2026-11-22T19:05:00Z", "updated_at": "2026-11-22T19:05:00Z",
            "author_association": "MEMBER", "body": body,
        },
        "repository": _github_repo(full_name, clone_url, "main"),
        "sender": _github_user(login, 40 + len(login), user_type),
    }


def github_check_run_action(
    check_run_id: int,
    identifier: str = "promote",
    full_name: str = "acme/gitops",
    clone_url: str = "https://github.com/acme/gitops.git",
    login: str = "alice",
    head_sha: str = "6dcb09b5b57875f334f61aebed695e2e4193db5e",
    name: str = "coalmine/web",
    app_id: int = 4242,
    installation_id: int | None = 42,
) -> dict[str, Any]:
    """A click on a check run's button: `check_run` with action `requested_action`."""
    payload: dict[str, Any] = {
        "action": "requested_action",
        "check_run": {
            "id": check_run_id, "name": name, "head_sha": head_sha, "status": "in_progress",
            "conclusion": None, "external_id": "",
            "url": f"https://api.github.com/repos/{full_name}/check-runs/{check_run_id}",
            "html_url": f"https://github.com/{full_name}/runs/{check_run_id}",
            "started_at": "2026-11-22T19:05:00Z", "completed_at": None,
            "app": {"id": app_id, "slug": "coalmine", "name": "coalmine"},
            "pull_requests": [],
        },
        "requested_action": {"identifier": identifier},
        "repository": _github_repo(full_name, clone_url, "main"),
        "sender": _github_user(login, 40 + len(login)),
    }
    if installation_id is not None:
        payload["installation"] = {"id": installation_id}
    return payload


def _gitlab_project(pid: int, path: str, clone_url: str, default_branch: str) -> dict[str, Any]:
    return {
        "id": pid, "name": path.rsplit("/", 1)[-1], "description": "GitOps repository",
        "web_url": f"https://gitlab.example.com/{path}", "avatar_url": None,
        "git_ssh_url": f"git@gitlab.example.com:{path}.git", "git_http_url": clone_url,
        "namespace": path.split("/")[0], "visibility_level": 20,
        "path_with_namespace": path, "default_branch": default_branch,
        "homepage": f"https://gitlab.example.com/{path}",
        "url": f"git@gitlab.example.com:{path}.git",
        "ssh_url": f"git@gitlab.example.com:{path}.git", "http_url": clone_url,
    }


def _gitlab_user(username: str, uid: int = 1) -> dict[str, Any]:
    return {"id": uid, "name": username.title(), "username": username,
            "avatar_url": "https://www.gravatar.com/avatar/x", "email": "[REDACTED]"}


def gitlab_mr_merged(
    path: str = "acme/gitops",
    clone_url: str = "https://gitlab.example.com/acme/gitops.git",
    project_id: int = 15,
    iid: int = 7,
    merge_sha: str | None = "6dcb09b5b57875f334f61aebed695e2e4193db5e",
    target: str = "main",
    source: str = "feature",
    title: str = "Bump web to v2",
    action: str = "merge",
    default_branch: str = "main",
) -> dict[str, Any]:
    project = _gitlab_project(project_id, path, clone_url, default_branch)
    return {
        "object_kind": "merge_request", "event_type": "merge_request",
        "user": _gitlab_user("administrator"),
        "project": project,
        "repository": {"name": project["name"], "url": project["url"],
                       "description": "", "homepage": project["homepage"]},
        "object_attributes": {
            "id": 99, "iid": iid, "target_branch": target, "source_branch": source,
            "source_project_id": project_id, "target_project_id": project_id,
            "author_id": 51, "assignee_ids": [], "title": title,
            "created_at": "2026-11-20 20:51:00 UTC", "updated_at": "2026-11-22 20:51:00 UTC",
            "state": "merged" if action == "merge" else "opened", "merge_status": "can_be_merged",
            "merge_commit_sha": merge_sha, "squash_commit_sha": None, "squash": False,
            "description": "Bump the image", "url": f"https://gitlab.example.com/{path}/-/merge_requests/{iid}",
            "source": project, "target": project,
            "last_commit": {"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
                            "message": "Bump", "timestamp": "2026-11-22T14:27:31+02:00",
                            "author": {"name": "GitLab dev user", "email": "[REDACTED]"}},
            "work_in_progress": False, "draft": False, "action": action, "labels": [],
        },
        "labels": [], "changes": {},
    }


def gitlab_mr_updated(
    action: str = "open",
    head_sha: str = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
    path: str = "acme/gitops",
    clone_url: str = "https://gitlab.example.com/acme/gitops.git",
    project_id: int = 15,
    iid: int = 7,
    target: str = "main",
    source: str = "feature",
    oldrev: str | None = None,
) -> dict[str, Any]:
    """An open MR's hook (open, reopen, update); an update that pushed commits has `oldrev`."""
    payload = gitlab_mr_merged(path=path, clone_url=clone_url, project_id=project_id, iid=iid,
                               merge_sha=None, target=target, source=source, action=action)
    attrs = payload["object_attributes"]
    attrs["last_commit"]["id"] = head_sha
    attrs["state"] = "opened"
    if oldrev is not None:
        attrs["oldrev"] = oldrev
    return payload


def gitlab_note(
    note: str,
    path: str = "acme/gitops",
    clone_url: str = "https://gitlab.example.com/acme/gitops.git",
    project_id: int = 15,
    iid: int = 7,
    note_id: int = 1244,
    username: str = "alice",
    user_id: int = 71,
    action: str | None = "create",
    noteable_type: str = "MergeRequest",
    bot: bool = False,
) -> dict[str, Any]:
    project = _gitlab_project(project_id, path, clone_url, "main")
    attrs: dict[str, Any] = {
        "id": note_id, "note": note, "noteable_type": noteable_type, "author_id": user_id,
        "created_at": "2026-11-22 14:38:20 UTC", "updated_at": "2026-11-22 14:38:20 UTC",
        "project_id": project_id, "system": False,
        "url": f"https://gitlab.example.com/{path}/-/merge_requests/{iid}#note_{note_id}",
    }
    if action is not None:
        attrs["action"] = action
    user = _gitlab_user(username, user_id)
    if bot:
        user["bot"] = True
    return {
        "object_kind": "note", "event_type": "note", "user": user,
        "project_id": project_id, "project": project, "object_attributes": attrs,
        "merge_request": {"id": 99, "iid": iid, "target_branch": "main",
                          "source_branch": "feature", "title": "Bump web to v2",
                          "state": "merged"},
    }


def github_headers(body: bytes, secret: str, event: str, delivery: str | None = None) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
        "User-Agent": "GitHub-Hookshot/abc123",
    }


def gitlab_headers(token: str, event: str, idempotency_key: str | None = None) -> dict[str, str]:
    key = idempotency_key or str(uuid.uuid4())
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "X-Gitlab-Webhook-UUID": "5f3a0c0e-1b7e-4b1e-9a0a-0c8b2d6e7f10",
        "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        "Idempotency-Key": key,
        "User-Agent": "GitLab/17.5.0",
    }


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()
