"""Measurements against the real Prometheus server scraping the test exporter."""

from __future__ import annotations

import socket

import pytest

from bot.analysis.measure import measure
from bot.egress import parse_egress
from tests.harness.prometheus import PrometheusServer

# The canned servers and the test Prometheus listen on loopback, which needs an entry.
LOOPBACK = parse_egress({"allow": ["127.0.0.1"]}, "test", {})

SUCCESS_RATIO = (
    'sum(rate(http_requests_total{{track="{track}",code!~"5.."}}[30s]))'
    ' / sum(rate(http_requests_total{{track="{track}"}}[30s]))'
)
SUCCESS = "result[0] >= 0.99"
FAILURE = "result[0] < 0.95"


def measure_query(prometheus: PrometheusServer, query: str, success: str | None, failure=None):
    return measure(
        {"prometheus": {"query": query}},
        success,
        failure,
        prometheus_url=prometheus.url, egress=LOOPBACK,
        now=0.0,
    )


@pytest.fixture(scope="module")
def ratio_queries(prometheus: PrometheusServer) -> dict[str, str]:
    """Success-ratio queries for fresh tracks, all warmed up together: each waits for two
    scrapes, and each track keeps the rates it started with (no blending inside the window)."""
    traffic = {"good": (50.0, 0.001), "bad": (50.0, 0.2), "idle": (0.0, 0.0)}
    queries = {}
    for name, (rate, error_ratio) in traffic.items():
        track = prometheus.exporter.fresh_track(name)
        prometheus.exporter.set_traffic(track, requests_per_second=rate, error_ratio=error_ratio)
        queries[name] = SUCCESS_RATIO.format(track=track)
    for query in queries.values():
        prometheus.wait_for_value(query, lambda result: len(result) == 1)
    return queries


def test_good_ratio_is_successful(prometheus: PrometheusServer, ratio_queries) -> None:
    measurement = measure_query(prometheus, ratio_queries["good"], SUCCESS, FAILURE)
    assert measurement.phase == "Successful"
    assert measurement.value == "[0.999]"


def test_bad_ratio_is_failed(prometheus: PrometheusServer, ratio_queries) -> None:
    measurement = measure_query(prometheus, ratio_queries["bad"], SUCCESS, FAILURE)
    assert measurement.phase == "Failed"
    assert measurement.value == "[0.8]"
    assert "failureCondition" in measurement.message


def test_missing_series_is_inconclusive_no_data(prometheus: PrometheusServer) -> None:
    query = SUCCESS_RATIO.format(track="no-such-track")
    measurement = measure_query(prometheus, query, SUCCESS, FAILURE)
    assert (measurement.phase, measurement.message, measurement.value) == (
        "Inconclusive",
        "no data",
        "[]",
    )


def test_track_without_traffic_is_inconclusive_no_data(
    prometheus: PrometheusServer, ratio_queries
) -> None:
    # A canary that gets no requests: 0/0, which Prometheus answers with NaN.
    measurement = measure_query(prometheus, ratio_queries["idle"], SUCCESS, FAILURE)
    assert (measurement.phase, measurement.message, measurement.value) == (
        "Inconclusive",
        "no data",
        "[NaN]",
    )


def test_gauge_set_directly(prometheus: PrometheusServer) -> None:
    prometheus.exporter.set_gauge("coalmine_test_latency_seconds", 0.25, track="gauge-check")
    query = 'coalmine_test_latency_seconds{track="gauge-check"}'
    prometheus.wait_for_value(query, lambda result: result == [0.25])
    measurement = measure_query(prometheus, f"scalar({query})", "result < 0.3")
    assert (measurement.phase, measurement.value) == ("Successful", "0.25")


def test_invalid_query_reports_prometheus_error(prometheus: PrometheusServer) -> None:
    measurement = measure_query(prometheus, "sum(rate(http_requests_total[30s])", SUCCESS)
    assert measurement.phase == "Error"
    assert "Prometheus rejected the query" in measurement.message
    assert "parse error" in measurement.message


def test_unreachable_prometheus_is_an_error() -> None:
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{reserved.getsockname()[1]}"
        measurement = measure(
            {"prometheus": {"query": "up"}}, SUCCESS, None,
            prometheus_url=address, egress=LOOPBACK, now=0.0,
        )
    assert measurement.phase == "Error"
    assert "unreachable" in measurement.message
    assert address in measurement.message
