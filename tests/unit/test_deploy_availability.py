"""Availability of Coalmine's own pods (deploy/): the worker is probed through RQ's heartbeat
with the exact command bot.probes accepts, and each Deployment has a PodDisruptionBudget that
selects its pods and never blocks a drain for good. Checked on what the cluster receives, the
output of the real `kubectl kustomize`, validated against the Kubernetes schema."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot import probes

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBECTL = shutil.which("kubectl")
KUBERNETES_VERSION = "1.30"  # as tests/unit/test_deploy_manifests.py
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    assert KUBECTL is not None
    done = subprocess.run([KUBECTL, "kustomize", str(DEPLOY)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def the(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def probe_args(probe: Obj) -> argparse.Namespace:
    """The probe's command as `python -m bot.probes` parses it (an unknown argument fails)."""
    command = probe["exec"]["command"]
    assert command[:3] == ["python", "-m", "bot.probes"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    probes.add_arguments(parser)
    return parser.parse_args(command[3:])


def test_the_worker_is_probed_through_its_heartbeat(rendered):
    (worker,) = the(rendered, "Deployment", "coalmine-worker")["spec"]["template"]["spec"][
        "containers"]
    startup = probe_args(worker["startupProbe"])
    live = probe_args(worker["livenessProbe"])
    ready = probe_args(worker["readinessProbe"])
    assert (startup.role, startup.ready) == ("worker", False)
    assert (live.role, live.ready) == ("worker", False)  # a Redis outage restarts nothing
    assert (ready.role, ready.ready) == ("worker", True)
    # The start-up probe gives the worker time to re-arm waiting rollouts before liveness
    # starts counting; each probe has time to reach Redis.
    startup_s = worker["startupProbe"]["periodSeconds"] * worker["startupProbe"][
        "failureThreshold"]
    assert startup_s >= 120
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert worker[probe]["timeoutSeconds"] > probes.TIMEOUT_S


@pytest.mark.parametrize("component", ["web", "worker"])
def test_each_deployment_has_a_disruption_budget_that_never_blocks_a_drain(rendered,
                                                                          component):
    deployment = the(rendered, "Deployment", f"coalmine-{component}")
    budget = the(rendered, "PodDisruptionBudget", f"coalmine-{component}")
    kubernetes_validate.validate(budget, KUBERNETES_VERSION, strict=True)
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    selector = budget["spec"]["selector"]["matchLabels"]
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    spec = budget["spec"]
    # At least one pod may always go: minAvailable as high as the replicas would block drains.
    if "maxUnavailable" in spec:
        assert spec["maxUnavailable"] >= 1
    else:
        assert spec["minAvailable"] < deployment["spec"]["replicas"]
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_budgets_select_no_other_pods(rendered):
    """A budget whose selector also matched Redis would hold Redis to the web's budget."""
    pods = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
            for o in rendered if o["kind"] == "Deployment"}
    for budget in (o for o in rendered if o["kind"] == "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"].items()
        matched = [name for name, labels in pods.items() if selector <= labels.items()]
        assert matched == [budget["metadata"]["name"]]
