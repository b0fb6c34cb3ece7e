"""The `prometheus` provider: one instant query through the HTTP API.

The result has the shape Argo's provider hands to conditions, so templates written for Argo work
unchanged: a vector becomes a list of floats (empty when no series matched - `result[0]`), a
scalar a float, a string a str. NaN and ±Inf arrive as the strings "NaN", "+Inf", "-Inf" and
become floats. A range vector (matrix) is refused: an analysis needs one value per series.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from bot.analysis.providers import (
    ProviderError,
    display_url,
    header_list,
    require_http_url,
    send,
    timeout_seconds,
    transport_failure,
)
from bot.egress import DENY_ALL, Egress

DEFAULT_TIMEOUT_S = 30.0  # Argo's default for prometheus queries
PrometheusResult = float | list[float] | str


def query_prometheus(
    spec: Mapping[str, Any], *, default_address: str | None, egress: Egress = DENY_ALL
) -> PrometheusResult:
    """Run `spec["query"]` against `spec["address"]`, else `default_address` (PROMETHEUS_URL).

    The address must be allowed by `egress`; `default_address` is the operator's own setting and
    is allowed as well (its exact scheme, host and port), so a template may name it too.
    Raises ProviderError with a message fit for the PR: refused or unreachable server, HTTP
    failure, or Prometheus's own error text for a bad query.
    """
    query = spec.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ProviderError("provider.prometheus.query is missing")
    address = spec.get("address") or default_address
    if not address:
        raise ProviderError(
            "no Prometheus address: set provider.prometheus.address or the server's PROMETHEUS_URL"
        )
    address = require_http_url(address, "the Prometheus address")
    timeout = timeout_seconds(spec.get("timeout"), "provider.prometheus.timeout", DEFAULT_TIMEOUT_S)
    url = address.rstrip("/") + "/api/v1/query"
    headers = header_list(spec.get("headers"), "provider.prometheus.headers")
    if default_address:
        egress = egress.trusting(require_http_url(default_address, "PROMETHEUS_URL"))
    try:
        response = _post_or_get(egress, url, query, headers, timeout, spec.get("insecure"))
    except httpx.HTTPError as error:
        raise transport_failure(error, "Prometheus", address, timeout) from None
    return _parse_answer(response, address)


def _post_or_get(
    egress: Egress, url: str, query: str, headers: dict[str, str], timeout: float, insecure: Any
) -> httpx.Response:
    """POST keeps long queries out of URLs; some proxies refuse it, so GET on 405/501 (as
    Prometheus's Go client does)."""
    form = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    body = urlencode({"query": query}).encode()
    response = send(egress, "POST", url, timeout=timeout, insecure=insecure, headers=form,
                    content=body)
    if response.status_code in (405, 501):
        get_url = str(httpx.URL(url, params={"query": query}))
        response = send(egress, "GET", get_url, timeout=timeout, insecure=insecure,
                        headers=headers)
    return response


def _parse_answer(response: httpx.Response, address: str) -> PrometheusResult:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("status") == "error":
        reason = body.get("error") or body.get("errorType") or "no reason given"
        raise ProviderError(f"Prometheus rejected the query: {reason}")
    if not response.is_success or not isinstance(body, dict) or body.get("status") != "success":
        raise ProviderError(
            f"Prometheus at {display_url(address)} answered HTTP {response.status_code} "
            "without a query result"
        )
    data = body.get("data") or {}
    result_type, result = data.get("resultType"), data.get("result")
    try:
        if result_type == "vector":
            return [_sample_value(sample["value"][1]) for sample in result]
        if result_type == "scalar":
            return _sample_value(result[1])
        if result_type == "string":
            return str(result[1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise ProviderError(f"Prometheus sent a malformed {result_type} result") from None
    if result_type == "matrix":
        raise ProviderError(
            "the query returned a range vector (matrix); analysis needs an instant value per "
            "series - wrap the range selector in a function such as rate() or avg_over_time()"
        )
    raise ProviderError(f"Prometheus sent an unknown result type {result_type!r}")


def _sample_value(text: Any) -> float:
    # float() accepts "NaN", "+Inf" and "-Inf", the spellings Prometheus uses; the API always
    # sends sample values as strings, so anything else is malformed.
    if not isinstance(text, str):
        raise TypeError(f"sample value {text!r} is not a string")
    return float(text)
