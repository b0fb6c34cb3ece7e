"""The traffic routers' kinds in the fake API server, proven with the real kubectl and Coalmine's
own cluster client.

A router update reads the router object, server-side applies or merge-patches its weights, may
replace it under a resourceVersion precondition, and deletes what it made. Each of those is run
here against the CRDs of bot/sim/crds/ (Istio VirtualService and DestinationRule, Gateway
API HTTPRoute, SMI TrafficSplit) and the built-in Ingress that NGINX reads, so a router adapter
tested on the fake meets a server that behaves as a cluster with those routers installed does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes.dynamic.exceptions import ConflictError

from bot.cluster.model import ObjectRef, Owner
from tests.harness.kube import ROUTER_CRDS_DIR
from tests.integration.test_kube_fake_kubectl import KUBECTL, NAMESPACE, kubectl

pytestmark = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="kubectl is not installed")

ROUTERS = """
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
    - name: primary
      route:
        - {destination: {host: web-stable}, weight: 100}
        - {destination: {host: web-canary}, weight: 0}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets:
    - {name: stable, labels: {rollouts-pod-template-hash: aaa}}
    - {name: canary, labels: {rollouts-pod-template-hash: bbb}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: gateway}]
  rules:
    - backendRefs:
        - {name: web-stable, port: 80, weight: 100}
        - {name: web-canary, port: 80, weight: 0}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: web, namespace: shop}
spec:
  service: web
  backends:
    - {service: web-stable, weight: 100}
    - {service: web-canary, weight: 0}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web-canary
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/canary: "true"
    nginx.ingress.kubernetes.io/canary-weight: "0"
spec:
  ingressClassName: nginx
  rules:
    - host: web.example
      http:
        paths:
          - path: /
            pathType: Prefix
            backend: {service: {name: web-canary, port: {number: 80}}}
"""

# (apiVersion as written, kind, plural, short name or None); Ingress is built in.
KINDS = [
    ("networking.istio.io/v1beta1", "VirtualService", "virtualservices", "vs"),
    ("networking.istio.io/v1", "DestinationRule", "destinationrules", "dr"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", None),
    ("split.smi-spec.io/v1alpha2", "TrafficSplit", "trafficsplits", "ts"),
    ("networking.k8s.io/v1", "Ingress", "ingresses", "ing"),
]
OWNER = Owner("github", 1296269, "acme/gitops", "web")


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    """The namespace and the router objects, in the order kubectl applies them."""
    folder = tmp_path / "manifests"
    for name, text in (("00-namespace.yaml", NAMESPACE), ("10-routers.yaml", ROUTERS)):
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    return folder


def weights(kube, kind: str) -> list[int | str]:
    """The canary weights a router object carries now, read from the fake's store."""
    api_version = next(k[0] for k in KINDS if k[1] == kind)
    obj = kube.get_object(api_version, kind, "shop", "web-canary" if kind == "Ingress" else "web")
    spec = obj["spec"]
    if kind == "VirtualService":
        return [r["weight"] for r in spec["http"][0]["route"]]
    if kind == "HTTPRoute":
        return [b["weight"] for b in spec["rules"][0]["backendRefs"]]
    if kind == "TrafficSplit":
        return [b["weight"] for b in spec["backends"]]
    return [obj["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"]]


def test_router_kinds_are_served_at_every_version_with_the_newest_preferred(router_crds):
    versions = kubectl(router_crds, "api-versions").stdout.split()
    for group_version in (
        "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3",
        "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1",
        "split.smi-spec.io/v1alpha1", "split.smi-spec.io/v1alpha2", "split.smi-spec.io/v1alpha3",
    ):
        assert group_version in versions

    groups = json.loads(kubectl(router_crds, "get", "--raw", "/apis").stdout)["groups"]
    preferred = {g["name"]: g["preferredVersion"]["version"] for g in groups}
    listed = {g["name"]: [v["version"] for v in g["versions"]] for g in groups}
    assert preferred["networking.istio.io"] == "v1"
    assert listed["networking.istio.io"] == ["v1", "v1beta1", "v1alpha3"]
    assert preferred["gateway.networking.k8s.io"] == "v1"
    assert listed["split.smi-spec.io"] == ["v1alpha3", "v1alpha2", "v1alpha1"]

    crd = json.loads(
        kubectl(router_crds, "get", "crd", "virtualservices.networking.istio.io", "-o", "json")
        .stdout
    )
    assert crd["status"]["storedVersions"] == ["v1alpha3"]
    assert sorted(router_crds.install_router_crds()) == sorted(
        doc["metadata"]["name"]
        for path in ROUTER_CRDS_DIR.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
    ), "installing again is harmless and names every CRD of the folder"


def test_kubectl_applies_gets_patches_and_deletes_router_objects(router_crds, manifests):
    kube = router_crds
    applied = kubectl(kube, "apply", "-f", str(manifests))
    assert applied.stdout.splitlines() == [
        "namespace/shop created",
        "virtualservice.networking.istio.io/web created",
        "destinationrule.networking.istio.io/web created",
        "httproute.gateway.networking.k8s.io/web created",
        "trafficsplit.split.smi-spec.io/web created",
        "ingress.networking.k8s.io/web-canary created",
    ]

    for _, kind, plural, short in KINDS:
        for name in filter(None, (plural, short)):
            listed = json.loads(kubectl(kube, "-n", "shop", "get", name, "-o", "json").stdout)
            assert [item["kind"] for item in listed["items"]] == [kind], name
    together = json.loads(
        kubectl(kube, "-n", "shop", "get", "vs,dr,httproute,ts,ing", "-o", "json").stdout
    )
    assert [(i["apiVersion"], i["kind"]) for i in together["items"]] == [
        ("networking.istio.io/v1", "VirtualService"),
        ("networking.istio.io/v1", "DestinationRule"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("split.smi-spec.io/v1alpha3", "TrafficSplit"),
        ("networking.k8s.io/v1", "Ingress"),
    ], "each kind is served at its group's preferred version"
    old = json.loads(
        kubectl(
            kube, "-n", "shop", "get", "trafficsplits.v1alpha1.split.smi-spec.io", "web",
            "-o", "json",
        ).stdout
    )
    assert old["apiVersion"] == "split.smi-spec.io/v1alpha1"
    assert old["spec"]["backends"][1] == {"service": "web-canary", "weight": 0}

    kubectl(kube, "-n", "shop", "patch", "ts", "web", "--type", "merge", "-p",
            '{"spec": {"backends": [{"service": "web-stable", "weight": 90},'
            ' {"service": "web-canary", "weight": 10}]}}')
    kubectl(kube, "-n", "shop", "patch", "ing", "web-canary", "--type", "merge", "-p",
            '{"metadata": {"annotations": {"nginx.ingress.kubernetes.io/canary-weight": "10"}}}')
    assert weights(kube, "TrafficSplit") == [90, 10]
    assert weights(kube, "Ingress") == ["10"]

    (manifests / "10-routers.yaml").write_text(
        ROUTERS.replace("weight: 100}", "weight: 80}").replace("weight: 0}", "weight: 20}")
    )
    ssa = kubectl(kube, "apply", "--server-side", "--force-conflicts", "-f", str(manifests))
    assert "virtualservice.networking.istio.io/web serverside-applied" in ssa.stdout
    for kind in ("VirtualService", "HTTPRoute", "TrafficSplit"):
        assert weights(kube, kind) == [80, 20], kind
    service = kube.get_object("networking.istio.io/v1alpha3", "VirtualService", "shop", "web")
    assert service["metadata"]["generation"] == 2
    assert {e["manager"] for e in service["metadata"]["managedFields"]} >= {"kubectl"}

    deleted = kubectl(kube, "delete", "-f", str(manifests / "10-routers.yaml"))
    assert 'virtualservice.networking.istio.io "web" deleted' in deleted.stdout
    assert kube.objects(namespace="shop") == []


def test_replacing_a_router_object_needs_its_current_resource_version(router_crds, manifests):
    kube = router_crds
    kubectl(kube, "apply", "--server-side", "-f", str(manifests))
    route = kube.get_object("gateway.networking.k8s.io/v1", "HTTPRoute", "shop", "web")
    kubectl(kube, "-n", "shop", "patch", "httproute", "web", "--type", "merge",
            "-p", '{"spec": {"hostnames": ["web.example"]}}')
    stale = manifests.parent / "stale.json"
    stale.write_text(json.dumps(route))

    refused = kubectl(kube, "replace", "-f", str(stale), check=False)

    assert refused.returncode != 0
    assert "the object has been modified" in refused.stderr
    fresh = kube.get_object("gateway.networking.k8s.io/v1", "HTTPRoute", "shop", "web")
    fresh["spec"]["rules"][0]["backendRefs"][1]["weight"] = 30
    stale.write_text(json.dumps(fresh))
    kubectl(kube, "replace", "-f", str(stale))
    assert weights(kube, "HTTPRoute") == [100, 30]


def test_coalmine_cluster_applies_reads_updates_and_deletes_router_objects(
    router_crds, kube_cluster
):
    objects = [doc for doc in yaml.safe_load_all(ROUTERS) if doc]
    kube_cluster.server_side_apply(yaml.safe_load(NAMESPACE))

    report = kube_cluster.apply(
        objects, app="web", revision="abc123", default_namespace="shop", owner=OWNER
    )

    assert sorted(str(ref) for ref in report.refs) == sorted(
        str(ObjectRef.of(obj)) for obj in objects
    )
    for api_version, kind, _, _ in KINDS:
        name = "web-canary" if kind == "Ingress" else "web"
        live = kube_cluster.get(api_version, kind, "shop", name)
        assert live["kind"] == kind and live["apiVersion"] == api_version
        assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "coalmine"
    as_v1 = kube_cluster.get("networking.istio.io/v1", "VirtualService", "shop", "web")
    assert as_v1["spec"]["http"][0]["route"][1] == {
        "destination": {"host": "web-canary"}, "weight": 0
    }, "one object, readable at every served version"

    splits = kube_cluster.resource("split.smi-spec.io/v1alpha3", "TrafficSplit")
    splits.patch(
        name="web", namespace="shop", content_type="application/merge-patch+json",
        body={"spec": {"backends": [{"service": "web-stable", "weight": 75},
                                    {"service": "web-canary", "weight": 25}]}},
    )
    assert weights(router_crds, "TrafficSplit") == [75, 25]
    live = kube_cluster.get("split.smi-spec.io/v1alpha3", "TrafficSplit", "shop", "web")
    stale = {**live, "metadata": {**live["metadata"], "resourceVersion": "1"}}
    with pytest.raises(ConflictError):
        splits.replace(body=stale, namespace="shop")
    live["spec"]["backends"][1]["weight"] = 50
    splits.replace(body=live, namespace="shop")
    assert weights(router_crds, "TrafficSplit") == [75, 50]

    for api_version, kind, _, _ in KINDS:
        name = "web-canary" if kind == "Ingress" else "web"
        assert kube_cluster.delete(api_version, kind, "shop", name) is True
        assert kube_cluster.get(api_version, kind, "shop", name) is None
        assert kube_cluster.delete(api_version, kind, "shop", name) is False


def test_coalmine_cluster_applies_router_crds_and_their_objects_in_one_run(
    fake_kube, kube_cluster
):
    """As a repository that ships its router's CRDs would: CRDs first, then their objects."""
    crds = [doc for path in sorted(ROUTER_CRDS_DIR.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    routers = [doc for doc in yaml.safe_load_all(ROUTERS) if doc]
    assert not kube_cluster.serves("networking.istio.io/v1", "VirtualService")
    kube_cluster.server_side_apply(yaml.safe_load(NAMESPACE))

    kube_cluster.apply(
        routers + crds, app="web", revision="abc123", default_namespace="shop", owner=OWNER
    )

    assert len(fake_kube.objects(kind="CustomResourceDefinition")) == len(crds)
    assert kube_cluster.get("split.smi-spec.io/v1alpha1", "TrafficSplit", "shop", "web")


def test_crds_are_checked_as_the_api_server_checks_them(fake_kube, tmp_path):
    """The router CRDs above pass these rules (they install); a broken copy does not."""
    crd = next(yaml.safe_load_all((ROUTER_CRDS_DIR / "smi.yaml").read_text()))
    misnamed = {**crd, "metadata": {"name": "trafficsplit.split.smi-spec.io"}}
    two_stored = json.loads(json.dumps(crd))
    two_stored["spec"]["versions"][0]["storage"] = True
    for broken, cause in ((misnamed, 'must be spec.names.plural+"."+spec.group'),
                          (two_stored, "must have exactly one version marked as storage")):
        path = tmp_path / "crd.json"
        path.write_text(json.dumps(broken))

        refused = kubectl(fake_kube, "apply", "--server-side", "-f", str(path), check=False)

        assert refused.returncode != 0
        assert "is invalid" in refused.stderr and cause in refused.stderr
    assert fake_kube.objects(kind="CustomResourceDefinition") == []
