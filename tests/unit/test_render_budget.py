"""The rendering budget of one app: bytes read, YAML nodes composed and objects, in total.

Each file may be small; what the budget stops is the sum, such as eight paths to one 1 MiB
blob (git stores the blob once, so the push is tiny, but each path is parsed again).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bot.manifests import (
    MAX_RENDER_BYTES,
    MAX_RENDER_OBJECTS,
    Limits,
    ManifestError,
    render,
)

ONE_MIB = 1024 * 1024


def config_map(name: str, value: str = "x") -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: {value}\n"


def dense_blob() -> str:
    """Just under 1 MiB of YAML that composes ~500 000 nodes: one ConfigMap whose data is a
    flow sequence of one-letter strings (within the per-file limit, so only the sum is
    refused)."""
    head = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: blob}\ndata:\n  k: ["
    count = (ONE_MIB - len(head) - 2) // 2
    return head + ",".join("a" for _ in range(count)) + "]\n"


def test_the_budget_constants():
    assert MAX_RENDER_BYTES == 64 * ONE_MIB
    assert MAX_RENDER_OBJECTS == 5000


def test_eight_paths_to_one_blob_are_refused_before_all_are_read(tmp_path: Path):
    app = tmp_path / "deploy" / "web"
    app.mkdir(parents=True)
    (app / "a-blob.yaml").write_text(dense_blob())
    assert (app / "a-blob.yaml").stat().st_size <= ONE_MIB
    for i in range(4):
        os.link(app / "a-blob.yaml", app / f"b-hard-{i}.yaml")
    for i in range(3):
        (app / f"c-soft-{i}.yaml").symlink_to("a-blob.yaml")

    with pytest.raises(ManifestError) as refused:
        render(tmp_path, "deploy/web")
    message = str(refused.value)
    assert message.startswith("deploy/web: rendering stopped at deploy/web/b-hard-0.yaml: ")
    assert "budget of 1000000 YAML nodes per app" in message


def test_too_many_objects_are_refused_naming_the_app_and_the_limit(tmp_path: Path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "one.yaml").write_text("---\n".join(config_map(f"c{i}") for i in range(6)))
    (app / "two.yaml").write_text("---\n".join(config_map(f"d{i}") for i in range(6)))
    with pytest.raises(ManifestError, match=(
            r"^app: rendering stopped at app/two.yaml: document 5: the app's manifests exceed "
            r"the budget of 10 objects per app")):
        render(tmp_path, "app", limits=Limits(max_app_objects=10))
    assert len(render(tmp_path, "app", limits=Limits(max_app_objects=12))) == 12


def test_too_many_bytes_are_refused_before_the_file_is_read(tmp_path: Path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "a.yaml").write_text(config_map("a", "x" * 500))
    (app / "b.yaml").write_text(config_map("b", "x" * 500))
    with pytest.raises(ManifestError, match=(
            r"^app: rendering stopped at app/b.yaml: the app's manifests exceed the budget of "
            r"1000 bytes of YAML per app")):
        render(tmp_path, "app", limits=Limits(max_app_bytes=1000))


def test_the_budget_is_per_render(tmp_path: Path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "a.yaml").write_text(config_map("a", "x" * 500))
    limits = Limits(max_app_bytes=1000)
    for _ in range(3):  # each render (each app, each merge) starts with the whole budget
        assert len(render(tmp_path, "app", limits=limits)) == 1


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
def test_kustomize_output_is_cut_off_at_the_budget(tmp_path: Path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "cm.yaml").write_text(config_map("cm", "y" * 3000))
    (app / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
    with pytest.raises(ManifestError, match=(
            r"^app: rendering stopped at kustomize output of app: the app's manifests exceed "
            r"the budget of 1000 bytes of YAML per app")):
        render(tmp_path, "app", limits=Limits(max_app_bytes=1000))
    assert render(tmp_path, "app", limits=Limits(max_app_bytes=10_000))[0]["metadata"] == {
        "name": "cm"}
