"""A merged PR's webhook and its merge job move the right series on /metrics, and a real
Prometheus scraping the app over HTTP reads the webhook count.

Embedded mode (no REDIS_URL): one process answers the webhook and runs the job on the embedded
queue, as `coalmine serve` does without Redis. The test process holds other tests' counts too,
so every check is a difference from before the delivery.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server

from bot import services
from bot.config import load_settings
from bot.wsgi import app_for
from tests.e2e import world as w
from tests.harness import payloads
from tests.harness.fixtures_prometheus import required_prometheus_binary
from tests.harness.github import FakeGitHub
from tests.harness.gitrepos import GitHttpServer
from tests.harness.processes import wait_until
from tests.harness.prometheus import PrometheusServer

pytestmark = pytest.mark.e2e

ACCEPTED = {"forge": "github", "event": "pull_request", "outcome": "accepted"}
MERGE_OK = {"kind": "merge", "outcome": "ok"}


class _Target:
    """What PrometheusServer scrapes: the app's own /metrics."""

    def __init__(self, address: str) -> None:
        self.address = address


@pytest.fixture
def prometheus_binary_path() -> str:
    return required_prometheus_binary()


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    gh = FakeGitHub()
    gh.start()
    gh.add_repo(w.REPO)
    gh.add_token(w.GH_TOKEN, "coalmine-bot")
    try:
        yield gh
    finally:
        gh.stop()


def _value(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_a_merge_moves_its_series_and_prometheus_reads_them(
        tmp_path, fake_kube, gitops_remote, github, prometheus_binary_path):
    with GitHttpServer(tmp_path / "repos", username="x-access-token", password=w.GH_TOKEN) as http:
        settings = load_settings({
            "GITHUB_WEBHOOK_SECRET": w.GH_SECRET, "GITHUB_TOKEN": w.GH_TOKEN,
            "GITHUB_API_URL": github.url, "KUBECONFIG": str(fake_kube.kubeconfig),
            "COALMINE_DATA_DIR": str(tmp_path / "data"), "COALMINE_REPOS": f"{w.REPO}=shop",
        })
        svc = services.install(services.build(settings))
        app = app_for(svc)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        (tmp_path / "prometheus").mkdir()
        prometheus = PrometheusServer(prometheus_binary_path, tmp_path / "prometheus",
                                      _Target(f"127.0.0.1:{server.server_port}"))
        try:
            client = app.test_client()
            before = client.get("/metrics").get_data(as_text=True)
            sha = gitops_remote.merge_pr("feature", {"deploy/web/config.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\n")}, "Metrics")
            number = github.add_pull(w.REPO, head="feature", title="Metrics", state="merged",
                                     merge_sha=sha)
            body = payloads.dumps(payloads.github_pr_merged(
                full_name=w.REPO, clone_url=http.url(gitops_remote, credentials=False),
                number=number, merge_sha=sha, head="feature", title="Metrics"))
            headers = payloads.github_headers(body, w.GH_SECRET, "pull_request")
            assert client.post("/webhooks/github", data=body, headers=headers).status_code == 202
            assert client.post("/webhooks/github", data=body, headers=headers).status_code == 200

            def done():
                status = github.latest_statuses(w.REPO, sha).get("coalmine/web")
                return status if status and status["state"] != "pending" else None

            assert wait_until(done, 60, 0.1)["state"] == "success"
            # The job's counters move when it returns, a moment after its last status.
            wait_until(lambda: _value(client.get("/metrics").get_data(as_text=True),
                                      "coalmine_jobs_total", MERGE_OK)
                       > _value(before, "coalmine_jobs_total", MERGE_OK), 10, 0.05)
            after = client.get("/metrics").get_data(as_text=True)

            def grew(name: str, labels: dict[str, str]) -> float:
                return _value(after, name, labels) - _value(before, name, labels)

            assert grew("coalmine_webhooks_total", ACCEPTED) == 1
            assert grew("coalmine_webhooks_total", {**ACCEPTED, "outcome": "duplicate"}) == 1
            assert grew("coalmine_jobs_total", MERGE_OK) == 1
            assert grew("coalmine_job_duration_seconds_count", MERGE_OK) == 1
            assert grew("coalmine_forge_api_calls_total", {"forge": "github"}) >= 1
            assert grew("coalmine_kubernetes_api_calls_total", {}) >= 1
            assert w.GH_TOKEN not in after and w.GH_SECRET not in after

            # A real Prometheus scraping the app over HTTP sees the same count.
            expected = _value(after, "coalmine_webhooks_total", ACCEPTED)
            prometheus.start()
            query = ('coalmine_webhooks_total{forge="github",event="pull_request",'
                     'outcome="accepted"}')
            assert prometheus.wait_for_value(query, lambda r: r == [expected]) == [expected]
        finally:
            prometheus.stop()
            server.shutdown()
            svc.queue.stop()
            services.uninstall()
