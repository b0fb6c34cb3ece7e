"""Rollout state in Redis: one record per app, a lock per rollout, and an index of due ticks.

Every writer (tick jobs, commands, measurements, a new merge) holds the rollout's lock while it
loads, advances and saves, so two jobs never interleave on one rollout. The due index lets a
worker that starts after a crash re-arm every tick that was lost with the old worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from bot.rollout.model import TERMINAL_PHASES, RolloutState

PREFIX = "coalmine:rollout:"
DUE_INDEX = "coalmine:rollouts:due"
ACTIVE_INDEX = "coalmine:rollouts:active"
FINISHED_TTL_S = 30 * 24 * 3600


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
    def locked(self, key: str, timeout_s: float = 600) -> Iterator[None]:
        """Exclusive access to one rollout; the timeout frees it if a worker dies holding it."""
        with self.redis.lock(f"{key}:lock", timeout=timeout_s, blocking_timeout=timeout_s):
            yield

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
