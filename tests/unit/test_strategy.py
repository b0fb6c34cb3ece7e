"""Parsing canary strategies and analysis templates: the Argo docs' examples, and every error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.rollout.argo_rollout import parse_rollout, rollout_to_deployment
from bot.rollout.argo_templates import (
    check_template_refs,
    parse_analysis_template,
    parse_analysis_templates,
)
from bot.rollout.durations import DurationError, format_duration, parse_duration
from bot.rollout.fields import StrategyError
from bot.rollout.model import AnalysisStep, PauseStep, SetWeightStep, TemplateRef, WorkloadRef
from bot.rollout.strategy import parse_canary_config

DATA = Path(__file__).parent / "data" / "argo"


def load(name: str) -> list[dict]:
    return list(yaml.safe_load_all((DATA / name).read_text()))


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(StrategyError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# --------------------------------------------------------------- the Argo docs' examples


def test_basic_canary_example_parses_with_steps_and_ignored_fields():
    (doc,) = load("canary-basic-rollout.yaml")
    strategy = parse_rollout(doc, source="rollout.yaml")
    assert strategy.workload == WorkloadRef("Deployment", "example-rollout")
    assert strategy.steps == (
        SetWeightStep(10),
        PauseStep(3600.0),
        SetWeightStep(20),
        PauseStep(None),
    )
    assert strategy.ignored_fields == ()
    assert (strategy.max_surge, strategy.max_unavailable) == ("25%", 0)
    assert strategy.traffic is None
    assert strategy.progress_deadline_seconds == 600


def test_every_documented_pause_duration_form():
    (doc,) = load("pause-durations-rollout.yaml")
    durations = [s.duration for s in parse_rollout(doc, source="r.yaml").steps]
    assert durations == [10.0, 10.0, 600.0, 36000.0, None]


def test_background_analysis_example_and_its_template():
    (rollout,) = load("background-analysis-rollout.yaml")
    (template_doc,) = load("success-rate-background-template.yaml")
    strategy = parse_rollout(rollout, source="r.yaml")
    assert strategy.analysis is not None
    assert strategy.analysis.starting_step == 2
    assert strategy.analysis.templates == (TemplateRef("success-rate"),)
    assert strategy.analysis.args[0].value == "guestbook-svc.default.svc.cluster.local"
    assert len(strategy.steps) == 8

    template = parse_analysis_template(template_doc, source="t.yaml")
    (metric,) = template.metrics
    assert metric.interval == 300.0
    assert metric.failure_limit == 3
    assert metric.effective_count is None  # interval only: runs until stopped
    assert metric.success_condition == "result[0] >= 0.95"
    assert "{{args.service-name}}" in metric.provider["prometheus"]["query"]
    check_template_refs(strategy, [template])


def test_inline_analysis_example_with_defaulted_arg():
    (rollout,) = load("inline-analysis-rollout.yaml")
    (template_doc,) = load("success-rate-inline-template.yaml")
    strategy = parse_rollout(rollout, source="r.yaml")
    step = strategy.steps[2]
    assert isinstance(step, AnalysisStep)
    assert step.templates == (TemplateRef("success-rate"),)
    template = parse_analysis_template(template_doc, source="t.yaml")
    assert [(a.name, a.value) for a in template.args] == [
        ("service-name", None),
        ("prometheus-port", "9090"),  # YAML int taken as written
    ]
    assert template.metrics[0].effective_count == 1


def test_cluster_scoped_template_example():
    rollout, template_doc = load("cluster-scope-rollout.yaml")
    strategy = parse_rollout(rollout, source="r.yaml")
    templates = parse_analysis_templates([("r.yaml", rollout), ("r.yaml", template_doc)])
    assert len(templates) == 1 and templates[0].cluster_scope
    assert strategy.steps[2].templates == (TemplateRef("success-rate", cluster_scope=True),)
    check_template_refs(strategy, templates)


def test_count_interval_and_failure_condition_examples():
    (doc,) = load("count-interval-metric.yaml")
    template = parse_analysis_template(doc, source="t.yaml")
    counted, errors = template.metrics
    assert (counted.interval, counted.count, counted.effective_count) == (60.0, 5, 5)
    assert errors.failure_condition == "result[0] >= 10" and errors.failure_limit == 3


def test_web_provider_template():
    (doc,) = load("web-metric-template.yaml")
    (metric,) = parse_analysis_template(doc, source="t.yaml").metrics
    web = metric.provider["web"]
    assert web["jsonPath"] == "{$.results.ok}"
    assert web["headers"] == [{"key": "Authorization", "value": "Bearer {{ args.api-token }}"}]
    assert web["timeoutSeconds"] == 20


def test_rollout_becomes_a_deployment():
    (doc,) = load("canary-basic-rollout.yaml")
    doc["metadata"]["labels"] = {"team": "web"}
    deployment = rollout_to_deployment(doc, source="r.yaml")
    assert deployment["apiVersion"] == "apps/v1" and deployment["kind"] == "Deployment"
    assert deployment["metadata"] == {"name": "example-rollout", "labels": {"team": "web"}}
    spec = deployment["spec"]
    assert spec["replicas"] == 10
    assert spec["selector"] == {"matchLabels": {"app": "nginx"}}
    assert spec["template"]["spec"]["containers"][0]["image"] == "nginx:1.15.4"
    assert spec["minReadySeconds"] == 30
    assert "strategy" not in spec
    spec["template"]["metadata"]["labels"]["changed"] = "yes"
    assert "changed" not in doc["spec"]["template"]["metadata"]["labels"]  # a copy


def test_rollout_with_workload_ref_takes_the_deployment_template():
    (doc,) = load("canary-basic-rollout.yaml")
    template = doc["spec"].pop("template")
    doc["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    web = {
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "nginx"}}, "template": template}
    }
    deployment = rollout_to_deployment(doc, source="r.yaml", deployments={"web": web})
    assert deployment["metadata"]["name"] == "example-rollout"
    assert deployment["spec"]["replicas"] == 10
    assert deployment["spec"]["template"] == template
    assert parse_rollout(doc, source="r.yaml").steps[0] == SetWeightStep(10)


def test_workload_ref_to_a_missing_deployment():
    (doc,) = load("canary-basic-rollout.yaml")
    del doc["spec"]["template"]
    doc["spec"]["workloadRef"] = {"kind": "Deployment", "name": "web"}
    assert error_of(rollout_to_deployment, doc, source="r.yaml", deployments={}) == (
        "r.yaml: Rollout example-rollout: spec.workloadRef.name: Deployment 'web' not found among the app's manifests"
    )


def test_coalmine_yaml_canary():
    raw = yaml.safe_load(
        """
        workload: Deployment/web
        progressDeadlineSeconds: 120
        steps:
          - setWeight: 10
          - pause: {duration: 2m}
          - analysis:
              templates: [{templateName: success-rate}]
              args: [{name: service, value: web}]
          - setWeight: 50
          - pause: {}
        analysis:
          templates: [{templateName: error-rate}]
          startingStep: 1
        """
    )
    strategy = parse_canary_config(raw, source=".coalmine.yaml", key="apps[0].canary")
    assert strategy.workload == WorkloadRef("Deployment", "web")
    assert strategy.progress_deadline_seconds == 120
    assert strategy.steps[1] == PauseStep(120.0)
    assert strategy.steps[2].args[0].value == "web"
    assert strategy.analysis.starting_step == 1
    assert strategy.source_key == "apps[0].canary"


# ------------------------------------------------------------------------------- errors

ROLLOUT_HEAD = """
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: web, image: x}]}}
  strategy:
    canary:
      steps:
"""


def rollout_error(steps_yaml: str) -> str:
    doc = yaml.safe_load(ROLLOUT_HEAD + steps_yaml)
    return error_of(parse_rollout, doc, source="deploy/web/rollout.yaml")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            "        - setWeight: 10\n        - setWeight: 20\n        - pause: {duration: 5x}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[2].pause.duration: '5x' is not "
                'a duration (use 30, "30s", "5m", "1h")'
            ),
        ),
        (
            "        - setWeight: 120",
            "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].setWeight: 120 must be <= 100",
        ),
        (
            "        - setWeight: -1",
            "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].setWeight: -1 must be >= 0",
        ),
        (
            "        - setWeight: ten",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].setWeight: 'ten' is not a "
                "whole number"
            ),
        ),
        (
            "        - experiment: {templates: []}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].experiment."
                "templates: needs at least one template"
            ),
        ),
        (
            "        - experiment: {templates: [], measurementRetention: [{metricName: x}]}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].experiment."
                "measurementRetention: Argo's experiment step has no measurementRetention (only "
                "dryRun); put the rule in the AnalysisTemplate's spec instead"
            ),
        ),
        (
            "        - experiment: {templates: [{name: b, specRef: stable, weight: 10}]}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].experiment."
                "templates[0].weight: an experiment template's weight needs "
                "spec.strategy.canary.trafficRouting (Argo refuses it too)"
            ),
        ),
        (
            "        - experiment: {templates: [{name: b, specRef: stable, service: {name: Web}}]}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].experiment."
                "templates[0].service.name: 'Web' must be a DNS-1035 label of at most 63 "
                "characters (a Service name)"
            ),
        ),
        (
            ("        - experiment: {templates: [{name: a, specRef: stable, service: {name: x}},"
             " {name: b, specRef: canary, service: {name: x}}]}"),
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].experiment."
                "templates[0].service.name: Service 'x' is named by more than one template"
            ),
        ),
        (
            "        - setWeight: 5\n        - setCanaryScale: {replicas: 3}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[1]."
                "setCanaryScale: setCanaryScale needs spec.strategy.canary.trafficRouting "
                "(without a router the canary's pods are its traffic share; Argo refuses it too)"
            ),
        ),
        (
            "        - setHeaderRoute: {name: h}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].setHeaderRoute: "
                "setHeaderRoute needs spec.strategy.canary.trafficRouting with the route listed in "
                "trafficRouting.managedRoutes"
            ),
        ),
        (
            "        - setMirrorRoute: {name: m}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].setMirrorRoute: "
                "setMirrorRoute needs spec.strategy.canary.trafficRouting with the route listed in "
                "trafficRouting.managedRoutes"
            ),
        ),
        (
            "        - plugin: {name: p}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].plugin: step plugins are "
                "not supported by Coalmine"
            ),
        ),
        (
            "        - {setWeight: 10, pause: {}}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0]: a step may "
                "have only one of setWeight, pause, analysis, experiment (found: setWeight, pause); "
                "split it "
                "into several steps"
            ),
        ),
        (
            "        - wait: 10",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].wait: unknown step "
                "(supported: setWeight, pause, analysis, experiment, setCanaryScale, setHeaderRoute, "
                "setMirrorRoute)"
            ),
        ),
        (
            "        - pause: {duration: 5m, until: never}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].pause.until: unknown key "
                "(a pause takes only duration)"
            ),
        ),
        (
            "        - analysis: {args: []}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].analysis.templates: is "
                "required: [{templateName: ...}]"
            ),
        ),
        (
            "        - analysis: {templates: [{clusterScope: true}]}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].analysis.templates[0]."
                "templateName: must be a non-empty string, got nothing"
            ),
        ),
        (
            (
                "        - analysis:\n            templates: [{templateName: t}]\n"
                "            args: [{name: token, valueFrom: {secretKeyRef: {name: s, key: k}}}]"
            ),
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].analysis.args[0].valueFrom."
                "secretKeyRef: a Rollout's args cannot read secrets (Argo has no secretKeyRef here); "
                "declare the argument with valueFrom.secretKeyRef in the AnalysisTemplate's args"
            ),
        ),
        (
            (
                "        - analysis:\n            templates: [{templateName: t}]\n"
                "            args: [{name: hash, valueFrom: {podTemplateHashValue: Newest}}]"
            ),
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].analysis.args[0].valueFrom."
                "podTemplateHashValue: 'Newest' must be Stable or Latest"
            ),
        ),
        (
            (
                "        - analysis:\n            templates: [{templateName: t}]\n"
                "            args: [{name: w, valueFrom: {fieldRef: {fieldPath: status.canary.weights}}}]"
            ),
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].analysis.args[0].valueFrom."
                "fieldRef.fieldPath: 'status.canary.weights': only metadata.* and spec.* paths can be read "
                "(the Rollout's status is not kept: Coalmine never applies the Rollout)"
            ),
        ),
        (
            (
                "        - analysis:\n            templates: [{templateName: t}]\n"
                "            args: [{name: g, valueFrom: {fieldRef: {fieldPath: metadata.generation}}}]"
            ),
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].analysis.args[0].valueFrom."
                "fieldRef.fieldPath: 'metadata.generation': supported metadata paths are metadata.name, "
                "metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, "
                "metadata.labels['key'], metadata.annotations['key']"
            ),
        ),
        (
            (
                "        - analysis:\n            templates: [{templateName: t}]\n"
                "            args: [{name: service}]"
            ),
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].analysis.args[0].value: "
                "argument 'service' needs a value"
            ),
        ),
        (
            "        - analysis: {templates: [{templateName: t}], dryRun: [{metricName: '(x'}]}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].analysis.dryRun[0]."
                "metricName: '(x' is not a regular expression: missing ), unterminated subpattern at "
                "position 0"
            ),
        ),
        (
            "        - analysis: {templates: [{templateName: t}], measurementRetention: [{metricName: x}]}",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0].analysis."
                "measurementRetention[0].limit: nothing is not a whole number"
            ),
        ),
        (
            "        - 10",
            (
                "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[0]: must be a mapping such as "
                "{setWeight: 20}, got 10"
            ),
        ),
    ],
)
def test_step_errors_name_file_key_and_reason(steps, message):
    assert rollout_error(steps) == message


def test_background_starting_step_past_the_end():
    doc = yaml.safe_load(ROLLOUT_HEAD + "        - setWeight: 10\n")
    doc["spec"]["strategy"]["canary"]["analysis"] = {
        "templates": [{"templateName": "t"}],
        "startingStep": 1,
    }
    assert error_of(parse_rollout, doc, source="r.yaml") == (
        "r.yaml: Rollout web: spec.strategy.canary.analysis.startingStep: 1 is past the last step (steps "
        "are numbered 0..0)"
    )


def test_a_rollout_has_exactly_one_strategy():
    doc = yaml.safe_load(ROLLOUT_HEAD + "        - setWeight: 10\n")
    doc["spec"]["strategy"]["blueGreen"] = {"activeService": "web"}
    assert error_of(parse_rollout, doc, source="r.yaml") == (
        "r.yaml: Rollout web: spec.strategy: needs exactly one of canary, blueGreen "
        "(found: blueGreen, canary)"
    )
    doc["spec"]["strategy"] = {"rollingUpdate": {}}
    assert error_of(parse_rollout, doc, source="r.yaml") == (
        "r.yaml: Rollout web: spec.strategy: needs exactly one of canary, blueGreen "
        "(found: rollingUpdate)"
    )


def test_rollout_without_template_or_workload_ref():
    doc = yaml.safe_load(ROLLOUT_HEAD + "        - setWeight: 10\n")
    del doc["spec"]["template"]
    assert error_of(parse_rollout, doc, source="r.yaml") == (
        "r.yaml: Rollout web: spec.template: is required (or spec.workloadRef to a Deployment)"
    )


def test_progress_deadline_must_be_positive():
    doc = yaml.safe_load(ROLLOUT_HEAD + "        - setWeight: 10\n")
    doc["spec"]["progressDeadlineSeconds"] = 0
    assert error_of(parse_rollout, doc, source="r.yaml") == (
        "r.yaml: Rollout web: spec.progressDeadlineSeconds: 0 must be >= 1"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"steps": []},
            ".coalmine.yaml: apps[0].canary.workload: must be a non-empty string, got nothing",
        ),
        (
            {"workload": "StatefulSet/db", "steps": []},
            (
                ".coalmine.yaml: apps[0].canary.workload: 'StatefulSet/db' must look like "
                "Deployment/<name>"
            ),
        ),
        (
            {"workload": "Deployment/web", "stpes": []},
            (
                ".coalmine.yaml: apps[0].canary.stpes: unknown key (allowed: workload, "
                "progressDeadlineSeconds, baseline, judge, steps, analysis, trafficRouting, canaryService, "
                "stableService, dynamicStableScale, scaleDownDelaySeconds, "
                "abortScaleDownDelaySeconds, maxSurge, maxUnavailable, canaryMetadata, "
                "stableMetadata, minPodsPerReplicaSet)"
            ),
        ),
        (
            {"workload": "Deployment/web", "steps": {"setWeight": 10}},
            ".coalmine.yaml: apps[0].canary.steps: must be a list, got a mapping",
        ),
        (
            {"workload": "Deployment/web", "steps": [{"pause": {"duration": "soon"}}]},
            (
                ".coalmine.yaml: apps[0].canary.steps[0].pause.duration: 'soon' is not a duration "
                '(use 30, "30s", "5m", "1h")'
            ),
        ),
        (
            "yes",
            ".coalmine.yaml: apps[0].canary: must be a mapping with workload and the strategy's fields, got 'yes'",
        ),
    ],
)
def test_coalmine_yaml_errors(raw, message):
    assert error_of(parse_canary_config, raw, source=".coalmine.yaml", key="apps[0].canary") == (
        message
    )


TEMPLATE_HEAD = """
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: t}
spec:
"""


def template_error(spec_yaml: str) -> str:
    doc = yaml.safe_load(TEMPLATE_HEAD + spec_yaml)
    return error_of(parse_analysis_template, doc, source="deploy/web/analysis.yaml")


METRIC = "  metrics:\n  - name: m\n    provider: {prometheus: {query: up}}\n"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "  metrics:\n  - name: m\n    provider: {datadog: {query: x}}\n",
            (
                "spec.metrics[0].provider.datadog: provider 'datadog' is not supported (supported: "
                "prometheus, web, job)"
            ),
        ),
        (
            "  metrics:\n  - name: m\n    provider: {prometheus: {query: x}, web: {url: y}}\n",
            "spec.metrics[0].provider: must name exactly one provider (found: prometheus, web)",
        ),
        (
            "  metrics:\n  - name: m\n    provider: {prometheus: {address: http://p}}\n",
            "spec.metrics[0].provider.prometheus.query: must be a non-empty string, got nothing",
        ),
        (
            (
                "  metrics:\n  - name: m\n    provider:\n      prometheus:\n        query: up\n"
                "        authentication: {sigv4: {region: x}}\n"
            ),
            (
                "spec.metrics[0].provider.prometheus.authentication: not supported for prometheus "
                "(supported: address, query, timeout, headers, insecure)"
            ),
        ),
        (
            "  metrics:\n  - name: m\n    provider: {web: {url: 'http://x', method: DELETE}}\n",
            "spec.metrics[0].provider.web.method: 'DELETE' must be one of GET, POST, PUT",
        ),
        (
            "  metrics:\n  - name: m\n    provider: {web: {url: 'http://x', headers: [{value: v}]}}\n",
            "spec.metrics[0].provider.web.headers[0].key: must be a non-empty string, got nothing",
        ),
        (
            "  metrics:\n  - name: m\n",
            "spec.metrics[0].provider: is required (prometheus or web)",
        ),
        (
            "  metrics:\n  - name: m\n    count: 3\n    provider: {prometheus: {query: up}}\n",
            "spec.metrics[0].interval: is required when count > 1 (count is 3)",
        ),
        (
            (
                "  metrics:\n  - name: m\n    interval: 1m\n    count: 2\n    failureLimit: 3\n"
                "    provider: {prometheus: {query: up}}\n"
            ),
            "spec.metrics[0].count: 2 must be >= failureLimit + consecutiveSuccessLimit (3)",
        ),
        (
            "  metrics:\n  - name: m\n    failureLimit: -1\n    provider: {prometheus: {query: up}}\n",
            (
                "spec.metrics[0].failureLimit: failureLimit -1 needs a consecutiveSuccessLimit > 0 "
                "(both cannot be disabled)"
            ),
        ),
        (
            "  metrics:\n  - name: m\n    failureLimit: -2\n    provider: {prometheus: {query: up}}\n",
            "spec.metrics[0].failureLimit: -2 must be >= -1",
        ),
        (
            "  metrics:\n  - name: m\n    interval: often\n    provider: {prometheus: {query: up}}\n",
            'spec.metrics[0].interval: \'often\' is not a duration (use 30, "30s", "5m", "1h")',
        ),
        (
            "  metrics:\n  - name: m\n    count: many\n    provider: {prometheus: {query: up}}\n",
            "spec.metrics[0].count: 'many' is not a whole number",
        ),
        (
            (
                "  metrics:\n  - name: m\n    successCondition: [1]\n"
                "    provider: {prometheus: {query: up}}\n"
            ),
            (
                "spec.metrics[0].successCondition: must be a string expression such as result[0] >= "
                "0.95"
            ),
        ),
        (
            "  metrics:\n  - name: m\n    sucessCondition: x\n    provider: {prometheus: {query: up}}\n",
            (
                "spec.metrics[0].sucessCondition: unknown metric key (allowed: name, interval, "
                "initialDelay, count, successCondition, failureCondition, failureLimit, "
                "inconclusiveLimit, consecutiveErrorLimit, consecutiveSuccessLimit, provider)"
            ),
        ),
        (
            METRIC + "  - name: m\n    provider: {prometheus: {query: up}}\n",
            "spec.metrics[1].name: duplicate metric name 'm'",
        ),
        ("  metrics: []\n", "spec.metrics: needs at least one metric"),
        (
            "  args:\n  - name: token\n    valueFrom: {fieldRef: {fieldPath: metadata.name}}\n"
            + METRIC,
            (
                "spec.args[0].valueFrom.fieldRef: Argo resolves fieldRef only in a Rollout's args; "
                "pass the value from there"
            ),
        ),
        (
            "  args:\n  - name: token\n    valueFrom: {secretKeyRef: {name: s}}\n" + METRIC,
            "spec.args[0].valueFrom.secretKeyRef.key: must be a non-empty string, got nothing",
        ),
        (
            "  templates: [{templateName: other}]\n" + METRIC,
            (
                "spec.templates: templates that include other templates are not supported yet; list "
                "the metrics directly"
            ),
        ),
    ],
)
def test_template_errors_name_file_key_and_reason(spec, message):
    assert template_error(spec) == f"deploy/web/analysis.yaml: AnalysisTemplate t: {message}"


def test_count_may_be_a_placeholder_or_a_string_number():
    doc = yaml.safe_load(
        TEMPLATE_HEAD + "  args: [{name: n}]\n  metrics:\n  - name: a\n    interval: 1m\n"
        "    count: '{{args.n}}'\n    provider: {prometheus: {query: up}}\n"
        "  - name: b\n    interval: 1m\n    count: '3'\n    provider: {prometheus: {query: up}}\n"
    )
    a, b = parse_analysis_template(doc, source="t.yaml").metrics
    assert a.count == "{{args.n}}" and b.count == 3


def test_missing_template_reference_is_reported_at_load_time():
    strategy = parse_canary_config(
        {
            "workload": "Deployment/web",
            "steps": [{"setWeight": 10}, {"analysis": {"templates": [{"templateName": "nope"}]}}],
        },
        source=".coalmine.yaml",
        key="apps[1].canary",
    )
    assert error_of(check_template_refs, strategy, []) == (
        ".coalmine.yaml: apps[1].canary.steps[1].analysis.templates[0].templateName: "
        "AnalysisTemplate 'nope' not found among the app's manifests"
    )


def test_duplicate_templates_across_files():
    doc = yaml.safe_load(TEMPLATE_HEAD + METRIC)
    assert error_of(parse_analysis_templates, [("a.yaml", doc), ("b.yaml", doc)]) == (
        "b.yaml: metadata.name: AnalysisTemplate 't' is also defined in a.yaml"
    )


# ----------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        ("30", 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        (0, 0.0),
    ],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5x", "", "m", "-5s", "1h 30m", True, None, 1.5, -3])
def test_not_durations(value):
    with pytest.raises(DurationError):
        parse_duration(value)


def test_format_duration():
    assert [format_duration(s) for s in (0, 45, 300, 5400, 150)] == [
        "0s",
        "45s",
        "5m",
        "1h30m",
        "2m30s",
    ]


# ----------------------------------------------------------------- config/examples parse

EXAMPLES = Path(__file__).parents[2] / "config" / "examples"


def test_the_shipped_examples_parse_and_reference_existing_templates():
    config = yaml.safe_load((EXAMPLES / "coalmine.yaml").read_text())
    web = parse_canary_config(
        config["apps"][0]["canary"], source="coalmine.yaml", key="apps[0].canary"
    )
    docs = []
    for path in sorted(EXAMPLES.glob("deploy/*/*.yaml")):
        docs += [(str(path), doc) for doc in yaml.safe_load_all(path.read_text())]
    templates = parse_analysis_templates(docs)
    check_template_refs(web, templates)
    ((rollout_file, rollout),) = [(f, d) for f, d in docs if d.get("kind") == "Rollout"]
    shop = parse_rollout(rollout, source=rollout_file)
    check_template_refs(shop, templates)
    assert rollout_to_deployment(rollout, source=rollout_file)["metadata"]["name"] == "shop"
    assert len(web.steps) == 5 and len(shop.steps) == 6
