"""Rendering plain YAML app paths: order, documents, Lists, validation and the safety limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.manifests import Limits, ManifestError, object_key, render
from bot.yamlload import safe_load_all


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def obj(kind: str, name: str, namespace: str | None = None, api: str = "v1") -> str:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    return f"apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}{ns}\n"


def names(objects: list[dict]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]


def test_reads_every_yaml_file_recursively_in_sorted_path_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "deploy/web/z-service.yml": obj("Service", "web"),
            "deploy/web/a/deployment.yaml": obj("Deployment", "web", api="apps/v1"),
            "deploy/web/b.yaml": obj("ConfigMap", "b"),
            "deploy/web/notes.txt": "not a manifest",
            "deploy/web/.hidden.yaml": "broken: [",
            "deploy/web/.git/config.yaml": "broken: [",
            "deploy/other/x.yaml": obj("ConfigMap", "other"),
        },
    )
    objects = render(tmp_path, "deploy/web")
    # "a/deployment.yaml" sorts after "a" and before "b.yaml"; dot-files are skipped.
    assert names(objects) == ["Deployment/web", "ConfigMap/b", "Service/web"]


def test_multi_document_files_skip_empty_documents(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "app/all.yaml": "---\n"
            + obj("ConfigMap", "one")
            + "---\n---\n# only a comment\n---\n"
            + obj("ConfigMap", "two")
            + "...\n"
        },
    )
    assert names(render(tmp_path, "app")) == ["ConfigMap/one", "ConfigMap/two"]


def test_a_single_file_path_is_rendered_alone(tmp_path: Path) -> None:
    write(tmp_path, {"app/one.yaml": obj("ConfigMap", "one"), "app/two.yaml": obj("Secret", "s")})
    assert names(render(tmp_path, "app/one.yaml")) == ["ConfigMap/one"]


def test_root_path_skips_the_repo_config(tmp_path: Path) -> None:
    write(tmp_path, {".coalmine.yaml": "apps: []\n", "cm.yaml": obj("ConfigMap", "root")})
    assert names(render(tmp_path, ".")) == ["ConfigMap/root"]


def test_list_objects_are_flattened(tmp_path: Path) -> None:
    text = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n"
        "- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: web, namespace: shop}\n"
    )
    write(tmp_path, {"app/list.yaml": text + "---\n" + obj("Service", "web")})
    objects = render(tmp_path, "app")
    assert names(objects) == ["ConfigMap/a", "Deployment/web", "Service/web"]
    assert object_key(objects[1]) == ("apps/v1", "Deployment", "shop", "web")
    assert object_key(objects[0]) == ("v1", "ConfigMap", "", "a")


def test_argo_rollout_objects_are_returned_like_any_other(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "app/rollout.yaml": obj("Rollout", "web", api="argoproj.io/v1alpha1"),
            "app/analysis.yaml": obj(
                "AnalysisTemplate", "success-rate", api="argoproj.io/v1alpha1"
            ),
        },
    )
    assert names(render(tmp_path, "app")) == ["AnalysisTemplate/success-rate", "Rollout/web"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "- a\n- b\n",
            "app/bad.yaml: document 2: expected a Kubernetes object (a mapping), got a list",
        ),
        ("kind: ConfigMap\nmetadata: {name: x}\n", "document 2: `apiVersion` is missing"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "document 2: `kind` is missing"),
        ("apiVersion: v1\nkind: ConfigMap\n", "document 2: `metadata` is missing or not a mapping"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: x-}\n",
            "document 2: `metadata.name` is missing",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: [a]}\n",
            "`metadata.namespace` must be a string",
        ),
        (
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: X\n  metadata: {}\n",
            "app/bad.yaml: document 2, item 1: `metadata.name` is missing",
        ),
        ("apiVersion: v1\nkind: List\nitems: {}\n", "document 2: a List needs an `items` list"),
        ("a: [unclosed\n", "app/bad.yaml: document 2: invalid YAML"),
        ("just text\n", "document 2: expected a Kubernetes object (a mapping), got a string"),
    ],
)
def test_bad_documents_name_file_document_and_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    write(tmp_path, {"app/bad.yaml": obj("ConfigMap", "fine") + "---\n" + text})
    with pytest.raises(ManifestError) as caught:
        render(tmp_path, "app")
    assert expected in str(caught.value)


def test_unsafe_yaml_tags_are_refused(tmp_path: Path) -> None:
    write(tmp_path, {"app/evil.yaml": "!!python/object/apply:os.system ['true']\n"})
    with pytest.raises(ManifestError, match="app/evil.yaml: document 1: invalid YAML"):
        render(tmp_path, "app")


def test_duplicate_objects_are_refused_naming_both_places(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"app/a.yaml": obj("ConfigMap", "x", "shop"), "app/b.yaml": obj("ConfigMap", "x", "shop")},
    )
    with pytest.raises(ManifestError) as caught:
        render(tmp_path, "app")
    assert str(caught.value) == (
        "app/b.yaml: document 1: ConfigMap shop/x is already defined in app/a.yaml: document 1"
    )


@pytest.mark.parametrize("app_path", ["../outside", "app/../../outside", "/etc", ""])
def test_paths_leaving_the_checkout_are_refused(tmp_path: Path, app_path: str) -> None:
    root = write(tmp_path / "repo", {"app/a.yaml": obj("ConfigMap", "a")})
    write(tmp_path, {"outside/secret.yaml": obj("Secret", "stolen")})
    with pytest.raises(ManifestError, match="must be relative and inside the repository"):
        render(root, app_path)


def test_app_path_symlink_escaping_the_checkout_is_refused(tmp_path: Path) -> None:
    root = write(tmp_path / "repo", {"app/a.yaml": obj("ConfigMap", "a")})
    write(tmp_path, {"outside/secret.yaml": obj("Secret", "stolen")})
    os.symlink(tmp_path / "outside", root / "link")
    with pytest.raises(ManifestError, match="link: a symlink leads outside the repository"):
        render(root, "link")


@pytest.mark.parametrize("link_target", ["file", "dir"])
def test_symlinks_inside_the_tree_escaping_are_refused(tmp_path: Path, link_target: str) -> None:
    root = write(tmp_path / "repo", {"app/a.yaml": obj("ConfigMap", "a")})
    write(tmp_path, {"outside/secret.yaml": obj("Secret", "stolen")})
    source = tmp_path / "outside" / ("secret.yaml" if link_target == "file" else "")
    os.symlink(source, root / "app" / ("b.yaml" if link_target == "file" else "sub"))
    with pytest.raises(ManifestError, match="a symlink leads outside the repository"):
        render(root, "app")


def test_symlinks_staying_inside_are_followed_once(tmp_path: Path) -> None:
    root = write(
        tmp_path, {"base/cm.yaml": obj("ConfigMap", "shared"), "app/a.yaml": obj("Service", "a")}
    )
    os.symlink(root / "base", root / "app" / "base")
    os.symlink(root / "app", root / "app" / "loop")  # a cycle must not hang the walk
    assert names(render(root, "app")) == ["Service/a", "ConfigMap/shared"]


def test_missing_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="deploy/none: no such file or directory"):
        render(tmp_path, "deploy/none")


BOMB = "".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]\n"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)]
)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"app/bomb.yaml": obj("ConfigMap", "ok") + "---\n" + BOMB})
    with pytest.raises(ManifestError) as caught:
        render(tmp_path, "app")
    assert "app/bomb.yaml: document 2: refused: aliases expand the document" in str(caught.value)


def test_modest_anchors_and_merge_keys_are_allowed(tmp_path: Path) -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  labels: &labels {app: web}\n"
        "  annotations:\n    <<: *labels\n    extra: 'yes'\ndata: *labels\n"
    )
    write(tmp_path, {"app/cm.yaml": text})
    [cm] = render(tmp_path, "app")
    assert cm["metadata"]["annotations"] == {"app": "web", "extra": "yes"}
    assert cm["data"] == {"app": "web"}


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(ManifestError, match="x.yaml: document 1: refused: .* refers to itself"):
        safe_load_all("a: &a [1, *a]\n", "x.yaml")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(ManifestError, match="refused: nested deeper than 100 levels"):
        safe_load_all("[" * 500 + "]" * 500, "x.yaml")


def test_files_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    big = obj("ConfigMap", "big") + "data:\n  blob: '" + "x" * 2000 + "'\n"
    write(tmp_path, {"app/big.yaml": big})
    with pytest.raises(
        ManifestError, match=r"app/big.yaml: \d+ bytes is more than the 1000 allowed"
    ):
        render(tmp_path, "app", limits=Limits(max_file_bytes=1000))
    assert (
        render(tmp_path, "app", limits=Limits(max_file_bytes=4000))[0]["metadata"]["name"] == "big"
    )


def test_safe_load_all_keeps_empty_documents_and_prefixes_errors() -> None:
    assert safe_load_all("a: 1\n---\n---\nb: 2\n", "cfg.yaml") == [{"a": 1}, None, {"b": 2}]
    with pytest.raises(ManifestError, match="^cfg.yaml: document 1: invalid YAML"):
        safe_load_all("a: [\n", "cfg.yaml")
    with pytest.raises(ManifestError, match="^cfg.yaml: larger than the 10 bytes"):
        safe_load_all("a: 12345678901\n", "cfg.yaml", Limits(max_file_bytes=10))
