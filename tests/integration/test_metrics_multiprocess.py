"""/metrics under several processes, as gunicorn's workers run it: two processes count, a third
serves the web app's /metrics over HTTP, and the scrape adds both up; and the RQ worker, one
process, counting its own jobs.

Each child gets PROMETHEUS_MULTIPROC_DIR in its environment before Python starts, as
`coalmine serve` hands it to gunicorn (prometheus-client picks the mode at import).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from bot import metrics
from bot.queue import MeteredWorker
from tests.harness import payloads
from tests.harness.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from bot import metrics
for _ in range(int(sys.argv[1])):
    metrics.webhook("github", "pull_request", "accepted")
metrics.webhook("gitlab", "note", "refused")
metrics.observe_job("merge", lambda: True)
metrics.forge_call("github", 502)
"""

SERVER = """
import sys
from werkzeug.serving import make_server
from bot import services
from bot.config import load_settings
from bot.wsgi import app_for
svc = services.build(load_settings({"COALMINE_DATA_DIR": sys.argv[1]}))
server = make_server("127.0.0.1", 0, app_for(svc))
print(server.server_port, flush=True)
server.serve_forever()
"""


def _env(directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COALMINE_", "REDIS_"))}
    env[metrics.MULTIPROC_ENV] = str(directory)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_two_processes_count_and_a_third_serves_the_sum(tmp_path):
    directory = Path(metrics.prepare_multiprocess_dir({}, str(tmp_path / "data")))
    env = _env(directory)
    for count in (3, 4):
        subprocess.run([sys.executable, "-c", WRITER, str(count)], env=env, check=True,
                       timeout=60)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path / "data")], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    finally:
        server.terminate()
        server.wait(10)

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = _samples(answer.text)
    webhook = "coalmine_webhooks_total"
    assert found[(webhook, (("event", "pull_request"), ("forge", "github"),
                            ("outcome", "accepted")))] == 7
    assert found[(webhook, (("event", "note"), ("forge", "gitlab"), ("outcome", "refused")))] == 2
    assert found[("coalmine_jobs_total", (("kind", "merge"), ("outcome", "ok")))] == 2
    assert found[("coalmine_job_duration_seconds_count",
                  (("kind", "merge"), ("outcome", "ok")))] == 2
    assert found[("coalmine_forge_api_errors_total", (("forge", "github"),))] == 2
    # The serving process read the phases from its (empty) store at scrape time.
    assert found[("coalmine_rollouts", (("phase", "Progressing"),))] == 0


def succeeds() -> str:
    return "done"


def fails() -> None:
    raise RuntimeError("the job failed")


def test_the_rq_worker_counts_and_times_each_job_under_its_kind(redis_client):
    queue = Queue("metrics-test", connection=redis_client)
    queue.enqueue(succeeds)
    queue.enqueue(fails)
    queue.enqueue(succeeds)
    labels = [{"kind": "probe", "outcome": o} for o in ("ok", "error")]
    before = [REGISTRY.get_sample_value("coalmine_jobs_total", x) or 0.0 for x in labels]
    timed = REGISTRY.get_sample_value("coalmine_job_duration_seconds_count", labels[0]) or 0.0

    worker = MeteredWorker([queue], connection=redis_client)
    worker.kind_of = lambda name: "probe" if name.startswith(__name__) else "other"
    worker.work(burst=True)

    after = [REGISTRY.get_sample_value("coalmine_jobs_total", x) or 0.0 for x in labels]
    assert after == [before[0] + 2, before[1] + 1]
    assert REGISTRY.get_sample_value("coalmine_job_duration_seconds_count",
                                     labels[0]) == timed + 2


def _ping_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10, headers={"Connection": "close"}).text
    labels = (("event", "ping"), ("forge", "github"), ("outcome", "ignored"))
    return _samples(text).get(("coalmine_webhooks_total", labels), 0.0)


def test_coalmine_serve_runs_two_gunicorn_workers_whose_counts_add_up(tmp_path, redis_url):
    data = tmp_path / "data"
    stale = data / "prometheus" / "web" / "counter_99999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's counts")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
    env.update({"REDIS_URL": redis_url, "GITHUB_WEBHOOK_SECRET": "s3cret",
                "COALMINE_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)})
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen([str(Path(sys.executable).with_name("coalmine")), "serve",
                                  "--bind", f"127.0.0.1:{port}", "--workers", "2"], env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), 30, 0.1, "coalmine serve did not start")
        assert not stale.exists()  # wiped before the workers started
        body = b'{"zen": "Keep it logically awesome."}'
        for _ in range(12):
            answer = httpx.post(f"{url}/webhooks/github", content=body, timeout=10,
                                headers={**payloads.github_headers(body, "s3cret", "ping"),
                                         "Connection": "close"})
            assert answer.status_code == 200
        # Whichever worker answers the scrape, it reports both workers' deliveries.
        assert [_ping_count(url) for _ in range(6)] == [12.0] * 6
    finally:
        serve.terminate()
        serve.wait(30)
    assert metrics.MULTIPROC_ENV not in log.read_text()  # no warning: the counts add up


def test_gunicorn_started_without_the_directory_warns_at_start(tmp_path):
    """gunicorn started directly (not through `coalmine serve`, which the Procfile and the
    Dockerfile use): the operator is told that each worker's /metrics would show only its own
    counts."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k != metrics.MULTIPROC_ENV and not k.startswith(("COALMINE_", "REDIS_"))}
    env.update({"COALMINE_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)})
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        gunicorn = subprocess.Popen(
            [str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{port}",
             "--workers", "1", "bot.wsgi:create_app()"], env=env, cwd=ROOT,
            stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}"), 30, 0.1,
                   "gunicorn did not start")
    finally:
        gunicorn.terminate()
        gunicorn.wait(30)
    assert f"{metrics.MULTIPROC_ENV} is not set" in log.read_text()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
