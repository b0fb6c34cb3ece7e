"""A tiny Prometheus exporter whose traffic the tests dial in.

`http_requests_total{track, code}` counters grow continuously at the request rate and error
ratio a test sets, integrated over wall time at each scrape. Because the 200 and 500 series grow
in a fixed proportion, `sum(rate(...{code!~"5.."}[30s])) / sum(rate(...[30s]))` equals the set
success ratio as soon as Prometheus holds two samples of a series - provided the track's rates
were set once. Changing the rates of a track blends old and new inside the rate window, so
each test should use its own track name (`fresh_track`).

Gauges (`set_gauge`) are exposed exactly as set, for quick deterministic checks.

`set_latency` gives a track a request-duration summary, `http_request_duration_seconds_sum` and
`_count`: whole requests arrive at the set rate, each taking the set mean times a noise factor
within +-`noise` (a pseudo-random sequence seeded by the track name, so a run is repeatable).
`rate(_sum[w]) / rate(_count[w])` is then the mean latency over w, noisy as real latencies are,
and NaN (0/0) over a window in which no request finished: what low traffic looks like.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUESTS_METRIC = "http_requests_total"
LATENCY_METRIC = "http_request_duration_seconds"


@dataclass
class _Traffic:
    requests_per_second: float = 0.0
    error_ratio: float = 0.0
    successes: float = 0.0
    errors: float = 0.0
    since: float = 0.0  # monotonic time up to which the counters are accounted

    def advance(self, now: float) -> None:
        elapsed = max(0.0, now - self.since)
        self.successes += elapsed * self.requests_per_second * (1 - self.error_ratio)
        self.errors += elapsed * self.requests_per_second * self.error_ratio
        self.since = now


@dataclass
class _Latency:
    mean_seconds: float
    requests_per_second: float
    noise: float
    draws: random.Random
    since: float
    pending: float = 0.0  # requests begun but not yet whole
    count: int = 0
    total: float = 0.0

    def advance(self, now: float) -> None:
        self.pending += max(0.0, now - self.since) * self.requests_per_second
        self.since = now
        whole = int(self.pending)
        if whole:
            factor = 1 + self.noise * (2 * self.draws.random() - 1)
            self.count += whole
            self.total += whole * self.mean_seconds * factor
            self.pending -= whole


def _labels(pairs: dict[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in sorted(pairs.items())) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exporter:
    """Serves /metrics on 127.0.0.1 (port 0: a free one); `url` is what Prometheus scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traffic: dict[str, _Traffic] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._latency: dict[str, _Latency] = {}
        self._names = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def start(self) -> Exporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fresh_track(self, prefix: str = "track") -> str:
        """A track label value no other test has used in this session."""
        return f"{prefix}-{next(self._names)}"

    def set_traffic(self, track: str, requests_per_second: float, error_ratio: float) -> None:
        if not 0.0 <= error_ratio <= 1.0:
            raise ValueError("error_ratio must be within [0, 1]")
        with self._lock:
            now = time.monotonic()
            traffic = self._traffic.setdefault(track, _Traffic(since=now))
            traffic.advance(now)
            traffic.requests_per_second = requests_per_second
            traffic.error_ratio = error_ratio

    def set_request_rate(self, track: str, requests_per_second: float) -> None:
        with self._lock:
            ratio = self._traffic[track].error_ratio if track in self._traffic else 0.0
        self.set_traffic(track, requests_per_second, ratio)

    def set_error_rate(self, track: str, error_ratio: float) -> None:
        """The share of the track's requests that answer 500 (default 10 requests/s)."""
        with self._lock:
            rate = self._traffic[track].requests_per_second if track in self._traffic else 10.0
        self.set_traffic(track, rate, error_ratio)

    def set_latency(self, track: str, mean_seconds: float, requests_per_second: float = 50.0,
                    noise: float = 0.05) -> None:
        """Requests of `track` take `mean_seconds` (times 1 +- `noise`) from now on."""
        with self._lock:
            now = time.monotonic()
            latency = self._latency.get(track)
            if latency is None:
                latency = _Latency(mean_seconds, requests_per_second, noise,
                                   random.Random(track), since=now)
                self._latency[track] = latency
            latency.advance(now)
            latency.mean_seconds = mean_seconds
            latency.requests_per_second = requests_per_second
            latency.noise = noise

    def set_gauge(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._gauges[(name, tuple(sorted(labels.items())))] = value

    def render(self) -> str:
        """The exposition text; advancing the counters here makes each scrape see fresh growth."""
        lines = [f"# TYPE {REQUESTS_METRIC} counter"]
        with self._lock:
            now = time.monotonic()
            for track, traffic in sorted(self._traffic.items()):
                traffic.advance(now)
                for code, count in (("200", traffic.successes), ("500", traffic.errors)):
                    labels = _labels({"track": track, "code": code})
                    lines.append(f"{REQUESTS_METRIC}{labels} {_number(count)}")
            if self._latency:
                lines.append(f"# TYPE {LATENCY_METRIC} summary")
            for track, latency in sorted(self._latency.items()):
                latency.advance(now)
                labels = _labels({"track": track})
                lines.append(f"{LATENCY_METRIC}_sum{labels} {_number(latency.total)}")
                lines.append(f"{LATENCY_METRIC}_count{labels} {latency.count}")
            gauge_names = sorted({name for name, _ in self._gauges})
            for name in gauge_names:
                lines.append(f"# TYPE {name} gauge")
                for (gauge, labels), value in sorted(self._gauges.items()):
                    if gauge == name:
                        lines.append(f"{name}{_labels(dict(labels))} {_number(value)}")
        return "\n".join(lines) + "\n"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Scrapes every second would drown the test output."""

        return Handler
