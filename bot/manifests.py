"""Turns an app's path at a checked-out commit into the Kubernetes objects it declares.

The repository is input from people with merge rights, not from the bot's operators, so rendering
treats it as untrusted: the app path must stay inside the checkout (no `..`, no symlink leading
out), files have a size limit, and YAML is loaded with a safe loader that also refuses alias
"bombs" (a few anchors referencing each other expand to billions of nodes once serialised) and
recursive structures. A kustomization is rendered by the real `kubectl kustomize`, once every
reference in it is known to be a file of the checkout (bot.kustomize_refs).

Each app also has a total budget (bytes read, YAML nodes composed, objects): one file may be
small, yet many paths to one blob (git stores identical files once, so the push is tiny) or
many files would make the renderer hold gigabytes. Parsed YAML takes ten to forty times its
text in memory, so the budget is checked before each file is read and after each document is
composed, and kustomize's output is read in a stream and cut off at the budget.

Errors name the file, the document (counting from 1) and the reason, for the PR comment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bot.errors import ManifestError
from bot.kustomize_refs import KUSTOMIZATION_FILES, check_kustomizations, read_limited
from bot.yamlload import LoadLimits, documents

YAML_SUFFIXES = (".yaml", ".yml")

# The rendering budget of one app (see the module's docstring).
MAX_RENDER_BYTES = 64 * 1024 * 1024
MAX_RENDER_OBJECTS = 5000
MAX_RENDER_NODES = 1_000_000  # ~100 MiB of parsed objects; real apps use a few ten thousand


@dataclass(frozen=True)
class Limits(LoadLimits):
    """The YAML loader's bounds on one file (bot.yamlload), and rendering's own."""

    max_output_bytes: int = 32 * 1024 * 1024  # what `kubectl kustomize` prints
    kustomize_timeout_s: float = 60.0
    max_app_bytes: int = MAX_RENDER_BYTES  # every file and kustomize output of one app
    max_app_objects: int = MAX_RENDER_OBJECTS
    max_app_nodes: int = MAX_RENDER_NODES  # YAML nodes composed for one app


class _Budget:
    """What one app's rendering may still read and build; ManifestError names the app path,
    the limit and where it was crossed."""

    def __init__(self, app_path: str, limits: Limits) -> None:
        self.app_path, self.limits = app_path, limits
        self.bytes = self.objects = self.nodes = 0

    @property
    def bytes_left(self) -> int:
        return max(self.limits.max_app_bytes - self.bytes, 0)

    def add_bytes(self, count: int, where: str) -> None:
        self.bytes += count
        self._check(self.bytes, self.limits.max_app_bytes, "bytes of YAML", where)

    def add_objects(self, count: int, where: str) -> None:
        self.objects += count
        self._check(self.objects, self.limits.max_app_objects, "objects", where)

    def add_nodes(self, count: int, where: str) -> None:
        self.nodes += count
        self._check(self.nodes, self.limits.max_app_nodes, "YAML nodes", where)

    def _check(self, used: int, limit: int, what: str, where: str) -> None:
        if used > limit:
            raise ManifestError(
                f"{self.app_path}: rendering stopped at {where}: the app's manifests exceed "
                f"the budget of {limit} {what} per app (the same file reached through several "
                "paths counts each time)")


DEFAULT_LIMITS = Limits()

ObjectKey = tuple[str, str, str, str]


def render(
    root: Path, app_path: str, *, kubectl: str = "kubectl", limits: Limits = DEFAULT_LIMITS
) -> list[dict[str, Any]]:
    """The objects under `app_path`; see `render_sourced`."""
    return [obj for obj, _file in render_sourced(root, app_path, kubectl=kubectl, limits=limits)]


def render_sourced(
    root: Path, app_path: str, *, kubectl: str = "kubectl", limits: Limits = DEFAULT_LIMITS
) -> list[tuple[dict[str, Any], str]]:
    """The objects under `app_path` (a directory, a file, or a kustomization) in `root`, each
    with the file it was read from (`kustomize output of <path>` for a kustomization).

    Plain YAML files are read recursively in sorted path order, skipping dot-files and
    dot-directories (`.coalmine.yaml`, `.github/`), so the result is deterministic. `kind: List`
    objects are flattened. Every object is checked for apiVersion, kind and metadata.name, and
    two objects with the same key are refused.
    """
    root = root.resolve()
    target = _resolve_inside(root, app_path)
    budget = _Budget(app_path, limits)
    if target.is_dir() and any((target / name).is_file() for name in KUSTOMIZATION_FILES):
        check_kustomizations(root, target, limits)
        text = _kustomize(root, target, app_path, kubectl, limits, budget)
        objects = _objects_of(text, f"kustomize output of {app_path}", limits, budget)
    elif target.is_file() or target.is_dir():
        objects = []
        for file in _manifest_files(root, target):
            rel = file.relative_to(root).as_posix()
            budget.add_bytes(file.stat().st_size, rel)  # before reading it
            text = read_limited(file, rel, limits)
            objects.extend(_objects_of(text, rel, limits, budget))
    else:
        raise ManifestError(f"{app_path}: no such file or directory at this commit")
    _refuse_duplicates(objects)
    # Each object with the file it came from, for errors about it (a strategy's, say).
    return [(obj, where.partition(": document ")[0]) for obj, where in objects]


def object_key(obj: dict[str, Any]) -> ObjectKey:
    """(apiVersion, kind, namespace, name); namespace is "" when the manifest sets none."""
    meta = obj.get("metadata") or {}
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])


# --- paths ------------------------------------------------------------------------------------


def _resolve_inside(root: Path, app_path: str) -> Path:
    pure = PurePosixPath(app_path)
    if not app_path or pure.is_absolute() or ".." in pure.parts:
        raise ManifestError(
            f"{app_path!r}: the app path must be relative and inside the repository"
        )
    target = (root / pure).resolve()
    if not target.is_relative_to(root):
        raise ManifestError(f"{app_path}: a symlink leads outside the repository")
    return target


def _manifest_files(root: Path, target: Path) -> list[Path]:
    """YAML files under `target`, following symlinks only while they stay inside `root`."""
    if target.is_file():
        return [target]
    found: dict[str, Path] = {}
    visited: set[Path] = set()

    def visit(directory: Path) -> None:
        real = directory.resolve()
        if real in visited:  # a symlink loop, or two links to one directory
            return
        visited.add(real)
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith("."):
                continue
            rel = entry.relative_to(root).as_posix()
            if not entry.resolve().is_relative_to(root):
                raise ManifestError(f"{rel}: a symlink leads outside the repository")
            if entry.is_dir():
                visit(entry)
            elif entry.is_file() and entry.name.endswith(YAML_SUFFIXES):
                found[rel] = entry

    visit(target)
    return [found[rel] for rel in sorted(found)]


# --- kustomize --------------------------------------------------------------------------------


def _kustomize(root: Path, target: Path, app_path: str, kubectl: str, limits: Limits,
               budget: _Budget) -> str:
    """kustomize's output, read in a stream and cut off at the output limit or the budget."""
    executable = shutil.which(kubectl)
    if executable is None:
        raise ManifestError(
            f"kubectl is not installed; it is needed to render the kustomization at {app_path}"
        )
    cap = min(limits.max_output_bytes, budget.bytes_left)
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as stderr, subprocess.Popen(
        [executable, "kustomize", str(target)], cwd=root, stdout=subprocess.PIPE, stderr=stderr,
        env={**os.environ, "KUBECONFIG": os.devnull},
    ) as proc:
        def stop() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(limits.kustomize_timeout_s, stop)
        timer.start()
        try:
            assert proc.stdout is not None
            output = proc.stdout.read(cap + 1)  # never more than the cap in memory
            if len(output) > cap:
                proc.kill()
            returncode = proc.wait()
        finally:
            timer.cancel()
        stderr.seek(0)
        errors = stderr.read(64 * 1024).decode("utf-8", errors="replace").strip()[-2000:]
    if timed_out.is_set():
        raise ManifestError(
            f"{app_path}: kubectl kustomize did not finish in {limits.kustomize_timeout_s:g}s")
    if len(output) > cap and cap == limits.max_output_bytes:
        raise ManifestError(
            f"{app_path}: kustomize output is larger than {limits.max_output_bytes} bytes")
    budget.add_bytes(len(output), f"kustomize output of {app_path}")  # past the budget: raises
    if returncode != 0:
        raise ManifestError(f"{app_path}: kubectl kustomize failed: {errors}")
    return output.decode("utf-8", errors="replace")


def _objects_of(text: str, source: str, limits: Limits,
                budget: _Budget | None = None) -> list[tuple[dict[str, Any], str]]:
    """Validated objects of one file, each with a "file, document n" locator for errors."""
    objects: list[tuple[dict[str, Any], str]] = []
    on_composed = None if budget is None else (lambda nodes: budget.add_nodes(nodes, source))
    for index, doc in documents(text, source, limits, on_composed):
        if doc is None:
            continue
        where = f"{source}: document {index}"
        for obj, item_where in _flatten(doc, where):
            _validate(obj, item_where)
            if budget is not None:
                budget.add_objects(1, item_where)
            objects.append((obj, item_where))
    return objects


def _flatten(doc: Any, where: str) -> Iterator[tuple[Any, str]]:
    if isinstance(doc, dict) and doc.get("kind") == "List":
        items = doc.get("items")
        if not isinstance(items, list):
            raise ManifestError(f"{where}: a List needs an `items` list")
        for position, item in enumerate(items, start=1):
            yield from _flatten(item, f"{where}, item {position}")
    else:
        yield doc, where


def _validate(obj: Any, where: str) -> None:
    if not isinstance(obj, dict):
        raise ManifestError(
            f"{where}: expected a Kubernetes object (a mapping), got {_kind_of(obj)}"
        )
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise ManifestError(f"{where}: `{field}` is missing or not a string")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise ManifestError(f"{where}: `metadata` is missing or not a mapping")
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ManifestError(f"{where}: `metadata.name` is missing or not a string")
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ManifestError(f"{where}: `metadata.namespace` must be a string")


def _kind_of(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _refuse_duplicates(objects: list[tuple[dict[str, Any], str]]) -> None:
    seen: dict[ObjectKey, str] = {}
    for obj, where in objects:
        key = object_key(obj)
        if key in seen:
            _api, kind, namespace, name = key
            shown = f"{kind} {namespace + '/' if namespace else ''}{name}"
            raise ManifestError(f"{where}: {shown} is already defined in {seen[key]}")
        seen[key] = where
