"""Duplicate mapping keys are refused with file and line, as kubectl refuses them.

PyYAML keeps the last value silently; a reviewer reading the first `replicas:` or `image:` would
approve something other than what gets applied. The one loader for repository YAML
(bot.manifests) serves manifests, Argo templates/Rollouts (they are rendered manifests) and
`.coalmine.yaml`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import ConfigError, parse_repo_config
from bot.manifests import ManifestError, render
from bot.yamlload import safe_load_all

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  template:
    spec:
      containers:
      - name: web
        image: registry.example/web:1.0
        image: registry.example/web:evil
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", 'f.yaml:3: duplicate key "a" (first at line 1)'),
        ("m:\n  k: 1\n  other: 2\n  k: 3\n", 'f.yaml:4: duplicate key "k" (first at line 2)'),
        ("{a: 1, a: 2}\n", 'f.yaml:1: duplicate key "a" (first at line 1)'),
        ("- x: 1\n  x: 2\n", 'f.yaml:2: duplicate key "x" (first at line 1)'),
        # Lines count through the whole file, so the second document's line is the file's.
        ("a: 1\n---\nb: 1\nb: 2\n", 'f.yaml:4: duplicate key "b" (first at line 3)'),
        ("1: x\n1: y\n", "f.yaml:2: duplicate key 1 (first at line 1)"),
    ],
)
def test_duplicate_keys_are_refused_with_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        safe_load_all(text, "f.yaml")
    assert str(caught.value) == message


def test_merge_keys_may_override_what_they_merge() -> None:
    text = "base: &base {a: 1, b: 2}\nderived:\n  <<: *base\n  a: 3\n"
    assert safe_load_all(text, "f.yaml") == [
        {"base": {"a": 1, "b": 2}, "derived": {"a": 3, "b": 2}}
    ]


def test_equal_keys_in_different_mappings_are_fine() -> None:
    assert safe_load_all("a: {k: 1}\nb: {k: 2}\n", "f.yaml") == [{"a": {"k": 1}, "b": {"k": 2}}]


def test_a_manifest_with_a_repeated_image_is_not_rendered(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "web.yaml").write_text(DEPLOYMENT)
    with pytest.raises(ManifestError) as caught:
        render(tmp_path, "deploy")
    assert str(caught.value) == 'deploy/web.yaml:12: duplicate key "image" (first at line 11)'


def test_repo_config_with_a_repeated_key_is_refused_with_the_line() -> None:
    text = "apps:\n- name: web\n  path: deploy/web\n  namespace: shop\n  namespace: kube-system\n"
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(text)
    message = str(caught.value)
    assert message.startswith(".coalmine.yaml: ")
    assert re.search(r'\b5: duplicate key "namespace" \(first at line 4\)$', message), message
