"""What a rendered manifest may hold besides JSON's types, sent through the real client.

YAML gives dates and times for unquoted timestamps and bytes for `!!binary`; the apply body is
encoded by Cluster itself (bot.cluster.client.server_side_apply), not by the client.
"""

from __future__ import annotations

import datetime

import pytest

from bot.cluster.model import ClusterError, Owner

OWNER = Owner("github", 1296269, "acme/gitops", "web")


def apply(cluster, objects):
    return cluster.apply(objects, app="web", revision="abc123", default_namespace="shop",
                         owner=OWNER)


def config_map(**data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
            "data": data}


NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}


def test_yaml_dates_and_times_are_sent_as_iso_strings(kube_cluster):
    when = datetime.datetime(2024, 1, 1, 10, 0, tzinfo=datetime.UTC)
    apply(kube_cluster, [NAMESPACE, config_map(day=datetime.date(2024, 1, 1), at=when)])
    live = kube_cluster.get("v1", "ConfigMap", "shop", "settings")
    assert live["data"] == {"day": "2024-01-01", "at": "2024-01-01T10:00:00+00:00"}


def test_a_value_json_cannot_carry_is_a_cluster_error_naming_the_object(fake_kube, kube_cluster):
    apply(kube_cluster, [NAMESPACE])
    with pytest.raises(ClusterError, match=r"ConfigMap shop/settings: cannot be sent as JSON"):
        apply(kube_cluster, [NAMESPACE, config_map(blob=b"hello")])
    assert kube_cluster.get("v1", "ConfigMap", "shop", "settings") is None
