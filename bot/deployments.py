"""The bot's own record of each app's deployment of a commit: what a status's target URL shows."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from redis import Redis

from bot import keys

TTL_S = 30 * 24 * 3600
RECENT_KEPT = 500  # deployments listed by the dashboard (keys.DEPLOYMENTS_RECENT)


def _key(forge: str, repo: str, sha: str, app: str) -> str:
    return keys.deployment(forge, repo, sha, app)


def deployment_path(forge: str, repo: str, sha: str, app: str) -> str:
    """The URL path of the JSON view; every part is quoted since repo and app come from users."""
    return (
        f"/deployments/{quote(forge, safe='')}/{quote(repo, safe='/')}"
        f"/commits/{quote(sha, safe='')}/apps/{quote(app, safe='')}"
    )


def save_deployment(redis: Redis, record: dict[str, Any]) -> None:
    record = {**record, "updated_at": time.time()}
    key = _key(record["forge"], record["repo"], record["sha"], record["app"])
    pipe = redis.pipeline()
    pipe.set(key, json.dumps(record, sort_keys=True), ex=TTL_S)
    pipe.zadd(keys.DEPLOYMENTS_RECENT, {key: record["updated_at"]})
    pipe.zremrangebyrank(keys.DEPLOYMENTS_RECENT, 0, -RECENT_KEPT - 1)
    pipe.execute()


def load_deployment(redis: Redis, forge: str, repo: str, sha: str, app: str) -> dict | None:
    raw = redis.get(_key(forge, repo, sha, app))
    return json.loads(raw) if raw else None
