"""The `web` provider: one HTTP request whose JSON answer (or a part of it) is the result.

Matches Argo's fields: `url`, `method` (GET, POST, PUT), `headers: [{key, value}]`, `body` or
`jsonBody`, `timeoutSeconds` (default 10), `jsonPath` (default the whole document), `insecure`.
A body that is not JSON is passed to the conditions as text, as Argo does.

Argo reads `jsonPath` with Kubernetes' JSONPath (`{$.data.ok}`). The templates people write use
only member and index steps, so Coalmine accepts exactly that subset - `{$.a.b}`, `{.a[0]}`,
`$.a['key with.dots']` - and rejects wildcards, filters and recursive descent with a clear error
instead of guessing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from bot.analysis.providers import (
    ProviderError,
    display_url,
    header_list,
    require_http_url,
    send,
    timeout_seconds,
    transport_failure,
)
from bot.egress import Egress

DEFAULT_TIMEOUT_S = 10.0  # Argo's default for web metrics
METHODS = ("GET", "POST", "PUT")

_STEP = re.compile(
    r"""
    \.(?P<name>[A-Za-z_][\w-]*)
    |\[\s*(?P<index>-?\d+)\s*\]
    |\[\s*(?P<quoted>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s*\]
    """,
    re.VERBOSE,
)
PathStep = str | int


def parse_json_path(path: str) -> list[PathStep]:
    """The steps of a JSONPath subset: an optional `{...}` and `$`, then `.key`, `[n]`, `['k']`."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    text = text.removeprefix("$")
    steps: list[PathStep] = []
    position = 0
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise ProviderError(
                f"unsupported jsonPath {path!r} at {text[position:]!r}: Coalmine supports "
                "member and index steps such as {$.data.items[0].value}"
            )
        if match["name"] is not None:
            steps.append(match["name"])
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(json.loads(_as_json_string(match["quoted"])))
        position = match.end()
    return steps


def _as_json_string(quoted: str) -> str:
    if quoted.startswith('"'):
        return quoted
    return '"' + quoted[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'


def extract(document: Any, path: str) -> Any:
    """The value at `path`; ProviderError when the document has nothing there."""
    value = document
    for step in parse_json_path(path):
        if not _has_step(value, step):
            raise ProviderError(f"jsonPath {path!r} matched nothing in the response")
        value = value[step]
    return value


def _has_step(value: Any, step: PathStep) -> bool:
    if isinstance(step, int):
        return isinstance(value, list) and -len(value) <= step < len(value)
    return isinstance(value, dict) and step in value


def fetch_web_metric(spec: Mapping[str, Any], *, egress: Egress) -> Any:
    """Request `spec["url"]` and return the value at `jsonPath` (a JSON value, or the raw text
    when the answer is not JSON). A destination `egress` refuses, non-2xx answers and transport
    failures raise ProviderError."""
    url = require_http_url(spec.get("url"), "provider.web.url")
    method = str(spec.get("method") or "GET").upper()
    if method not in METHODS:
        raise ProviderError(f"provider.web.method must be one of {', '.join(METHODS)}")
    headers = header_list(spec.get("headers"), "provider.web.headers")
    content = _request_body(spec, method, headers)
    timeout = timeout_seconds(
        spec.get("timeoutSeconds"), "provider.web.timeoutSeconds", DEFAULT_TIMEOUT_S
    )
    json_path = spec.get("jsonPath") or "{$}"
    parse_json_path(json_path)  # a bad path is reported without sending the request
    try:
        response = send(egress, method, url, timeout=timeout, insecure=spec.get("insecure"),
                        headers=headers, content=content)
    except httpx.HTTPError as error:
        raise transport_failure(error, "web metric", url, timeout) from None
    if not response.is_success:
        raise ProviderError(f"received HTTP {response.status_code} from {display_url(url)}")
    try:
        document = response.json()
    except ValueError:
        return response.text
    return extract(document, json_path)


def _request_body(spec: Mapping[str, Any], method: str, headers: dict[str, str]) -> bytes | None:
    body, json_body = spec.get("body"), spec.get("jsonBody")
    if body and json_body is not None:
        raise ProviderError("provider.web: use either body or jsonBody, not both")
    if (body or json_body is not None) and method == "GET":
        raise ProviderError("provider.web: a body needs method POST or PUT")
    if json_body is not None:
        if not any(key.lower() == "content-type" for key in headers):
            headers["Content-Type"] = "application/json"
        return json.dumps(json_body).encode()
    return str(body).encode() if body else None
