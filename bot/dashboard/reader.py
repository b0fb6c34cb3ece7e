"""What the dashboard reads from Redis: rollout records and deployment records. Read only.

The rollouts listed are the newest saved (keys.ROLLOUTS_RECENT, written by the rollout store)
and every active one (keys.ROLLOUTS_ACTIVE, for records saved before the recent index existed).
A live page asks first for a cheap version (one or two round trips, no record decoded) and
reloads its part only when that changed, so an open tab costs little between changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from redis import Redis

from bot import keys
from bot.rollout.store import RolloutRecord

log = logging.getLogger(__name__)
ROLLOUTS_LISTED = 100
DEPLOYMENTS_LISTED = 50
FORGES = ("github", "gitlab")


@dataclass(frozen=True)
class Listed:
    """A rollout record found by its key (None when it could not be read)."""

    forge: str
    repo: str
    app: str
    record: RolloutRecord | None


class DashboardReader:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def rollouts(self, limit: int = ROLLOUTS_LISTED) -> list[Listed]:
        """The active rollouts and the most recently saved ones, at most `limit`."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(keys.ROLLOUTS_ACTIVE)
        pipe.zrevrange(keys.ROLLOUTS_RECENT, 0, limit - 1)
        active, recent = pipe.execute()
        ordered = sorted(_text(k) for k in active) + [_text(k) for k in recent]
        names = list(dict.fromkeys(ordered))[:limit]
        found = []
        for key, raw in zip(names, self.redis.mget(names) if names else [], strict=True):
            parsed = keys.parse_rollout(key)
            if parsed is None or raw is None:
                continue  # expired since it was indexed
            found.append(Listed(*parsed, _record(key, raw)))
        return found

    def rollout(self, forge: str, repo: str, app: str) -> RolloutRecord | None:
        key = keys.rollout(forge, repo, app)
        raw = self.redis.get(key)
        return _record(key, raw) if raw is not None else None

    def deployments(self, limit: int = DEPLOYMENTS_LISTED) -> list[dict[str, Any]]:
        """The most recently saved deployment records, newest first."""
        names = [_text(k) for k in self.redis.zrevrange(keys.DEPLOYMENTS_RECENT, 0, limit - 1)]
        records = []
        for raw in self.redis.mget(names) if names else []:
            try:
                record = json.loads(raw) if raw is not None else None
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
        return records

    def list_version(self) -> str:
        """Changes whenever a rollout or a deployment is saved."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(keys.ROLLOUTS_ACTIVE)
        pipe.zrevrange(keys.ROLLOUTS_RECENT, 0, ROLLOUTS_LISTED - 1, withscores=True)
        pipe.zrevrange(keys.DEPLOYMENTS_RECENT, 0, DEPLOYMENTS_LISTED - 1, withscores=True)
        active, recent, deployments = pipe.execute()
        return _digest(sorted(_text(k) for k in active), recent, deployments)

    def rollout_version(self, forge: str, repo: str, app: str) -> str:
        """Changes whenever the app's rollout record is saved (its save counter)."""
        seq = self.redis.get(keys.rollout_seq(keys.rollout(forge, repo, app)))
        return _digest(_text(seq) if seq is not None else "")


def _record(key: str, raw: bytes | str) -> RolloutRecord | None:
    try:
        return RolloutRecord.loads(raw)
    except (ValueError, TypeError, KeyError) as error:
        # Written by another version, say: listed as unreadable rather than failing the page.
        log.warning("dashboard: cannot read %s: %s", key, type(error).__name__)
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
