"""Metric providers behind the egress policy, over real sockets with the real HTTP client.

The finding this guards: a `web` metric pointed at a metadata-style endpoint on loopback, with
the header such endpoints want, got a token back and the PR comment printed it. Here such an
endpoint runs on loopback and the tests check that no request reaches it unless the operator
listed it, that redirects cannot lead there, that the connection goes to the address that was
checked, and that a value which is not a number is never shown.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bot.analysis.measure import measure
from bot.egress import Egress, parse_egress

TOKEN = "ya29.metadata-token-that-must-not-leak"
HINT = "allow it under egress.allow"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class RoutedServer:
    """A loopback HTTP server answering per path: (status, headers, body)."""

    host: str = "127.0.0.1"
    routes: dict[str, tuple[int, dict[str, str], str]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
                status, headers, body = server.routes.get(self.path, (404, {}, "{}"))
                data = body.encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def metadata() -> Iterator[RoutedServer]:
    """A cloud-metadata look-alike: hands out a token to anyone sending its header."""
    server = RoutedServer()
    server.routes["/computeMetadata/v1/token"] = (200, {}, json.dumps({"access_token": TOKEN}))
    yield server
    server.stop()


@pytest.fixture
def metrics() -> Iterator[RoutedServer]:
    """An ordinary metrics endpoint the operator may or may not list."""
    server = RoutedServer()
    server.routes["/ok"] = (200, {}, json.dumps({"ratio": 0.999}))
    yield server
    server.stop()


def allowing(*entries: str, own: tuple[str, ...] = ()) -> Egress:
    return parse_egress({"allow": list(entries)}, "server.yaml", {}, own_hosts=own)


def web(spec: dict, egress: Egress, success: str = "true"):
    return measure({"web": spec}, success, None, prometheus_url=None, egress=egress, now=0.0)


def steal_token(metadata: RoutedServer) -> dict:
    return {
        "url": metadata.url + "/computeMetadata/v1/token",
        "headers": [{"key": "Metadata-Flavor", "value": "Google"}],
        "jsonPath": "{$.access_token}",
    }


@pytest.mark.parametrize("entries", [(), ("*.example.com",), ("0.0.0.0/0",)])
def test_metadata_endpoint_on_loopback_is_refused_before_any_request(
    metadata: RoutedServer, entries: tuple[str, ...]
) -> None:
    measurement = web(steal_token(metadata), allowing(*entries))
    assert measurement.phase == "Error" and measurement.value is None
    reason = "loopback" if entries == ("0.0.0.0/0",) else "not listed"
    assert measurement.message == (
        f"destination 127.0.0.1:{metadata.port} refused by the egress policy: {reason}; {HINT}"
    )
    assert metadata.seen == []


def test_a_listed_endpoint_is_reached_and_a_string_answer_is_not_shown(
    metadata: RoutedServer,
) -> None:
    """Even where the operator allowed it, the token does not reach the report."""
    egress = allowing(f"http://127.0.0.1:{metadata.port}")
    measurement = web(steal_token(metadata), egress, success="len(result) > 0")
    assert measurement.phase == "Successful", measurement.message
    assert measurement.value == f"string of {len(TOKEN)} characters"
    assert TOKEN not in measurement.message
    assert [s.path for s in metadata.seen] == ["/computeMetadata/v1/token"]


def test_redirect_to_an_unlisted_destination_is_refused(
    metrics: RoutedServer, metadata: RoutedServer
) -> None:
    target = metadata.url + "/computeMetadata/v1/token"
    metrics.routes["/moved"] = (302, {"Location": target}, "")
    measurement = web({"url": metrics.url + "/moved"}, allowing(f"127.0.0.1:{metrics.port}"))
    assert measurement.phase == "Error"
    assert measurement.message.startswith(f"destination 127.0.0.1:{metadata.port} refused")
    assert [s.path for s in metrics.seen] == ["/moved"] and metadata.seen == []


def test_allowed_redirects_are_followed_and_a_post_becomes_a_get_after_303(
    metrics: RoutedServer,
) -> None:
    metrics.routes["/query"] = (303, {"Location": "/ok"}, "")
    spec = {"url": metrics.url + "/query", "method": "POST", "jsonBody": {"q": 1},
            "jsonPath": "{$.ratio}"}
    measurement = web(spec, allowing(f"127.0.0.1:{metrics.port}"), success="result > 0.99")
    assert (measurement.phase, measurement.value) == ("Successful", "0.999")
    assert [(s.method, s.path) for s in metrics.seen] == [("POST", "/query"), ("GET", "/ok")]


def test_redirect_loops_stop_after_five(metrics: RoutedServer) -> None:
    metrics.routes["/loop"] = (307, {"Location": "/loop"}, "")
    measurement = web({"url": metrics.url + "/loop"}, allowing(f"127.0.0.1:{metrics.port}"))
    assert measurement.phase == "Error"
    assert measurement.message == f"more than 5 redirects from http://127.0.0.1:{metrics.port}"
    assert len(metrics.seen) == 6


def test_template_headers_do_not_follow_a_redirect_to_another_origin(
    metrics: RoutedServer, metadata: RoutedServer
) -> None:
    metadata.routes["/elsewhere"] = (302, {"Location": metrics.url + "/ok"}, "")
    egress = allowing(f"127.0.0.1:{metrics.port}", f"127.0.0.1:{metadata.port}")
    spec = {"url": metadata.url + "/elsewhere",
            "headers": [{"key": "Authorization", "value": "Bearer for-the-first-host"}]}
    assert web(spec, egress).phase == "Successful"
    assert metadata.seen[0].headers["Authorization"] == "Bearer for-the-first-host"
    assert "Authorization" not in metrics.seen[0].headers


def test_the_connection_goes_to_the_checked_address_with_the_original_host() -> None:
    """The name is resolved once, by the check; the request is sent to that address with the
    name as Host, so a second DNS answer (rebinding) is never asked for. `metrics.test` does not
    exist in real DNS: the request can only arrive through the pinned address."""
    first, second = RoutedServer(), RoutedServer(host="127.0.0.2")
    first.routes["/ok"] = second.routes["/ok"] = (200, {}, "1")
    answers = iter([["127.0.0.1"], ["127.0.0.2"]])  # what a rebinding DNS server would do
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    try:
        base = allowing("metrics.test")
        egress = Egress(base.allow, base.own, resolver=rebinding)
        measurement = web({"url": f"http://metrics.test:{first.port}/ok"}, egress)
    finally:
        first.stop()
        second.stop()
    assert measurement.phase == "Successful", measurement.message
    assert lookups == ["metrics.test"]
    assert [s.headers["Host"] for s in first.seen] == [f"metrics.test:{first.port}"]
    assert second.seen == []


def test_a_template_cannot_choose_the_host_header(metrics: RoutedServer) -> None:
    spec = {"url": metrics.url + "/ok", "headers": [{"key": "host", "value": "admin.internal"}]}
    measurement = web(spec, allowing(f"127.0.0.1:{metrics.port}"))
    assert measurement.phase == "Error" and "Host header" in measurement.message
    assert metrics.seen == []


def test_proxy_variables_are_ignored(
    metrics: RoutedServer, metadata: RoutedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy would resolve and connect on its own, past the checked address."""
    monkeypatch.setenv("HTTP_PROXY", metadata.url)
    monkeypatch.setenv("http_proxy", metadata.url)
    measurement = web({"url": metrics.url + "/ok"}, allowing(f"127.0.0.1:{metrics.port}"))
    assert measurement.phase == "Successful", measurement.message
    assert metadata.seen == [] and len(metrics.seen) == 1


def test_coalmine_own_redis_is_refused_even_when_its_address_is_allowed(
    redis_url: str, metrics: RoutedServer
) -> None:
    egress = allowing("127.0.0.1", own=(redis_url,))
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    measurement = web({"url": f"http://127.0.0.1:{port}/", "method": "POST", "body": "FLUSHALL"},
                      egress)
    assert measurement.phase == "Error"
    assert "Coalmine's own service" in measurement.message
    assert web({"url": metrics.url + "/ok"}, egress).phase == "Successful"


# --- prometheus ---------------------------------------------------------------------------------


def prometheus_answer() -> str:
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector",
                                        "result": [{"metric": {}, "value": [0, "0.995"]}]}}
    )


def test_prometheus_address_from_a_template_is_checked(
    metrics: RoutedServer, metadata: RoutedServer
) -> None:
    metadata.routes["/api/v1/query"] = (200, {}, prometheus_answer())
    measurement = measure(
        {"prometheus": {"query": "up", "address": metadata.url}}, "result[0] > 0.99", None,
        prometheus_url=metrics.url, egress=allowing(), now=0.0,
    )
    assert measurement.phase == "Error"
    assert measurement.message == (
        f"destination 127.0.0.1:{metadata.port} refused by the egress policy: not listed; {HINT}"
    )
    assert metadata.seen == [] and metrics.seen == []


def test_the_operators_prometheus_url_needs_no_entry(metrics: RoutedServer) -> None:
    """PROMETHEUS_URL is the operator's own setting, as trusted as the allow list."""
    metrics.routes["/api/v1/query"] = (200, {}, prometheus_answer())
    measurement = measure(
        {"prometheus": {"query": "up"}}, "result[0] > 0.99", None,
        prometheus_url=metrics.url, egress=allowing(), now=0.0,
    )
    assert (measurement.phase, measurement.value) == ("Successful", "[0.995]")
    assert [(s.method, s.path) for s in metrics.seen] == [("POST", "/api/v1/query")]


def test_prometheus_listed_in_the_policy_is_reached(metrics: RoutedServer) -> None:
    metrics.routes["/prom/api/v1/query"] = (200, {}, prometheus_answer())
    measurement = measure(
        {"prometheus": {"query": "up", "address": metrics.url + "/prom"}}, "result[0] > 0.99",
        None, prometheus_url=None, egress=allowing(f"http://127.0.0.1:{metrics.port}"), now=0.0,
    )
    assert measurement.phase == "Successful", measurement.message


def test_without_a_policy_only_the_servers_prometheus_is_reachable(
    metrics: RoutedServer, metadata: RoutedServer
) -> None:
    """A caller that passes no policy fails closed."""
    metrics.routes["/api/v1/query"] = (200, {}, prometheus_answer())
    spec = steal_token(metadata)
    refused = measure({"web": spec}, "true", None, prometheus_url=metrics.url, now=0.0)
    reached = measure({"prometheus": {"query": "up"}}, "result[0] > 0.99", None,
                      prometheus_url=metrics.url, now=0.0)
    assert refused.phase == "Error" and "refused by the egress policy" in refused.message
    assert reached.phase == "Successful", reached.message
    assert metadata.seen == []
