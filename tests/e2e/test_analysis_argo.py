"""The rest of Argo's analysis end to end: the `job` provider, a `secretKeyRef` argument that
never shows, and a `dryRun` metric that fails without aborting. Real workers, the fake API
server running the Jobs, a real Prometheus."""

from __future__ import annotations

import base64

import pytest

from tests.e2e import world as w
from tests.e2e.test_canary import ANALYSIS_TEMPLATE, canary_config, traffic

pytestmark = pytest.mark.e2e

SMOKE_IMAGE = "registry.example/smoke:1"
JOB_TEMPLATE = f"""apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: smoke
spec:
  metrics:
    - name: smoke
      provider:
        job:
          metadata:
            labels: {{purpose: smoke-test}}
          spec:
            backoffLimit: 0
            template:
              spec:
                restartPolicy: Never
                containers:
                  - name: smoke
                    image: {SMOKE_IMAGE}
                    command: [sh, -c, "curl -fsS http://web-canary.shop/healthz"]
"""

JOB_STEPS = """        - setWeight: 34
        - analysis:
            templates: [{templateName: smoke}]
        - setWeight: 67
"""

# The canary tests' template, its `track` argument read from a Secret instead of the step.
SECRET_TEMPLATE = ANALYSIS_TEMPLATE.replace(
    "    - name: track\n",
    "    - name: track\n      valueFrom:\n        secretKeyRef: {name: metrics-track, key: track}\n")
assert SECRET_TEMPLATE != ANALYSIS_TEMPLATE

SECRET_STEPS = """        - setWeight: 34
        - analysis:
            templates: [{templateName: success-rate}]
        - setWeight: 67
"""



def rate_metric(name: str, arg: str) -> str:
    return f"""    - name: {name}
      interval: 1s
      count: 2
      successCondition: result[0] >= 0.95
      provider:
        prometheus:
          query: >-
            sum(rate(http_requests_total{{track="{{{{args.{arg}}}}}",code!~"5.."}}[30s]))
            / sum(rate(http_requests_total{{track="{{{{args.{arg}}}}}"}}[30s]))
"""


DRY_RUN_TEMPLATE = """apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: rates
spec:
  args:
    - name: good
    - name: bad
  metrics:
""" + rate_metric("success-rate", "good") + rate_metric("candidate-error-budget", "bad")


def dry_run_steps(good: str, bad: str) -> str:
    return f"""        - setWeight: 34
        - analysis:
            templates: [{{templateName: rates}}]
            args: [{{name: good, value: {good}}}, {{name: bad, value: {bad}}}]
            dryRun: [{{metricName: error-budget$}}]
        - setWeight: 67
"""


@pytest.fixture
def world(github_world, prometheus) -> w.World:
    github_world.bot.env["PROMETHEUS_URL"] = prometheus.url
    return github_world


def set_up(world: w.World, steps: str, template_file: str, template: str) -> None:
    w.set_up(world, {".coalmine.yaml": canary_config(steps), template_file: template})


def analysis_jobs(kube) -> list[dict]:
    return [j for j in kube.objects("Job", "shop")
            if "coalmine.dev/analysis-run" in j["metadata"].get("labels", {})]


def test_a_release_whose_job_metric_completes_is_promoted(world, fake_kube):
    set_up(world, JOB_STEPS, "deploy/web/smoke.yaml", JOB_TEMPLATE)
    number, sha = w.release(world, "registry.example/web:2.0", "Web 2.0")

    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "success" and status["description"] == "promoted"
    (job,) = analysis_jobs(fake_kube)
    meta = job["metadata"]
    assert meta["name"].startswith(f"web-{sha[:7]}-") and meta["name"].endswith(".smoke.1")
    assert meta["labels"]["purpose"] == "smoke-test"
    assert meta["labels"]["coalmine.dev/app"] == "web"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "coalmine"
    assert [c["type"] for c in job["status"]["conditions"]][-1] == "Complete"
    body = w.wait_comment(world, number, "promoted")["body"]
    assert "Complete" in body and "smoke" in body


def test_a_release_whose_job_fails_is_aborted_and_reverted(world, fake_kube):
    fake_kube.job_outcome(SMOKE_IMAGE, "Failed")
    set_up(world, JOB_STEPS, "deploy/web/smoke.yaml", JOB_TEMPLATE)
    number, sha = w.release(world, "registry.example/web:bad", "Web bad")

    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "failure" and "aborted" in status["description"]
    assert "BackoffLimitExceeded" in status["description"] or "smoke" in status["description"]
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary") is None
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"
    body = w.wait_comment(world, number, "Revert PR opened")["body"]
    assert "Job has reached the specified backoff limit" in body


def test_a_secret_argument_is_used_and_never_shown(world, fake_kube, prometheus):
    track = traffic(prometheus, "secret-track", 0.0)
    assert len(track) >= 6  # the log redactor masks values of at least 6 characters
    set_up(world, SECRET_STEPS, "deploy/web/analysis.yaml", SECRET_TEMPLATE)
    fake_kube.put_object({  # made by someone else than Git (a secret is not committed)
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "metrics-track", "namespace": "shop"},
        "data": {"track": base64.b64encode(track.encode()).decode()},
    })
    number, sha = w.release(world, "registry.example/web:2.0", "Web 2.0")

    status = w.final_status(world, sha, timeout=90)
    # Promoted: the query found the secret track's series, so the secret was filled in.
    assert status["state"] == "success" and status["description"] == "promoted", status
    body = w.wait_comment(world, number, "promoted")["body"]
    assert "success-rate" in body.replace("\\", "")
    shown = [c["body"] for c in w.comments(world, number)]
    shown += [s.get("description") or "" for s in w.all_statuses(world, sha)]
    assert not [text for text in shown if track in text]
    assert track not in world.bot.worker_log()
    stored = [world.bot.redis.get(key) for key in world.bot.redis.scan_iter()
              if world.bot.redis.type(key) == b"string"]
    assert not [value for value in stored if value and track.encode() in value]


def test_a_failing_dry_run_metric_is_shown_and_does_not_abort(world, fake_kube, prometheus):
    good = traffic(prometheus, "dry-good", 0.0)
    bad = traffic(prometheus, "dry-bad", 0.5)
    set_up(world, dry_run_steps(good, bad), "deploy/web/analysis.yaml", DRY_RUN_TEMPLATE)
    number, sha = w.release(world, "registry.example/web:2.0", "Web 2.0")

    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "success" and status["description"] == "promoted", status
    body = w.wait_comment(world, number, "promoted")["body"]
    (row,) = [line for line in body.splitlines() if "candidate" in line and "dry run" in line]
    assert "Failed" in row
