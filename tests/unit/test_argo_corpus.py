"""What Coalmine's planning makes of Argo Rollouts' own manifests (tests/data/argo-rollouts/).

Every Rollout document of the corpus is planned the way a merge plans an app: the file is
rendered as an app whose path is that file (`bot.manifests.render`), and `bot.rollout.plan.split`
reads its objects with a plain AppSpec (no `.coalmine.yaml` canary). The outcome, accepted or
refused with its reason, must be the one recorded in tests/data/argo-rollouts/expected.yaml.
When Coalmine learns more of Argo (blue-green, traffic routers...), outcomes change on purpose:
run tests/data/argo-rollouts/regen_expected.py and review the diff of expected.yaml.

The app is one file, not its folder: Argo's examples keep one Rollout per file, several in one
folder, and an app with several Rollouts is refused outright. A Rollout naming an analysis
template that its own file does not define gets it from the other corpus files of the same
folder (for docs, the other blocks of the same page), as a repository keeping templates in a
shared file beside its rollouts would; only the templates it names are added, so a sibling's
unrelated or broken documents cannot change its outcome.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.errors import ManifestError
from bot.manifests import render
from bot.rollout.argo_rollout import is_rollout
from bot.rollout.argo_templates import is_analysis_template
from bot.rollout.model import CanaryStrategy
from bot.rollout.plan import split
from bot.rollout.strategy import StrategyError

DATA = Path(__file__).resolve().parents[1] / "data" / "argo-rollouts"
EXPECTED = DATA / "expected.yaml"
ACCEPT = "accept"
Obj = dict[str, Any]


@dataclass(frozen=True)
class CorpusApp:
    """The AppSpec planning reads (see bot.rollout.plan.AppSpec): one corpus file as an app."""

    name: str
    path: str
    namespace: str = "default"
    canary: CanaryStrategy | None = None


@dataclass(frozen=True)
class Case:
    """One Rollout document of the corpus; `id` is its file, `#<name>` added when a file has
    more than one Rollout."""

    id: str
    path: str  # relative to DATA, e.g. examples/rollout-canary.yaml


def corpus_files() -> list[str]:
    return sorted(p.relative_to(DATA).as_posix() for folder in ("examples", "docs")
                  for p in (DATA / folder).rglob("*.yaml"))


def cases() -> list[Case]:
    found = []
    for path in corpus_files():
        rollouts = [d for d in yaml.safe_load_all((DATA / path).read_text()) if is_rollout(d)]
        for position, doc in enumerate(rollouts, start=1):
            name = (doc.get("metadata") or {}).get("name") or position
            found.append(Case(path if len(rollouts) == 1 else f"{path}#{name}", path))
    return found


def template_refs(value: Any) -> Iterator[tuple[str, str]]:
    """(kind, name) of every template a Rollout names, wherever it names one."""
    if isinstance(value, dict):
        if isinstance(value.get("templateName"), str):
            scope = value.get("clusterScope") is True
            yield ("ClusterAnalysisTemplate" if scope else "AnalysisTemplate",
                   value["templateName"])
        for child in value.values():
            yield from template_refs(child)
    elif isinstance(value, list):
        for child in value:
            yield from template_refs(child)


def app_objects(path: str) -> list[Obj]:
    """The file's objects as its app renders them, plus the templates its Rollouts name that
    only other files of its folder define (the first such file, in path order, wins)."""
    objects = render(DATA, path)
    have = {(o["kind"], o["metadata"]["name"]) for o in objects if is_analysis_template(o)}
    wanted = {ref for o in objects if is_rollout(o) for ref in template_refs(o)} - have
    folder = Path(path).parent
    for sibling in corpus_files():
        if not wanted:
            break
        if Path(sibling).parent != folder or sibling == path:
            continue
        try:
            templates = [o for o in render(DATA, sibling) if is_analysis_template(o)]
        except ManifestError:
            continue  # a sibling that is no app of its own lends nothing
        for template in templates:
            key = (template["kind"], template["metadata"]["name"])
            if key in wanted:
                objects.append(template)
                wanted.discard(key)
    return objects


def plan(case: Case) -> StrategyError | ManifestError | None:
    """None when the app is accepted, else the error that refuses it."""
    try:
        objects = app_objects(case.path)
        # Every object named after the app's file (siblings' templates included), as
        # render_sourced would name a one-file app's.
        split(objects, CorpusApp(name=Path(case.path).stem, path=case.path),
              [case.path] * len(objects))
    except (StrategyError, ManifestError) as error:
        return error
    return None


def outcome(error: StrategyError | ManifestError | None) -> str | dict[str, str]:
    """As expected.yaml records it: `accept`, or {refuse: <the error less its file name>}."""
    if error is None:
        return ACCEPT
    if isinstance(error, StrategyError):
        return {"refuse": f"{error.key_path}: {error.reason}"}
    return {"refuse": str(error).split(": ", 1)[1]}


@functools.cache
def expected() -> dict[str, Any]:
    return yaml.safe_load(EXPECTED.read_text()) or {}


CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_planning_a_rollout_of_the_corpus_gives_the_expected_outcome(case: Case) -> None:
    wanted = expected()
    assert case.id in wanted, (
        f"{case.id} is not in expected.yaml: run tests/data/argo-rollouts/regen_expected.py")
    error = plan(case)
    want = wanted[case.id]
    if want == ACCEPT:
        assert error is None, f"expected accept, got: {error}"
        return
    assert error is not None, f"expected a refusal ({want['refuse']}), but it was accepted"
    assert want["refuse"] in str(error)
    assert str(error).startswith(case.path), "a refusal names the file"
    if isinstance(error, StrategyError):
        assert error.key_path, "a refusal names the key path"
    else:
        assert ": document " in str(error), "a refusal names the document"


def test_expected_lists_no_document_that_is_gone() -> None:
    gone = sorted(set(expected()) - {case.id for case in CASES})
    assert gone == [], "expected.yaml lists Rollouts no longer in the corpus: run regen_expected.py"


def test_the_corpus_has_rollouts_of_both_origins() -> None:
    """Guards the collection itself: an emptied folder would make the tests above vacuous."""
    origins = {case.path.split("/")[0] for case in CASES}
    assert origins == {"examples", "docs"} and len(CASES) >= 30
