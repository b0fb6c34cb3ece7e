"""The real Prometheus server for tests: a private instance scraping the test exporter.

Prometheus runs on a free loopback port with a temp config (1 s scrapes) and a temp TSDB. The
start returns only once the exporter target is up, and `wait_for_value` lets tests wait for the
data they need instead of sleeping.

`CannedHTTPServer` replays recorded Prometheus API answers (and serves web-metric JSON) for tests
that need an HTTP endpoint with exact, repeatable answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from bot.analysis.providers.prometheus import query_prometheus
from tests.harness.exporter import Exporter
from tests.harness.processes import free_port

DEBIAN_BINARY = "/usr/bin/prometheus"
START_DEADLINE_S = 30.0
START_ATTEMPTS = 3  # a free port can be taken by someone else before Prometheus binds it

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: exporter
    static_configs:
      - targets: ["{target}"]
"""


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """Prefix `setpriv --pdeathsig TERM` (util-linux, on every Debian) so the kernel stops
    Prometheus even when the test process dies without its fixture teardown (SIGKILL)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *command] if setpriv else command


def prometheus_binary() -> str | None:
    found = shutil.which("prometheus")
    if found:
        return found
    return DEBIAN_BINARY if os.access(DEBIAN_BINARY, os.X_OK) else None


class PrometheusServer:
    """A running Prometheus; `url` for providers, `exporter` to set the traffic it sees."""

    def __init__(self, binary: str, workdir: Path, exporter: Exporter) -> None:
        self.binary = binary
        self.workdir = workdir
        self.exporter = exporter
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        config = self.workdir / "prometheus.yml"
        config.write_text(CONFIG.format(target=self.exporter.address))
        failure = RuntimeError("prometheus was not started")
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            with self._log_path.open("ab") as log:
                command = [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ]
                self._process = subprocess.Popen(
                    _with_parent_death_signal(command), stdout=log, stderr=subprocess.STDOUT
                )
            try:
                self._wait_until_scraping()
                return self
            except RuntimeError as error:
                failure = error
                self.stop()
        raise failure

    def _wait_until_scraping(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited early:\n{self._log_tail()}")
            if self._target_health() == "up":
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"prometheus did not scrape the exporter within {START_DEADLINE_S:g}s:\n"
            f"{self._log_tail()}"
        )

    def _target_health(self) -> str | None:
        try:
            answer = httpx.get(f"{self.url}/api/v1/targets", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return None
        targets = answer.get("data", {}).get("activeTargets", [])
        return targets[0].get("health") if targets else None

    def _log_tail(self, lines: int = 20) -> str:
        text = self._log_path.read_text(errors="replace") if self._log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)

    def query(self, promql: str) -> Any:
        """The query's result in the shape conditions see (list of floats for a vector)."""
        return query_prometheus({"query": promql}, default_address=self.url)

    def wait_for_value(
        self, query: str, predicate: Callable[[Any], bool], deadline: float = 20.0
    ) -> Any:
        """Poll `query` until `predicate(result)` holds, for at most `deadline` seconds; returns
        that result, or fails showing the last one."""
        give_up = time.monotonic() + deadline
        while True:
            result = self.query(query)
            if predicate(result):
                return result
            if time.monotonic() > give_up:
                raise TimeoutError(
                    f"{query!r} did not satisfy the predicate within {deadline:g}s; "
                    f"last result: {result!r}"
                )
            time.sleep(0.2)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode())


@dataclass
class CannedAnswer:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    delay_s: float = 0.0
    refused_methods: tuple[str, ...] = ()  # answered 405, as a proxy refusing POST would


class CannedHTTPServer:
    """Answers every request with `answer` and records it: stands in for Prometheus when a test
    replays a recorded API answer (tests/unit/data), or for any JSON endpoint (web metrics)."""

    def __init__(self) -> None:
        self.answer = CannedAnswer()
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> CannedHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reply(self, status: int, body: bytes | str, **options: Any) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.answer = CannedAnswer(status=status, body=data, **options)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                server.requests.append(
                    RecordedRequest(
                        method=self.command,
                        path=parts.path,
                        query=parse_qs(parts.query),
                        headers=dict(self.headers.items()),
                        body=self.rfile.read(length),
                    )
                )
                answer = server.answer
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                status = 405 if self.command in answer.refused_methods else answer.status
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first: what timeout tests provoke

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: object) -> None:
                """Keep test output quiet."""

        return Handler
