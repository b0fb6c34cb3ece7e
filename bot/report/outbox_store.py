"""The outbox's Redis records: the status wanted and the status last posted per (commit,
context), the per-commit status lock, and when a PR's comment was last edited.

`handlers.outbox` decides when to post and retries; this adapter owns the keys, so no Redis key
is built in a use case.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis
from redis.lock import Lock

from bot import keys
from bot.refs import RepoRef

DESIRED_TTL_S = 7 * 24 * 3600
POSTED_TTL_S = 24 * 3600  # a status changed behind Coalmine's back is put right within a day


def _desired_key(repo: RepoRef, sha: str) -> str:
    return keys.desired_status(repo, sha)


def _posted_key(repo: RepoRef, sha: str) -> str:
    """Context → [state, description, target URL] last accepted by the forge."""
    return keys.posted_status(repo, sha)


def _comment_at_key(repo: RepoRef, number: int) -> str:
    return keys.comment_at(repo, number)


def status_text(state: str, description: str, target_url: str | None) -> str:
    """How a wanted or posted status is stored and compared."""
    return json.dumps([state, description, target_url])


def status_parts(text: str) -> tuple[Any, str, str | None]:
    state, description, url = json.loads(text)
    return state, description, url


class OutboxStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def want(self, repo: RepoRef, sha: str, context: str, wanted: str) -> str | None:
        """Record the status wanted for `context` on `sha` (one round trip); returns the one
        last posted there, if any."""
        key = _desired_key(repo, sha)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, context, wanted)
        pipe.expire(key, DESIRED_TTL_S)
        pipe.hget(_posted_key(repo, sha), context)
        posted = pipe.execute()[2]
        return None if posted is None else _text(posted)

    def status_lock(self, repo: RepoRef, sha: str, timeout_s: float, wait_s: float) -> Lock:
        """Serialises the posts of one commit's statuses (see `handlers.outbox`)."""
        return self.redis.lock(keys.status_lock(repo, sha),
                               timeout=timeout_s, blocking_timeout=wait_s)

    def pending(self, repo: RepoRef, sha: str, contexts: list[str] | None) -> dict[str, str]:
        """Context → wanted status for those of `contexts` (all when None) not posted as wanted."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(_desired_key(repo, sha))
        pipe.hgetall(_posted_key(repo, sha))
        desired, posted = ({_text(k): _text(v) for k, v in raw.items()} for raw in pipe.execute())
        chosen = desired if contexts is None else contexts
        return {c: desired[c] for c in chosen if c in desired and posted.get(c) != desired[c]}

    def remember_posted(self, repo: RepoRef, sha: str, context: str, posted: str) -> None:
        key = _posted_key(repo, sha)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, context, posted)
        pipe.expire(key, POSTED_TTL_S)
        pipe.execute()

    def forget_posted(self, repo: RepoRef, sha: str, contexts: set[str]) -> None:
        """What the forge shows for these is unknown now: the next report posts them again."""
        if contexts:
            self.redis.hdel(_posted_key(repo, sha), *contexts)

    def comment_edited_at(self, repo: RepoRef, number: int) -> float | None:
        raw = self.redis.get(_comment_at_key(repo, number))
        return None if raw is None else float(raw)

    def note_comment_edit(self, repo: RepoRef, number: int, at: float, keep_s: int) -> None:
        self.redis.set(_comment_at_key(repo, number), at, ex=keep_s)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
