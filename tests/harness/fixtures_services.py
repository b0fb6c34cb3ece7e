"""Process fixtures: a private redis-server per test session, flushed between tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis import Redis

from tests.harness.processes import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_url(redis_client: Redis, redis_server: RedisServer) -> str:
    """A flushed private Redis; depending on it gives a test a clean slate."""
    return redis_server.url


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly; the developer's shell must not leak in."""
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "GITLAB_", "COALMINE_")) or name in (
            "REDIS_URL", "PROMETHEUS_URL", "KUBECONFIG"):
            monkeypatch.delenv(name, raising=False)
