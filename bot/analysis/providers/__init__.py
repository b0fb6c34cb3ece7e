"""Metric providers: each fetches one raw result (the `result` that conditions see).

Shared here: the error type whose message is safe to show in a PR (no credentials, no query
strings that might carry tokens), and the HTTP plumbing both providers need. Every request goes
through the server's egress policy (bot.egress): templates come from repositories, so the
destinations they name are checked, connected to at the checked address, and redirects are
re-checked instead of followed by the client.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bot.egress import Egress, EgressRefused


class ProviderError(Exception):
    """A measurement that could not be taken; the message is shown to people as is."""


@functools.cache
def _verifying_tls_context() -> ssl.SSLContext:
    """Loading the CA bundle costs ~150 ms; one context serves every measurement."""
    return httpx.create_ssl_context()


def http_client(timeout: float, insecure: Any) -> httpx.Client:
    """A client for one measurement; `insecure: true` (Argo's field) skips TLS verification.

    It follows no redirects (Egress.request re-checks each one) and ignores proxy variables and
    .netrc: a proxy would resolve and connect on its own, past the checked address.
    """
    verify: ssl.SSLContext | bool = False if insecure is True else _verifying_tls_context()
    return httpx.Client(timeout=timeout, verify=verify, follow_redirects=False, trust_env=False)


def send(
    egress: Egress,
    method: str,
    url: str,
    *,
    timeout: float,
    insecure: Any,
    headers: dict[str, str],
    content: bytes | None = None,
) -> httpx.Response:
    """One request allowed by `egress`; a refusal becomes a ProviderError naming the
    destination and the reason. httpx errors are left to the caller's transport_failure."""
    try:
        with http_client(timeout, insecure) as client:
            return egress.request(client, method, url, headers=headers, content=content)
    except EgressRefused as refusal:
        raise ProviderError(str(refusal)) from None


def display_url(url: str) -> str:
    """`url` without userinfo or query string, fit for a PR comment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def require_http_url(url: Any, field: str) -> str:
    # The value is not echoed: a malformed URL may carry a password where no parser finds it.
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise ProviderError(f"{field} must be an http(s) URL (http://host:port/...)")
    if not urlsplit(url).hostname:
        raise ProviderError(f"{field} has no host: {display_url(url)}")
    return url


def header_list(headers: Any, field: str) -> dict[str, str]:
    """Argo's `headers: [{key, value}]` as a mapping."""
    if headers is None:
        return {}
    if not isinstance(headers, list) or not all(
        isinstance(h, Mapping) and isinstance(h.get("key"), str) and "value" in h for h in headers
    ):
        raise ProviderError(f"{field} must be a list of {{key, value}} entries")
    return {h["key"]: str(h["value"]) for h in headers}


# The longest a provider may wait for one answer. Measurements run outside the rollout lock,
# yet each one still occupies a measuring thread; a template must not hold it for an hour.
MAX_TIMEOUT_S = 30.0


def timeout_seconds(value: Any, field: str, default: float) -> float:
    """The template's timeout in seconds (0 or absent: `default`), at most MAX_TIMEOUT_S."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ProviderError(f"{field} must be a non-negative number of seconds, got {value!r}")
    if value > MAX_TIMEOUT_S:
        raise ProviderError(
            f"{field} is {value:g} s; Coalmine allows at most {MAX_TIMEOUT_S:g} s per "
            "measurement (lower it, or measure more often with `interval`)")
    return float(value) or default


def transport_failure(
    error: httpx.HTTPError, source: str, url: str, timeout: float
) -> ProviderError:
    """Turns an httpx failure into a sentence that says which source failed and how."""
    where = f"{source} at {display_url(url)}"
    if isinstance(error, httpx.ConnectTimeout):
        return ProviderError(
            f"metrics source unreachable: {where}: no connection within {timeout:g}s"
        )
    if isinstance(error, httpx.ConnectError):
        detail = str(error).replace(url, display_url(url)) or "connection failed"
        return ProviderError(f"metrics source unreachable: {where}: {detail}")
    if isinstance(error, httpx.TimeoutException):
        return ProviderError(f"{where} did not answer within {timeout:g}s")
    return ProviderError(f"request to {where} failed: {type(error).__name__}")
