"""The one sticky comment per PR/MR: per-app sections kept in Redis, rendered and upserted.

Several jobs (one per app, rollout ticks, commands) contribute to the same comment, so each
writes only its app's section and the comment is re-rendered from all sections under a per-PR
lock; the hidden marker lets any job find and edit the comment instead of adding another.

A rollout re-renders the comment on nearly every tick, so what was last posted is remembered
per (repo, PR, marker): the comment's id, to edit it in one call instead of listing the PR's
comments first, and a hash of the body, to make no call at all when nothing visible changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from redis import Redis
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from bot import keys
from bot.forge.base import Forge, ForgeError, RepoRef
from bot.report.markdown import code, escape
from bot.report.rollout import render_section

log = logging.getLogger(__name__)
MARKER = "<!-- coalmine:pr-comment -->"
SECTION_TTL_S = 90 * 24 * 3600
LOCK_TIMEOUT_S = 30
_ICON = {"success": "✅", "failure": "❌", "error": "❌", "pending": "⏳"}


def _key(repo: RepoRef, number: int) -> str:
    return keys.pr_sections(repo, number)


def _posted_key(repo: RepoRef, number: int) -> str:
    """Hash of marker → {"id": comment id, "sha256": of the body last posted}."""
    return keys.pr_posted_comments(repo, number)


def _lock_key(repo: RepoRef, number: int) -> str:
    return keys.pr_lock(repo, number)


def save_section(redis: Redis, repo: RepoRef, number: int, app: str, section: dict) -> None:
    key = _key(repo, number)
    redis.hset(key, app, json.dumps(section, sort_keys=True))
    redis.expire(key, SECTION_TTL_S)


def load_sections(redis: Redis, repo: RepoRef, number: int) -> dict[str, dict]:
    return _decode_sections(redis.hgetall(_key(repo, number)))


def _decode_sections(raw: dict[Any, Any]) -> dict[str, dict]:
    return {k.decode() if isinstance(k, bytes) else k: json.loads(v) for k, v in raw.items()}


def publish(redis: Redis, forge: Forge, repo: RepoRef, number: int) -> int:
    """Render every app's section and edit (or create) the PR's comment; returns its id.

    Nothing is sent when the body equals the one last posted; otherwise the remembered comment
    is edited by id, and only an unknown or deleted one is looked up by marker (or created).
    """
    return _locked(redis, repo, number, lambda lock: _publish_locked(
        redis, forge, repo, number, lock))


def publish_body(redis: Redis, forge: Forge, repo: RepoRef, number: int, marker: str,
                 body: str) -> int:
    """Another sticky comment of the PR (the preview's), found by its own `marker`, with the
    same discipline: under the PR's comment lock, no call when the body is unchanged, an edit
    by the remembered id, else found by marker or created."""
    return _locked(redis, repo, number, lambda lock: _post_locked(
        redis, forge, repo, number, lock, marker, body,
        redis.hget(_posted_key(repo, number), marker)))


def _locked(redis: Redis, repo: RepoRef, number: int, post: Any) -> int:
    # Short-lived: a worker killed while holding it must not silence the PR for long.
    lock = redis.lock(_lock_key(repo, number), timeout=LOCK_TIMEOUT_S, blocking_timeout=60)
    if not lock.acquire():
        raise LockError(f"the comment of {repo.full_name}#{number} stayed locked")
    try:
        return post(lock)
    finally:
        try:
            lock.release()
        except LockNotOwnedError:
            pass  # it expired during a slow edit; _post_locked saw to what that means


def _publish_locked(redis: Redis, forge: Forge, repo: RepoRef, number: int, lock: Lock) -> int:
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(_key(repo, number))
    pipe.hget(_posted_key(repo, number), MARKER)
    raw_sections, raw_posted = pipe.execute()
    body = render(_decode_sections(raw_sections))
    return _post_locked(redis, forge, repo, number, lock, MARKER, body, raw_posted)


def _post_locked(redis: Redis, forge: Forge, repo: RepoRef, number: int, lock: Lock,
                 marker: str, body: str, raw_posted: Any) -> int:
    """Post `body` as the comment holding `marker` unless it is what was posted last."""
    digest = hashlib.sha256(body.encode()).hexdigest()
    posted = json.loads(raw_posted) if raw_posted else {}
    if posted.get("id") and posted.get("sha256") == digest:
        return int(posted["id"])
    comment_id = _upsert(redis, forge, repo, number, body, posted.get("id"), marker)
    if not lock.owned():
        # Another job may have posted a newer body meanwhile and this edit landed after it:
        # the comment's body is unknown, so only its id is remembered.
        log.warning("the comment lock on %s#%s expired during an edit", repo.full_name, number)
        digest = None
    _remember(redis, repo, number, comment_id, digest, marker)
    return comment_id


def _upsert(redis: Redis, forge: Forge, repo: RepoRef, number: int, body: str,
            known_id: int | None, marker: str = MARKER) -> int:
    """The adapter's upsert; a failed edit by id forgets the id, so the retry finds the comment
    by marker (an id the forge keeps refusing, say after the bot's account changed, must not
    block the comment until the record expires)."""
    try:
        return forge.upsert_comment(repo, number, marker, body, known_id=known_id)
    except ForgeError:
        if known_id is not None:
            redis.hdel(_posted_key(repo, number), marker)
        raise


def _remember(redis: Redis, repo: RepoRef, number: int, comment_id: int,
              digest: str | None, marker: str = MARKER) -> None:
    key = _posted_key(repo, number)
    pipe = redis.pipeline(transaction=False)
    pipe.hset(key, marker, json.dumps({"id": comment_id, "sha256": digest}))
    pipe.expire(key, SECTION_TTL_S)
    pipe.execute()


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
        lines += ["", *app_details(app, sections[app])]
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


def app_details(app: str, s: dict[str, Any]) -> list[str]:
    """One app's part of the comment below the table: errors, notes, health, its rollout,
    the revert PR and the objects. Its check run (bot.report.check_runs) shows the same."""
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
