"""Job leases against a real Redis: a job whose worker keeps dying is given up after a cap.

The dying is real: each attempt runs in a child process that takes the lease and is SIGKILLed
inside it, as an out-of-memory kill would end a worker in the middle of a merge.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.leases import LEASES, MAX_ATTEMPTS, GivenUp, _take, leased, requeue_lapsed
from tests.harness.bot import REPO_ROOT
from tests.harness.processes import RedisServer

DIE_INSIDE_THE_LEASE = """
import os, signal, sys
from redis import Redis
from bot.leases import leased
from tests.integration.test_lease_cap import poison
with leased(Redis.from_url(sys.argv[1]), poison, sys.argv[2]):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def poison(name: str) -> None:
    """The job under lease (never run by these tests, only named by the lease)."""


def die_holding_the_lease(redis_url: str, arg: str) -> None:
    result = subprocess.run([sys.executable, "-c", DIE_INSIDE_THE_LEASE, redis_url, arg],
                            cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT)}, check=False,
                            capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()


def test_the_cap_is_three_attempts():
    assert MAX_ATTEMPTS == 3


def test_a_job_whose_worker_died_each_time_is_given_up(redis_url: str, redis_client: Redis):
    for _ in range(MAX_ATTEMPTS):
        die_holding_the_lease(redis_url, "push-1")
    assert redis_client.hlen(LEASES) == MAX_ATTEMPTS  # each left its lease to be re-run

    with pytest.raises(GivenUp) as given_up, leased(redis_client, poison, "push-1"):
        pytest.fail("a job given up must not run again")
    assert given_up.value.attempts == MAX_ATTEMPTS
    assert "given up after 3 attempts" in str(given_up.value)
    # Another job is not affected, and once given up the same job may be delivered anew.
    with leased(redis_client, poison, "push-2"):
        pass
    with leased(redis_client, poison, "push-1"):
        pass


def test_a_job_that_ends_with_its_worker_alive_starts_its_count_over(redis_client: Redis):
    for _ in range(MAX_ATTEMPTS + 2):
        with leased(redis_client, poison, "push-3"):
            pass
    for _ in range(MAX_ATTEMPTS + 2):
        with pytest.raises(RuntimeError), leased(redis_client, poison, "push-3"):
            raise RuntimeError("a failure the worker survived")
    assert redis_client.hlen(LEASES) == 0


def test_dead_attempts_below_the_cap_still_run(redis_url: str, redis_client: Redis):
    for _ in range(MAX_ATTEMPTS - 1):
        die_holding_the_lease(redis_url, "push-4")
    ran = []
    with leased(redis_client, poison, "push-4"):
        ran.append(True)
    assert ran == [True]


def test_lapsed_leases_are_re_enqueued_with_their_arguments(redis_url: str, redis_client: Redis):
    die_holding_the_lease(redis_url, "push-5")
    for key in redis_client.scan_iter("coalmine:lease-alive:*"):
        redis_client.delete(key)  # the 10 s TTL, passed
    enqueued: list[tuple] = []
    assert requeue_lapsed(redis_client, lambda func, *args: enqueued.append((func, args))) == 1
    assert enqueued == [(poison, ("push-5",))]


def test_a_redis_error_under_the_job_leaves_the_lease_to_be_re_run(redis_client: Redis):
    """A Redis restart in the middle of a merge must not lose the merge: the lease lapses."""
    with pytest.raises(RedisConnectionError), leased(redis_client, poison, "redis-blip"):
        raise RedisConnectionError("connection lost")
    assert redis_client.hlen(LEASES) == 1
    for key in redis_client.scan_iter("coalmine:lease-alive:*"):  # as if its TTL had passed
        redis_client.delete(key)
    again: list[tuple] = []
    assert requeue_lapsed(redis_client, lambda func, *args: again.append((func, args))) == 1
    assert again == [(poison, ("redis-blip",))]


def test_any_other_error_ends_the_lease(redis_client: Redis):
    with pytest.raises(ValueError), leased(redis_client, poison, "bad-input"):
        raise ValueError("the job failed on its own")
    assert redis_client.hlen(LEASES) == 0


def test_a_job_dequeued_while_redis_restarts_waits_to_take_its_lease(tmp_path):
    """Off the queue and not yet leased, a job that failed on Redis would be lost: it waits
    until Redis answers again, then takes its lease and runs."""
    server = RedisServer(tmp_path)  # not started yet: Redis is away when the job starts
    client = Redis.from_url(server.url)
    starter = threading.Timer(0.5, server.start)
    starter.start()
    ran = []
    try:
        with leased(client, poison, "dequeued-during-restart"):
            ran.append(client.hlen(LEASES))
    finally:
        starter.join()
        server.stop()
    assert ran == [1]  # the block ran holding the lease


def test_a_job_gives_up_on_redis_after_its_wait(tmp_path):
    client = Redis.from_url(RedisServer(tmp_path).url)  # never started
    with pytest.raises(RedisConnectionError):
        _take(client, "id", "payload", "attempts", "poison", wait_s=0.3)
