"""How `bot.cluster.client.Cluster` requests travel: retries, discovery cache, credentials,
identity.

These wrap pieces of the kubernetes client that are right for a one-off script but cost a
long-running bot either correctness (a discovery cache file shared between clusters) or CPU
on every request (a credential hook that re-reads the environment, responses rebuilt as
attribute objects only to be turned back into the same dicts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.dynamic.discovery import LazyDiscoverer
from urllib3 import HTTPHeaderDict

# How often the kubeconfig's credential hook may run. The loaders renew a token five minutes
# before it expires (an in-cluster token file is re-read once a minute), so looking at most
# every few seconds still switches to a new token long before the old one stops working.
CREDENTIAL_CHECK_EVERY_S = 5.0

RETRYABLE_STATUS = frozenset({409, 429, 500, 502, 503, 504})
# A failed delete precondition is a 409 too, but retrying the same precondition cannot succeed.
RETRYABLE_WITH_PRECONDITION = RETRYABLE_STATUS - {409}


@dataclass(frozen=True)
class RetryPolicy:
    """Few, short attempts: a job that still fails is retried later by the queue."""

    attempts: int = 4
    first_delay_s: float = 0.2
    max_delay_s: float = 2.0

    def delay(self, attempt: int) -> float:
        return min(self.first_delay_s * 2**attempt, self.max_delay_s)


DEFAULT_RETRY = RetryPolicy()


class MemoryDiscoverer(LazyDiscoverer):
    """Keeps discovery in memory for the life of one Cluster.

    The stock discoverer shares a cache file per server URL in /tmp, which leaks stale
    resource lists between clusters (and between test servers that reuse a port).
    """

    def _write_cache(self) -> None:
        """Never persist; the in-memory cache is all we want."""


@dataclass(frozen=True)
class Identity:
    """Whom a Cluster's requests are made as: the user (and groups) it impersonates."""

    user: str
    groups: tuple[str, ...] = ()


class ImpersonatingPool:
    """Wraps the REST client's urllib3 pool so every request carries the impersonation headers.

    The kubernetes client keeps default headers in a dict, which cannot repeat
    `Impersonate-Group` once per group the way the API server reads it; urllib3's header dict
    can. Anything else is delegated to the wrapped pool unchanged.
    """

    def __init__(self, pool: Any, identity: Identity):
        self._pool = pool
        self._identity = identity

    def request(self, method: str, url: str, *args: Any, headers: Any = None, **kwargs: Any):
        merged = HTTPHeaderDict(headers or {})
        merged.discard("Impersonate-User")
        merged.discard("Impersonate-Group")
        merged["Impersonate-User"] = self._identity.user
        for group in self._identity.groups:
            merged.add("Impersonate-Group", group)
        return self._pool.request(method, url, *args, headers=merged, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class ThrottledCredentialHook:
    """Runs the configuration loader's `refresh_api_key_hook` at most every `every_s` seconds.

    The kubernetes client calls that hook before every request. Besides renewing an expired
    token, the loader's hook assigns the host, certificates and proxy to the configuration again,
    and assigning the host re-reads every proxy variable of the environment: 12 % of the
    profiled CPU of applying 500 objects (bench/README.md, issue 9). Each run of the loader's
    hook installs a fresh copy of itself on the configuration; this puts itself back in front.

    No lock: two threads passing the check at once both run the loader's hook, which is what
    every request did before.
    """

    def __init__(
        self,
        hook: Callable[[Any], None],
        every_s: float = CREDENTIAL_CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.hook = hook
        self.every_s = every_s
        self.clock = clock
        self.checked_at: float | None = None

    @classmethod
    def install(cls, configuration: Any, **kwargs: Any) -> None:
        """Wraps the configuration's hook, if it has one (a static token or cert has none)."""
        hook = configuration.refresh_api_key_hook
        if hook is not None and not isinstance(hook, cls):
            configuration.refresh_api_key_hook = cls(hook, **kwargs)

    def __call__(self, configuration: Any) -> None:
        now = self.clock()
        if self.checked_at is not None and now - self.checked_at < self.every_s:
            return
        self.checked_at = now
        self.hook(configuration)
        installed = configuration.refresh_api_key_hook
        if installed is not self:
            if installed is not None:
                self.hook = installed
            configuration.refresh_api_key_hook = self


def plain_json(_client: Any, data: Any) -> Any:
    """A `serializer` for the dynamic client that keeps the decoded JSON as it is.

    The default builds a ResourceInstance (an attribute object per nested dict), which the
    Cluster then turns straight back into the same dicts with `to_dict()`.
    """
    return data
