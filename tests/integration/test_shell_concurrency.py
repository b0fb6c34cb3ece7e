"""The rollout shell never measures under the rollout lock, timeouts are capped, and reports
made after the lock never post an older snapshot last. Real Redis, the Kubernetes and GitHub
fakes, and a metric endpoint that accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from redis import Redis

from bot import keys, services
from bot.analysis.measure import BackgroundMeasurements, measure
from bot.analysis.measurement import Measurement
from bot.analysis.templates import AnalysisTemplate, MetricSpec
from bot.config import load_settings
from bot.egress import parse_egress
from bot.forge.base import RepoRef
from bot.queue import EmbeddedJobQueue
from bot.rollout import engine
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord, RolloutStore, rollout_key
from handlers import rollout
from handlers.rollout_shell import run
from tests.harness.fixtures_forges import GITHUB_BOT, GITHUB_REPO, GITHUB_TOKEN
from tests.harness.processes import wait_until

HANG_S = 30.0


class SilentServer:
    """Accepts TCP connections on loopback and never answers."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/ok"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.connections.append(self._sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self._sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def loopback(server: SilentServer):
    return parse_egress(None, "test", {"COALMINE_EGRESS_ALLOW": f"http://127.0.0.1:{server.port}"})


# ----------------------------------------------------------------------------- timeout cap


@pytest.mark.parametrize(("provider", "field"), [
    ({"web": {"timeoutSeconds": 600}}, "provider.web.timeoutSeconds is 600 s"),
    ({"prometheus": {"query": "up", "timeout": 45}}, "provider.prometheus.timeout is 45 s"),
])
def test_a_timeout_over_the_cap_is_refused_without_connecting(silent, provider, field):
    kind = next(iter(provider))
    spec = {**provider[kind], ("url" if kind == "web" else "address"): silent.url}
    result = measure({kind: spec}, "result == true", None, prometheus_url=None,
                     egress=loopback(silent), now=0.0)
    assert result.phase == "Error"
    assert result.message == f"{field}; Coalmine allows at most 30 s per measurement (lower " \
                             "it, or measure more often with `interval`)"
    assert silent.connections == []


def test_a_silent_endpoint_costs_its_timeout_and_no_more(silent):
    started = time.monotonic()
    result = measure({"web": {"url": silent.url, "timeoutSeconds": 1}}, "result == true", None,
                     prometheus_url=None, egress=loopback(silent), now=0.0)
    assert result.phase == "Error" and "did not answer within 1s" in result.message
    assert time.monotonic() - started < 15


def test_background_measurements_leave_the_caller_free():
    pool = BackgroundMeasurements(threads=2)
    release, done = threading.Event(), threading.Event()
    pool.submit(lambda: release.wait(30))  # one thread stuck on a hanging metric
    pool.submit(done.set)
    assert done.wait(5), "a stuck measurement held up the next one"
    release.set()


# ------------------------------------------------------------------ reports after the lock


def test_saves_are_numbered_across_the_revisions_of_an_app(redis_client: Redis):
    store = RolloutStore(redis_client)
    key = rollout_key("github", "acme/shop", "web")
    first, second = record("a" * 40), record("b" * 40)
    store.save(key, first, None)
    store.save(key, second, None)
    store.save(key, first, None)
    assert (second.seq, first.seq) == (2, 3)
    assert store.load(key).seq == 3


def test_an_older_snapshot_is_never_reported_after_a_newer_one(redis_client: Redis):
    store = RolloutStore(redis_client)
    key = rollout_key("github", "acme/shop", "web")
    assert store.claim_report(key, "a" * 40, "status", 5)
    assert not store.claim_report(key, "a" * 40, "status", 4)  # delayed, older: dropped
    assert not store.claim_report(key, "a" * 40, "status", 5)
    assert store.claim_report(key, "a" * 40, "section", 4)  # each kind on its own
    assert store.claim_report(key, "b" * 40, "status", 1)  # a revision's own order
    assert store.claim_report(key, "a" * 40, "status", 6)


# ------------------------------------------------------------------ the shell and the lock


def record(revision: str, steps: tuple = (), url: str = "") -> RolloutRecord:
    metric = MetricSpec(name="hanging", provider={"web": {"url": url, "timeoutSeconds": HANG_S}},
                        success_condition="result == true", interval=1.0, count=3)
    strategy = m.CanaryStrategy(workload=m.WorkloadRef("Deployment", "web"), steps=steps,
                                progress_deadline_seconds=30)
    state = m.new_state(app="web", revision=revision, stable_revision=None, pr=1,
                        strategy=strategy, templates=(AnalysisTemplate("hanging", (metric,)),))
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "web", "namespace": "shop"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}},
                                        "spec": {"containers": [{"name": "web",
                                                                 "image": "web:2"}]}}}}
    repo = RepoRef("github", GITHUB_REPO, f"https://github.example/{GITHUB_REPO}.git",
                   repo_id=1)
    context = RolloutContext(repo=repo, number=1, title="t", app="web", base_branch="main",
                             namespace="shop", deployment=deployment, stable=deployment,
                             replicas=2, template_hash="h")
    return RolloutRecord(state, context)


@pytest.fixture
def shell_services(redis_url, fake_github, fake_kube, silent, tmp_path
                   ) -> Iterator[services.Services]:
    settings = load_settings({
        "COALMINE_DATA_DIR": str(tmp_path / "data"), "KUBECONFIG": str(fake_kube.kubeconfig),
        "GITHUB_TOKEN": GITHUB_TOKEN, "GITHUB_API_URL": fake_github.api_url,
        "GITHUB_BOT_LOGIN": GITHUB_BOT,
        "COALMINE_EGRESS_ALLOW": f"http://127.0.0.1:{silent.port}",
    })
    fake_kube.put_object({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": "shop"}})
    stable = record("0" * 40).context.deployment
    fake_kube.put_object(stable)
    queue = EmbeddedJobQueue()
    try:
        yield services.install(services.Services(settings, Redis.from_url(redis_url), queue))
    finally:
        services.uninstall()
        queue.stop()


def test_a_hanging_measurement_holds_neither_the_lock_nor_the_job(shell_services, silent):
    svc = shell_services
    store = RolloutStore(svc.redis)
    key = rollout_key("github", GITHUB_REPO, "web")
    analysis = m.AnalysisStep(templates=(m.TemplateRef("hanging"),))
    with store.locked(key):
        store.save(key, record("a" * 40, (analysis,), silent.url), None)

    started = time.monotonic()
    rollout.dispatch(key, m.Start())  # asks for the first measurement
    wait_until(lambda: silent.connections, 10, 0.02, "the measurement never connected")
    assert time.monotonic() - started < 10  # the job did not wait for the endpoint
    with store.locked(key, wait_s=2):  # the lock is free while the metric hangs
        run = store.load(key).state.step_run
    assert run is not None and run.results[0].requested_at is not None

    aborted = rollout.dispatch(key, m.Abort("alice", "aborted by @alice"))
    assert aborted is not None and aborted.state.phase == "Aborted"
    version = store.load(key).state.version
    # The hanging measurement's result, arriving after the abort, changes nothing.
    rollout.measured(key, run.id, "hanging", Measurement("Successful", "true", "", time.time()))
    after = store.load(key).state
    assert after.phase == "Aborted" and after.version == version
    assert engine.is_finished(after)


def superseded_unreported(svc: services.Services, fake_github
                          ) -> tuple[RolloutStore, str, str]:
    """A rollout of commit `old` superseded by a newer merge, saved final with its unreported
    mark, and then the worker dies before the report: what `start` does under the lock."""
    store = RolloutStore(svc.redis)
    key = rollout_key("github", GITHUB_REPO, "web")
    old, new = "a" * 40, "c" * 40
    with store.locked(key):
        store.save(key, record(old, (m.PauseStep(None),)), None)
    rollout.dispatch(key, m.Start())
    wait_until(lambda: fake_github.latest_statuses(GITHUB_REPO, old), 10, 0.05)
    with store.locked(key):
        previous = store.load(key)
        previous.context.superseded_by_pr = "#2"
        run(svc.cluster(None), store, key, previous, m.NewRevision(new, 2))
        store.save(key, record(new, (m.PauseStep(None),)), None)  # the new rollout's record
    return store, key, old


def test_a_final_status_lost_between_save_and_report_is_reported_by_the_sweep(
        shell_services, fake_github):
    """A newer merge supersedes a rollout and the job dies before telling the PR (the chaos
    test's Redis restart): the final snapshot and its unreported mark were saved with the
    state, so the worker's sweep reports it."""
    svc = shell_services
    store, _, old = superseded_unreported(svc, fake_github)
    assert fake_github.latest_statuses(GITHUB_REPO, old)["coalmine/web"]["state"] == "pending"

    assert rollout.rearm_final_reports(svc, grace_s=60) == 0  # not lost yet: within the grace
    assert rollout.rearm_final_reports(svc, grace_s=0) == 1
    wait_until(lambda: fake_github.latest_statuses(GITHUB_REPO, old)["coalmine/web"]["state"]
               == "error", 10, 0.05, "the lost final status was never posted")
    status = fake_github.latest_statuses(GITHUB_REPO, old)["coalmine/web"]
    assert status["description"] == "superseded by #2"
    wait_until(lambda: not store.unreported(older_than=time.time()), 10, 0.05)
    assert rollout.rearm_final_reports(svc, grace_s=0) == 0


def test_a_final_report_that_died_after_its_claim_is_made_by_the_sweep(
        shell_services, fake_github):
    """The report of the final snapshot claimed it (under the PR's report lock) and its
    worker was killed before the status reached the outbox (seen once in the chaos test,
    under load): the claim must not stop the sweep's report of the same snapshot."""
    svc = shell_services
    store, key, old = superseded_unreported(svc, fake_github)
    [(_, revision, seq)] = store.unreported(older_than=time.time() + 1)
    # What the dead report did before it died: both claims, nothing posted.
    assert store.claim_report(key, revision, "status", seq)
    assert store.claim_report(key, revision, "section", seq)

    assert rollout.rearm_final_reports(svc, grace_s=0) == 1
    wait_until(lambda: fake_github.latest_statuses(GITHUB_REPO, old)["coalmine/web"]["state"]
               == "error", 10, 0.05, "the claimed final status was never posted")
    # A delayed report of an older snapshot still cannot overtake it.
    assert not store.claim_report(key, revision, "status", seq - 1, again=True)


def test_a_reported_final_status_leaves_nothing_for_the_sweep(shell_services):
    svc = shell_services
    store = RolloutStore(svc.redis)
    key = rollout_key("github", GITHUB_REPO, "web")
    with store.locked(key):
        store.save(key, record("a" * 40, (m.PauseStep(None),)), None)
    rollout.dispatch(key, m.Start())
    rollout.dispatch(key, m.Abort("alice", "aborted by @alice"))
    assert store.load(key).state.phase == "Aborted"
    assert store.unreported(older_than=time.time() + 1) == []


def test_a_stray_unreported_member_does_not_stop_the_sweep(shell_services):
    svc = shell_services
    store = RolloutStore(svc.redis)
    svc.redis.zadd(keys.ROLLOUTS_UNREPORTED, {"not a member": 0, "k\nr\n7": 0})
    assert store.unreported(older_than=time.time()) == [("k", "r", 7)]
    assert svc.redis.zcard(keys.ROLLOUTS_UNREPORTED) == 1
