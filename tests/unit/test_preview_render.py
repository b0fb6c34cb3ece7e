"""The preview's pure core: the field-level diff (Secrets by key only), the merge plan, and
the comment within the forge's limit, folded, never cut inside a line."""

from __future__ import annotations

import base64
import copy

from bot.content_rules import RuleViolation
from bot.preview.diff import field_changes, hide_secret_values, object_change
from bot.preview.model import AppPreview, FieldChange, ObjectChange, Preview
from bot.preview.plan import merge_plan
from bot.preview.render import MARKER, render, status_line
from bot.rollout.plan import split
from bot.rollout.strategy import parse_canary_config
from bot.rollout.traffic import as_stable

LIVE = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7", "uid": "u-1",
                 "generation": 3, "managedFields": [{"manager": "coalmine"}],
                 "labels": {"app": "web", "coalmine.dev/revision": "a" * 40},
                 "annotations": {"deployment.kubernetes.io/revision": "3"}},
    "spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}]},
        {"name": "proxy", "image": "envoy:1"}]}}},
    "status": {"readyReplicas": 3},
}


def answer(**spec_changes: object) -> dict:
    new = copy.deepcopy(LIVE)
    new["metadata"]["labels"]["coalmine.dev/revision"] = "b" * 40
    new["metadata"]["resourceVersion"] = "8"
    new["status"] = {}
    new["spec"].update(spec_changes)
    return new


# --------------------------------------------------------------------------- diff


def test_only_per_commit_and_server_fields_differ_so_unchanged() -> None:
    assert object_change("Deployment shop/web", LIVE, answer()) == \
        ObjectChange("Deployment shop/web", "unchanged")


def test_changed_fields_are_named_by_path_with_named_list_items() -> None:
    new = answer(replicas=5)
    new["spec"]["template"]["spec"]["containers"][1]["image"] = "envoy:2"
    change = object_change("Deployment shop/web", LIVE, new)
    assert change.action == "change"
    assert change.fields == (
        FieldChange("spec.replicas", "changed", 3, 5),
        FieldChange("spec.template.spec.containers[name=proxy].image", "changed", "envoy:1",
                    "envoy:2"),
    )


def test_added_and_removed_fields() -> None:
    assert field_changes({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {}, "d": [1]}) == [
        FieldChange("b.c", "removed", before=2), FieldChange("d", "added", after=[1])]


def test_a_new_object_is_created() -> None:
    assert object_change("Deployment shop/web", None, answer()).action == "create"


def secret(**data: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_a_secret_shows_which_keys_change_never_a_value() -> None:
    live = secret(password="old-pass", user="web", gone="x")
    new = {**secret(user="web"), "stringData": {"password": "new-pass", "token": "t0k3n"}}
    change = object_change("Secret shop/db", live, new)
    assert change.fields == (
        FieldChange("data.gone", "removed", hidden=True),
        FieldChange("data.password", "changed", hidden=True),
        FieldChange("data.token", "added", hidden=True),
    )
    body = render(Preview("c" * 40, (AppPreview("web", changes=(change,)),)))
    for value in ("old-pass", "new-pass", "t0k3n", base64.b64encode(b"old-pass").decode()):
        assert value not in body and value not in repr(change)
    assert "! data.password: changed (Secret value hidden)" in body
    created = object_change("Secret shop/db", None, secret(password="p4ss"))
    assert created.fields == (FieldChange("data.password", "added", hidden=True),)


def test_a_servers_error_about_a_secret_is_masked() -> None:
    obj = {**secret(password="p4ss"), "stringData": {"token": "s3cret"}}
    text = 'Secret "db" is invalid: data[password]: "p4ss", token "s3cret", cA== p4ss'
    masked = hide_secret_values(text, obj)
    assert "p4ss" not in masked and "s3cret" not in masked
    assert hide_secret_values("x p4ss", {"kind": "ConfigMap"}) == "x p4ss"


# --------------------------------------------------------------------------- plan


class App:
    name, path, namespace = "web", "deploy/web", "shop"
    canary = parse_canary_config({"workload": "Deployment/web", "steps": [
        {"setWeight": 20}, {"pause": {}}, {"analysis": {"templates": [
            {"templateName": "success-rate"}]}}]}, source=".coalmine.yaml", key="apps[0].canary")


TEMPLATE = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": "success-rate"},
            "spec": {"metrics": [{"name": "ok", "successCondition": "result[0] > 0.9",
                                  "provider": {"prometheus": {"query": "vector(1)"}}}]}}


def workload(image: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}}}}


def test_the_plan_says_plain_apply_or_rollout_with_steps_and_analyses() -> None:
    _, plan = split([workload("web:2"), TEMPLATE], App())
    assert merge_plan(None, None)[0].startswith("plain apply")
    assert "first deploy" in merge_plan(plan, None)[0]
    assert "unchanged" in merge_plan(plan, as_stable(workload("web:2")))[0]
    assert merge_plan(plan, as_stable(workload("web:1"))) == (
        "rollout of Deployment shop/web in 3 step(s), each judged before the next:",
        "1. setWeight 20",
        "2. pause {}",
        "3. analysis success-rate",
        "analysis success-rate: ok succeeds when result[0] > 0.9",
    )


# --------------------------------------------------------------------------- comment


def big_preview(objects: int, fields: int) -> Preview:
    changes = tuple(
        ObjectChange(f"ConfigMap shop/cm-{i}", "change", tuple(
            FieldChange(f"data.key-{j}", "changed", "x" * 80, "y" * 80) for j in range(fields)))
        for i in range(objects))
    return Preview("d" * 40, (AppPreview("web", changes=changes,
                                         plan=("plain apply: every object at once",)),))


def test_a_large_diff_is_folded_and_left_out_whole_within_the_budget() -> None:
    preview = big_preview(objects=400, fields=20)
    full = render(preview, budget=10**9)
    body = render(preview)
    assert len(full) > 60_000 >= len(body)
    assert body.startswith(MARKER)
    full_lines = set(full.splitlines())
    differ = ("left out", "Field-level diff of")  # the counts of what is shown
    assert all(line in full_lines for line in body.splitlines()
               if not any(word in line for word in differ))
    assert "<details><summary>Field-level diff" in body and body.count("```") == 2
    assert "more changed object(s) was left out to fit the comment" in body
    shown = body.count("@@ ConfigMap")
    assert 0 < shown < 400
    assert f"Field-level diff of {shown} object(s)" in body
    # The object list itself is complete up to its cap, with the rest counted.
    assert "- … and 350 more" in body


def test_untrusted_text_cannot_break_out_of_its_block() -> None:
    evil = "```\n</details>\n<!-- coalmine:pr-preview --> @admin"
    change = ObjectChange("ConfigMap shop/x", "change",
                          (FieldChange("data.k", "changed", "a", evil),))
    body = render(Preview("e" * 40, (AppPreview("web", changes=(change,), rules=(
        RuleViolation("deploy/web", "Deployment shop/web", "metadata.labels.x", "requireLabels",
                      "label </details> @admin is required"),)),)))
    assert body.count(MARKER) == 1 and "\n</details>\n<!--" not in body
    assert "````diff" in body  # a longer fence than any backtick run inside
    outside = body.split("````diff")[0] + body.split("````\n")[-1]  # code spans mention nobody
    assert "@admin" not in outside.replace("\\@admin", "")


def test_status_lines() -> None:
    ok = Preview("f" * 40, (AppPreview("web", changes=(ObjectChange("a", "create"),
                                                       ObjectChange("b", "prune")),
                                       plan=("rollout of Deployment shop/web",)),))
    assert status_line(ok) == "web: 1 to create, 1 to prune; starts a rollout"
    assert ok.state == "success"
    bad = Preview("f" * 40, (AppPreview("web", policy=("x",)),
                             AppPreview("api", changes=(ObjectChange("c", "invalid"),))))
    assert bad.state == "failure"
    assert status_line(bad) == ("the merge would fail: web: 1 policy violation(s); "
                                "api: 1 invalid object(s)")
    assert status_line(Preview("f" * 40, no_config=True)).startswith("no .coalmine.yaml")
    assert Preview("f" * 40, config_error="x").state == "failure"
