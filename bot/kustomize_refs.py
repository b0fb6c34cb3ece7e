"""What a kustomization may refer to: files of the checkout only, nothing remote.

`kubectl kustomize` fetches remote bases, resources and components (git URLs, plain http, Helm
chart repositories), and reads any path it is given; content that never went through review
would then be deployed. So before bot.manifests runs it, every kustomization reachable from the
app path is read and each reference must be a file or directory of the checkout (like Flux's
--no-remote-bases). ManifestError names the file, the key and the reference, with any
credentials in a URL left out.

`read_limited` is the size-limited read of one repository file that bot.manifests uses too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from bot.errors import ManifestError
from bot.yamlload import DEFAULT_LIMITS, LoadLimits, safe_load_all

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

_REMOTE = re.compile(
    r"""^(?:[a-z][a-z0-9+.-]*::)?[a-z][a-z0-9+.-]*://   # https://, ssh://, file://, git::https://
    |^[\w.-]+@[\w.-]+:                                  # scp-like git@github.com:org/repo
    |^gh:                                               # kustomize's GitHub shorthand
    |\?                                                 # ?ref=, ?version=, ?timeout=
    |.//                                                # repo//subdirectory of git URLs
    """,
    re.IGNORECASE | re.VERBOSE,
)
_FORGE_HOST = re.compile(
    r"^(?:github\.com|gitlab\.com|bitbucket\.org|dev\.azure\.com|[\w-]+\.visualstudio\.com)/",
    re.IGNORECASE,
)
_DOMAIN_LIKE = re.compile(r"^[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}/", re.IGNORECASE)
_USERINFO = re.compile(r"//[^/@]*@")
# Keys whose string entries are paths (directories may hold further kustomizations).
_PATH_LISTS = ("resources", "bases", "components", "crds", "configurations")
# Keys whose string entries are paths, or inline YAML when they span lines.
_PATH_OR_INLINE_LISTS = ("generators", "transformers", "validators", "patchesStrategicMerge")
# Keys whose entries are mappings with an optional `path`.
_ENTRIES_WITH_PATH = ("patches", "patchesJson6902", "replacements")


def check_kustomizations(root: Path, target: Path, limits: LoadLimits = DEFAULT_LIMITS) -> None:
    """Refuse remote or escaping references in the kustomization at `target` and in every
    kustomization it reaches. ManifestError names the file, the key and the reference."""
    pending, visited = [target], set()
    while pending:
        directory = pending.pop()
        if directory in visited:
            continue
        visited.add(directory)
        found = _kustomization_file(root, directory)
        if found is not None:
            pending.extend(_referenced_directories(root, found, limits))


def _kustomization_file(root: Path, directory: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            if not candidate.resolve().is_relative_to(root):
                rel = candidate.relative_to(root).as_posix()
                raise ManifestError(f"{rel}: a symlink leads outside the repository")
            return candidate
    return None


def _referenced_directories(root: Path, file: Path, limits: LoadLimits) -> list[Path]:
    """Checks every reference of one kustomization; returns the directories it refers to."""
    rel = file.relative_to(root).as_posix()
    docs = [d for d in safe_load_all(read_limited(file, rel, limits), rel, limits) if d]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ManifestError(f"{rel}: a kustomization must be one YAML mapping")
    directories = []
    for label, reference in _references(docs[0]):
        path = _local_reference(root, file, rel, label, reference)
        if path.is_dir():
            directories.append(path)
        elif label.startswith(("generators", "transformers", "validators")):
            _refuse_remote_charts_in_file(root, path, limits)
    return directories


def _references(kustomization: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(key, reference) for every path a kustomization names; remote charts are refused here."""
    for key in _PATH_LISTS:
        for index, item in enumerate(_as_list(kustomization.get(key))):
            yield f"{key}[{index}]", item
    for key in _PATH_OR_INLINE_LISTS:
        for index, item in enumerate(_as_list(kustomization.get(key))):
            if not (isinstance(item, str) and ("\n" in item or item.lstrip().startswith("{"))):
                yield f"{key}[{index}]", item
    for key in _ENTRIES_WITH_PATH:
        for index, item in enumerate(_as_list(kustomization.get(key))):
            if isinstance(item, dict) and "path" in item:
                yield f"{key}[{index}].path", item["path"]
    for key in ("configMapGenerator", "secretGenerator"):
        for index, item in enumerate(_as_list(kustomization.get(key))):
            if isinstance(item, dict):
                yield from _generator_sources(f"{key}[{index}]", item)
    openapi = kustomization.get("openapi")
    if isinstance(openapi, dict) and "path" in openapi:
        yield "openapi.path", openapi["path"]
    yield from _helm_references(kustomization, "")


def _generator_sources(label: str, generator: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for index, source in enumerate(_as_list(generator.get("files"))):
        # `key=path` names the key the file's content is stored under.
        path = (source.partition("=")[2] or source) if isinstance(source, str) else source
        yield f"{label}.files[{index}]", path
    for index, source in enumerate(_as_list(generator.get("envs"))):
        yield f"{label}.envs[{index}]", source
    if "env" in generator:
        yield f"{label}.env", generator["env"]


def _helm_references(config: dict[str, Any], where: str) -> Iterator[tuple[str, Any]]:
    """Helm charts are fetched from their `repo`; only charts inside the checkout may be used."""
    for index, chart in enumerate(_as_list(config.get("helmCharts"))):
        if isinstance(chart, dict):
            label = f"{where}helmCharts[{index}]"
            if chart.get("repo"):
                yield f"{label}.repo", _Remote(str(chart["repo"]))
            if "valuesFile" in chart:
                yield f"{label}.valuesFile", chart["valuesFile"]
            for position, values in enumerate(_as_list(chart.get("additionalValuesFiles"))):
                yield f"{label}.additionalValuesFiles[{position}]", values
    for key in ("repo", "chartRepoUrl"):  # a HelmChartInflationGenerator's own fields
        if config.get(key):
            yield f"{where}{key}", _Remote(str(config[key]))
    helm_globals = config.get("helmGlobals")
    if isinstance(helm_globals, dict):
        for key in ("chartHome", "configHome"):
            if key in helm_globals:
                yield f"{where}helmGlobals.{key}", helm_globals[key]


class _Remote(str):
    """A value that is remote by what its key means (a chart repository), whatever it looks like."""


def _refuse_remote_charts_in_file(root: Path, file: Path, limits: LoadLimits) -> None:
    """A generator or transformer file may configure a chart inflation with a `repo`."""
    rel = file.relative_to(root).as_posix()
    for doc in safe_load_all(read_limited(file, rel, limits), rel, limits):
        if isinstance(doc, dict):
            for label, reference in _helm_references(doc, ""):
                if isinstance(reference, _Remote):
                    _refuse_remote(rel, label, reference)


def _local_reference(root: Path, file: Path, rel: str, label: str, reference: Any) -> Path:
    """The file or directory `reference` names, which must be inside the checkout."""
    if not isinstance(reference, str) or not reference.strip():
        raise ManifestError(f"{rel}: {label}: must be a path of the repository")
    if isinstance(reference, _Remote) or _REMOTE.search(reference) or _FORGE_HOST.match(reference):
        _refuse_remote(rel, label, reference)
    pure = PurePosixPath(reference)
    lexical = Path(os.path.normpath(file.parent / pure))
    if pure.is_absolute() or not lexical.is_relative_to(root):
        raise ManifestError(f"{rel}: {label}: {reference} leads outside the repository")
    if not lexical.resolve().is_relative_to(root):
        raise ManifestError(
            f"{rel}: {label}: {reference} is a symlink leading outside the repository"
        )
    if not lexical.exists():
        if _DOMAIN_LIKE.match(reference):
            _refuse_remote(rel, label, reference)
        raise ManifestError(f"{rel}: {label}: {reference} does not exist in the repository")
    return lexical


def _refuse_remote(rel: str, label: str, reference: str) -> None:
    shown = _USERINFO.sub("//", str(reference))
    raise ManifestError(
        f"{rel}: {label}: remote resource {shown} is refused: only files of the repository "
        "are deployed"
    )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def read_limited(file: Path, rel: str, limits: LoadLimits) -> str:
    """The text of one repository file, refused when larger than one file may be or not UTF-8."""
    size = file.stat().st_size
    if size > limits.max_file_bytes:
        raise ManifestError(
            f"{rel}: {size} bytes is more than the {limits.max_file_bytes} allowed for one file"
        )
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{rel}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
