"""GitHub's JSON answers read into Coalmine's forge values, and the URL pieces sent back.

Pure functions of the REST payloads (pull requests, comments' issue URLs), kept apart from the
adapter's calls so that what each field means on GitHub is said in one place.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from bot.forge.base import (
    CheckResult,
    CheckRunFacts,
    CheckRunSpec,
    PullRequest,
    PullRequestFacts,
    RepoRef,
    truncate_keeping_tail,
)


def to_pull_request(data: dict[str, Any]) -> PullRequest:
    state = "merged" if data.get("merged_at") else data["state"]
    return PullRequest(
        number=int(data["number"]),
        url=data["html_url"],
        head=data["head"]["ref"],
        base=data["base"]["ref"],
        title=data["title"],
        state=state,
    )


def pull_facts(data: dict[str, Any]) -> PullRequestFacts:
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
        head_repo_id=int_or_none(source.get("id")),
        author=str((data.get("user") or {}).get("login") or ""),
        head_sha=(data.get("head") or {}).get("sha") or None,
    )


def is_own_branch(pull: dict[str, Any], repo: RepoRef, author: str) -> bool:
    """Opened by `author` from a branch of `repo` itself, not from a fork of it."""
    source = (pull.get("head") or {}).get("repo") or {}  # null when the fork was deleted
    if repo.repo_id is not None:
        same_repo = source.get("id") == repo.repo_id
    else:
        same_repo = str(source.get("full_name", "")).casefold() == repo.full_name.casefold()
    login = str((pull.get("user") or {}).get("login", ""))
    return same_repo and login.casefold() == author.casefold()


def issue_number(issue_url: str) -> int | None:
    found = re.search(r"/issues/(\d+)$", issue_url)
    return int(found.group(1)) if found else None


def int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def url_parts(repo: RepoRef) -> dict[str, str]:
    """The `{owner}` and `{repo}` variables of GitHub's URL templates."""
    owner, name = repo.full_name.split("/", 1)
    return {"owner": owner, "repo": name}


def with_credentials(url: str, user: str, secret: str) -> str:
    """`url` with `user:secret@` in it; other schemes (local paths in tests) carry none."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user, safe='')}:{quote(secret, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


# Check-run conclusions GitHub's branch protection counts as passing.
_PASSING_CONCLUSIONS = {"success", "neutral", "skipped"}


def status_check(data: dict[str, Any]) -> CheckResult:
    """A commit status of the combined status: pending, success, or failure/error."""
    state = str(data.get("state") or "pending")
    return CheckResult(str(data.get("context") or "default"),
                       "success" if state == "success" else
                       "pending" if state == "pending" else "failure",
                       url=str(data.get("target_url") or ""), kind="status", detail=state)


def check_run(data: dict[str, Any]) -> CheckResult:
    """A check run: pending until completed, then passing or not by its conclusion."""
    url = str(data.get("html_url") or data.get("details_url") or "")
    name = str(data.get("name") or "check")
    if data.get("status") != "completed":
        return CheckResult(name, "pending", url=url, kind="check run",
                           detail=str(data.get("status") or "queued"))
    conclusion = str(data.get("conclusion") or "")
    return CheckResult(name, "success" if conclusion in _PASSING_CONCLUSIONS else "failure",
                       url=url, kind="check run", detail=conclusion)


def check_run_body(run: CheckRunSpec, summary_max: int) -> dict[str, Any]:
    """The create/update body of a check run. `actions` is always sent, so an update to a
    finished run removes the buttons; the summary keeps its tail (the newest events) when cut."""
    body: dict[str, Any] = {
        "name": run.name,
        "status": run.status,
        "output": {"title": run.title,
                   "summary": truncate_keeping_tail(run.summary, summary_max)},
        "actions": [{"label": a.label, "description": a.description,
                     "identifier": a.identifier} for a in run.actions],
    }
    if run.conclusion is not None:
        body["conclusion"] = run.conclusion
    if run.details_url:
        body["details_url"] = run.details_url
    return body


def check_run_facts(data: dict[str, Any]) -> CheckRunFacts:
    """A check run as GET /repos/{owner}/{repo}/check-runs/{id} answers it."""
    return CheckRunFacts(
        id=int(data["id"]),
        app_id=int_or_none((data.get("app") or {}).get("id")),
        head_sha=str(data.get("head_sha") or ""),
        name=str(data.get("name") or ""),
        status=str(data.get("status") or ""),
        conclusion=data.get("conclusion") or None,
    )
