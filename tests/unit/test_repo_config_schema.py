"""config/coalmine.schema.json, the JSON schema editors use for `.coalmine.yaml`, agrees with
the parser that Coalmine runs (bot/config.py parse_repo_config, bot/rollout/strategy.py and the
readers it calls), so that the two cannot drift apart:

- every example config in the repository (config/examples, the README's `.coalmine.yaml`
  blocks and fragments) is accepted by both;
- the configs in tests/unit/data/repo_configs use every key the schema declares, at every place
  it declares it, and both accept them: the schema lists no key the parser refuses;
- at every mapping of those configs an unknown key is added: where the schema is closed the
  parser refuses it too, and the keys its message allows are the schema's (less the keys Argo
  has that Coalmine reads without effect, which it accepts without listing); where the schema
  is open the parser ignores it too. A key added to the parser and not to the schema (or the
  reverse) fails here, naming the place;
- every canary and blue-green strategy of the Argo Rollouts corpus, made a `.coalmine.yaml`
  strategy, is accepted by both or refused by both;
- values both refuse: a table of mistakes.
"""

from __future__ import annotations

import copy
import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bot.config import ConfigError, parse_repo_config
from bot.rollout import specs

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "config" / "coalmine.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
SINKS = sorted((Path(__file__).parent / "data" / "repo_configs").glob("*.yaml"))
CORPUS = ROOT / "tests" / "data" / "argo-rollouts"
UNKNOWN = "zzUnknown"
STRATEGIES = ("canary", "blueGreen")
# Keys the parser accepts without listing them in its "allowed" message: Argo's fields that
# Coalmine reads without effect (the PR notes them).
QUIET_KEYS = frozenset(specs.IGNORED_KEYS)

Obj = dict[str, Any]
Path_ = tuple[str | int, ...]


# ----------------------------------------------------------------------------- the schema walk


def resolve(pointer: str) -> Any:
    node: Any = SCHEMA
    for part in pointer.removeprefix("#").strip("/").split("/"):
        if part:
            node = node[part]
    return node


def deref(node: Obj, pointer: str) -> tuple[Obj, str]:
    while "$ref" in node:
        pointer = node["$ref"]
        node = resolve(pointer)
    return node, pointer


def forbidden(node: Any) -> bool:
    """A property the schema names only to refuse it (`not: {}`)."""
    return isinstance(node, dict) and node.get("not") == {}


def is_mapping_schema(node: Obj) -> bool:
    return "properties" in node or "additionalProperties" in node


@dataclass(frozen=True)
class Visit:
    """A mapping of a config and the schema that describes it."""

    path: Path_
    pointer: str
    node: Obj
    value: Obj

    @property
    def key_path(self) -> str:
        """The path as the parser's errors write it: apps[0].canary.steps[2]."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text


def walk(value: Any, node: Obj, pointer: str = "#", path: Path_ = ()) -> Iterator[Visit]:
    node, pointer = deref(node, pointer)
    if isinstance(value, dict) and is_mapping_schema(node):
        yield Visit(path, pointer, node, value)
        for key, child in value.items():
            if key in node.get("properties", {}):
                yield from walk(child, node["properties"][key],
                                f"{pointer}/properties/{key}", (*path, key))
            elif isinstance(node.get("additionalProperties"), dict):
                yield from walk(child, node["additionalProperties"],
                                f"{pointer}/additionalProperties", (*path, key))
    elif isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            yield from walk(item, node["items"], f"{pointer}/items", (*path, i))


def declared(node: Any = SCHEMA, pointer: str = "#") -> Iterator[tuple[str, str]]:
    """(pointer, key) of every property the schema declares, except those it refuses."""
    if not isinstance(node, dict) or "$ref" in node:
        return
    for key, child in node.get("properties", {}).items():
        if not forbidden(child):
            yield pointer, key
        yield from declared(child, f"{pointer}/properties/{key}")
    for name, child in node.get("definitions", {}).items():
        yield from declared(child, f"{pointer}/definitions/{name}")
    for key in ("items", "additionalProperties"):
        yield from declared(node.get(key), f"{pointer}/{key}")


# ----------------------------------------------------------------------------- the two readers


def parser_error(config: Any) -> ConfigError | None:
    try:
        parse_repo_config(yaml.safe_dump(config), source=".coalmine.yaml")
    except ConfigError as exc:
        return exc
    return None


def schema_errors(config: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in VALIDATOR.iter_errors(config)]


def load(path: Path) -> Obj:
    return yaml.safe_load(path.read_text())


def allowed_in(reason: str) -> set[str] | None:
    """The keys a parser's "unknown key" message allows, or None when it names none."""
    plugin = re.search(r'no traffic router plugin but "([^"]+)"', reason)
    if plugin:
        return {plugin.group(1)}
    listed = re.search(r"\((?:allowed|supported|known): ([^)]*)\)", reason)
    if listed:
        return {key.strip() for key in listed.group(1).split(",")}
    expected = re.search(r"\(expected ([^)]*)\)", reason)
    if expected:
        return set(re.findall(r"`(\w+)`", expected.group(1)))
    only = re.search(r"takes only (\w+)\)", reason)
    if only:
        return {only.group(1)}
    return None


def with_key(config: Obj, path: Path_, key: str, value: Any) -> Obj:
    changed = copy.deepcopy(config)
    target: Any = changed
    for part in path:
        target = target[part]
    target[key] = value
    return changed


# ----------------------------------------------------------------------------- the tests


def test_the_schema_is_a_valid_draft_7_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def readme_configs() -> list[tuple[str, Obj]]:
    """The README's yaml blocks that are a .coalmine.yaml or a fragment of one (a strategy, or
    a strategy's steps), made whole; its other yaml blocks are server configs or manifests."""
    text = (ROOT / "README.md").read_text()
    found = []
    for number, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.DOTALL), 1):
        doc = yaml.safe_load(textwrap.dedent(block))
        if not isinstance(doc, dict):
            continue
        if "steps" in doc:
            doc = {"canary": {"workload": "Deployment/example", **doc}}
        if set(doc) <= set(STRATEGIES):
            doc = {"apps": [{"name": "example", "path": "deploy", "namespace": "default",
                             **doc}]}
        if "apps" in doc:
            found.append((f"README.md yaml block {number}", doc))
    return found


def example_configs() -> list[tuple[str, Obj]]:
    """config/examples/*.yaml with apps, and every .coalmine.yaml under config/examples."""
    folder = ROOT / "config" / "examples"
    paths = sorted(folder.glob("*.yaml")) + sorted(folder.rglob(".coalmine.yaml"))
    examples = [(str(p.relative_to(ROOT)), load(p)) for p in paths]
    return [(name, doc) for name, doc in examples if isinstance(doc, dict) and "apps" in doc]


EXAMPLES = example_configs() + readme_configs()


def test_the_repository_has_examples_to_check():
    names = [name for name, _ in EXAMPLES]
    assert "config/examples/coalmine.yaml" in names
    assert "config/examples/first-canary/.coalmine.yaml" in names
    assert sum(name.startswith("README.md") for name in names) >= 3


@pytest.mark.parametrize(("name", "config"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_every_example_config_is_valid_for_the_parser_and_the_schema(name, config):
    assert parser_error(config) is None, f"{name}: {parser_error(config)}"
    assert schema_errors(config) == [], name


def test_the_example_config_names_the_schema_for_editors():
    example = ROOT / "config" / "examples" / "coalmine.yaml"
    (line,) = [line for line in example.read_text().splitlines()
               if line.startswith("# yaml-language-server: $schema=")]
    assert (example.parent / line.partition("=")[2]).resolve() == SCHEMA_PATH
    readme = (ROOT / "README.md").read_text()
    assert "# yaml-language-server: $schema=" in readme
    assert "config/coalmine.schema.json" in readme


@pytest.mark.parametrize("sink", SINKS, ids=[p.name for p in SINKS])
def test_the_full_configs_are_valid_for_the_parser_and_the_schema(sink):
    config = load(sink)
    assert parser_error(config) is None, str(parser_error(config))
    assert schema_errors(config) == []


def test_the_full_configs_use_every_key_the_schema_declares():
    used = {(visit.pointer, key) for sink in SINKS for visit in walk(load(sink), SCHEMA)
            for key in visit.value}
    missing = sorted(set(declared()) - used)
    assert missing == [], ("keys of the schema no config in tests/unit/data/repo_configs uses "
                           f"(add them there, where the parser accepts them): {missing}")


def mappings() -> list[tuple[str, Visit, Obj]]:
    found: dict[tuple[str, str], tuple[str, Visit, Obj]] = {}
    for sink in SINKS:
        config = load(sink)
        for visit in walk(config, SCHEMA):
            found.setdefault((visit.pointer, visit.key_path),
                             (f"{sink.name}: {visit.key_path or '(top)'}", visit, config))
    return sorted(found.values(), key=lambda item: item[0])


MAPPINGS = mappings()


@pytest.mark.parametrize(("where", "visit", "config"), MAPPINGS,
                         ids=[where for where, _, _ in MAPPINGS])
def test_schema_and_parser_agree_on_the_keys_of_every_mapping(where, visit, config):
    additional = visit.node.get("additionalProperties", True)
    if isinstance(additional, dict):  # a map: any key, with a value like its others
        sample = next(iter(visit.value.values()), "x")
        changed = with_key(config, visit.path, UNKNOWN, sample)
        assert parser_error(changed) is None, str(parser_error(changed))
        assert schema_errors(changed) == []
        return
    changed = with_key(config, visit.path, UNKNOWN, "x")
    error = parser_error(changed)
    if additional is True:
        assert error is None, f"the parser refuses a key the schema lets through: {error}"
        assert schema_errors(changed) == []
        return
    assert schema_errors(changed), "the schema lets an unknown key through"
    assert error is not None, "the parser lets an unknown key through; close it or open the schema"
    assert error.key == f"{visit.key_path}.{UNKNOWN}" if visit.key_path else UNKNOWN, str(error)
    allowed = allowed_in(error.reason)
    assert allowed is not None, f"no list of allowed keys in {error.reason!r}: teach allowed_in"
    schema_keys = {k for k, v in visit.node["properties"].items() if not forbidden(v)}
    assert allowed - schema_keys == set(), f"{visit.pointer}: the parser allows more"
    assert schema_keys - allowed <= QUIET_KEYS, f"{visit.pointer}: the schema allows more"


def corpus_strategies() -> list[tuple[str, Obj]]:
    found = []
    for path in sorted((CORPUS / "examples").rglob("*.yaml")) + sorted(
            (CORPUS / "docs").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not (isinstance(doc, dict) and doc.get("kind") == "Rollout"):
                continue
            strategy = (doc.get("spec") or {}).get("strategy") or {}
            for kind in STRATEGIES:
                if isinstance(strategy.get(kind), dict):
                    name = (doc.get("metadata") or {}).get("name", "rollout")
                    app = {"name": "example", "path": "deploy", "namespace": "default",
                           kind: {"workload": "Deployment/example", **strategy[kind]}}
                    found.append((f"{path.relative_to(CORPUS)}#{name}.{kind}", {"apps": [app]}))
    return found


CORPUS_STRATEGIES = corpus_strategies()


def test_the_schema_and_the_parser_judge_the_argo_corpus_alike():
    """No false alarm in an editor on a strategy Coalmine runs; and what the corpus has that
    Coalmine refuses (other routers, ping-pong, step plugins, experiment weights, several
    routers) the schema refuses too. A router or key the parser learns must reach the schema."""
    verdicts = {name: (parser_error(config), schema_errors(config))
                for name, config in CORPUS_STRATEGIES}
    accepted = [name for name, (error, _) in verdicts.items() if error is None]
    assert len(accepted) >= 15 and len(verdicts) - len(accepted) >= 10  # still a real corpus
    false_alarms = {name: errors for name, (error, errors) in verdicts.items()
                    if error is None and errors}
    assert false_alarms == {}
    missed = {name: str(error) for name, (error, errors) in verdicts.items()
              if error is not None and not errors}
    assert missed == {}


APP = """
apps:
  - name: web
    path: deploy/web
    namespace: shop
    canary:
      workload: Deployment/web
"""
BASE = APP + """      steps: [{setWeight: 10}, {pause: {}}]
"""
ROUTED = APP + """      canaryService: web-canary
      stableService: web-stable
      trafficRouting: {istio: {virtualService: {name: vs, routes: [primary]}},
                       managedRoutes: [{name: r}]}
      steps: [{setWeight: 10}]
"""
MISTAKES = {
    "no apps": ("apps: []", []),
    "a gate on Coalmine's own status": (BASE, [("gate", {"require": ["coalmine/web"]})]),
    "an unknown content rule": (BASE, [("rules", {"forbidRoot": True})]),
    "a drift rule without pointers": (BASE, [("apps", 0, "ignoreDifferences",
                                              [{"kind": "Deployment"}])]),
    "an app without a namespace": (BASE, [("apps", 0, "namespace", None)]),
    "a name that is no DNS label": (BASE, [("apps", 0, "name", "Web")]),
    "an absolute path": (BASE, [("apps", 0, "path", "/deploy")]),
    "a path out of the repository": (BASE, [("apps", 0, "path", "deploy/../../etc")]),
    "prune that is no boolean": (BASE, [("apps", 0, "prune", "yes")]),
    "a negative health timeout": (BASE, [("apps", 0, "healthTimeoutSeconds", -1)]),
    "two strategies": (BASE, [("apps", 0, "blueGreen", {"workload": "Deployment/web",
                                                         "activeService": "web"})]),
    "a workload that is no Deployment": (BASE, [("apps", 0, "canary", "workload",
                                                 "StatefulSet/web")]),
    "a weight over 100": (BASE, [("apps", 0, "canary", "steps", 0, "setWeight", 101)]),
    "two actions in a step": (BASE, [("apps", 0, "canary", "steps", 0, "pause", {})]),
    "an empty step": (BASE, [("apps", 0, "canary", "steps", 0, "setWeight", None)]),
    "a bad duration": (BASE, [("apps", 0, "canary", "steps", 1, "pause", "duration", "5x")]),
    "a step plugin": (BASE, [("apps", 0, "canary", "steps", 0, "plugin", {"name": "x"})]),
    "ping-pong Services": (BASE, [("apps", 0, "canary", "pingPong", {"pingService": "a"})]),
    "a dry run": (BASE, [("apps", 0, "canary", "steps", 1, "analysis",
                          {"templates": [{"templateName": "t"}],
                           "dryRun": [{"metricName": "m"}]})]),
    "an argument from a field": (BASE, [("apps", 0, "canary", "steps", 1, "analysis",
                                         {"templates": [{"templateName": "t"}],
                                          "args": [{"name": "a", "valueFrom": {}}]})]),
    "an experiment weight": (BASE, [("apps", 0, "canary", "steps", 1, "experiment",
                                     {"templates": [{"name": "b", "specRef": "stable",
                                                     "weight": 5}]})]),
    "an experiment spec that is neither": (BASE, [("apps", 0, "canary", "steps", 1,
                                                   "experiment",
                                                   {"templates": [{"name": "b",
                                                                   "specRef": "main"}]})]),
    "a blue-green without its active Service": (BASE, [
        ("apps", 0, "canary", None), ("apps", 0, "blueGreen", {"workload": "Deployment/web"})]),
    "an ALB router": (ROUTED, [("apps", 0, "canary", "trafficRouting", "alb", {})]),
    "two routers": (ROUTED, [("apps", 0, "canary", "trafficRouting", "smi", {})]),
    "a max traffic weight other than 100": (ROUTED, [
        ("apps", 0, "canary", "trafficRouting", "maxTrafficWeight", 50)]),
    "one and several virtual services": (ROUTED, [
        ("apps", 0, "canary", "trafficRouting", "istio", "virtualServices", [{"name": "v"}])]),
    "two scales at once": (ROUTED, [("apps", 0, "canary", "steps", 0, "setCanaryScale",
                                     {"replicas": 1, "weight": 5})]),
    "a header match of two kinds": (ROUTED, [
        ("apps", 0, "canary", "steps", 0, "setHeaderRoute",
         {"name": "r", "match": [{"headerName": "h",
                                  "headerValue": {"exact": "a", "prefix": "b"}}]})]),
}


def apply(config: Obj, change: tuple[Any, ...]) -> None:
    *path, key, value = change
    target: Any = config
    for part in path:
        target = target[part]
    if value is None:
        target.pop(key)
    else:
        target[key] = value


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_both_refuse_the_same_mistakes(mistake):
    text, changes = MISTAKES[mistake]
    config = yaml.safe_load(text)
    if changes:  # the mistake is the change: the config before it is valid
        assert parser_error(config) is None and schema_errors(config) == []
    for change in changes:
        apply(config, change)
    assert parser_error(config) is not None, "the parser accepts it"
    assert schema_errors(config), "the schema accepts it"
