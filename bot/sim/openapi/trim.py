"""Regenerate github-subset.json from GitHub's full OpenAPI description.

The full description is ~30 MB; the fake only needs the operations Coalmine calls. Keeping just
those (request side only: parameters and request bodies, plus the components they reference)
makes a file small enough to commit and read, while every check still comes from GitHub's text.

Usage (see NOTICE.md for where the input comes from):
    python bot/sim/openapi/trim.py /tmp/package/generated/api.github.com.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPERATIONS: dict[str, tuple[str, ...]] = {
    "/app": ("get",),
    "/app/installations/{installation_id}/access_tokens": ("post",),
    "/user": ("get",),
    "/repos/{owner}/{repo}": ("get",),
    "/repos/{owner}/{repo}/installation": ("get",),
    "/repos/{owner}/{repo}/collaborators/{username}/permission": ("get",),
    "/repos/{owner}/{repo}/statuses/{sha}": ("post",),
    "/repos/{owner}/{repo}/commits/{ref}/status": ("get",),
    "/repos/{owner}/{repo}/commits/{ref}/statuses": ("get",),
    "/repos/{owner}/{repo}/commits/{ref}/check-runs": ("get",),
    "/repos/{owner}/{repo}/check-runs": ("post",),
    "/repos/{owner}/{repo}/check-runs/{check_run_id}": ("get", "patch"),
    "/repos/{owner}/{repo}/issues/{issue_number}/comments": ("get", "post"),
    "/repos/{owner}/{repo}/issues/comments/{comment_id}": ("get", "patch"),
    "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions": ("get", "post"),
    "/repos/{owner}/{repo}/issues/{issue_number}/labels": ("get", "post"),
    "/repos/{owner}/{repo}/pulls": ("get", "post"),
    "/repos/{owner}/{repo}/pulls/{pull_number}": ("get",),
}

# Prose and examples are most of the bulk and carry no rule the fake checks.
DROPPED_KEYS = {"description", "examples", "example", "summary", "externalDocs", "x-github"}


def _strip(node: Any, names: bool = False) -> Any:
    """`node` without prose. The keys of a `properties` mapping are field names, not prose: a
    field called `description` (a status's, a check run action's) keeps its schema."""
    if isinstance(node, dict):
        return {k: _strip(v, names=k == "properties" and not names) for k, v in node.items()
                if names or k not in DROPPED_KEYS}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _trim_operation(operation: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {"operationId": operation["operationId"]}
    if "parameters" in operation:
        kept["parameters"] = _strip(operation["parameters"])
    body = operation.get("requestBody")
    if body:
        kept["requestBody"] = {
            "required": body.get("required", False),
            "content": {
                media: {"schema": _strip(spec["schema"])}
                for media, spec in body["content"].items()
                if "schema" in spec
            },
        }
    # Response bodies are not checked; the codes alone document what the fake may answer.
    kept["responses"] = {code: {"description": ""} for code in operation["responses"]}
    return kept


def trim(full: dict[str, Any]) -> dict[str, Any]:
    paths = {
        path: {method: _trim_operation(full["paths"][path][method]) for method in methods}
        for path, methods in OPERATIONS.items()
    }
    components: dict[str, dict[str, Any]] = {}
    pending = _refs(paths)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, section, name = ref.split("/", 3)
        target = _strip(full["components"][section][name])
        components.setdefault(section, {})[name] = target
        pending |= _refs(target) - seen
    return {
        "openapi": full["openapi"],
        "info": {
            "title": "Subset of " + full["info"]["title"],
            "version": full["info"]["version"],
            "license": full["info"].get("license", {}),
        },
        "paths": paths,
        "components": {s: dict(sorted(c.items())) for s, c in sorted(components.items())},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    full = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    out = Path(__file__).with_name("github-subset.json")
    out.write_text(json.dumps(trim(full), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
