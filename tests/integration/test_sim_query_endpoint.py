"""The demo's metrics source: the bot's own measurement code against the exporter's query API.

`coalmine demo` points PROMETHEUS_URL at `Exporter.query_url`, so the analysis there is only as
honest as this endpoint's answers: the exporter's success ratio, Prometheus's answer shape, and
Prometheus's refusal for a query it does not know.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.analysis.measure import measure
from bot.sim.exporter import Exporter
from tests.harness.processes import wait_until

QUERY = 'http_requests:success_ratio{{track="{track}"}}'


@pytest.fixture
def endpoint() -> Iterator[Exporter]:
    exporter = Exporter().start()
    try:
        yield exporter
    finally:
        exporter.stop()


def counted(endpoint: Exporter, *tracks: str) -> None:
    """Wait until requests of each track were counted (the counters grow with wall time)."""
    for track in tracks:
        wait_until(lambda t=track: endpoint.success_ratio(t) is not None, 5, 0.001)


def _measure(endpoint: Exporter, query: str):
    return measure({"prometheus": {"query": query}}, "result[0] >= 0.95", "result[0] < 0.90",
                   prometheus_url=endpoint.query_url, now=0.0)


def test_the_ratio_of_a_track_is_its_share_of_good_requests(endpoint):
    endpoint.set_traffic("good", requests_per_second=1000, error_ratio=0.0)
    endpoint.set_traffic("bad", requests_per_second=1000, error_ratio=0.25)
    counted(endpoint, "good", "bad")

    good = _measure(endpoint, QUERY.format(track="good"))
    bad = _measure(endpoint, QUERY.format(track="bad"))

    assert (good.phase, good.value) == ("Successful", "[1]")
    assert bad.phase == "Failed"
    assert bad.value == "[0.75]"


def test_new_rates_are_judged_without_the_old_ones(endpoint):
    """The demo reuses one track for its good and its bad release."""
    endpoint.set_traffic("canary", requests_per_second=1000, error_ratio=0.0)
    counted(endpoint, "canary")
    endpoint.set_traffic("canary", requests_per_second=1000, error_ratio=0.5)
    counted(endpoint, "canary")

    assert _measure(endpoint, QUERY.format(track="canary")).value == "[0.5]"


def test_a_track_without_traffic_has_no_data(endpoint):
    status, answer = endpoint.answer_query(QUERY.format(track="nobody"))
    assert status == 200 and answer["data"] == {"resultType": "vector", "result": []}


def test_another_query_is_refused_as_prometheus_refuses_a_bad_one(endpoint):
    measured = _measure(endpoint, "sum(rate(http_requests_total[30s]))")
    assert measured.phase == "Error"
    assert "only answers http_requests:success_ratio" in measured.message
