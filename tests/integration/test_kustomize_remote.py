"""Kustomizations may refer only to files of the checkout: remote bases, resources, components
and chart repositories, and paths leading out of the repository, are refused with file and key
before `kubectl kustomize` runs (it would fetch them: content nobody reviewed, deployed)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.kustomize_refs import check_kustomizations
from bot.manifests import ManifestError, render
from tests.harness.prometheus import CannedHTTPServer

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: b\n"
REFUSED = "is refused: only files of the repository are deployed"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


@pytest.fixture
def remote_manifest(canned_http: CannedHTTPServer) -> Iterator[CannedHTTPServer]:
    """A web server handing out a manifest nobody reviewed."""
    canned_http.reply(200, CONFIGMAP.format(name="unreviewed"), content_type="text/yaml")
    yield canned_http


def test_a_remote_resource_is_refused_and_never_fetched(
    tmp_path: Path, remote_manifest: CannedHTTPServer
) -> None:
    url = remote_manifest.url + "/cm.yaml"
    write(tmp_path, {
        "app/cm.yaml": CONFIGMAP.format(name="local"),
        "app/kustomization.yaml": f"resources:\n- cm.yaml\n- other.yaml\n- {url}\n",
        "app/other.yaml": CONFIGMAP.format(name="other"),
    })
    with pytest.raises(ManifestError) as caught:
        render(tmp_path, "app")
    assert str(caught.value) == (
        f"app/kustomization.yaml: resources[2]: remote resource {url} {REFUSED}"
    )
    assert remote_manifest.requests == []  # kubectl kustomize would have fetched it


def test_a_remote_resource_in_a_base_reached_through_an_overlay_is_refused(
    tmp_path: Path, remote_manifest: CannedHTTPServer
) -> None:
    write(tmp_path, {
        "base/kustomization.yaml": f"resources:\n- {remote_manifest.url}/cm.yaml\n",
        "overlays/prod/kustomization.yml": "namespace: shop\nresources:\n- ../../base\n",
    })
    with pytest.raises(ManifestError, match=r"^base/kustomization.yaml: resources\[0\]: remote"):
        render(tmp_path, "overlays/prod")
    assert remote_manifest.requests == []


@pytest.mark.parametrize(
    ("entry", "label"),
    [
        ("resources:\n- https://github.com/acme/k8s//base?ref=v1.0.0", "resources[0]"),
        ("resources:\n- git@github.com:acme/k8s.git//base", "resources[0]"),
        ("resources:\n- ssh://git@gitlab.example.com/acme/k8s.git", "resources[0]"),
        ("resources:\n- git::https://example.com/k8s.git", "resources[0]"),
        ("resources:\n- github.com/acme/k8s/base?ref=main", "resources[0]"),
        ("resources:\n- github.com/acme/k8s/base", "resources[0]"),
        ("resources:\n- gh:acme/k8s/base", "resources[0]"),
        ("resources:\n- example.org/k8s/base", "resources[0]"),
        ("bases:\n- https://example.com/base", "bases[0]"),
        ("components:\n- https://github.com/acme/components//monitoring", "components[0]"),
        ("crds:\n- https://example.com/crd.yaml", "crds[0]"),
        ("patches:\n- path: https://example.com/patch.yaml", "patches[0].path"),
        ("openapi:\n  path: https://example.com/schema.json", "openapi.path"),
        ("helmCharts:\n- name: redis\n  repo: https://charts.example.com", "helmCharts[0].repo"),
        ("configMapGenerator:\n- name: c\n  files:\n  - k=https://example.com/f",
         "configMapGenerator[0].files[0]"),
    ],
)
def test_remote_references_are_refused_with_file_and_key(
    tmp_path: Path, entry: str, label: str
) -> None:
    write(tmp_path, {"app/kustomization.yaml": entry + "\n"})
    with pytest.raises(ManifestError) as caught:
        check_kustomizations(tmp_path, tmp_path / "app")
    message = str(caught.value)
    assert message.startswith(f"app/kustomization.yaml: {label}: remote resource ")
    assert message.endswith(REFUSED)


def test_credentials_in_a_remote_url_are_not_repeated(tmp_path: Path) -> None:
    write(tmp_path, {"app/kustomization.yaml":
                     "resources:\n- https://bot:s3cret@git.example.com/k8s.git\n"})
    with pytest.raises(ManifestError) as caught:
        check_kustomizations(tmp_path, tmp_path / "app")
    assert "s3cret" not in str(caught.value)
    assert "https://git.example.com/k8s.git" in str(caught.value)


def test_a_chart_repository_in_a_generator_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {
        "app/kustomization.yaml": "generators:\n- chart.yaml\n",
        "app/chart.yaml": ("apiVersion: builtin\nkind: HelmChartInflationGenerator\n"
                           "metadata:\n  name: redis\nrepo: https://charts.example.com\n"),
    })
    with pytest.raises(ManifestError, match=r"^app/chart.yaml: repo: remote resource"):
        check_kustomizations(tmp_path, tmp_path / "app")


@pytest.mark.parametrize(
    ("entry", "label", "reason"),
    [
        ("resources:\n- ../../../outside", "resources[0]", "leads outside the repository"),
        ("resources:\n- /etc/kubernetes/admin.yaml", "resources[0]",
         "leads outside the repository"),
        ("configMapGenerator:\n- name: c\n  files:\n  - passwd=../../etc/passwd",
         "configMapGenerator[0].files[0]", "leads outside the repository"),
        ("secretGenerator:\n- name: s\n  envs:\n  - /proc/self/environ",
         "secretGenerator[0].envs[0]", "leads outside the repository"),
        ("resources:\n- missing.yaml", "resources[0]", "does not exist in the repository"),
    ],
)
def test_paths_must_stay_inside_the_checkout(
    tmp_path: Path, entry: str, label: str, reason: str
) -> None:
    root = tmp_path / "repo"
    write(root, {"app/kustomization.yaml": entry + "\n"})
    with pytest.raises(ManifestError) as caught:
        check_kustomizations(root, root / "app")
    assert str(caught.value).startswith(f"app/kustomization.yaml: {label}: ")
    assert str(caught.value).endswith(reason)


def test_a_symlink_leading_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    secret = write(tmp_path, {"secret/token": "hunter2"}) / "secret"
    write(root, {"app/kustomization.yaml":
                 "configMapGenerator:\n- name: c\n  files:\n  - token=link/token\n"})
    os.symlink(secret, root / "app" / "link")
    with pytest.raises(ManifestError) as caught:
        render(root, "app")
    assert str(caught.value) == (
        "app/kustomization.yaml: configMapGenerator[0].files[0]: link/token is a symlink "
        "leading outside the repository"
    )


def test_local_references_and_inline_patches_still_render(tmp_path: Path) -> None:
    write(tmp_path, {
        "base/kustomization.yaml": "resources:\n- cm.yaml\n",
        "base/cm.yaml": CONFIGMAP.format(name="base"),
        "components/extra/kustomization.yaml": (
            "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
            "resources:\n- extra.yaml\n"),
        "components/extra/extra.yaml": CONFIGMAP.format(name="extra"),
        "app/kustomization.yaml": (
            "resources:\n- ../base\ncomponents:\n- ../components/extra\n"
            "configMapGenerator:\n- name: files\n  files:\n  - app.properties\n"
            "  - renamed=app.properties\n"
            "patches:\n- path: patch.yaml\n- patch: |-\n    apiVersion: v1\n    kind: ConfigMap\n"
            "    metadata:\n      name: extra\n    data:\n      inline: 'yes'\n"
            "patchesStrategicMerge:\n- |-\n  apiVersion: v1\n  kind: ConfigMap\n"
            "  metadata:\n    name: base\n  data:\n    strategic: 'yes'\n"),
        "app/app.properties": "mode=prod\n",
        "app/patch.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: base\n"
                          "data:\n  patched: 'yes'\n",
    })
    objects = {o["metadata"]["name"].split("-")[0]: o for o in render(tmp_path, "app")}
    assert set(objects) == {"base", "extra", "files"}
    assert objects["base"]["data"] == {"a": "b", "patched": "yes", "strategic": "yes"}
    assert objects["extra"]["data"]["inline"] == "yes"
