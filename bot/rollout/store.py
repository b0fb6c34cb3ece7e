"""Rollout state in Redis: one record per app, a lock per rollout, and an index of due ticks.

Every writer (tick jobs, commands, measurements, a new merge) holds the rollout's lock while it
loads, advances and saves, so two jobs never interleave on one rollout. The due index lets a
worker that starts after a crash re-arm every tick that was lost with the old worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import LockError, RedisError

from bot.heartbeat import renewing
from bot.rollout.model import TERMINAL_PHASES, RolloutState

log = logging.getLogger(__name__)
PREFIX = "coalmine:rollout:"
DUE_INDEX = "coalmine:rollouts:due"
ACTIVE_INDEX = "coalmine:rollouts:active"
FINISHED_TTL_S = 30 * 24 * 3600
LOCK_TTL_S = 15.0


def rollout_key(forge: str, repo: str, app: str) -> str:
    return f"{PREFIX}{forge}:{repo}:{app}"


@dataclass
class RolloutRecord:
    """The engine's state plus what the shell needs to act on it (never read by the engine)."""

    state: RolloutState
    context: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"state": self.state.to_dict(), "context": self.context})

    @classmethod
    def loads(cls, raw: bytes | str) -> RolloutRecord:
        data = json.loads(raw)
        return cls(RolloutState.from_dict(data["state"]), data.get("context", {}))


class RolloutStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @contextmanager
    def locked(self, key: str, wait_s: float = 300) -> Iterator[None]:
        """Exclusive access to one rollout.

        The lock lives only LOCK_TTL_S unless renewed, and a watchdog renews it while the holder
        works, so a worker killed while holding it blocks the rollout for seconds, not minutes.
        """
        lock = self.redis.lock(f"{key}:lock", timeout=LOCK_TTL_S, blocking_timeout=wait_s,
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
        terminal = record.state.phase in TERMINAL_PHASES
        pipe = self.redis.pipeline()
        pipe.set(key, record.dumps(), ex=FINISHED_TTL_S if terminal else None)
        if terminal:
            pipe.srem(ACTIVE_INDEX, key)
        else:
            pipe.sadd(ACTIVE_INDEX, key)
        if next_tick_at is None or terminal:
            pipe.zrem(DUE_INDEX, key)
        else:
            pipe.zadd(DUE_INDEX, {key: next_tick_at})
        pipe.execute()

    def active_keys(self) -> list[str]:
        return sorted(k.decode() if isinstance(k, bytes) else k
                      for k in self.redis.smembers(ACTIVE_INDEX))

    def due(self) -> list[tuple[str, float]]:
        """Every rollout waiting on time, with its due time (for the start-up sweep)."""
        return [(k.decode() if isinstance(k, bytes) else k, score)
                for k, score in self.redis.zrange(DUE_INDEX, 0, -1, withscores=True)]
