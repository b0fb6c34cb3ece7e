"""bot/metrics.py's bounded labels, the multiprocess directory, the phase gauge and the worker's
refusal of a shared directory."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError

from bot import cli, metrics
from handlers import registry
from tests.harness.processes import free_port


@pytest.mark.parametrize(("forge", "header", "label"), [
    ("github", "pull_request", "pull_request"),
    ("github", "issue_comment", "issue_comment"),
    ("github", "x" * 500, "other"),  # a sender cannot mint label values
    ("github", "", "other"),
    ("gitlab", "Merge Request Hook", "merge_request"),
    ("gitlab", "Note Hook", "note"),
    ("gitlab", "Made Up Hook", "other"),
])
def test_event_labels_come_from_a_fixed_set(forge, header, label):
    assert metrics.webhook_event(forge, header) == label


@pytest.mark.parametrize(("code", "duplicate", "outcome"), [
    (202, False, "accepted"), (200, True, "duplicate"), (200, False, "ignored"),
    (400, False, "refused"), (401, False, "refused"), (413, False, "refused"),
    (503, False, "error"),
])
def test_answers_map_to_outcomes(code, duplicate, outcome):
    assert metrics.webhook_outcome(code, duplicate) == outcome


@pytest.mark.parametrize(("status", "failed"), [
    (None, True), (200, False), (201, False), (404, False), (401, True), (409, True),
    (429, True), (500, True),
])
def test_what_counts_as_a_failed_api_call(status, failed):
    assert metrics.failed(status) is failed


def test_every_trigger_has_its_name_and_unknown_jobs_are_other():
    for trigger in registry.TRIGGERS:
        dotted = f"{trigger.job.__module__}.{trigger.job.__qualname__}"
        assert registry.name_of(dotted) == trigger.name
    assert registry.name_of("os.system") == "other"


def test_the_default_directory_is_under_the_data_dir_and_starts_empty(tmp_path):
    data = tmp_path / "data"
    stale = data / "prometheus" / "web" / "counter_4242.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a worker of the last run")

    path = metrics.prepare_multiprocess_dir({}, str(data))

    assert path == str((data / "prometheus" / "web").resolve())
    assert list(stale.parent.iterdir()) == []  # an earlier run's counts would be added


def test_a_configured_directory_wins_and_is_wiped(tmp_path):
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    (chosen / "gauge_all_1.db").write_bytes(b"old")

    path = metrics.prepare_multiprocess_dir({metrics.MULTIPROC_ENV: str(chosen)}, "unused")

    assert path == str(chosen.resolve()) and list(chosen.iterdir()) == []


def _scrape(collector) -> str:
    registry_ = CollectorRegistry()
    registry_.register(collector)
    return generate_latest(registry_).decode()


def test_the_phase_gauge_shows_what_it_is_given():
    text = _scrape(metrics.RolloutPhases(lambda: {"Progressing": 2, "Paused": 0}))
    assert 'coalmine_rollouts{phase="Progressing"} 2.0' in text
    assert 'coalmine_rollouts{phase="Paused"} 0.0' in text


def test_a_scrape_without_redis_leaves_the_gauge_out_instead_of_failing():
    def unreachable() -> dict[str, int]:
        raise RedisConnectionError("down")

    assert "coalmine_rollouts" not in _scrape(metrics.RolloutPhases(unreachable))


def test_the_worker_refuses_a_directory_shared_with_the_web(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))

    assert cli.main(["worker"]) == 2
    assert "count its jobs twice" in capsys.readouterr().err


def test_the_worker_serves_its_own_registry_on_its_port():
    port = free_port()
    metrics.observe_job("tick", lambda: True)

    assert metrics.serve_worker_metrics({metrics.WORKER_PORT_ENV: str(port)}) == port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'coalmine_jobs_total{kind="tick",outcome="ok"}' in text


def test_a_taken_port_costs_the_worker_its_metrics_not_its_life(caplog):
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert metrics.serve_worker_metrics({metrics.WORKER_PORT_ENV: str(port)}) is None
    assert f"worker metrics not served: port {port}" in caplog.text


def test_port_zero_turns_the_worker_endpoint_off():
    assert metrics.serve_worker_metrics({metrics.WORKER_PORT_ENV: "0"}) is None


@pytest.mark.parametrize(("env", "warned"), [
    ({"SERVER_SOFTWARE": "gunicorn/23.0.0"}, True),
    ({"SERVER_SOFTWARE": "gunicorn/23.0.0", metrics.MULTIPROC_ENV: "/var/m"}, False),
    ({}, False),  # one process (a test, the embedded mode under `flask run`)
])
def test_gunicorn_without_the_directory_is_warned_about(env, warned):
    assert (metrics.split_counts_warning(env) is not None) is warned
