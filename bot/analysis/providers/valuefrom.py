"""Arguments valued from the cluster, filled in just before a measurement, never stored.

A metric resolved when its run started still holds `{{args.x}}` for each argument whose value
comes from the cluster (`MetricSpec.value_from`). The shell calls `resolve` on the measuring
thread, as the repository's account, and `fill` the metric's provider and conditions with the
result; the filled copy lives only in that thread's memory for the one measurement.

- `secretKeyRef {name, key}`: the key of a Secret in the rollout's namespace (as Argo reads it,
  at each measurement: a rotated secret is picked up). Its value is a secret: every value read
  is registered with the process's log redactor and masked in the measurement's message and
  value before the measurement leaves the thread, so it reaches neither Redis (the job that
  hands the measurement back, the rollout's state), nor the PR comment, the commit status or
  the worker's log. What the rollout's state keeps is the placeholder.
- `fieldRef {fieldPath}`: read from the rollout's workload as Git declares it (the Deployment
  an Argo Rollout becomes keeps its name, namespace, labels, annotations, replicas, selector and
  pod template), as Argo reads the Rollout: `metadata.name|namespace|labels|annotations`, one
  label or annotation (`metadata.labels['app']`, empty when absent), `metadata.uid` (of the live
  stable Deployment, the object that stands for the Rollout in the cluster), and `spec.*` paths
  walked through the workload, which must end in a plain value.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from bot.analysis.measurement import Measurement
from bot.analysis.providers import ProviderError
from bot.analysis.templates import FIELD_REF, SECRET_KEY_REF, ValueFrom, substitute, substitute_all
from bot.cluster.model import ClusterError

Obj = dict[str, Any]
MASK = "*****"  # Argo's mask for secret values in measurement messages
_SUBSCRIPT = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")
_SECTIONS = re.compile(r"[.\[\]]+")


class SecretReader(Protocol):
    """The one read valueFrom makes: a Secret, as the repository's account."""

    def get(self, api_version: str, kind: str, namespace: str | None,
            name: str) -> Obj | None: ...


def resolve(value_from: Iterable[tuple[str, ValueFrom]], *, cluster: SecretReader,
            namespace: str, workload: Mapping[str, Any], live: Mapping[str, Any] | None
            ) -> tuple[dict[str, str], list[str]]:
    """(argument values, the secret ones among them). ProviderError says what is missing,
    never a value."""
    values: dict[str, str] = {}
    secrets: list[str] = []
    for name, source in value_from:
        if source[0] == SECRET_KEY_REF:
            values[name] = read_secret(cluster, namespace, source[1], source[2])
            secrets.append(values[name])
        elif source[0] == FIELD_REF:
            values[name] = field_value(source[1], workload, namespace, live)
        else:
            raise ProviderError(f"argument '{name}': unknown valueFrom {source[0]!r}")
    return values, secrets


def read_secret(cluster: SecretReader, namespace: str, name: str, key: str) -> str:
    try:
        secret = cluster.get("v1", "Secret", namespace, name)
    except ClusterError as error:
        raise ProviderError(f"cannot read secret '{name}' in namespace {namespace}: "
                            f"{error}") from None
    if secret is None:
        raise ProviderError(f"secret '{name}' not found in namespace {namespace}")
    data = secret.get("data") or {}
    if key not in data:
        raise ProviderError(f"key '{key}' does not exist in secret '{name}'")
    try:
        return base64.b64decode(data[key], validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError, TypeError):
        raise ProviderError(f"key '{key}' of secret '{name}' is not base64 data") from None


def field_value(path: str, workload: Mapping[str, Any], namespace: str,
                live: Mapping[str, Any] | None) -> str:
    """`path` read from the workload, formatted as Kubernetes' fieldpath formats it."""
    meta = workload.get("metadata") or {}
    simple = {
        "metadata.name": lambda: str(meta.get("name", "")),
        "metadata.namespace": lambda: str(meta.get("namespace") or namespace),
        "metadata.uid": lambda: str(((live or {}).get("metadata") or {}).get("uid", "")),
        "metadata.labels": lambda: _format_map(meta.get("labels") or {}),
        "metadata.annotations": lambda: _format_map(meta.get("annotations") or {}),
    }
    if path in simple:
        return simple[path]()
    subscript = _SUBSCRIPT.fullmatch(path)
    if subscript:
        return str((meta.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    return _walk(workload, path)


def _format_map(values: Mapping[str, Any]) -> str:
    """Kubernetes' FormatMap: `key="value"` lines, sorted by key."""
    return "\n".join(f"{k}={json.dumps(str(values[k]))}" for k in sorted(values))


def _walk(obj: Any, path: str) -> str:
    """A path such as `spec.template.spec.containers[0].image` (Argo's extractValueFromRollout)."""
    for section in filter(None, _SECTIONS.split(path)):
        if isinstance(obj, list):
            if not section.isdigit() or int(section) >= len(obj):
                raise ProviderError(f"fieldRef {path}: invalid index '{section}'")
            obj = obj[int(section)]
        elif isinstance(obj, Mapping):
            obj = obj.get(section)
        else:
            obj = None
            break
    if obj is None:
        raise ProviderError(f"fieldRef {path}: not found in the workload")
    if isinstance(obj, Mapping | list):
        raise ProviderError(f"fieldRef {path}: must end in a plain value")
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return str(obj)


def fill(provider: Mapping[str, Any], success: str, failure: str,
         values: Mapping[str, str]) -> tuple[dict[str, Any], str, str]:
    """The provider and conditions with the cluster-valued placeholders filled in."""
    return (substitute_all(dict(provider), values), substitute(success, values),
            substitute(failure, values))


def mask(measurement: Measurement, secrets: Iterable[str]) -> Measurement:
    """`measurement` with every secret value masked in its message and value (Argo masks the
    message; the value is masked too, in case a provider echoed the secret)."""
    message, value = measurement.message, measurement.value
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        message = message.replace(secret, MASK)
        value = value.replace(secret, MASK) if value is not None else None
    if (message, value) == (measurement.message, measurement.value):
        return measurement
    return replace(measurement, value=value, message=message)
