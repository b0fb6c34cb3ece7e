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
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.utils import get_call_string, now, utcformat

from bot import keys, metrics
from bot.logs import log_context

log = logging.getLogger(__name__)

QUEUE_NAME = "coalmine"
JOB_TIMEOUT_S = 1800
FAILURE_TTL_S = 7 * 86400

# Claim KEYS[1] for ARGV[1] seconds; only when the claim is new, write the RQ job hash KEYS[2]
# (ARGV[3:] are its field/value pairs), push its id ARGV[2] on the queue KEYS[3] and register
# the queue in KEYS[4], as RQ's own enqueue does. A script's writes are not undone when a later
# command fails, so a failed push undoes the claim and the hash itself: a job is never queued
# without its claim, and a claim is never left behind without its job.
_ENQUEUE_ONCE_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
local pushed = redis.pcall('RPUSH', KEYS[3], ARGV[2])
if type(pushed) == 'table' and pushed.err then
    redis.call('DEL', KEYS[1], KEYS[2])
    return pushed
end
redis.call('SADD', KEYS[4], KEYS[3])
return 1
"""


class JobQueue(Protocol):
    def enqueue(self, func: Callable[..., Any], *args: Any, job_id: str | None = None) -> str:
        """Run `func(*args)` on a worker as soon as possible; returns the job id."""

    def enqueue_at(
        self, at: float, func: Callable[..., Any], *args: Any, job_id: str | None = None
    ) -> str:
        """Run `func(*args)` at epoch second `at` (or soon after)."""

    def enqueue_once(
        self, claim: str | None, ttl_s: int, func: Callable[..., Any], *args: Any
    ) -> str | None:
        """Run `func(*args)` unless `claim` was already taken in the last `ttl_s` seconds.

        Returns the job id, or None for a claim already taken (nothing enqueued). Claiming and
        enqueueing happen together or not at all, so a failure leaves the claim free for a
        retry; a `claim` of None always enqueues.
        """


class JobTemplate:
    """The RQ job hash for one function, built once by RQ, filled in per call.

    RQ's `create_job` + `to_dict` cost about a fifth of an accepted webhook's CPU, nearly all of
    it on fields that are the same for every job of a function (origin, timeout, failure TTL,
    status, empty callback fields). RQ builds those once here; per call only what RQ derives
    from the call and the clock is computed, the way RQ computes it: a new uuid4 id, the
    creation and enqueue times, the pickled (function name, instance, args, kwargs) tuple
    zlib-compressed, and the call-string description. tests/integration/test_intake_round_trips.py
    compares the hash field by field with RQ's own `enqueue_call` and runs both with a real RQ
    worker, so an RQ release that changes any of this fails there.
    """

    def __init__(self, queue: Queue, func: Callable[..., Any]) -> None:
        job = queue.create_job(func, args=(), failure_ttl=FAILURE_TTL_S, status=JobStatus.QUEUED)
        job.enqueued_at = job.created_at
        self._func_name = job.func_name
        self._instance = job.instance
        self._dumps = queue.serializer.dumps
        self._fields = {name: value for name, value in job.to_dict().items() if value is not None}

    def fill(self, args: tuple[Any, ...]) -> tuple[str, list[Any]]:
        """A new job id and the hash's field/value pairs for `func(*args)`."""
        stamp = utcformat(now())
        fields = {
            **self._fields,
            "created_at": stamp,
            "enqueued_at": stamp,
            "data": zlib.compress(self._dumps((self._func_name, self._instance, args, {}))),
            "description": get_call_string(self._func_name, args, {}, max_length=75),
        }
        return str(uuid.uuid4()), list(itertools.chain.from_iterable(fields.items()))


SCHEDULED_KEY = keys.SCHEDULED
MOVE_BATCH = 500  # due entries moved per ticker sweep at most; the rest wait 0.2 s
# Take up to ARGV[2] entries of the schedule KEYS[1] due by ARGV[1] out of it, and return them.
# A worker dequeues by moving a job id from the queue to RQ's intermediate list, then starts it.
# One killed in between leaves the id there, and RQ only fails such jobs at its 10-minute
# maintenance. Put KEYS[1]'s ARGV[1] back at the front of the queue KEYS[2], once: only the
# caller whose LREM removed it pushes it.
_UNSTRAND_LUA = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[1])
    return 1
end
return 0
"""
STRANDED_AFTER_S = 15.0  # a live worker starts a dequeued job within milliseconds

_TAKE_DUE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then
    redis.call('ZREM', KEYS[1], unpack(due))
end
return due
"""


class RQJobQueue:
    """RQ on a real Redis, with Coalmine's own persistent schedule for later jobs.

    RQ's scheduler holds a lock for a minute, so after a worker is killed no scheduled job would
    run until the lock expires. Our schedule is a sorted set of (job, due time) in Redis that
    every worker's ticker thread drains; identical entries collapse, and a job is moved to the
    queue by whoever removes it first, so several workers never run it twice.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.queue = Queue(QUEUE_NAME, connection=redis, default_timeout=JOB_TIMEOUT_S)
        self._enqueue_once = redis.register_script(_ENQUEUE_ONCE_LUA)
        self._take_due = redis.register_script(_TAKE_DUE_LUA)
        self._unstrand = redis.register_script(_UNSTRAND_LUA)
        self._queue_keys = (self.queue.key, self.queue.redis_queues_keys)
        self._job_templates: dict[Callable[..., Any], JobTemplate] = {}

    def enqueue(self, func: Callable[..., Any], *args: Any, job_id: str | None = None) -> str:
        # One round trip for RQ's several writes: the webhook path waits on this.
        with self.redis.pipeline() as pipe:
            job = self.queue.enqueue_call(func, args=args, job_id=job_id, failure_ttl=FAILURE_TTL_S,
                                          pipeline=pipe)
            pipe.execute()
        return job.id

    def enqueue_once(
        self, claim: str | None, ttl_s: int, func: Callable[..., Any], *args: Any
    ) -> str | None:
        """The webhook's one Redis round trip: the claim and the job in one script call.

        The job hash is RQ's own (see JobTemplate), so a worker reads what `enqueue` would have
        written; only the writes move into the script. After the first call per connection
        pool the script runs by its SHA (EVALSHA), one command.
        """
        if claim is None:
            return self.enqueue(func, *args)
        template = self._job_templates.get(func)
        if template is None:  # two threads may both build it: the same template either way
            template = self._job_templates[func] = JobTemplate(self.queue, func)
        job_id, fields = template.fill(args)
        keys = [claim, Job.key_for(job_id), *self._queue_keys]
        claimed = self._enqueue_once(keys=keys, args=[max(1, int(ttl_s)), job_id, *fields])
        return job_id if claimed else None

    def enqueue_at(
        self, at: float, func: Callable[..., Any], *args: Any, job_id: str | None = None
    ) -> str:
        member = json.dumps({"f": f"{func.__module__}.{func.__qualname__}", "a": list(args)})
        self.redis.zadd(SCHEDULED_KEY, {member: at})
        return member

    def requeue_stranded(self, after_s: float = STRANDED_AFTER_S) -> int:
        """Put back on the queue every job a worker took and died before starting (a SIGKILL
        between dequeue and start); returns how many. A job is stranded when it sits in RQ's
        intermediate list, is not running, and was first seen there over `after_s` ago (the
        first sweep that sees it only notes it)."""
        intermediate = self.queue.intermediate_queue
        started = self.queue.started_job_registry
        moved = 0
        for job_id in intermediate.get_job_ids():
            if job_id in started or intermediate.set_first_seen(job_id):
                continue
            first_seen = intermediate.get_first_seen(job_id)
            if first_seen is None or (now() - first_seen).total_seconds() < after_s:
                continue
            if self._unstrand(keys=[intermediate.key, self.queue.key], args=[job_id]):
                # Taken again later, it gets its grace period again.
                self.redis.delete(intermediate.get_first_seen_key(job_id))
                log.warning("job %s was taken by a worker that stopped before starting it; "
                            "queued again", job_id)
                moved += 1
        return moved

    def move_due(self, now: float | None = None) -> int:
        """Enqueue every scheduled job that is due; returns how many this caller moved.

        Two round trips whatever is due: one script takes the due entries out of the schedule
        (so another worker's ticker cannot take them too), one pipeline enqueues them all. The
        ticker runs beside the jobs in the worker process, so its cost is the jobs' cost.
        """
        now = time.time() if now is None else now
        taken = self._take_due(keys=[SCHEDULED_KEY], args=[now, MOVE_BATCH])
        if not taken:
            return 0
        with self.redis.pipeline() as pipe:
            for member in taken:
                entry = json.loads(member)
                self.queue.enqueue_call(entry["f"], args=tuple(entry["a"]),
                                        failure_ttl=FAILURE_TTL_S, pipeline=pipe)
            pipe.execute()
        return len(taken)


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
        self._claims: dict[str, float] = {}  # claim → expiry (epoch s); nothing outlives us
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

    def enqueue_once(
        self, claim: str | None, ttl_s: int, func: Callable[..., Any], *args: Any
    ) -> str | None:
        with self._cv:
            now_s = self._clock()
            if claim is not None:
                if self._claims.get(claim, 0.0) > now_s:
                    return None
                self._forget_expired_claims(now_s)
                self._claims[claim] = now_s + max(1, ttl_s)
        return self.enqueue(func, *args)

    def _forget_expired_claims(self, now_s: float) -> None:
        """Drop expired claims once there are many, so a long-lived laptop process stays small."""
        if len(self._claims) >= 1024 and len(self._claims) & (len(self._claims) - 1) == 0:
            for key in [k for k, expiry in self._claims.items() if expiry <= now_s]:
                del self._claims[key]

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
            # The job's id on its every line, as an RQ worker's job has (bot.logs).
            with log_context(job_id=job_id):
                try:
                    func(*args)
                except Exception:  # a failed job must not stop the queue, as with RQ
                    log.exception("job %s (%s) failed", job_id, getattr(func, "__name__", func))


class MeteredWorker(SimpleWorker):
    """The RQ worker, timing and counting each job under its trigger's name (`kind_of` maps a
    job's dotted function name to it)."""

    kind_of: Callable[[str], str] = staticmethod(lambda name: metrics.OTHER)

    def perform_job(self, job: Any, queue: Any, *args: Any, **kwargs: Any) -> bool:
        return metrics.observe_job(self.kind_of(job.func_name),
                           lambda: super(MeteredWorker, self).perform_job(job, queue, *args,
                                                                          **kwargs))
