"""What one webhook delivery costs in Redis, read from a real redis-server's MONITOR stream.

The intake's speed target (issue 9) rests on one Redis round trip per accepted delivery: the
dedupe claim and the RQ job written by one script call. These tests count the commands the app's
connection sends (script-internal commands show up apart, as `lua`), so a second round trip, a
write for an ignored delivery, or a claim left behind by a failed enqueue fails here.
"""

from __future__ import annotations

import dataclasses
import pickle
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from redis import Redis
from rq import Queue, SimpleWorker, get_current_job
from rq.job import Job, JobStatus
from rq.utils import now, utcparse

from bot import events, services, tenancy
from bot.config import GitHubSettings, GitLabSettings, Settings
from bot.policy import Policy
from bot.queue import FAILURE_TTL_S, QUEUE_NAME, EmbeddedJobQueue, RQJobQueue
from bot.wsgi import app_for
from tests.harness import payloads

GH_SECRET = "gh-round-trip-secret"
GL_TOKEN = "gl-round-trip-token"
SERVED = {"acme/gitops": Policy(namespaces=("shop",))}
DELIVERY_TTL_S = 3600
READS = {"HGET", "GET", "EXISTS", "TTL", "HGETALL", "LLEN", "LRANGE"}
CALLS_KEY = "test:calls"


def make_settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, repos=SERVED, delivery_ttl_s=DELIVERY_TTL_S,
                    github=GitHubSettings(webhook_secret=GH_SECRET, token="t"),
                    gitlab=GitLabSettings(webhook_token=GL_TOKEN, token="t"))


def post_github(client, payload, event="pull_request", delivery=None):
    body = payloads.dumps(payload)
    return client.post("/webhooks/github", data=body,
                       headers=payloads.github_headers(body, GH_SECRET, event, delivery))


def post_gitlab(client, payload, event="Merge Request Hook", key=None):
    body = payloads.dumps(payload)
    return client.post("/webhooks/gitlab", data=body,
                       headers=payloads.gitlab_headers(GL_TOKEN, event, key))


@dataclass
class Seen:
    """Commands Redis received while watched: from clients, and run inside scripts."""

    client: list[str] = field(default_factory=list)
    lua: list[str] = field(default_factory=list)


@contextmanager
def watched(redis_url: str) -> Iterator[Seen]:
    """MONITOR the server for the block's duration; a marker ECHO closes the window."""
    seen = Seen()
    monitor_client, probe = Redis.from_url(redis_url), Redis.from_url(redis_url)
    marker = f"end-of-window-{uuid.uuid4().hex}"
    probe.ping()  # connected (and its handshake sent) before the window opens
    with monitor_client.monitor() as monitor:
        yield seen
        probe.echo(marker)
        for entry in monitor.listen():
            name, _, rest = entry["command"].partition(" ")
            if name.upper() == "ECHO" and marker in rest:
                break
            target = seen.lua if entry["client_type"] == "lua" else seen.client
            target.append(name.upper())
    probe.close()
    monitor_client.close()


@pytest.fixture
def redis(redis_url) -> Redis:
    return Redis.from_url(redis_url)


@pytest.fixture
def client(redis_url, redis):
    """The app on a real Redis, its script already loaded (a one-off per process), then flushed."""
    app = app_for(services.Services(make_settings(redis_url), redis, RQJobQueue(redis)))
    test_client = app.test_client()
    assert post_github(test_client, payloads.github_pr_merged()).status_code == 202
    redis.flushall()
    return test_client


def queued(redis: Redis) -> list[Job]:
    return Queue(QUEUE_NAME, connection=redis).jobs


# --------------------------------------------------------------------------- accepted


def test_an_accepted_delivery_is_one_script_call(client, redis, redis_url):
    with watched(redis_url) as seen:
        resp = post_github(client, payloads.github_pr_merged(), delivery="d-accepted")
    assert resp.status_code == 202
    assert seen.client == ["EVALSHA"]
    assert seen.lua == ["SET", "HSET", "RPUSH", "SADD"]
    [job] = queued(redis)
    assert job.id == resp.get_json()["job_id"]
    assert job.func_name == "handlers.merged.run" and job.args[0].delivery == "d-accepted"
    assert job.get_status() == JobStatus.QUEUED and job.origin == QUEUE_NAME
    assert job.enqueued_at is not None and job.timeout == 1800
    assert 0 < redis.ttl("coalmine:delivery:github:d-accepted") <= DELIVERY_TTL_S


def record_call(*args: object) -> str:
    """A job for the real worker below: keeps what it was called with, in its own Redis."""
    current = get_current_job()
    assert current is not None
    current.connection.rpush(CALLS_KEY, pickle.dumps(args))
    return "done"


def test_the_job_hash_is_the_one_rq_writes_and_a_real_worker_runs_it(redis):
    """enqueue_once writes RQ's hash from a per-function template: field for field it must be
    what RQ's own enqueue writes (but for the id and the clock), and a real RQ worker must run
    it as it runs RQ's."""
    queue = RQJobQueue(redis)
    event = events.parse_github("pull_request", payloads.github_pr_merged())
    args = (dataclasses.replace(event, delivery="d-format"), "x" * 200)  # a long repr is cut
    queue.enqueue_once("coalmine:delivery:test:format-1", 60, record_call, *args)  # template
    start = now()
    ours = queue.enqueue_once("coalmine:delivery:test:format-2", 60, record_call, *args)
    theirs = queue.queue.enqueue_call(record_call, args=args, failure_ttl=FAILURE_TTL_S).id
    assert ours is not None
    ours_hash, theirs_hash = redis.hgetall(Job.key_for(ours)), redis.hgetall(Job.key_for(theirs))
    clock = {b"created_at", b"enqueued_at"}
    assert ours_hash.keys() == theirs_hash.keys()
    assert {k: v for k, v in ours_hash.items() if k not in clock} == \
        {k: v for k, v in theirs_hash.items() if k not in clock}
    for name in clock:  # this job's own times, not the template's
        assert start <= utcparse(ours_hash[name].decode()) <= utcparse(theirs_hash[name].decode())

    SimpleWorker([queue.queue], connection=redis).work(burst=True)
    for job_id in (ours, theirs):
        job = Job.fetch(job_id, connection=redis)
        assert job.get_status() == JobStatus.FINISHED and job.return_value() == "done"
    assert [pickle.loads(call) for call in redis.lrange(CALLS_KEY, 0, -1)] == [args] * 3


@pytest.mark.parametrize("send", [
    lambda c: post_gitlab(c, payloads.gitlab_mr_merged(), key="gl-merge"),
    lambda c: post_gitlab(c, payloads.gitlab_note("/abort"), event="Note Hook", key="gl-note"),
    lambda c: post_github(c, payloads.github_comment("/promote"), event="issue_comment"),
], ids=["gitlab-merge", "gitlab-command", "github-command"])
def test_every_kind_of_accepted_delivery_is_one_script_call(client, redis, redis_url, send):
    with watched(redis_url) as seen:
        assert send(client).status_code == 202
    assert seen.client == ["EVALSHA"]
    assert len(queued(redis)) == 1


def test_a_redelivery_is_one_call_and_writes_nothing(client, redis, redis_url):
    assert post_github(client, payloads.github_pr_merged(), delivery="d-twice").status_code == 202
    with watched(redis_url) as seen:
        again = post_github(client, payloads.github_pr_merged(), delivery="d-twice")
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    assert seen.client == ["EVALSHA"]
    assert seen.lua == ["SET"]  # the claim is taken: SET NX changes nothing, nothing follows
    assert len(queued(redis)) == 1


def test_a_renamed_repository_costs_one_read_of_its_pin(client, redis, redis_url):
    settings = make_settings(redis_url)
    repo_id = payloads.github_pr_merged()["repository"]["id"]
    tenancy.resolve(settings, redis, "github", repo_id, "acme/gitops")  # pinned by a job
    with watched(redis_url) as seen:
        resp = post_github(client, payloads.github_pr_merged(full_name="acme/renamed"))
    assert resp.status_code == 202
    assert seen.client == ["HGET", "EVALSHA"]


# --------------------------------------------------------------------------- ignored


@pytest.mark.parametrize("send,reads", [
    (lambda c: post_github(c, payloads.github_pr_merged(full_name="evil/other")), ["HGET"]),
    (lambda c: post_github(c, payloads.github_pr_merged(base="develop")), []),
    (lambda c: post_github(c, payloads.github_comment("just a comment"), event="issue_comment"),
     []),
    (lambda c: post_github(c, {"zen": "Keep it simple.", "hook_id": 1}, event="ping"), []),
    (lambda c: post_gitlab(c, payloads.gitlab_mr_merged(action="close")), []),
], ids=["unserved-repository", "other-branch", "no-command", "ping", "gitlab-not-merged"])
def test_ignored_deliveries_write_nothing(client, redis, redis_url, send, reads):
    with watched(redis_url) as seen:
        assert send(client).status_code == 200
    assert seen.client == reads and set(seen.client) <= READS and seen.lua == []
    assert redis.dbsize() == 0


# --------------------------------------------------------------------------- failures


def test_a_failed_enqueue_leaves_no_claim_so_the_redelivery_is_accepted(client, redis):
    queue_key = f"rq:queue:{QUEUE_NAME}"
    redis.set(queue_key, "not a list")  # the push inside the script fails with WRONGTYPE
    resp = post_github(client, payloads.github_pr_merged(), delivery="d-retry")
    assert resp.status_code == 503
    assert not redis.exists("coalmine:delivery:github:d-retry")
    assert list(redis.scan_iter("rq:job:*")) == []
    redis.delete(queue_key)
    assert post_github(client, payloads.github_pr_merged(), delivery="d-retry").status_code == 202
    assert len(queued(redis)) == 1


def test_a_delivery_without_an_id_is_enqueued_without_a_claim(client, redis):
    body = payloads.dumps(payloads.gitlab_mr_merged())
    headers = payloads.gitlab_headers(GL_TOKEN, "Merge Request Hook")
    headers.pop("Idempotency-Key", None)
    headers.pop("X-Gitlab-Event-UUID", None)
    for _ in range(2):
        assert client.post("/webhooks/gitlab", data=body, headers=headers).status_code == 202
    assert len(queued(redis)) == 2
    assert list(redis.scan_iter("coalmine:delivery:*")) == []


# --------------------------------------------------------------------------- the schedule


def scheduled_job(*args: object) -> None:
    """A job the schedule names by its import path."""


def test_due_scheduled_jobs_move_in_two_round_trips(redis, redis_url):
    queue = RQJobQueue(redis)
    queue.enqueue_at(1.0, scheduled_job, "warm-up")
    queue.move_due(now=2.0)  # once per process: the script is loaded, RQ asks the version
    redis.delete(f"rq:queue:{QUEUE_NAME}")
    for i in range(30):
        queue.enqueue_at(100.0 + i, scheduled_job, f"app-{i}")
    queue.enqueue_at(10_000.0, scheduled_job, "later")
    with watched(redis_url) as seen:
        assert queue.move_due(now=1000.0) == 30
    assert seen.client[0] == "EVALSHA"  # take the due entries out of the schedule
    transaction = seen.client[1:]  # enqueue them all in one pipeline
    assert transaction[0] == "MULTI" and transaction[-1] == "EXEC"
    assert "MULTI" not in transaction[1:-1] and "EXEC" not in transaction[1:-1]
    jobs = queued(redis)
    assert sorted(job.args[0] for job in jobs) == sorted(f"app-{i}" for i in range(30))
    assert {job.func_name for job in jobs} == {f"{__name__}.scheduled_job"}
    assert queue.move_due(now=1000.0) == 0  # taken once: a second ticker finds nothing
    assert redis.zcard("coalmine:scheduled") == 1


# --------------------------------------------------------------------------- embedded queue


def test_the_embedded_queue_claims_once_until_the_claim_expires():
    now = [1000.0]
    queue = EmbeddedJobQueue(clock=lambda: now[0])
    ran: list[str] = []
    try:
        assert queue.enqueue_once("k", 60, ran.append, "first") is not None
        assert queue.enqueue_once("k", 60, ran.append, "again") is None
        now[0] += 61
        assert queue.enqueue_once("k", 60, ran.append, "after expiry") is not None
        assert queue.enqueue_once(None, 60, ran.append, "no claim") is not None
    finally:
        queue.stop()


def test_a_job_whose_worker_died_between_dequeue_and_start_is_queued_again(redis_url):
    """RQ moves a job to its intermediate list when a worker takes it; a worker killed before
    starting it (the chaos test's SIGKILL right after a merge) leaves it there, and RQ would only
    fail it at its 10-minute maintenance. The sweep puts it back and a worker runs it."""
    redis = Redis.from_url(redis_url)
    queue = RQJobQueue(redis)
    job_id = queue.enqueue(record_call, "stranded")
    # What a worker's dequeue does before it dies: the id moves to the intermediate list.
    assert redis.lmove(queue.queue.key, queue.queue.intermediate_queue_key) == job_id.encode()
    assert queue.requeue_stranded(after_s=0) == 0  # first sighting: only noted
    assert queue.requeue_stranded(after_s=60) == 0  # not stranded long enough
    assert queue.requeue_stranded(after_s=0) == 1
    assert redis.lrange(queue.queue.key, 0, -1) == [job_id.encode()]
    assert redis.llen(queue.queue.intermediate_queue_key) == 0
    SimpleWorker([queue.queue], connection=redis).work(burst=True)
    assert Job.fetch(job_id, connection=redis).get_status() == JobStatus.FINISHED


def test_a_running_job_is_not_taken_for_stranded(redis_url):
    redis = Redis.from_url(redis_url)
    queue = RQJobQueue(redis)
    job_id = queue.enqueue(record_call, "running")
    redis.lmove(queue.queue.key, queue.queue.intermediate_queue_key)
    # What a live worker records when it starts the job: an execution of it in the registry.
    redis.zadd(queue.queue.started_job_registry.key, {f"{job_id}:execution-1": 2**40})
    queue.requeue_stranded(after_s=0)
    assert queue.requeue_stranded(after_s=0) == 0
    assert redis.llen(queue.queue.key) == 0
