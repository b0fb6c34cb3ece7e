"""The kayenta provider judged in-process against the real Prometheus scraping the exporter.

Each track of the exporter is a side: a baseline at 200 ms, a canary like it (A/A), a canary
30 % slower, and a canary with almost no traffic (its mean latency is 0/0 in most windows).
The template is read the way a merge reads it (bot.rollout.argo_templates) and its args
resolved as a run resolves them, so the YAML syntax of the README is what is measured.
"""

from __future__ import annotations

import re
import time

import pytest
import yaml

from bot.analysis.measure import measure
from bot.analysis.templates import Arg, resolve_metrics
from bot.egress import parse_egress
from bot.rollout.argo_templates import parse_analysis_template
from tests.harness.prometheus import PrometheusServer

LOOPBACK = parse_egress({"allow": ["127.0.0.1"]}, "test", {})
LATENCY = ("sum(rate(http_request_duration_seconds_sum{ {{scope}} }[3s]))"
           " / sum(rate(http_request_duration_seconds_count{ {{scope}} }[3s]))")

TEMPLATE = """
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: judge}
spec:
  args: [{name: canary}, {name: baseline}]
  metrics:
    - name: judge
      provider:
        kayenta:
          application: web
          canaryConfigName: web-latency
          threshold: {pass: 90, marginal: 75}
          window: 15s
          scopes:
            - name: default
              controlScope: {scope: 'track="{{args.baseline}}"', step: 1}
              experimentScope: {scope: 'track="{{args.canary}}"', step: 1}
          metrics:
            - name: latency
              query: 'QUERY'
              direction: increase
"""


def provider(canary: str, baseline: str, template: str = TEMPLATE) -> dict:
    doc = yaml.safe_load(template.replace("QUERY", LATENCY))
    parsed = parse_analysis_template(doc, source="deploy/web/judge.yaml")
    (metric,) = resolve_metrics([parsed], [Arg("canary", canary), Arg("baseline", baseline)])
    return metric.provider


def judge(prometheus: PrometheusServer, canary: str, baseline: str, **kw):
    return measure(provider(canary, baseline, **kw), None, None, prometheus_url=prometheus.url,
                   egress=LOOPBACK, now=time.time())


@pytest.fixture(scope="module")
def tracks(prometheus: PrometheusServer) -> dict[str, str]:
    """Fresh tracks, warmed up together until Prometheus holds 18 s of each."""
    exporter = prometheus.exporter
    plan = {"baseline": (0.2, 50.0), "same": (0.2, 50.0), "slow": (0.26, 50.0),
            "quiet": (0.2, 0.1)}
    names = {}
    for name, (mean, rate) in plan.items():
        names[name] = exporter.fresh_track(f"kayenta-{name}")
        exporter.set_latency(names[name], mean, requests_per_second=rate)
    for track in names.values():
        prometheus.wait_for_value(
            f'count_over_time(http_request_duration_seconds_count{{track="{track}"}}[20s])',
            lambda r: len(r) == 1 and r[0] >= 18, deadline=60)
    return names


def test_a_canary_like_its_baseline_passes(prometheus, tracks):
    m = judge(prometheus, tracks["same"], tracks["baseline"])
    assert (m.phase, m.value) == ("Successful", "100"), m.message
    (latency,) = m.judgement.metrics
    assert latency.classification == "pass"
    assert latency.canary_count >= 10 and latency.baseline_count >= 10
    assert 0.18 < latency.canary_mean < 0.22 and 0.18 < latency.baseline_mean < 0.22
    assert m.judgement.passing == 90 and m.judgement.marginal == 75


def test_a_canary_30_percent_slower_fails_with_the_reason(prometheus, tracks):
    m = judge(prometheus, tracks["slow"], tracks["baseline"])
    assert (m.phase, m.value) == ("Failed", "0"), m.message
    (latency,) = m.judgement.metrics
    assert latency.classification == "high" and latency.p_value < 0.001
    assert 1.2 < latency.effect_size < 1.4
    assert re.search(r"latency \d\d % higher on canary \(mean ratio 1\.[23]\d\)", m.message)
    assert "allowed +10 %" in m.message and m.message.startswith("score 0 against pass 90")


def test_a_canary_without_traffic_is_inconclusive_never_passed(prometheus, tracks):
    m = judge(prometheus, tracks["quiet"], tracks["baseline"])
    assert m.phase == "Inconclusive" and m.judgement.verdict == "nodata", m.message
    assert "latency: no data: canary has" in m.message


def test_a_query_prometheus_rejects_is_an_error_with_its_reason(prometheus, tracks):
    broken = TEMPLATE.replace("query: 'QUERY'", "query: 'sum(rate({{scope}}'")
    m = judge(prometheus, tracks["same"], tracks["baseline"], template=broken)
    assert m.phase == "Error" and m.judgement is None
    assert m.message.startswith("Prometheus rejected the canary query of 'latency': ")


def test_several_series_per_side_are_an_error_asking_for_one(prometheus, tracks):
    many = TEMPLATE.replace("query: 'QUERY'", "query: 'http_request_duration_seconds_count"
                                              "{track=~\"kayenta-.*\", {{scope}} } or "
                                              "http_request_duration_seconds_count'")
    m = judge(prometheus, tracks["same"], tracks["baseline"], template=many)
    assert m.phase == "Error"
    assert "returned" in m.message and "aggregate them to one" in m.message


def test_a_prometheus_the_egress_policy_refuses_is_never_asked(prometheus, tracks):
    elsewhere = TEMPLATE.replace("window: 15s", "window: 15s\n          prometheus: "
                                                "{address: 'http://10.9.9.9:9090'}")
    m = judge(prometheus, tracks["same"], tracks["baseline"], template=elsewhere)
    assert m.phase == "Error" and "10.9.9.9" in m.message, m.message


def test_lookback_reads_from_the_analysis_run_start(prometheus, tracks):
    """`lookback: true` (no window): each measurement reads from the run's start, as Argo's
    provider sends the AnalysisRun's start time. A run started 15 s ago gives 16 one-second
    samples per side; one started 5 s ago too few (no data), whatever the window would say."""
    looking_back = TEMPLATE.replace("window: 15s", "lookback: true")
    spec = provider(tracks["same"], tracks["baseline"], template=looking_back)
    now = time.time()

    def since(seconds: float):
        return measure(spec, None, None, prometheus_url=prometheus.url, egress=LOOPBACK,
                       now=now, run_started_at=now - seconds)

    long_run, young_run = since(15), since(5)
    assert long_run.phase == "Successful", long_run.message
    (latency,) = long_run.judgement.metrics
    assert 14 <= latency.canary_count <= 16 and 14 <= latency.baseline_count <= 16
    assert young_run.phase == "Inconclusive" and young_run.judgement.verdict == "nodata"
    assert young_run.judgement.metrics[0].canary_count <= 6
    unknown = measure(spec, None, None, prometheus_url=prometheus.url, egress=LOOPBACK, now=now)
    assert unknown.phase == "Error" and "lookback" in unknown.message
