"""deploy/grafana-coalmine.json stays in step with bot/metrics.py: every query names a series
Coalmine exposes, and the real Prometheus accepts every query (a typo is a 400 there)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import Counter, Histogram

from bot import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-coalmine.json"


def _queries() -> Iterator[str]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]


def _exposed() -> set[str]:
    names = {"coalmine_rollouts"}
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(value._name + "_total")
        elif isinstance(value, Histogram):
            names.update(value._name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_every_query_names_an_exposed_series():
    used = {name for query in _queries() for name in re.findall(r"coalmine_[a-z_]+", query)}
    assert used and used <= _exposed(), used - _exposed()


def test_every_family_is_on_the_dashboard():
    used = {name for query in _queries() for name in re.findall(r"coalmine_[a-z_]+", query)}
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in _exposed()}
    assert families <= {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}


def test_prometheus_accepts_every_query(prometheus):
    for query in _queries():
        # Grafana fills the template variables in before sending.
        prometheus.query(query.replace("$repo", ".*").replace("$app", ".*"))
