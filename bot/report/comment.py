"""The one sticky comment per PR/MR: per-app sections kept in Redis, rendered and upserted.

Several jobs (one per app, rollout ticks, commands) contribute to the same comment, so each
writes only its app's section and the comment is re-rendered from all sections under a per-PR
lock; the hidden marker lets any job find and edit the comment instead of adding another.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

from bot.forge.base import Forge, RepoRef
from bot.report.markdown import code, escape
from bot.report.rollout import render_section

MARKER = "<!-- coalmine:pr-comment -->"
SECTION_TTL_S = 90 * 24 * 3600
_ICON = {"success": "✅", "failure": "❌", "error": "❌", "pending": "⏳"}


def _key(repo: RepoRef, number: int) -> str:
    return f"coalmine:pr:{repo.forge}:{repo.full_name}:{number}:sections"


def save_section(redis: Redis, repo: RepoRef, number: int, app: str, section: dict) -> None:
    key = _key(repo, number)
    redis.hset(key, app, json.dumps(section, sort_keys=True))
    redis.expire(key, SECTION_TTL_S)


def load_sections(redis: Redis, repo: RepoRef, number: int) -> dict[str, dict]:
    raw = redis.hgetall(_key(repo, number))
    return {k.decode() if isinstance(k, bytes) else k: json.loads(v) for k, v in raw.items()}


def publish(redis: Redis, forge: Forge, repo: RepoRef, number: int) -> int:
    """Render every app's section and edit (or create) the PR's comment; returns its id."""
    # Short-lived: a worker killed while holding it must not silence the PR for long.
    with redis.lock(f"coalmine:pr-lock:{repo.forge}:{repo.full_name}:{number}", timeout=30,
                    blocking_timeout=60):
        body = render(load_sections(redis, repo, number))
        return forge.upsert_comment(repo, number, MARKER, body)


def render(sections: dict[str, dict]) -> str:
    lines = [MARKER, "### 🐤 Coalmine", ""]
    if not sections:
        lines.append("Nothing deployed yet.")
        return "\n".join(lines)
    lines += [
        "| app | commit | result | created | configured | unchanged | pruned |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for app in sorted(sections):
        s = sections[app]
        counts = {k: len(s.get("objects", {}).get(k, [])) for k in
                  ("created", "configured", "unchanged", "pruned")}
        lines.append(
            f"| {code(app)} | {code(s.get('sha', '')[:7])} | "
            f"{_ICON.get(s.get('state', ''), '')} {escape(s.get('summary', ''), 200)} | "
            f"{counts['created']} | {counts['configured']} | {counts['unchanged']} | "
            f"{counts['pruned']} |"
        )
    for app in sorted(sections):
        lines += ["", *_app_details(app, sections[app])]
    return "\n".join(lines)


def _revert_lines(revert: dict[str, Any] | None) -> list[str]:
    """Where the revert PR stands, so people see at once how Git will catch up."""
    if not revert:
        return []
    state = revert.get("state")
    if state == "opened":
        return ["", f"↩️ Revert PR opened: {escape(revert.get('url', ''), 300)}"]
    if state == "conflict":
        files = ", ".join(code(f) for f in revert.get("files", []))
        return ["", f"⚠️ Revert PR not opened: reverting conflicts with later changes in {files}"]
    if state == "pending":
        return ["", "↩️ Revert PR: being prepared…"]
    if state == "failed":
        return ["", f"⚠️ Revert PR not opened yet, retrying: {escape(revert.get('reason', ''))}"]
    return ["", f"↩️ Revert PR not needed: {escape(revert.get('reason', ''))}"]


def _app_details(app: str, s: dict[str, Any]) -> list[str]:
    out = [f"#### {code(app)}"]
    if s.get("error"):
        out += ["", f"**{escape(s.get('error_title', 'Failed'))}:** {escape(s['error'], 2000)}"]
    if s.get("notes"):
        out += [""] + [f"> {escape(n, 1000)}" for n in s["notes"]]
    health = s.get("health")
    if health:
        mark = "✅" if health.get("ok") else "❌"
        out += ["", f"Health: {mark} {escape(health.get('message', ''), 1000)}"]
    out += render_section(s)
    out += _revert_lines(s.get("revert"))
    objects = s.get("objects", {})
    if any(objects.get(k) for k in objects):
        out += ["", "<details><summary>Objects</summary>", ""]
        for kind in ("created", "configured", "unchanged", "pruned"):
            for ref in objects.get(kind, []):
                out.append(f"- {kind}: {code(ref)}")
        out += ["", "</details>"]
    return out
