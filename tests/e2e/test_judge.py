"""Canary against baseline, judged in-process (Argo's `kayenta` provider without a Kayenta
server), end to end: a real Prometheus scrapes canary and baseline series the test controls
(exporter tracks standing in for the canary's and the baseline's pods), the bot reads them
through the AnalysisTemplate's queries, judges, and explains itself on the PR."""

from __future__ import annotations

import re

import pytest

from tests.e2e import world as w
from tests.e2e.test_canary import _revert_pr, canary_config
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e

JUDGE_TEMPLATE = """apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: judge
spec:
  args:
    - name: canary
    - name: baseline
  metrics:
    - name: judge
      provider:
        kayenta:
          application: web
          canaryConfigName: web
          threshold: {pass: 90, marginal: 75}
          window: 15s
          scopes:
            - name: default
              controlScope: {scope: 'track="{{args.baseline}}"', step: 1}
              experimentScope: {scope: 'track="{{args.canary}}"', step: 1}
          metrics:
            - name: latency
              direction: increase
              query: >-
                sum(rate(http_request_duration_seconds_sum{ {{scope}} }[3s]))
                / sum(rate(http_request_duration_seconds_count{ {{scope}} }[3s]))
            - name: error rate
              direction: increase
              allowedIncrease: 1.5
              query: >-
                sum(rate(http_requests_total{ {{scope}}, code=~"5.." }[3s]))
                / sum(rate(http_requests_total{ {{scope}} }[3s]))
"""


def steps(canary: str, baseline: str) -> str:
    return f"""        - setWeight: 34
        - analysis:
            templates: [{{templateName: judge}}]
            args: [{{name: canary, value: {canary}}}, {{name: baseline, value: {baseline}}}]
        - setWeight: 67
        - pause: {{duration: 1}}
"""


@pytest.fixture
def world(github_world, prometheus) -> w.World:
    github_world.bot.env["PROMETHEUS_URL"] = prometheus.url
    return github_world


@pytest.fixture(params=["github", "gitlab"])
def any_world(request, prometheus) -> w.World:
    world = request.getfixturevalue(f"{request.param}_world")
    world.bot.env["PROMETHEUS_URL"] = prometheus.url
    return world


def tracks(prometheus, canary_latency: float, canary_rate: float = 50.0) -> tuple[str, str]:
    """A baseline track at 200 ms and 50 requests/s, and a canary track as asked; both start
    now and hold enough samples for the judge's 15 s window by the time the step runs."""
    exporter = prometheus.exporter
    canary, baseline = exporter.fresh_track("judge-canary"), exporter.fresh_track("judge-base")
    for track, latency, rate in ((canary, canary_latency, canary_rate),
                                 (baseline, 0.2, 50.0)):
        exporter.set_latency(track, latency, requests_per_second=rate)
        exporter.set_traffic(track, requests_per_second=rate, error_ratio=0.0)
    return canary, baseline


def release(world: w.World, prometheus, canary: str, baseline: str, title: str,
            files: dict[str, str] | None = None):
    w.set_up(world, files or {".coalmine.yaml": canary_config(steps(canary, baseline)),
                              "deploy/web/judge.yaml": JUDGE_TEMPLATE})
    for track in (canary, baseline):  # 18 s of data: the 15 s window is full
        prometheus.wait_for_value(
            f'count_over_time(http_requests_total{{track="{track}",code="200"}}[20s])',
            lambda r: len(r) == 1 and r[0] >= 18, deadline=60)
    before = world.remote.head()
    return (*w.release(world, f"registry.example/web:{title}", f"Web {title}"), before)


def test_a_good_release_is_promoted_by_the_judge(world, fake_kube, prometheus):
    canary, baseline = tracks(prometheus, canary_latency=0.2)
    number, sha, _ = release(world, prometheus, canary, baseline, "good")
    status = w.final_status(world, sha, timeout=120)
    assert status["state"] == "success" and status["description"] == "promoted", status
    assert w.image_of(fake_kube, "web") == "registry.example/web:good"
    body = w.wait_comment(world, number, "**Judge**")["body"].replace("\\", "")
    assert "score **100** — pass at 90, marginal at 75 → ✅ pass" in body
    assert "error rate: canary and baseline are all equal (0)" in body


def test_a_slower_release_is_aborted_explained_and_reverted(any_world, fake_kube, prometheus):
    """On GitHub and on GitLab: the explanation on the PR/MR, the revert PR/MR opened."""
    world = any_world
    canary, baseline = tracks(prometheus, canary_latency=0.26)  # +30 %
    number, sha, before = release(world, prometheus, canary, baseline, "slow")
    aborted_and_reverted(world, fake_kube, number, sha, before, score=50)


def aborted_and_reverted(world: w.World, fake_kube, number: int, sha: str, before: str,
                         score: int) -> str:
    """The release failed, was rolled back, its revert PR/MR opened from a branch holding the
    inverse diff, and the PR/MR's comment says why in words; the comment's body."""
    status = w.final_status(world, sha, timeout=120)
    assert status["state"] == "failure" and "aborted" in status["description"], status
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary") is None

    branch = f"coalmine/revert-{sha[:7]}"
    pr = wait_until(lambda: _revert_pr(world, branch), 60, 0.1)
    assert pr["title"] == 'Revert "Web slow"'
    assert world.remote.diff(before, world.remote.head(branch)) == ""
    revert_body = pr.get("body") or pr.get("description") or ""
    assert "latency" in revert_body and "higher on canary" in revert_body, revert_body
    body = w.wait_comment(world, number, "Revert PR opened")["body"].replace("\\", "")
    assert f"score **{score}** — pass at 90, marginal at 75 → ❌ fail" in body
    # 260 ms against 200 ms, each within 5 % noise: a ratio of 1.2 to 1.4.
    assert re.search(r"latency \d\d % higher on canary \(mean ratio 1\.[23]\d\), "
                     r"p < 0\.001, allowed \+10 %", body), body
    assert "| latency | ❌ higher |" in body and "xychart-beta" in body
    return body


def test_low_traffic_is_held_as_inconclusive_never_promoted(world, fake_kube, prometheus):
    canary, baseline = tracks(prometheus, canary_latency=0.2, canary_rate=0.1)
    number, sha, _ = release(world, prometheus, canary, baseline, "quiet")
    body = w.wait_comment(world, number, "analysis inconclusive", timeout=120)["body"]
    body = body.replace("\\", "")
    assert "**Paused**" in body and "⚠️ no data" in body
    assert "latency: no data: canary has" in body
    assert w.latest_statuses(world, sha)["coalmine/web"]["state"] == "pending"
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"
    assert w.image_of(fake_kube, "web-canary") == "registry.example/web:quiet"


# The same judge written in `.coalmine.yaml`, no AnalysisTemplate: the scopes are the test's
# exporter tracks (real pods would use the default, coalmine_dev_track="canary"/"baseline").
def judge_config(canary: str, baseline: str) -> str:
    return canary_config("""        - setWeight: 34
        - judge: {}
        - setWeight: 67
        - pause: {duration: 1}
""").replace("    canary:\n", f"""    canary:
      judge:
        thresholds: {{pass: 90, marginal: 75}}
        window: 15s
        initialDelay: 0s
        scopes:
          - name: default
            controlScope: {{scope: 'track="{baseline}"', step: 1}}
            experimentScope: {{scope: 'track="{canary}"', step: 1}}
        metrics:
          - name: latency
            direction: increase
            query: >-
              sum(rate(http_request_duration_seconds_sum{{ {{{{scope}}}} }}[3s]))
              / sum(rate(http_request_duration_seconds_count{{ {{{{scope}}}} }}[3s]))
          - name: error rate
            direction: increase
            allowedIncrease: 1.5
            query: >-
              sum(rate(http_requests_total{{ {{{{scope}}}}, code=~"5.." }}[3s]))
              / sum(rate(http_requests_total{{ {{{{scope}}}} }}[3s]))
""", 1)


def test_the_coalmine_yaml_judge_aborts_a_slower_release(any_world, fake_kube, prometheus):
    world = any_world
    canary, baseline = tracks(prometheus, canary_latency=0.26)  # +30 %
    number, sha, before = release(world, prometheus, canary, baseline, "slow",
                                  files={".coalmine.yaml": judge_config(canary, baseline)})
    aborted_and_reverted(world, fake_kube, number, sha, before, score=50)


def test_the_coalmine_yaml_judge_promotes_a_good_release(world, fake_kube, prometheus):
    canary, baseline = tracks(prometheus, canary_latency=0.2)
    number, sha, _ = release(world, prometheus, canary, baseline, "good",
                             files={".coalmine.yaml": judge_config(canary, baseline)})
    status = w.final_status(world, sha, timeout=120)
    assert status["state"] == "success" and status["description"] == "promoted", status
    assert w.image_of(fake_kube, "web") == "registry.example/web:good"
    body = w.wait_comment(world, number, "**Judge**")["body"].replace("\\", "")
    assert "score **100** — pass at 90, marginal at 75 → ✅ pass" in body
