"""gidgethub driven synchronously over one blocking `httpx.Client`.

gidgethub builds requests and reads answers (URL templates, pagination, App JWTs, errors) in
coroutines whose only I/O is its `_request` and `sleep` hooks. Here those hooks block on the
adapter's long-lived client, so a call's coroutine never waits on an event loop and is simply
run to its end (`run_blocking`): no event loop, thread or client is built per call, and
connections (with their TLS sessions) are kept alive between calls and shared by the worker's
threads. Throttling and transient failures follow a `RetryPolicy`.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import certifi
import gidgethub
import gidgethub.abc
import httpx

from bot import metrics
from bot.forge.retry import RetryPolicy

USER_AGENT = "coalmine"

T = TypeVar("T")


class BlockingGitHubAPI(gidgethub.abc.GitHubAPI):
    """gidgethub over a shared blocking `httpx.Client`; throttling and transient failures follow
    a `RetryPolicy`. Cheap to build: one per call, around the adapter's one HTTP client."""

    def __init__(self, http: httpx.Client, policy: RetryPolicy, **kwargs: Any) -> None:
        super().__init__(USER_AGENT, **kwargs)
        self._http = http
        self._policy = policy

    async def sleep(self, seconds: float) -> None:
        self._policy.sleep(seconds)

    async def handle_rate_limit_error(
        self, *, method: str, url: str, exception: gidgethub.HTTPException, attempt: int
    ) -> bool:
        delay = self._policy.delay(int(exception.status_code), exception.headers, attempt)
        if delay is None:
            return False
        await self.sleep(delay)
        return True

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self._http.request(method, url, headers=dict(headers), content=body)
                metrics.forge_call("github", answer.status_code)
                return answer.status_code, answer.headers, answer.content
            except httpx.TransportError:
                metrics.forge_call("github", None)
                delay = self._policy.delay(None, {}, attempt)
                if delay is None:
                    raise
                await self.sleep(delay)


def run_blocking(work: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine whose awaits all complete at once (blocking I/O underneath).

    No event loop is needed for such a coroutine: its first step runs it to the end. One that
    does suspend was handed a real awaitable, which this adapter never does; it is closed and
    reported rather than left half-run.
    """
    try:
        work.send(None)
    except StopIteration as finished:
        return finished.value
    work.close()
    raise RuntimeError("a GitHub call waited on an event loop; the adapter's I/O must block")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One CA bundle load per process: building it costs ~0.1 s, more than most API calls."""
    return ssl.create_default_context(cafile=certifi.where())
