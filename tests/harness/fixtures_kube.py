"""Pytest fixtures for the fake Kubernetes API server (see tests/harness/kube.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cluster.client import Cluster, RetryPolicy
from tests.harness.kube import FakeKube


class RunningFakeKube(FakeKube):
    """A started FakeKube that knows the kubeconfig written for it."""

    kubeconfig: Path


@pytest.fixture
def fake_kube(tmp_path: Path) -> Iterator[RunningFakeKube]:
    """A fresh, started fake API server per test, with `.kubeconfig` pointing at it."""
    kube = RunningFakeKube()
    kube.start()
    kube.kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    try:
        yield kube
    finally:
        kube.stop()


@pytest.fixture
def kube_cluster(fake_kube: RunningFakeKube) -> Cluster:
    """Coalmine's real cluster adapter talking to `fake_kube`, with quick retries."""
    return Cluster.from_config(
        str(fake_kube.kubeconfig),
        retry=RetryPolicy(attempts=4, first_delay_s=0.01, max_delay_s=0.05),
        request_timeout_s=5.0,
    )


@pytest.fixture
def router_crds(fake_kube: RunningFakeKube) -> RunningFakeKube:
    """`fake_kube` with the traffic routers' CRDs installed (Istio VirtualService and
    DestinationRule, Gateway API HTTPRoute, SMI TrafficSplit; see bot/sim/crds/)."""
    fake_kube.install_router_crds()
    return fake_kube
