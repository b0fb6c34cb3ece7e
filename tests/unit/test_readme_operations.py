"""What the README tells an operator holds: the "First canary" example repository passes
`coalmine check` and is what its commands edit, and every message the "Troubleshooting" table
quotes is one the code really writes (string constants read from the source with `ast`, so a
reworded message fails here until the table follows)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from bot import checks

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
FIRST_CANARY = ROOT / "config" / "examples" / "first-canary"
PLACEHOLDER = "\0"  # where an f-string puts a value


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.DOTALL | re.MULTILINE)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def source_strings() -> list[str]:
    """Every string literal of bot/, handlers/ and .ci/constraints, implicit concatenations
    joined, an f-string's values replaced by a placeholder."""
    files = [*ROOT.glob("bot/**/*.py"), *ROOT.glob("handlers/**/*.py"),
             ROOT / ".ci" / "constraints"]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                found.append("".join(part.value if isinstance(part, ast.Constant)
                                     else PLACEHOLDER for part in node.values))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
    return found


STRINGS = source_strings()
# Fragments of the messages the table quotes, each within one literal run of its source.
QUOTED = [
    "signature does not match",
    "GitHub webhooks are disabled: GITHUB_WEBHOOK_SECRET is not set",
    "missing or wrong X-Gitlab-Token",
    "is not served by this Coalmine (list it under repos: in the server config)",
    ", not the deploy branch ",
    ": nothing to deploy",
    " is not read): nothing to deploy",
    " is not in allowKinds",
    " matches denyKinds entry ",
    ("exists and is not managed by Coalmine (set adopt: true in the repository's policy to take "
    "it over)"),
    "kubectl is not installed; it is needed to render the kustomization at ",
    "analysis inconclusive (",
    "); /promote or /abort",
    ": no data",
    " refused by the egress policy: ",
    "allow it under egress.allow",
    "progress deadline exceeded (",
    " s) waiting for ",
    "the embedded queue (no REDIS_URL) runs in one process, and process ",
    ("the embedded queue (no REDIS_URL) cannot be copied into a forked process (gunicorn "
    "--preload); "),
    "coalmine serve: starting 1 worker, not ",
    "coalmine worker: REDIS_URL is not set; ",
    ": configuration error: ",
    " must be one of ",
    " holds a live heartbeat key in Redis",
    "worker: Redis unreachable: ",
    "constraints.txt differs from .venv",
]


@pytest.mark.parametrize("fragment", QUOTED)
def test_the_troubleshooting_table_quotes_messages_the_code_writes(fragment):
    assert any(fragment in text for text in STRINGS), f"no message in the code has {fragment!r}"
    table = section("Troubleshooting")
    assert fragment.strip(" ;:(),") in table, f"the table does not quote {fragment!r}"


def test_the_troubleshooting_table_has_three_columns_on_every_row():
    rows = [line for line in section("Troubleshooting").splitlines() if line.startswith("|")]
    assert rows[0] == "| symptom | cause | fix |"
    assert len(rows) >= 20
    for row in rows:
        assert len(re.findall(r"(?<!\\)\|", row.replace("`|`", ""))) == 4, row


def test_the_first_canary_repository_checks_clean():
    assert checks.check_repo(FIRST_CANARY) == []


def test_the_first_canary_commands_match_the_example_repository():
    walkthrough = section("First canary")
    podinfo = (FIRST_CANARY / "deploy" / "podinfo" / "podinfo.yaml").read_text()
    # The good release replaces this image, the bad one extends this command line.
    (image,) = re.findall(r"sed -i 's/(podinfo:[\d.]+)/", walkthrough)
    assert f"ghcr.io/stefanprodan/{image}" in podinfo
    assert '"--port=9898"]' in podinfo and "'s/\"--port=9898\"\\]/" in walkthrough
    config = yaml.safe_load((FIRST_CANARY / ".coalmine.yaml").read_text())
    (app,) = config["apps"]
    assert f"kubectl create namespace {app['namespace']}" in walkthrough
    assert f"COALMINE_REPOS=<your-login>/first-canary={app['namespace']}" in walkthrough
    assert "config/examples/first-canary/. ." in walkthrough
    assert "config/coalmine.schema.json ." in walkthrough
    # The analysis reads the track label the Prometheus chart makes of coalmine.dev/track.
    analysis = (FIRST_CANARY / "deploy" / "podinfo" / "analysis.yaml").read_text()
    assert 'coalmine_dev_track="canary"' in analysis and "coalmine_dev_track" in walkthrough
