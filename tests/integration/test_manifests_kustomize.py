"""Kustomizations rendered through the real `kubectl kustomize` (no cluster needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.manifests import Limits, ManifestError, object_key, render

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")

BASE = {
    "base/kustomization.yaml": "resources:\n- deployment.yaml\n- service.yaml\n",
    "base/deployment.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n"
        "  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n"
        "      labels: {app: web}\n    spec:\n      containers:\n"
        "      - name: web\n        image: registry.example/web:1.0\n"
    ),
    "base/service.yaml": (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n"
        "  selector: {app: web}\n  ports:\n  - port: 80\n"
    ),
}


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def test_overlay_is_rendered_by_kubectl_kustomize(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            **BASE,
            "overlays/prod/kustomization.yml": (
                "namespace: shop\nresources:\n- ../../base\n"
                "images:\n- name: registry.example/web\n  newTag: '2.0'\n"
                "configMapGenerator:\n- name: settings\n  literals: [MODE=prod]\n"
            ),
            # A plain file next to the kustomization is not read on its own.
            "overlays/prod/ignored.yaml": "not: [valid\n",
        },
    )
    objects = render(tmp_path, "overlays/prod")
    keys = {object_key(o)[1:] for o in objects}
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    assert keys == {
        ("Deployment", "shop", "web"),
        ("Service", "shop", "web"),
        ("ConfigMap", "shop", configmap["metadata"]["name"]),
    }
    assert configmap["metadata"]["name"].startswith("settings-")  # kustomize's hash suffix
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/web:2.0"


@pytest.mark.parametrize("name", ["kustomization.yaml", "Kustomization"])
def test_every_kustomization_file_name_is_recognised(tmp_path: Path, name: str) -> None:
    files = dict(BASE)
    files[f"base/{name}"] = files.pop("base/kustomization.yaml") + "namePrefix: k-\n"
    write(tmp_path, files)
    names = sorted(o["metadata"]["name"] for o in render(tmp_path, "base"))
    assert names == ["k-web", "k-web"]


def test_kustomize_failure_carries_its_stderr(tmp_path: Path) -> None:
    # (A missing file is refused before kubectl runs: see test_kustomize_remote.py.)
    write(tmp_path, {
        "app/kustomization.yaml": "resources:\n- nameless.yaml\n",
        "app/nameless.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
    })
    with pytest.raises(ManifestError) as caught:
        render(tmp_path, "app")
    message = str(caught.value)
    assert message.startswith("app: kubectl kustomize failed: ")
    assert "missing metadata.name" in message


def test_kustomize_output_over_the_limit_is_refused(tmp_path: Path) -> None:
    write(tmp_path, BASE)
    with pytest.raises(ManifestError, match="^base: kustomize output is larger than 200 bytes$"):
        render(tmp_path, "base", limits=Limits(max_output_bytes=200))


def test_missing_kubectl_is_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path, BASE)
    missing = str(tmp_path / "no-such-dir" / "kubectl")
    with pytest.raises(ManifestError) as caught:
        render(tmp_path, "base", kubectl=missing)
    assert str(caught.value) == (
        "kubectl is not installed; it is needed to render the kustomization at base"
    )
