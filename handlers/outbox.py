"""Statuses and comments that reach the PR even when the forge is down for a while.

Every status Coalmine wants is first recorded as the desired state of its (commit, context); the
comment is always re-rendered from the stored sections. When the forge refuses (after the
adapter's own retries), a flush job is scheduled with growing delays that posts whatever is
desired by then, so a late retry never overwrites a newer status with an older one.

The same status is often reported again (re-reports of a rollout, flushes after an outage), so
the last status posted per (commit, context) is remembered and an equal one is not posted
again: each post costs rate limit, and GitHub keeps at most 1000 statuses per commit and
context. Posts of one commit are
made under a short lock that re-reads the desired state, so what is remembered as posted is what
the forge shows, even when a flush and a new status race.

With a GitHub App, each app's check run (bot.report.check_runs) goes out with the comment and is
retried with it: like the comment, it is re-derived from the stored sections on every attempt.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from redis.exceptions import LockError, LockNotOwnedError

from bot import services
from bot.forge.base import Forge, ForgeError, RepoRef, StatusState
from bot.logs import job_context, repo_job_fields
from bot.report import check_runs, comment
from bot.report.outbox_store import OutboxStore, status_parts, status_text

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 20
FIRST_DELAY_S = 5.0
MAX_DELAY_S = 1800.0
COMMENT_EVERY_S = 5.0
STATUS_LOCK_S = 60
STATUS_LOCK_WAIT_S = 30
STATUS_ROUNDS = 3  # re-reads of the desired state per post; each new round means it changed


def post_status(svc: services.Services, repo: RepoRef, number: int, sha: str, context: str,
                state: StatusState, description: str, target_url: str | None) -> None:
    """Make `context` on `sha` show this status; no call when the forge shows it already."""
    wanted = status_text(state, description, target_url)
    if OutboxStore(svc.redis).want(repo, sha, context, wanted) == wanted:
        return
    try:
        _post_desired(svc, svc.forge(repo), repo, sha, [context])
    except (ForgeError, LockError) as exc:
        _later(svc, repo, number, sha, str(exc))


def _post_desired(svc: services.Services, forge: Forge, repo: RepoRef, sha: str,
                  contexts: list[str] | None = None) -> None:
    """Post the desired status of each of `contexts` (all when None) that differs from the one
    last posted, and remember it as posted.

    Under the commit's status lock, reading the desired state afresh: a post never sends an
    older state than the newest desired one, and two posts of one commit never cross on the
    wire, which would leave the forge showing one status and the record claiming the other.
    The desired state is read again after posting: a caller that set it meanwhile may have
    seen the old "posted" record and left the post to this holder.
    """
    store = OutboxStore(svc.redis)
    lock = store.status_lock(repo, sha, STATUS_LOCK_S, STATUS_LOCK_WAIT_S)
    if not lock.acquire():
        raise LockError(f"the statuses of {sha[:12]} stayed locked")
    sent: set[str] = set()
    try:
        for _ in range(STATUS_ROUNDS):
            pending = store.pending(repo, sha, contexts)
            if not pending:
                break
            for context, wanted in pending.items():
                state, description, url = status_parts(wanted)
                forge.set_status(repo, sha, context, state, description, url)
                store.remember_posted(repo, sha, context, wanted)
                sent.add(context)
    finally:
        try:
            lock.release()
        except LockNotOwnedError:
            # It expired during a slow post: another post may have crossed this one, so what
            # the forge shows is unknown; forgetting makes the next report post again.
            store.forget_posted(repo, sha, sent)


def post_comment(svc: services.Services, repo: RepoRef, number: int, sha: str,
                 urgent: bool = True) -> None:
    """Re-render the PR's comment now, or (not urgent) at most once per COMMENT_EVERY_S.

    A busy rollout changes its state every second or so; editing the comment each time costs
    two forge calls per tick and rate limit for no reader's benefit.
    """
    store = OutboxStore(svc.redis)
    now = time.time()
    if not urgent:
        last = store.comment_edited_at(repo, number)
        if last is not None and now - last < COMMENT_EVERY_S:
            svc.queue.enqueue_at(last + COMMENT_EVERY_S, flush_comment, asdict(repo),
                                 number, sha)
            return
    store.note_comment_edit(repo, number, now, int(COMMENT_EVERY_S) + 60)
    try:
        _publish_pr(svc, svc.forge(repo), repo, number)
    except (ForgeError, LockError) as exc:
        _later(svc, repo, number, sha, str(exc))


def _publish_pr(svc: services.Services, forge: Forge, repo: RepoRef, number: int) -> None:
    """The PR's comment, then its check runs (GitHub App mode only), both from the stored
    sections: a retry re-derives them, so the newest state is what reaches the forge."""
    comment.publish(svc.redis, forge, repo, number)
    check_runs.publish(svc.redis, forge, repo, number, svc.settings.public_url)


@job_context(repo_job_fields)
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


@job_context(repo_job_fields)
def flush(repo_data: dict[str, Any], number: int, sha: str, attempt: int) -> None:
    """RQ job: post the desired statuses of `sha` and the PR's comment, as they are now."""
    svc = services.current()
    repo = RepoRef(**repo_data)
    forge = svc.forge(repo)
    try:
        _post_desired(svc, forge, repo, sha)
        _publish_pr(svc, forge, repo, number)
    except (ForgeError, LockError) as exc:
        _later(svc, repo, number, sha, str(exc), attempt)
