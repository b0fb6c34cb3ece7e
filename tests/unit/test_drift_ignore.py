"""What drift detection leaves out: JSON pointers and the fields a named manager owns."""

from __future__ import annotations

import pytest

from bot.drift.ignore import parse_ignore, without_ignored
from bot.errors import ConfigError
from bot.preview.diff import object_change


def deployment(image: str, replicas: int, managed: list | None = None) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "managedFields": managed or []},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}}}}


def changed(rules, live, answer) -> list[str]:
    change = object_change("Deployment shop/web", without_ignored(live, rules, live),
                           without_ignored(answer, rules, live))
    return [f.path for f in change.fields]


def test_a_json_pointer_is_left_out_of_both_sides():
    rules = parse_ignore([{"group": "apps", "kind": "Deployment",
                           "jsonPointers": ["/spec/replicas"]}], "f", "ignoreDifferences")
    live, answer = deployment("web:2", 5), deployment("web:1", 3)
    assert changed(rules, live, answer) == ["spec.template.spec.containers[name=web].image"]
    assert changed((), live, answer) == ["spec.replicas",
                                         "spec.template.spec.containers[name=web].image"]


def test_a_managers_fields_are_left_out():
    hpa = {"manager": "kube-controller-manager", "operation": "Update",
           "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    edit = {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {
        "f:template": {"f:spec": {"f:containers": {'k:{"name":"web"}': {"f:image": {}}}}}}}}
    live = deployment("web:2", 5, [hpa, edit])
    answer = deployment("web:1", 3)
    rules = parse_ignore([{"kind": "Deployment", "group": "apps",
                           "managedFieldsManagers": ["kube-controller-manager"]}], "f", "k")
    assert changed(rules, live, answer) == ["spec.template.spec.containers[name=web].image"]
    both = parse_ignore([{"kind": "Deployment", "group": "apps", "name": "web",
                          "managedFieldsManagers": ["kube-controller-manager", "kubectl-edit"]}],
                        "f", "k")
    assert changed(both, live, answer) == []
    other = parse_ignore([{"kind": "Deployment", "group": "apps", "name": "api",
                           "jsonPointers": ["/spec"]}], "f", "k")
    assert len(changed(other, live, answer)) == 2  # another object's rule changes nothing


@pytest.mark.parametrize(("raw", "key"), [
    ([{"group": "apps", "jsonPointers": ["/spec"]}], "k[0].kind"),
    ([{"kind": "Deployment"}], "k[0]"),
    ([{"kind": "Deployment", "jsonPointers": ["spec"]}], "k[0].jsonPointers[0]"),
    ([{"kind": "Deployment", "jqPathExpressions": [".spec"]}], "k[0].jqPathExpressions"),
])
def test_mistakes_name_their_key(raw, key):
    with pytest.raises(ConfigError) as caught:
        parse_ignore(raw, "f", "k")
    assert caught.value.key == key
