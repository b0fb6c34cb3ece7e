"""Leases on running jobs, so a job whose worker was killed is run again within seconds.

RQ notices an abandoned job only after its heartbeat has lapsed and a maintenance pass runs
(minutes). Coalmine's jobs are idempotent, so a job that holds a lease renews it while it works,
and any worker's ticker re-enqueues the job of a lease that stopped being renewed.

A job that kills its worker (a push that makes rendering exhaust memory, say) would kill every
worker in turn, so the starts of one job are counted until it ends either way: after
MAX_ATTEMPTS starts whose worker died, the next start raises GivenUp instead of running it.
"""

from __future__ import annotations

import base64
import importlib
import logging
import pickle
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from bot import keys
from bot.heartbeat import renewing

log = logging.getLogger(__name__)
LEASES = keys.LEASES
LEASE_TTL_S = 10
MAX_ATTEMPTS = 3
ATTEMPTS_TTL_S = 24 * 3600
# How long a job waits for Redis to come back before it can take its lease. Without the lease
# nothing would run the job again, so it waits rather than fails (a restart takes seconds).
REDIS_WAIT_S = 60.0


class GivenUp(Exception):
    """The job was started `attempts` times and its worker died each time; not run again."""

    def __init__(self, name: str, attempts: int) -> None:
        self.name, self.attempts = name, attempts
        super().__init__(f"{name} was given up after {attempts} attempts: the worker running "
                         "it stopped each time (killed, or out of memory)")


def _alive_key(lease_id: str) -> str:
    return keys.lease_alive(lease_id)


def _attempts_key(payload: str) -> str:
    return keys.lease_attempts(payload)


@contextmanager
def leased(redis: Redis, func: Callable[..., Any], *args: Any,
           max_attempts: int = MAX_ATTEMPTS) -> Iterator[None]:
    """Hold a lease on `func(*args)` while the block runs; the job is re-run if we die.

    Raises GivenUp (without running the block) when `max_attempts` earlier starts of the same
    job never ended because their worker died."""
    lease_id = uuid.uuid4().hex
    name = f"{func.__module__}.{func.__qualname__}"
    # Pickled like RQ's own job payloads: only Coalmine's event dataclasses travel here.
    payload = base64.b64encode(pickle.dumps((name, args))).decode()
    attempts = _attempts_key(payload)
    started = _take(redis, lease_id, payload, attempts, name)
    if started > max_attempts:
        redis.delete(attempts)
        log.error("giving up %s: its worker died %d times", name, started - 1)
        raise GivenUp(name, started - 1)

    def renew() -> bool:
        try:
            redis.set(_alive_key(lease_id), 1, ex=LEASE_TTL_S)
        except RedisError:
            log.warning("could not renew the lease of %s", func.__qualname__)
        return True

    try:
        with renewing(renew, LEASE_TTL_S / 3, "job-lease"):
            yield
    except RedisError:
        # Redis failed under the job (a restart, a failover): the lease is left to lapse, so a
        # worker runs the job again once Redis answers; the attempt cap still bounds it.
        log.warning("%s stopped on a Redis error; it runs again when its lease lapses", name)
        raise
    except BaseException:
        _release(redis, lease_id, attempts)
        raise
    _release(redis, lease_id, attempts)


def _take(redis: Redis, lease_id: str, payload: str, attempts: str, name: str,
          wait_s: float = REDIS_WAIT_S) -> int:
    """Count this start and hold the lease (one transaction); returns the start's number.

    A Redis error here (a restart under a job that has just been dequeued) would lose the job:
    it is off the queue and has no lease yet. So the job waits for Redis, up to `wait_s`.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        try:
            pipe = redis.pipeline()
            pipe.incr(attempts)
            pipe.expire(attempts, ATTEMPTS_TTL_S)
            pipe.set(_alive_key(lease_id), 1, ex=LEASE_TTL_S)
            pipe.hset(LEASES, lease_id, payload)
            return int(pipe.execute()[0])
        except RedisError:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s waits for Redis to take its lease", name)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _release(redis: Redis, lease_id: str, attempts: str) -> None:
    """The job ended (well or not) with its worker alive: no re-run, its count starts over."""
    redis.hdel(LEASES, lease_id)
    redis.delete(_alive_key(lease_id), attempts)


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
