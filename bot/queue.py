"""Job queue wiring: RQ on Redis, or an embedded in-process queue when REDIS_URL is unset.

The embedded queue exists so that one process can serve webhooks and run jobs on a laptop;
production runs the web and worker processes apart, sharing Redis through RQ.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from redis import Redis

log = logging.getLogger(__name__)

QUEUE_NAME = "coalmine"
JOB_TIMEOUT_S = 1800


class JobQueue(Protocol):
    def enqueue(self, func: Callable[..., Any], *args: Any, job_id: str | None = None) -> str:
        """Run `func(*args)` on a worker as soon as possible; returns the job id."""

    def enqueue_at(
        self, at: float, func: Callable[..., Any], *args: Any, job_id: str | None = None
    ) -> str:
        """Run `func(*args)` at epoch second `at` (or soon after)."""


SCHEDULED_KEY = "coalmine:scheduled"


class RQJobQueue:
    """RQ on a real Redis, with Coalmine's own persistent schedule for later jobs.

    RQ's scheduler holds a lock for a minute, so after a worker is killed no scheduled job would
    run until the lock expires. Our schedule is a sorted set of (job, due time) in Redis that
    every worker's ticker thread drains; identical entries collapse, and a job is moved to the
    queue by whoever removes it first, so several workers never run it twice.
    """

    def __init__(self, redis: Redis) -> None:
        from rq import Queue

        self.redis = redis
        self.queue = Queue(QUEUE_NAME, connection=redis, default_timeout=JOB_TIMEOUT_S)

    def enqueue(self, func: Callable[..., Any], *args: Any, job_id: str | None = None) -> str:
        # One round trip for RQ's several writes: the webhook path waits on this.
        with self.redis.pipeline() as pipe:
            job = self.queue.enqueue_call(func, args=args, job_id=job_id, failure_ttl=7 * 86400,
                                          pipeline=pipe)
            pipe.execute()
        return job.id

    def enqueue_at(
        self, at: float, func: Callable[..., Any], *args: Any, job_id: str | None = None
    ) -> str:
        member = json.dumps({"f": f"{func.__module__}.{func.__qualname__}", "a": list(args)})
        self.redis.zadd(SCHEDULED_KEY, {member: at})
        return member

    def move_due(self, now: float | None = None) -> int:
        """Enqueue every scheduled job that is due; returns how many this caller moved."""
        now = time.time() if now is None else now
        moved = 0
        for member in self.redis.zrangebyscore(SCHEDULED_KEY, "-inf", now, start=0, num=500):
            if not self.redis.zrem(SCHEDULED_KEY, member):
                continue  # another worker took it
            entry = json.loads(member)
            self.queue.enqueue_call(entry["f"], args=tuple(entry["a"]), failure_ttl=7 * 86400)
            moved += 1
        return moved


def run_ticker(
    queue: RQJobQueue,
    stop: threading.Event,
    interval_s: float = 0.2,
    sweeps: tuple[tuple[Callable[[], Any], float], ...] = (),
) -> None:
    """Drain the schedule until `stop` is set (a daemon thread in each worker), and call each
    sweep (re-arming work whose scheduling or worker was lost) every so many seconds."""
    next_run = [time.monotonic() + every for _, every in sweeps]
    while not stop.wait(interval_s):
        try:
            queue.move_due()
            for i, (sweep, every) in enumerate(sweeps):
                if time.monotonic() >= next_run[i]:
                    next_run[i] = time.monotonic() + every
                    sweep()
        except Exception:
            log.warning("could not move scheduled jobs", exc_info=True)


class EmbeddedJobQueue:
    """A single background thread running jobs in due order, like one RQ worker would."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, str, Callable[..., Any], tuple[Any, ...]]] = []
        self._counter = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="coalmine-jobs", daemon=True)
        self._thread.start()

    def enqueue(self, func: Callable[..., Any], *args: Any, job_id: str | None = None) -> str:
        return self.enqueue_at(self._clock(), func, *args, job_id=job_id)

    def enqueue_at(
        self, at: float, func: Callable[..., Any], *args: Any, job_id: str | None = None
    ) -> str:
        job_id = job_id or uuid.uuid4().hex
        with self._cv:
            heapq.heappush(self._heap, (at, next(self._counter), job_id, func, args))
            self._cv.notify()
        return job_id

    def pending(self) -> int:
        with self._cv:
            return len(self._heap)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (
                    not self._heap or self._heap[0][0] > self._clock()
                ):
                    wait = self._heap[0][0] - self._clock() if self._heap else None
                    self._cv.wait(timeout=wait)
                if self._stopped:
                    return
                _, _, job_id, func, args = heapq.heappop(self._heap)
            try:
                func(*args)
            except Exception:  # a failed job must not stop the queue, as with RQ
                log.exception("job %s (%s) failed", job_id, getattr(func, "__name__", func))
