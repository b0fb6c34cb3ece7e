"""One measurement end to end against recorded Prometheus answers served over a real socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.analysis.measure import measure, render_value
from bot.egress import parse_egress
from tests.harness.prometheus import CannedHTTPServer

# The canned servers and the test Prometheus listen on loopback, which needs an entry.
LOOPBACK = parse_egress({"allow": ["127.0.0.1"]}, "test", {})

DATA = Path(__file__).parent / "data"
NOW = 1_700_000_000.0
RATIO_QUERY = 'sum(rate(http_requests_total{track="canary",code!~"5.."}[30s]))'


def recorded(name: str) -> str:
    return (DATA / f"prometheus_{name}.json").read_text()


def run(
    server: CannedHTTPServer,
    success: str | None = None,
    failure: str | None = None,
    **spec: object,
):
    return measure(
        {"prometheus": {"query": RATIO_QUERY, **spec}},
        success,
        failure,
        prometheus_url=server.url, egress=LOOPBACK,
        now=NOW,
    )


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_good_ratio_is_successful(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("vector_one"))
    measurement = run(canned_http, "result[0] >= 0.99")
    assert measurement.phase == "Successful"
    assert measurement.value == "[0.9923]"
    assert measurement.message == "successCondition `result[0] >= 0.99` is true"
    assert measurement.at == NOW


def test_bad_ratio_is_failed(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("vector_one"))
    measurement = run(canned_http, "result[0] >= 0.995")
    assert (measurement.phase, measurement.value) == ("Failed", "[0.9923]")


def test_sends_the_query_as_a_form_post(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("vector_one"))
    run(canned_http, headers=[{"key": "X-Scope-OrgID", "value": "team-a"}])
    (request,) = canned_http.requests
    assert (request.method, request.path) == ("POST", "/api/v1/query")
    assert request.form == {"query": [RATIO_QUERY]}
    assert request.headers["X-Scope-OrgID"] == "team-a"


def test_falls_back_to_get_when_post_is_refused(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("vector_one"), refused_methods=("POST",))
    assert run(canned_http, "result[0] > 0.9").phase == "Successful"
    assert [r.method for r in canned_http.requests] == ["POST", "GET"]
    assert canned_http.requests[1].query == {"query": [RATIO_QUERY]}


@pytest.mark.parametrize("name", ["vector_empty", "vector_nan", "scalar_nan"])
def test_no_data_is_inconclusive_whatever_the_conditions(
    canned_http: CannedHTTPServer, name: str
) -> None:
    canned_http.reply(200, recorded(name))
    for success, failure in [("result[0] >= 0.99", None), (None, "result[0] < 0.9"), (None, None)]:
        measurement = run(canned_http, success, failure)
        assert (measurement.phase, measurement.message) == ("Inconclusive", "no data")


def test_no_data_values_are_shown(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("vector_empty"))
    assert run(canned_http).value == "[]"
    canned_http.reply(200, recorded("vector_nan"))
    assert run(canned_http).value == "[NaN]"


def test_condition_written_for_no_data_is_honoured(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("vector_nan"))
    measurement = run(canned_http, "isNaN(result[0]) || result[0] >= 0.99")
    assert measurement.phase == "Successful"
    assert measurement.message.startswith("no data; ")


def test_vector_of_several_series(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("vector_two"))
    measurement = run(canned_http, "len(result) == 2 && all(result, {# > 0})")
    assert measurement.phase == "Successful"
    assert measurement.value == "[11.715,0.0909054]"


def test_infinity_is_a_value(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("vector_inf"))
    measurement = run(canned_http, None, "isInf(result[0])")
    assert (measurement.phase, measurement.value) == ("Failed", "[+Inf]")


def test_scalar_result_is_a_float(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("scalar"))
    measurement = run(canned_http, "result < 0.6", "result >= 0.9")
    assert (measurement.phase, measurement.value) == ("Successful", "0.5")


def test_string_result(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("string"))
    measurement = run(canned_http, "result == 'hello'")
    assert (measurement.phase, measurement.value) == ("Successful", "string of 5 characters")


def test_matrix_is_an_error_with_advice(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("matrix"))
    measurement = run(canned_http, "true")
    assert measurement.phase == "Error"
    assert "range vector" in measurement.message
    assert measurement.value is None


def test_prometheus_error_message_is_passed_on(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(400, recorded("error_bad_data"))
    measurement = run(canned_http, "result[0] > 0")
    assert measurement.phase == "Error"
    assert measurement.message == (
        'Prometheus rejected the query: invalid parameter "query": 1:35: parse error: '
        "unclosed left parenthesis"
    )


def test_non_api_answer_is_an_error(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(502, "<html>Bad Gateway</html>", content_type="text/html")
    measurement = run(canned_http, "result[0] > 0")
    assert measurement.phase == "Error"
    assert f"Prometheus at {canned_http.url} answered HTTP 502" in measurement.message


def test_slow_prometheus_times_out(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("vector_one"), delay_s=1.0)
    measurement = run(canned_http, "result[0] > 0", timeout=0.2)
    assert measurement.phase == "Error"
    assert "did not answer within 0.2s" in measurement.message


def test_unreachable_prometheus_is_an_error_without_credentials(closed_port: int) -> None:
    address = f"http://coalmine:s3cret@127.0.0.1:{closed_port}/prom?token=abc"
    measurement = measure(
        {"prometheus": {"query": "up", "address": address}},
        "result[0] > 0",
        None,
        prometheus_url=None, egress=LOOPBACK,
        now=NOW,
    )
    assert measurement.phase == "Error"
    assert "unreachable" in measurement.message
    assert f"127.0.0.1:{closed_port}/prom" in measurement.message
    assert "s3cret" not in measurement.message
    assert "token" not in measurement.message


def test_spec_address_wins_over_the_server_default(
    canned_http: CannedHTTPServer, closed_port: int
) -> None:
    canned_http.reply(200, recorded("vector_one"))
    measurement = measure(
        {"prometheus": {"query": "up", "address": canned_http.url + "/prometheus/"}},
        "result[0] > 0.9",
        None,
        prometheus_url=f"http://127.0.0.1:{closed_port}", egress=LOOPBACK,
        now=NOW,
    )
    assert measurement.phase == "Successful"
    assert canned_http.requests[0].path == "/prometheus/api/v1/query"


@pytest.mark.parametrize(
    ("provider", "fragment"),
    [
        ({"prometheus": {"query": "up"}}, "no Prometheus address"),
        ({"prometheus": {"address": "http://127.0.0.1:9"}}, "query is missing"),
        ({"prometheus": {"query": "up", "address": "127.0.0.1:9090"}}, "http(s) URL"),
        ({"prometheus": {"query": "up", "address": "http://x", "timeout": -1}}, "timeout"),
        ({"prometheus": {"query": "up", "address": "http://x", "headers": {"a": "b"}}}, "headers"),
        ({"datadog": {"query": "avg:x"}}, "provider 'datadog' is not supported"),
        ({"prometheus": {}, "web": {}}, "exactly one provider"),
        ({}, "exactly one provider"),
        ({"web": "http://x"}, "must be a mapping"),
    ],
)
def test_bad_provider_specs_are_errors(provider: dict, fragment: str) -> None:
    measurement = measure(provider, "true", None, prometheus_url=None, egress=LOOPBACK, now=NOW)
    assert measurement.phase == "Error"
    assert fragment in measurement.message


def test_condition_that_cannot_be_evaluated_is_an_error_with_the_value(
    canned_http: CannedHTTPServer,
) -> None:
    canned_http.reply(200, recorded("vector_one"))
    measurement = run(canned_http, "result >= 0.99")
    assert measurement.phase == "Error"
    assert measurement.value == "[0.9923]"
    assert "could not evaluate successCondition" in measurement.message
    assert "result[0]" in measurement.message


def test_invalid_condition_is_an_error(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, recorded("vector_one"))
    measurement = run(canned_http, "result[0] >=")
    assert measurement.phase == "Error"
    assert "invalid successCondition" in measurement.message


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (0.99996, "0.99996"),
        (0.9923000000000001, "0.9923"),
        (12345678.0, "1.23457e+07"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Inf"),
        ([], "[]"),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], "[1,2,3,4,5,6,7]"),
        ([0.5] * 10, "[" + ",".join(["0.5"] * 10) + "]"),
        ([0.5] * 11, "list of 11 values"),
        ([1, 2, 3], "[1,2,3]"),
        (10**30, "integer of 31 digits"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        # Anything else could be a credential the endpoint sent back: type and size only.
        ({"ok": True}, "object with 1 key"),
        ({"a": 1, "b": 2, "c": 3}, "object with 3 keys"),
        ("line one\nline two", "string of 17 characters"),
        ("x" * 412, "string of 412 characters"),
        ("", "string of 0 characters"),
        (["AKIA-token", 1.0], "list of 2 values"),
        ([True, 1.0], "list of 2 values"),
        ([[1.0]], "list of 1 value"),
    ],
)
def test_render_value(result: object, text: str) -> None:
    assert render_value(result) == text
