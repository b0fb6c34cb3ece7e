"""NGINX: the canary Ingress made from each stable Ingress, as Argo's NGINX reconciler makes it."""

from __future__ import annotations

import pytest
import yaml

from bot.rollout.routers import (
    HeaderMatch,
    HeaderRoute,
    ObjectKey,
    RouterError,
    RouterWeight,
    RouteState,
    StringMatch,
    describe,
    desired,
    keep_live_traffic,
    reads,
)
from bot.rollout.routers.nginx import canary_ingress_name
from tests.unit.routers_data import CTX, routing


def ingress_key(name: str) -> ObjectKey:
    return ObjectKey("networking.k8s.io/v1", "Ingress", "shop", name)


STABLE = yaml.safe_load("""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web-ingress
  namespace: shop
  resourceVersion: "4711"
  uid: 0f6c3a52-5d4e-4c1e-9a55-2b0f1d3e7a10
  labels: {app: web}
  annotations:
    kubernetes.io/ingress.class: nginx
    nginx.ingress.kubernetes.io/rewrite-target: /
spec:
  ingressClassName: nginx
  defaultBackend:
    service: {name: web-stable, port: {number: 80}}
  tls:
  - hosts: [shop.example.com]
    secretName: shop-tls
  rules:
  - host: shop.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: web-stable, port: {number: 80}}
      - path: /static
        pathType: Prefix
        backend:
          service: {name: static-files, port: {number: 80}}
  - host: admin.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: admin, port: {number: 80}}
status:
  loadBalancer:
    ingress: [{ip: 10.0.0.7}]
""")

BASIC = "nginx: {stableIngress: web-ingress}"


def live_with(*objs: dict) -> dict:
    live: dict = {key: None for key in reads(routing(BASIC), CTX)}
    for obj in objs:
        live[ingress_key(obj["metadata"]["name"])] = obj
    return live


def test_reads_the_stable_and_canary_ingress_of_each_stable_one():
    assert reads(routing("nginx: {stableIngresses: [web-public, web-internal]}"), CTX) == (
        ingress_key("web-public"), ingress_key("web-web-public-canary"),
        ingress_key("web-internal"), ingress_key("web-web-internal-canary"),
    )


def test_canary_ingress_copies_class_tls_and_only_the_rules_routing_to_the_stable_service():
    (canary,) = desired(routing(BASIC), CTX, live_with(STABLE), RouteState(20))
    assert canary == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "web-web-ingress-canary",
            "namespace": "shop",
            "annotations": {
                "kubernetes.io/ingress.class": "nginx",
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "20",
            },
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{
                "host": "shop.example.com",
                "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "web-canary", "port": {"number": 80}}}},
                    {"path": "/static", "pathType": "Prefix",
                     "backend": {"service": {"name": "static-files", "port": {"number": 80}}}},
                ]},
            }],
            "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
        },
    }
    assert STABLE["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == (
        "web-stable"), "the stable Ingress is never changed"


@pytest.mark.parametrize("weight", [0, 20, 100])
def test_canary_weight_annotation_carries_the_weight(weight):
    (canary,) = desired(routing(BASIC), CTX, live_with(STABLE), RouteState(weight))
    assert canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == (
        str(weight))


def test_annotation_order_and_precedence_with_a_custom_prefix_and_a_weight_total():
    config = routing("""
        nginx:
          stableIngress: web-ingress
          annotationPrefix: example.io
          additionalIngressAnnotations:
            canary-by-header: X-Canary
            example.io/canary-by-cookie: beta
            canary-weight: "99"
          canaryIngressAnnotations:
            example.io/canary-by-header: X-Override
            kubernetes.io/ingress.class: nginx-internal
            team: payments
        maxTrafficWeight: 1000
    """)
    (canary,) = desired(config, CTX, live_with(STABLE), RouteState(250))
    assert list(canary["metadata"]["annotations"].items()) == [
        ("kubernetes.io/ingress.class", "nginx-internal"),  # canaryIngressAnnotations win
        ("example.io/canary-by-header", "X-Override"),  # prefix added, then overridden
        ("example.io/canary-by-cookie", "beta"),  # already prefixed: kept as is
        ("example.io/canary-weight", "250"),  # the weight always wins
        ("team", "payments"),  # canaryIngressAnnotations are verbatim
        ("example.io/canary", "true"),
        ("example.io/canary-weight-total", "1000"),
    ]


def test_no_weight_total_without_max_traffic_weight():
    (canary,) = desired(routing(BASIC), CTX, live_with(STABLE), RouteState(5))
    assert "nginx.ingress.kubernetes.io/canary-weight-total" not in (
        canary["metadata"]["annotations"])


def test_weight_above_the_max_traffic_weight_is_a_programming_error():
    with pytest.raises(ValueError, match="outside 0..100"):
        desired(routing(BASIC), CTX, live_with(STABLE), RouteState(101))


def test_existing_canary_ingress_keeps_other_writers_annotations_and_its_labels():
    current = yaml.safe_load("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata:
          name: web-web-ingress-canary
          namespace: shop
          resourceVersion: "99"
          labels: {app.kubernetes.io/managed-by: coalmine}
          annotations:
            nginx.ingress.kubernetes.io/canary-weight: "10"
            cert-manager.io/issuer: letsencrypt
        spec:
          defaultBackend: {service: {name: web-stable, port: {number: 80}}}
          rules: []
    """)
    (canary,) = desired(routing(BASIC), CTX, live_with(STABLE, current), RouteState(40))
    annotations = canary["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/canary-weight"] == "40"
    assert annotations["cert-manager.io/issuer"] == "letsencrypt"
    assert canary["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "coalmine"}
    assert "resourceVersion" not in canary["metadata"]
    assert "defaultBackend" not in canary["spec"], "the spec is the stable Ingress's copy"


def test_canary_ingress_another_controller_owns_is_refused():
    current = {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web-web-ingress-canary", "namespace": "shop", "ownerReferences": [
            {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web",
             "uid": "1", "controller": True}]},
    }
    with pytest.raises(RouterError, match="Ingress shop/web-web-ingress-canary: controlled by "
                                          "Rollout/web"):
        desired(routing(BASIC), CTX, live_with(STABLE, current), RouteState(10))


def test_stable_ingresses_plural_each_get_a_canary():
    config = routing("nginx: {stableIngresses: [web-ingress, web-internal]}")
    internal = yaml.safe_load("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: web-internal, namespace: shop}
        spec:
          rules:
          - http:
              paths:
              - {path: /, pathType: Prefix,
                 backend: {service: {name: web-stable, port: {name: http}}}}
    """)
    live = {key: None for key in reads(config, CTX)}
    live[ingress_key("web-ingress")] = STABLE
    live[ingress_key("web-internal")] = internal
    canaries = desired(config, CTX, live, RouteState(30))
    assert [c["metadata"]["name"] for c in canaries] == [
        "web-web-ingress-canary", "web-web-internal-canary"]
    assert canaries[1]["spec"] == {"rules": [{"http": {"paths": [
        {"path": "/", "pathType": "Prefix",
         "backend": {"service": {"name": "web-canary", "port": {"name": "http"}}}}]}}]}
    assert "kubernetes.io/ingress.class" not in canaries[1]["metadata"]["annotations"]


def test_stable_ingress_without_a_rule_to_the_stable_service_is_an_error():
    other = yaml.safe_load("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: web-ingress, namespace: shop}
        spec:
          rules:
          - host: shop.example.com
            http:
              paths:
              - path: /
                pathType: Prefix
                backend: {service: {name: shop-frontend, port: {number: 80}}}
          - host: files.example.com
    """)
    with pytest.raises(RouterError, match="Ingress shop/web-ingress: no rule routes to service "
                                          "'web-stable'"):
        desired(routing(BASIC), CTX, live_with(other), RouteState(10))


def test_missing_stable_ingress_is_an_error():
    with pytest.raises(RouterError, match="Ingress shop/web-ingress: not found"):
        desired(routing(BASIC), CTX, live_with(), RouteState(10))


def test_header_routes_are_a_silent_no_op():
    state = RouteState(10, header_routes=(HeaderRoute("h", (HeaderMatch("x", StringMatch("1")),)),))
    config = routing(BASIC + "\nmanagedRoutes: [{name: h}]")
    assert desired(config, CTX, live_with(STABLE), state) == desired(
        config, CTX, live_with(STABLE), RouteState(10))


def test_canary_ingress_name_is_trimmed_to_253_characters():
    long_name = "i" * 260
    name = canary_ingress_name("web", long_name)
    assert len(name) == 253 and name.endswith("-canary") and name.startswith("web-iii")
    assert canary_ingress_name("web", "web-ingress") == "web-web-ingress-canary"


def test_describe_reads_the_canary_weight_of_each_canary_ingress():
    config = routing("nginx: {stableIngresses: [web-ingress, web-internal]}\n"
                     "maxTrafficWeight: 1000")
    live = {key: None for key in reads(config, CTX)}
    live[ingress_key("web-web-ingress-canary")] = {"metadata": {"annotations": {
        "nginx.ingress.kubernetes.io/canary-weight": "300"}}}
    assert describe(config, CTX, live) == [
        RouterWeight("Ingress shop/web-web-ingress-canary",
                     "copy of Ingress web-ingress, weight out of 1000", 300),
        RouterWeight("Ingress shop/web-web-internal-canary",
                     "copy of Ingress web-internal, weight out of 1000", None),
    ]


def test_keep_live_traffic_manages_only_canary_ingresses():
    config = routing(BASIC)
    assert keep_live_traffic(config, CTX, STABLE, STABLE) is None
    git = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "web-web-ingress-canary",
                        "annotations": {"nginx.ingress.kubernetes.io/canary-weight": "100"}}}
    live = {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/canary-weight": "35",
                                         "nginx.ingress.kubernetes.io/canary": "true"}}}
    kept = keep_live_traffic(config, CTX, git, live)
    assert kept["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary-weight": "35",
        "nginx.ingress.kubernetes.io/canary": "true"}
    fresh = keep_live_traffic(config, CTX, git, None)
    assert fresh["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == "0"
