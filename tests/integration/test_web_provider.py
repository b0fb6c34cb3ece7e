"""The web provider against a local HTTP server, and its JSONPath subset."""

from __future__ import annotations

import json
import socket

import pytest

from bot.analysis.measure import measure
from bot.analysis.providers import ProviderError
from bot.analysis.providers.web import extract, parse_json_path
from bot.egress import parse_egress
from tests.harness.prometheus import CannedHTTPServer

# The canned servers and the test Prometheus listen on loopback, which needs an entry.
LOOPBACK = parse_egress({"allow": ["127.0.0.1"]}, "test", {})

DOCUMENT = {
    "data": {
        "ok": True,
        "error-rate": 0.002,
        "items": [{"value": 0.91}, {"value": 0.97}],
        "missing": None,
    }
}


def web(spec: dict, success: str | None = None, failure: str | None = None):
    return measure({"web": spec}, success, failure, prometheus_url=None, egress=LOOPBACK, now=0.0)


@pytest.fixture
def endpoint(canned_http: CannedHTTPServer) -> CannedHTTPServer:
    canned_http.reply(200, json.dumps(DOCUMENT))
    return canned_http


@pytest.mark.parametrize(
    ("json_path", "condition", "value"),
    [
        ("{$.data.ok}", "result == true", "true"),
        ("{.data.ok}", "result", "true"),
        ("$.data.items[1].value", "result >= 0.95", "0.97"),
        ("{$.data.items[-1].value}", "result >= 0.95", "0.97"),
        ("{$.data['error-rate']}", "result < 0.01", "0.002"),
        ('{$["data"].items[0]}', "result.value > 0.9", "object with 1 key"),
        (None, "result.data.ok && len(result.data.items) == 2", None),
    ],
)
def test_json_path_selects_the_result(
    endpoint: CannedHTTPServer, json_path: str | None, condition: str, value: str | None
) -> None:
    spec = {"url": endpoint.url + "/metrics/canary"}
    if json_path:
        spec["jsonPath"] = json_path
    measurement = web(spec, condition)
    assert measurement.phase == "Successful", measurement.message
    if value is not None:
        assert measurement.value == value
    (request,) = endpoint.requests
    assert (request.method, request.path) == ("GET", "/metrics/canary")


def test_failing_condition(endpoint: CannedHTTPServer) -> None:
    measurement = web({"url": endpoint.url, "jsonPath": "{$.data.items[0].value}"}, "result > 0.95")
    assert (measurement.phase, measurement.value) == ("Failed", "0.91")


def test_null_is_no_data(endpoint: CannedHTTPServer) -> None:
    measurement = web({"url": endpoint.url, "jsonPath": "{$.data.missing}"}, "result > 0.95")
    assert (measurement.phase, measurement.message) == ("Inconclusive", "no data")


def test_post_with_body_and_headers(endpoint: CannedHTTPServer) -> None:
    spec = {
        "url": endpoint.url + "/query",
        "method": "POST",
        "headers": [{"key": "Authorization", "value": "Bearer t0ken"}],
        "body": '{"metric": "errors"}',
        "jsonPath": "{$.data.ok}",
    }
    assert web(spec, "result").phase == "Successful"
    (request,) = endpoint.requests
    assert request.method == "POST"
    assert request.headers["Authorization"] == "Bearer t0ken"
    assert request.body == b'{"metric": "errors"}'


def test_put_with_json_body_sets_the_content_type(endpoint: CannedHTTPServer) -> None:
    spec = {"url": endpoint.url, "method": "PUT", "jsonBody": {"window": "5m"}}
    assert web(spec, "result.data.ok").phase == "Successful"
    (request,) = endpoint.requests
    assert request.method == "PUT"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"window": "5m"}


def test_text_answer_is_the_result(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, "OK\n", content_type="text/plain")
    measurement = web({"url": canned_http.url}, "result == 'OK\\n'")
    assert (measurement.phase, measurement.value) == ("Successful", "string of 3 characters")


def test_non_2xx_is_an_error_without_query_string(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(503, '{"error": "overloaded"}')
    measurement = web({"url": canned_http.url + "/check?api_key=s3cret"}, "result")
    assert measurement.phase == "Error"
    assert measurement.message == f"received HTTP 503 from {canned_http.url}/check"


def test_slow_endpoint_times_out(canned_http: CannedHTTPServer) -> None:
    canned_http.reply(200, "{}", delay_s=1.0)
    measurement = web({"url": canned_http.url, "timeoutSeconds": 0.2}, "true")
    assert measurement.phase == "Error"
    assert "did not answer within 0.2s" in measurement.message


def test_unreachable_endpoint() -> None:
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        measurement = web({"url": f"http://127.0.0.1:{reserved.getsockname()[1]}/x"}, "true")
    assert measurement.phase == "Error"
    assert "unreachable" in measurement.message


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"jsonPath": "{$.data.nothing}"}, "matched nothing"),
        ({"jsonPath": "{$.data.items[5]}"}, "matched nothing"),
        ({"jsonPath": "{$.data.items[*].value}"}, "unsupported jsonPath"),
        ({"jsonPath": "{$..value}"}, "unsupported jsonPath"),
        ({"jsonPath": "{$.data.items[?(@.value > 1)]}"}, "unsupported jsonPath"),
        ({"method": "DELETE"}, "method must be one of"),
        ({"body": "x"}, "a body needs method POST or PUT"),
        ({"method": "POST", "body": "x", "jsonBody": {}}, "not both"),
        ({"headers": [{"name": "x"}]}, "headers"),
        ({"timeoutSeconds": "ten"}, "timeoutSeconds"),
    ],
)
def test_bad_specs_and_paths_are_errors(endpoint: CannedHTTPServer, spec: dict, fragment: str):
    measurement = web({"url": endpoint.url, **spec}, "true")
    assert measurement.phase == "Error"
    assert fragment in measurement.message


def test_invalid_url_is_an_error_without_a_request(endpoint: CannedHTTPServer) -> None:
    measurement = web({"url": "ftp://example.org/x"}, "true")
    assert (measurement.phase, endpoint.requests) == ("Error", [])
    assert "http(s) URL" in measurement.message


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("{$}", []),
        ("", []),
        ("{$.a.b-c}", ["a", "b-c"]),
        ("$.a[0][1]", ["a", 0, 1]),
        ("{ .a['x.y'][\"z\"] }", ["a", "x.y", "z"]),
        ("{$['it\\'s']}", ["it's"]),
    ],
)
def test_parse_json_path(path: str, steps: list) -> None:
    assert parse_json_path(path) == steps


def test_extract_refuses_to_index_the_wrong_type() -> None:
    with pytest.raises(ProviderError):
        extract({"a": {"0": 1}}, "{$.a[0]}")
    assert extract({"a": [10, 20]}, "$.a[1]") == 20
