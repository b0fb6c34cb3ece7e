"""Leases on running jobs, so a job whose worker was killed is run again within seconds.

RQ notices an abandoned job only after its heartbeat has lapsed and a maintenance pass runs
(minutes). Coalmine's jobs are idempotent, so a job that holds a lease renews it while it works,
and any worker's ticker re-enqueues the job of a lease that stopped being renewed.
"""

from __future__ import annotations

import base64
import importlib
import logging
import pickle
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from bot.heartbeat import renewing

log = logging.getLogger(__name__)
LEASES = "coalmine:leases"
LEASE_TTL_S = 10


def _alive_key(lease_id: str) -> str:
    return f"coalmine:lease-alive:{lease_id}"


@contextmanager
def leased(redis: Redis, func: Callable[..., Any], *args: Any) -> Iterator[None]:
    """Hold a lease on `func(*args)` while the block runs; the job is re-run if we die."""
    lease_id = uuid.uuid4().hex
    # Pickled like RQ's own job payloads: only Coalmine's event dataclasses travel here.
    payload = base64.b64encode(
        pickle.dumps((f"{func.__module__}.{func.__qualname__}", args))).decode()
    redis.set(_alive_key(lease_id), 1, ex=LEASE_TTL_S)
    redis.hset(LEASES, lease_id, payload)

    def renew() -> bool:
        try:
            redis.set(_alive_key(lease_id), 1, ex=LEASE_TTL_S)
        except RedisError:
            log.warning("could not renew the lease of %s", func.__qualname__)
        return True

    try:
        with renewing(renew, LEASE_TTL_S / 3, "job-lease"):
            yield
    finally:
        redis.hdel(LEASES, lease_id)
        redis.delete(_alive_key(lease_id))


def requeue_lapsed(redis: Redis, enqueue: Callable[..., Any]) -> int:
    """Re-enqueue every leased job whose holder stopped renewing; returns how many."""
    count = 0
    for raw_id, payload in redis.hgetall(LEASES).items():
        lease_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        if redis.exists(_alive_key(lease_id)):
            continue
        if not redis.hdel(LEASES, lease_id):
            continue  # another worker took it
        name, args = pickle.loads(base64.b64decode(payload))
        module, _, attr = name.rpartition(".")
        func = getattr(importlib.import_module(module), attr)
        log.warning("re-running %s: the worker running it stopped", name)
        enqueue(func, *args)
        count += 1
    return count
