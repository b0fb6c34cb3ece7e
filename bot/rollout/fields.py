"""Typed reads of parsed YAML for the strategy readers, failing with the file and key path.

`.coalmine.yaml` canaries, Argo `Rollout`s and `AnalysisTemplate`s are all read by hand from
plain YAML data. Every problem is a StrategyError naming the file, the key path and the reason,
so a person can fix the YAML without reading code:
    deploy/web/rollout.yaml: spec.strategy.canary.steps[2].pause.duration: '5x' is not a
    duration (use 30, "30s", "5m", "1h")
The readers here turn a value into what a key needs (a mapping, a whole number, a duration...)
or raise that error at the position `At` describes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from bot.rollout.durations import DurationError, parse_duration

_WHOLE = re.compile(r"-?\d+")


class StrategyError(ValueError):
    """A strategy or template that Coalmine cannot run, located by file and key path."""

    def __init__(self, file: str, key_path: str, reason: str) -> None:
        super().__init__(file, key_path, reason)
        self.file = file
        self.key_path = key_path
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.file}: {self.key_path}" if self.key_path else self.file
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class At:
    """A position in a YAML document, for error messages."""

    file: str
    path: str

    def key(self, name: str) -> At:
        return At(self.file, f"{self.path}.{name}" if self.path else name)

    def index(self, i: int) -> At:
        return At(self.file, f"{self.path}[{i}]")

    def fail(self, reason: str) -> NoReturn:
        raise StrategyError(self.file, self.path, reason)


def as_mapping(value: Any, at: At, what: str = "a mapping") -> dict[str, Any]:
    if not isinstance(value, dict):
        at.fail(f"must be {what}, got {shown(value)}")
    return value


def as_list(value: Any, at: At, what: str = "a list") -> list[Any]:
    if not isinstance(value, list):
        at.fail(f"must be {what}, got {shown(value)}")
    return value


def as_text(value: Any, at: At) -> str:
    if not isinstance(value, str) or not value.strip():
        at.fail(f"must be a non-empty string, got {shown(value)}")
    return value


def as_whole(value: Any, at: At, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int, or an int written as a string (Argo's IntOrString fields)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None:
        at.fail(f"{shown(value)} is not a whole number")
    if minimum is not None and number < minimum:
        at.fail(f"{number} must be >= {minimum}")
    if maximum is not None and number > maximum:
        at.fail(f"{number} must be <= {maximum}")
    return number


def as_seconds(value: Any, at: At) -> float:
    try:
        return parse_duration(value)
    except DurationError as error:
        at.fail(str(error))


def as_arg_text(value: Any, at: At) -> str:
    """Argument values are strings in Argo; YAML numbers and booleans are taken as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    at.fail(f"must be a string, got {shown(value)}")


def key_names(keys: Iterable[Any]) -> list[str]:
    """Mapping keys as sorted text: YAML keys may be numbers, booleans or null, which neither
    sort among strings nor join into a message."""
    return sorted(map(str, keys))


def shown(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def parse_dry_run(raw: Mapping[str, Any], at: At) -> tuple[str, ...]:
    """`dryRun: [{metricName: regex}]` (a rollout's analysis or a template's spec): the
    metric name regexes whose metrics are measured and shown but never decide the run."""
    return tuple(pattern for pattern, _ in _metric_rules(raw, "dryRun", at, with_limit=False))


def parse_retention(raw: Mapping[str, Any], at: At) -> tuple[tuple[str, int], ...]:
    """`measurementRetention: [{metricName: regex, limit}]`: how many measurements are kept
    for the matching metrics (Argo's default is 10)."""
    return _metric_rules(raw, "measurementRetention", at, with_limit=True)


def _metric_rules(raw: Mapping[str, Any], key: str, at: At,
                  *, with_limit: bool) -> tuple[tuple[str, int], ...]:
    if raw.get(key) is None:
        return ()
    where = at.key(key)
    allowed = {"metricName", "limit"} if with_limit else {"metricName"}
    rules = []
    for i, item in enumerate(as_list(raw[key], where, "a list of {metricName: regex}")):
        item_at = where.index(i)
        item = as_mapping(item, item_at, "a mapping with metricName")
        unknown = key_names(set(item) - allowed)
        if unknown:
            item_at.key(unknown[0]).fail(f"unknown key (allowed: {', '.join(sorted(allowed))})")
        pattern = as_text(item.get("metricName"), item_at.key("metricName"))
        try:
            re.compile(pattern)
        except re.error as error:
            item_at.key("metricName").fail(f"{pattern!r} is not a regular expression: {error}")
        limit = as_whole(item.get("limit"), item_at.key("limit"), 0) if with_limit else 0
        rules.append((pattern, limit))
    return tuple(rules)


def is_argo(doc: Any, kinds: tuple[str, ...]) -> bool:
    """Whether `doc` is an argoproj.io manifest of one of `kinds`."""
    return (
        isinstance(doc, dict)
        and doc.get("kind") in kinds
        and str(doc.get("apiVersion", "")).startswith("argoproj.io/")
    )


def manifest_name(doc: Mapping[str, Any], source: str) -> str:
    """`metadata.name` of a manifest, which every Argo document needs."""
    meta = as_mapping(doc.get("metadata"), At(source, "metadata"))
    return as_text(meta.get("name"), At(source, "metadata.name"))
