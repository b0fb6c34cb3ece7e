"""Rollout state in Redis: one record per app, a lock per rollout, and an index of due ticks.

Every writer (tick jobs, commands, measurements, a new merge) holds the rollout's lock while it
loads, advances and saves, so two jobs never interleave on one rollout. The due index lets a
worker that starts after a crash re-arm every tick that was lost with the old worker.

Every save numbers the record (`seq`, increasing per app across revisions), so reports made
after the lock is released can tell an older snapshot from a newer one and never post it last.
The keys of an aborted template's hold (the template, the PR that aborted it, the PRs held back
since, and the latest held-back merge ready to start) live here too.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import get_args

from redis import Redis
from redis.exceptions import LockError, RedisError

from bot import keys, metrics
from bot.heartbeat import renewing
from bot.rollout.context import RolloutContext
from bot.rollout.model import TERMINAL_PHASES, Phase, RolloutState

log = logging.getLogger(__name__)
PREFIX = keys.ROLLOUT_PREFIX
DUE_INDEX = keys.ROLLOUTS_DUE
ACTIVE_INDEX = keys.ROLLOUTS_ACTIVE
# Final snapshots (terminal phase) not yet reported to the forge: "key\nrevision\nseq" → when.
UNREPORTED_INDEX = keys.ROLLOUTS_UNREPORTED
# Every app's record by its last save, finished ones too, for the dashboard (bot/dashboard);
# the newest RECENT_KEPT are kept.
RECENT_INDEX = keys.ROLLOUTS_RECENT
RECENT_KEPT = 500
FINISHED_TTL_S = 30 * 24 * 3600
LOCK_TTL_S = 15.0
REPORTED_TTL_S = FINISHED_TTL_S


def rollout_key(forge: str, repo: str, app: str) -> str:
    return keys.rollout(forge, repo, app)


def aborted_key(key: str) -> str:
    """The pod-template hash of the app's last aborted rollout (merges of it are held back)."""
    return keys.aborted_template(key)


def final_key(key: str, revision: str) -> str:
    """The last snapshot of `revision`'s rollout once finished: a newer merge's rollout takes
    over the app's key, and the finished one must still reach its PR."""
    return keys.rollout_final(key, revision)


def report_lock_key(forge: str, repo: str, number: int) -> str:
    """Serialises the forge reports (statuses, comment) of one PR; never the rollout lock."""
    return keys.report_lock(forge, repo, number)


@dataclass
class RolloutRecord:
    """The engine's state plus what the shell needs to act on it (never read by the engine)."""

    state: RolloutState
    context: RolloutContext
    seq: int = 0  # set by RolloutStore.save: the order of saves of this app's rollouts

    def dumps(self) -> str:
        return json.dumps({"state": self.state.to_dict(), "context": self.context.to_dict(),
                           "seq": self.seq})

    @classmethod
    def loads(cls, raw: bytes | str) -> RolloutRecord:
        data = json.loads(raw)
        return cls(RolloutState.from_dict(data["state"]),
                   RolloutContext.from_dict(data["context"]), int(data.get("seq") or 0))


class RolloutStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @contextmanager
    def locked(self, key: str, wait_s: float = 300) -> Iterator[None]:
        """Exclusive access to one rollout.

        The lock lives only LOCK_TTL_S unless renewed, and a watchdog renews it while the holder
        works, so a worker killed while holding it blocks the rollout for seconds, not minutes.
        """
        lock = self.redis.lock(keys.rollout_lock(key), timeout=LOCK_TTL_S, blocking_timeout=wait_s,
                               thread_local=False)  # the watchdog thread renews it
        if not lock.acquire():
            raise TimeoutError(f"rollout {key} stayed locked for {wait_s:g} s")

        def renew() -> bool:
            try:
                lock.reacquire()
            except (LockError, RedisError):
                log.warning("could not renew the lock of %s", key)
                return False
            return True

        try:
            with renewing(renew, LOCK_TTL_S / 3, "rollout-lock"):
                yield
        finally:
            try:
                lock.release()
            except LockError:
                pass  # expired while Redis was away; the next holder takes over

    def load(self, key: str) -> RolloutRecord | None:
        raw = self.redis.get(key)
        return RolloutRecord.loads(raw) if raw else None

    def save(self, key: str, record: RolloutRecord, next_tick_at: float | None) -> None:
        """Store the record (under the rollout's lock), numbering it with the next `seq`."""
        terminal = record.state.phase in TERMINAL_PHASES
        record.seq = int(self.redis.incr(keys.rollout_seq(key)))
        raw = record.dumps()
        pipe = self.redis.pipeline()
        # GET: the replaced record, for what this save changed (bot.metrics), in the same trip.
        pipe.set(key, raw, ex=FINISHED_TTL_S if terminal else None, get=True)
        if terminal:
            pipe.srem(ACTIVE_INDEX, key)
            # In the same transaction as the save: a worker that dies before reporting a final
            # status leaves this entry behind, and the sweep reports it (see `unreported`).
            pipe.set(final_key(key, record.state.revision), raw, ex=FINISHED_TTL_S)
            pipe.zadd(UNREPORTED_INDEX, {_unreported_member(key, record): time.time()})
        else:
            pipe.sadd(ACTIVE_INDEX, key)
        pipe.zadd(RECENT_INDEX, {key: time.time()})
        pipe.zremrangebyrank(RECENT_INDEX, 0, -RECENT_KEPT - 1)
        if next_tick_at is None or terminal:
            pipe.zrem(DUE_INDEX, key)
        else:
            pipe.zadd(DUE_INDEX, {key: next_tick_at})
        replaced = pipe.execute()[0]
        metrics.rollout_saved(replaced, record)

    def unreported(self, older_than: float, limit: int = 100) -> list[tuple[str, str, int]]:
        """(key, revision, seq) of final snapshots saved before `older_than` whose report was
        not made (its worker died, or Redis went away, between the save and the report)."""
        members = self.redis.zrangebyscore(UNREPORTED_INDEX, "-inf", older_than, 0, limit)
        found = []
        for raw in members:
            parts = (raw.decode() if isinstance(raw, bytes) else raw).split("\n")
            if len(parts) != 3 or not parts[2].isdigit():
                # Not written by `save` (app names are DNS labels, revisions hex): dropped, so
                # one stray member cannot stop the sweep for every rollout.
                self.redis.zrem(UNREPORTED_INDEX, raw)
                continue
            found.append((parts[0], parts[1], int(parts[2])))
        return found

    def postpone_unreported(self, key: str, revision: str, seq: int) -> None:
        """A report job was queued for it: look again only if that one is lost too."""
        self.redis.zadd(UNREPORTED_INDEX, {f"{key}\n{revision}\n{seq}": time.time()}, xx=True)

    def mark_reported(self, key: str, revision: str, seq: int) -> None:
        self.redis.zrem(UNREPORTED_INDEX, f"{key}\n{revision}\n{seq}")

    def load_final(self, key: str, revision: str) -> RolloutRecord | None:
        raw = self.redis.get(final_key(key, revision))
        return RolloutRecord.loads(raw) if raw else None

    # -- which rollouts a PR reaches (its commands go there) ------------------------------------

    def index_pr(self, forge: str, repo: str, number: int, key: str) -> None:
        """Remember that PR `number` started (or holds a claim on) the rollout at `key`."""
        self.redis.sadd(_pr_key(forge, repo, number), key)

    def keys_of_pr(self, forge: str, repo: str, number: int) -> list[str]:
        return sorted(raw.decode() if isinstance(raw, bytes) else raw
                      for raw in self.redis.smembers(_pr_key(forge, repo, number)))

    def aborted_template(self, key: str) -> str | None:
        """The pod-template hash of the app's last aborted rollout, if it is held back."""
        raw = self.redis.get(aborted_key(key))
        return raw.decode() if isinstance(raw, bytes) else raw

    def active_keys(self) -> list[str]:
        return sorted(k.decode() if isinstance(k, bytes) else k
                      for k in self.redis.smembers(ACTIVE_INDEX))

    def active_phases(self) -> dict[str, int]:
        """Active rollouts per phase, every non-terminal phase named (the `coalmine_rollouts`
        gauge keeps its series at 0); two round trips."""
        active = self.active_keys()
        raws = self.redis.mget(active) if active else []
        found = Counter(json.loads(raw)["state"]["phase"] for raw in raws if raw)
        return {phase: found[phase] for phase in get_args(Phase) if phase not in TERMINAL_PHASES}

    def due(self) -> list[tuple[str, float]]:
        """Every rollout waiting on time, with its due time (for the start-up sweep)."""
        return [(k.decode() if isinstance(k, bytes) else k, score)
                for k, score in self.redis.zrange(DUE_INDEX, 0, -1, withscores=True)]

    # -- reports made after the lock ---------------------------------------------------------

    def claim_report(self, key: str, revision: str, kind: str, seq: int, *,
                     again: bool = False) -> bool:
        """True (and remembered) when the snapshot numbered `seq` is newer than the last one
        reported as `kind` ("status", "section") for `revision`. Call under the PR's report
        lock: an older snapshot whose report was delayed must not overwrite a newer one.

        `again` also admits the snapshot last claimed itself: the sweep's report of a final
        snapshot whose first report claimed it and then died (a killed worker) before the post
        was recorded. Posting the same snapshot twice is harmless (the outbox sends an equal
        status once); never posting the final one is not."""
        marker = keys.rollout_reported(key, revision)
        last = self.redis.hget(marker, kind)
        if last is not None and (int(last) > seq or (int(last) == seq and not again)):
            return False
        pipe = self.redis.pipeline()
        pipe.hset(marker, kind, seq)
        pipe.expire(marker, REPORTED_TTL_S)
        pipe.execute()
        return True

    # -- the hold on an aborted template -------------------------------------------------------

    def hold(self, key: str, template_hash: str, aborted_by: int | None) -> None:
        """Remember the aborted template; merges landing it again are held back."""
        pipe = self.redis.pipeline()
        pipe.set(aborted_key(key), template_hash)
        if aborted_by is not None:
            pipe.set(keys.aborted_by(key), aborted_by)
        pipe.delete(keys.held_prs(key), keys.held(key))
        pipe.execute()

    def hold_claims(self, key: str) -> set[int]:
        """The PRs whose /retry may clear the hold: the one that aborted, those held back."""
        if not self.redis.exists(aborted_key(key)):
            return set()
        claims = {int(n) for n in self.redis.smembers(keys.held_prs(key))}
        aborted_by = self.redis.get(keys.aborted_by(key))
        if aborted_by is not None:
            claims.add(int(aborted_by))
        return claims

    def save_held(self, key: str, record: RolloutRecord) -> None:
        """The latest merge held back by the hold, ready to start if someone says /retry."""
        pipe = self.redis.pipeline()
        pipe.set(keys.held(key), record.dumps(), ex=FINISHED_TTL_S)
        if record.state.pr is not None:
            pipe.sadd(keys.held_prs(key), record.state.pr)
        pipe.execute()

    def load_held(self, key: str) -> RolloutRecord | None:
        raw = self.redis.get(keys.held(key))
        return RolloutRecord.loads(raw) if raw else None

    def drop_held(self, key: str) -> None:
        """A later merge moved the workload on: the held merge must never start (that would
        move the cluster back)."""
        self.redis.delete(keys.held(key))

    def clear_hold(self, key: str) -> None:
        self.redis.delete(aborted_key(key), keys.aborted_by(key), keys.held_prs(key),
                          keys.held(key))


def _unreported_member(key: str, record: RolloutRecord) -> str:
    return f"{key}\n{record.state.revision}\n{record.seq}"


def _pr_key(forge: str, repo: str, number: int) -> str:
    return keys.pr_rollouts(forge, repo, number)
