"""The `prometheus` session fixture: a real Prometheus scraping a test-controlled exporter; and
`canned_http`, a local server replaying recorded answers.

Without the binary the tests that need it are skipped - unless COALMINE_REQUIRE_PROMETHEUS is
set (CI sets it), so a machine that lost the package fails loudly instead of passing quietly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness.exporter import Exporter
from tests.harness.prometheus import CannedHTTPServer, PrometheusServer, prometheus_binary


def required_prometheus_binary() -> str:
    """The binary's path; without it the calling test is skipped, or fails under CI."""
    binary = prometheus_binary()
    if binary is None:
        message = "the prometheus binary is not installed (apt-get install prometheus)"
        if os.environ.get("COALMINE_REQUIRE_PROMETHEUS"):
            pytest.fail(f"{message}, and COALMINE_REQUIRE_PROMETHEUS is set")
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    binary = required_prometheus_binary()
    exporter = Exporter().start()
    server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), exporter)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        exporter.stop()


@pytest.fixture
def canned_http() -> Iterator[CannedHTTPServer]:
    server = CannedHTTPServer().start()
    try:
        yield server
    finally:
        server.stop()
