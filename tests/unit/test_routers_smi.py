"""SMI: the TrafficSplit Argo creates and patches, rootService and name defaults."""

from __future__ import annotations

import dataclasses

import pytest

from bot.rollout.routers import (
    HeaderMatch,
    HeaderRoute,
    ObjectKey,
    RouterError,
    RouterWeight,
    RouteState,
    StringMatch,
    WeightDestination,
    describe,
    desired,
    keep_live_traffic,
    reads,
    supports_experiment_weights,
)
from tests.unit.routers_data import CTX, routing

SMI = "smi: {}"
KEY = ObjectKey("split.smi-spec.io/v1alpha1", "TrafficSplit", "shop", "web")


def split(weight: str, stable: str, **meta: object) -> dict:
    return {
        "apiVersion": "split.smi-spec.io/v1alpha1",
        "kind": "TrafficSplit",
        "metadata": {"name": "web", "namespace": "shop", **meta},
        "spec": {"service": "web-stable", "backends": [
            {"service": "web-canary", "weight": weight},
            {"service": "web-stable", "weight": stable}]},
    }


def test_reads_the_split_named_after_the_rollout_by_default():
    assert reads(routing(SMI), CTX) == (KEY,)
    assert reads(routing("smi: {trafficSplitName: web-split}"), CTX) == (
        dataclasses.replace(KEY, name="web-split"),)


@pytest.mark.parametrize(("weight", "stable"), [(0, "100"), (20, "80"), (100, "0")])
def test_created_when_missing_with_the_stable_service_as_root(weight, stable):
    assert desired(routing(SMI), CTX, {KEY: None}, RouteState(weight)) == [
        split(str(weight), stable)]


def test_update_replaces_the_spec_and_keeps_the_metadata():
    live = split("5", "95", labels={"team": "shop"}, resourceVersion="8", uid="u")
    live["spec"]["backends"].append({"service": "web-old", "weight": "10"})
    live["spec"]["service"] = "web"
    (obj,) = desired(routing(SMI), CTX, {KEY: live}, RouteState(30))
    assert obj == split("30", "70", labels={"team": "shop"})


def test_root_service_and_name_from_the_config():
    config = routing("smi: {rootService: web, trafficSplitName: web-split}")
    key = dataclasses.replace(KEY, name="web-split")
    (obj,) = desired(config, CTX, {key: None}, RouteState(10))
    assert obj["metadata"]["name"] == "web-split"
    assert obj["spec"]["service"] == "web"


def test_later_api_versions_write_integer_weights():
    config = dataclasses.replace(routing(SMI), router=dataclasses.replace(
        routing(SMI).router, api_version="split.smi-spec.io/v1alpha3"))
    key = dataclasses.replace(KEY, api_version="split.smi-spec.io/v1alpha3")
    assert reads(config, CTX) == (key,)
    (obj,) = desired(config, CTX, {key: None}, RouteState(10))
    assert obj["apiVersion"] == "split.smi-spec.io/v1alpha3"
    assert [b["weight"] for b in obj["spec"]["backends"]] == [10, 90]


def test_split_another_controller_owns_is_refused():
    live = split("0", "100", ownerReferences=[{"apiVersion": "argoproj.io/v1alpha1",
                                               "kind": "Rollout", "name": "web", "uid": "1",
                                               "controller": True}])
    with pytest.raises(RouterError, match="TrafficSplit shop/web: controlled by Rollout/web"):
        desired(routing(SMI), CTX, {KEY: live}, RouteState(10))


def test_header_routes_are_a_silent_no_op():
    config = routing("smi: {}\nmanagedRoutes: [{name: h}]")
    state = RouteState(10, header_routes=(HeaderRoute("h", (HeaderMatch("a", StringMatch("b")),)),))
    assert desired(config, CTX, {KEY: None}, state) == desired(config, CTX, {KEY: None},
                                                               RouteState(10))


def test_keep_live_traffic_keeps_the_live_weights_or_starts_at_stable():
    git = split("50", "50", labels={"app": "web"})
    assert keep_live_traffic(routing(SMI), CTX, git, split("35", "65")) == split(
        "35", "65", labels={"app": "web"})
    assert keep_live_traffic(routing(SMI), CTX, git, None) == split(
        "0", "100", labels={"app": "web"})
    other = split("50", "50")
    other["metadata"]["name"] = "payments"
    assert keep_live_traffic(routing(SMI), CTX, other, None) is None


@pytest.mark.parametrize(("backends", "weight"), [
    ([("web-canary", "20"), ("web-stable", "80")], 20),
    ([("web-canary", "500m"), ("web-stable", "1500m")], 25),
    ([("web-canary", 1), ("web-stable", 3)], 25),
    ([("web-canary", "0"), ("web-stable", "0")], 0),
    ([("web-canary", "lots"), ("web-stable", "80")], None),
    ([("web-stable", "100")], None),
])
def test_describe_reads_the_canary_share_of_the_backends(backends, weight):
    live = split("0", "0")
    live["spec"]["backends"] = [{"service": s, "weight": w} for s, w in backends]
    assert describe(routing(SMI), CTX, {KEY: live}) == [
        RouterWeight("TrafficSplit shop/web", "splits Service web-stable", weight)]


def test_describe_before_the_split_exists():
    assert describe(routing(SMI), CTX, {KEY: None}) == [
        RouterWeight("TrafficSplit shop/web", "not created yet", None)]


# ------------------------------------------------------------------------ experiment weights

EXPERIMENT = WeightDestination("web-exp-baseline", 10)


def test_experiment_services_are_backends_between_canary_and_stable():
    (obj,) = desired(routing(SMI), CTX, {KEY: split("5", "95")},
                     RouteState(20, extra=(EXPERIMENT, WeightDestination("web-b", 5))))
    assert obj["spec"]["backends"] == [
        {"service": "web-canary", "weight": "20"},
        {"service": "web-exp-baseline", "weight": "10"},
        {"service": "web-b", "weight": "5"},
        {"service": "web-stable", "weight": "65"},
    ]
    assert describe(routing(SMI), CTX, {KEY: obj}) == [
        RouterWeight("TrafficSplit shop/web", "splits Service web-stable", 20),
        RouterWeight("TrafficSplit shop/web", "experiment backend Service web-exp-baseline", 10),
        RouterWeight("TrafficSplit shop/web", "experiment backend Service web-b", 5),
    ]
    (after,) = desired(routing(SMI), CTX, {KEY: obj}, RouteState(20))
    assert after == split("20", "80"), "the experiment's backends go when it ends"


def test_experiment_weights_are_refused_on_routers_that_cannot_carry_them():
    nginx = routing("nginx: {stableIngress: web}")
    assert supports_experiment_weights(routing(SMI))
    assert not supports_experiment_weights(nginx)
    with pytest.raises(ValueError, match="do not fit the nginx router"):
        desired(nginx, CTX, {}, RouteState(20, extra=(EXPERIMENT,)))
