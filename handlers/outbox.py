"""Statuses and comments that reach the PR even when the forge is down for a while.

Every status Coalmine wants is first recorded as the desired state of its (commit, context); the
comment is always re-rendered from the stored sections. When the forge refuses (after the
adapter's own retries), a flush job is scheduled with growing delays that posts whatever is
desired by then, so a late retry never overwrites a newer status with an older one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import Any

from bot import services
from bot.forge.base import ForgeError, RepoRef, StatusState
from bot.report import comment

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 20
FIRST_DELAY_S = 5.0
MAX_DELAY_S = 1800.0
TTL_S = 7 * 24 * 3600
COMMENT_EVERY_S = 5.0


def _desired_key(repo: RepoRef, sha: str) -> str:
    return f"coalmine:desired-status:{repo.forge}:{repo.full_name}:{sha}"


def post_status(svc: services.Services, repo: RepoRef, number: int, sha: str, context: str,
                state: StatusState, description: str, target_url: str | None) -> None:
    key = _desired_key(repo, sha)
    svc.redis.hset(key, context, json.dumps([state, description, target_url]))
    svc.redis.expire(key, TTL_S)
    try:
        svc.forge(repo).set_status(repo, sha, context, state, description, target_url)
    except ForgeError as exc:
        _later(svc, repo, number, sha, str(exc))


def post_comment(svc: services.Services, repo: RepoRef, number: int, sha: str,
                 urgent: bool = True) -> None:
    """Re-render the PR's comment now, or (not urgent) at most once per COMMENT_EVERY_S.

    A busy rollout changes its state every second or so; editing the comment each time costs
    two forge calls per tick and rate limit for no reader's benefit.
    """
    last_key = f"coalmine:comment-at:{repo.forge}:{repo.full_name}:{number}"
    now = time.time()
    if not urgent:
        last = svc.redis.get(last_key)
        if last is not None and now - float(last) < COMMENT_EVERY_S:
            svc.queue.enqueue_at(float(last) + COMMENT_EVERY_S, flush_comment, asdict(repo),
                                 number, sha)
            return
    svc.redis.set(last_key, now, ex=int(COMMENT_EVERY_S) + 60)
    try:
        comment.publish(svc.redis, svc.forge(repo), repo, number)
    except ForgeError as exc:
        _later(svc, repo, number, sha, str(exc))


def flush_comment(repo_data: dict[str, Any], number: int, sha: str) -> None:
    """RQ job: the delayed comment edit of a non-urgent update."""
    post_comment(services.current(), RepoRef(**repo_data), number, sha)


def _later(svc: services.Services, repo: RepoRef, number: int, sha: str, reason: str,
           attempt: int = 0) -> None:
    if attempt >= MAX_ATTEMPTS:
        log.error("giving up reporting on %s#%s after %d attempts: %s",
                  repo.full_name, number, attempt, reason)
        return
    delay = min(FIRST_DELAY_S * 2**attempt, MAX_DELAY_S)
    log.warning("the forge refused a report on %s#%s (%s); retrying in %.0f s",
                repo.full_name, number, reason, delay)
    svc.queue.enqueue_at(time.time() + delay, flush, asdict(repo), number, sha, attempt + 1)


def flush(repo_data: dict[str, Any], number: int, sha: str, attempt: int) -> None:
    """RQ job: post the desired statuses of `sha` and the PR's comment, as they are now."""
    svc = services.current()
    repo = RepoRef(**repo_data)
    forge = svc.forge(repo)
    try:
        for context, raw in svc.redis.hgetall(_desired_key(repo, sha)).items():
            state, description, url = json.loads(raw)
            name = context.decode() if isinstance(context, bytes) else context
            forge.set_status(repo, sha, name, state, description, url)
        comment.publish(svc.redis, forge, repo, number)
    except ForgeError as exc:
        _later(svc, repo, number, sha, str(exc), attempt)
