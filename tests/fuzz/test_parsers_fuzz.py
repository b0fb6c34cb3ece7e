"""Repository input under fuzzing: `.coalmine.yaml`, Argo Rollout / AnalysisTemplate manifests and
raw YAML. Each parser either succeeds or raises its own error type naming the file and a key or
reason; any other exception would reach the PR as a crash instead of a fixable message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from bot.config import AppConfig, ConfigError, RepoConfig, parse_repo_config
from bot.manifests import ManifestError, render
from bot.rollout import plan
from bot.rollout.argo_rollout import parse_rollout, rollout_to_deployment
from bot.rollout.argo_templates import parse_analysis_template
from bot.rollout.fields import StrategyError
from bot.yamlload import safe_load_all
from tests.fuzz import FUZZ, json_values, mutated

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
CONFIG_FILE = ".coalmine.yaml"


def _docs(relative: str) -> list[Any]:
    return [d for d in yaml.safe_load_all((EXAMPLES / relative).read_text()) if d]


VALID_CONFIG = yaml.safe_load((EXAMPLES / "coalmine.yaml").read_text())
ROLLOUT = _docs("deploy/shop/rollout.yaml")[0]
TEMPLATES = _docs("deploy/shop/analysis.yaml") + _docs("deploy/web/analysis-templates.yaml")
APP = AppConfig(name="shop", path="deploy/shop", namespace="shop")

# Keys YAML can produce besides strings: numbers, booleans, null, dates. They must not break
# error messages that sort or join key names.
yaml_keys = st.text(max_size=10) | st.integers() | st.booleans() | st.none()
yaml_structures = st.recursive(
    json_values,
    lambda children: st.dictionaries(yaml_keys, children, max_size=4),
    max_leaves=15,
)
yaml_texts = st.text(max_size=300) | st.sampled_from(
    [
        "apps: &a [*a]",
        "a: &a [*a, *a]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c, *c, *c]",
        "apps: !!python/object:os.system {}",
        "apps: !!binary aGVsbG8=",
        "apps:\n  - name: web\n    path: x\n    namespace: shop\n  - 2020-01-01: x",
        "[" * 5000,
        "---\n---\napps: []",
        "\ufeffapps: [{name: web, path: ., namespace: shop}]",
        "apps:\n\t- x",
        "? [a, b]\n: c",
    ]
)


def _located(error: StrategyError, source: str) -> None:
    # The file, then the object when its name is known: "rollout.yaml: Rollout shop".
    assert error.file == source or error.file.startswith(f"{source}: ")
    assert isinstance(error.reason, str) and error.reason.strip()
    assert str(error).startswith(f"{source}: ")


# -- .coalmine.yaml ---------------------------------------------------------------------------


def _parse_config(text: str) -> None:
    try:
        result = parse_repo_config(text)
    except ConfigError as error:
        assert error.source == CONFIG_FILE
        assert isinstance(error.reason, str) and error.reason.strip()
        assert str(error).startswith(f"{CONFIG_FILE}: ")
    else:
        assert isinstance(result, RepoConfig) and result.apps


@FUZZ
@given(text=yaml_texts)
def test_config_parser_on_arbitrary_text(text):
    _parse_config(text)


@FUZZ
@given(doc=yaml_structures)
def test_config_parser_on_arbitrary_structures(doc):
    _parse_config(yaml.safe_dump(doc))


@FUZZ
@given(doc=mutated(VALID_CONFIG))
def test_config_parser_on_mutated_valid_config(doc):
    _parse_config(yaml.safe_dump(doc, allow_unicode=True))


def test_config_with_a_number_key_and_a_text_key_is_a_config_error():
    _parse_config("apps: [{name: web, path: ., namespace: shop}]\n1: x\nb: y\n")


# -- Argo Rollout -----------------------------------------------------------------------------


@FUZZ
@given(doc=mutated(ROLLOUT))
def test_rollout_reader_on_mutated_rollouts(doc):
    source = "deploy/shop/rollout.yaml"
    for read in (parse_rollout, rollout_to_deployment):
        try:
            read(doc, source=source)
        except StrategyError as error:
            _located(error, source)


@FUZZ
@given(doc=mutated(TEMPLATES[0]) | mutated(TEMPLATES[1]) | mutated(TEMPLATES[-1]))
def test_template_reader_on_mutated_templates(doc):
    source = "deploy/shop/analysis.yaml"
    try:
        parse_analysis_template(doc, source=source)
    except StrategyError as error:
        _located(error, source)


@FUZZ
@given(objects=mutated([ROLLOUT, *TEMPLATES[:2]], max_mutations=3))
def test_plan_split_on_mutated_manifests(objects):
    # split() sees objects after render(), which guarantees mappings with apiVersion, kind and
    # metadata.name; only mutants that still pass that check are realistic.
    if not isinstance(objects, list) or not all(_renderable(o) for o in objects):
        return
    try:
        plan.split(objects, APP)
    except StrategyError as error:
        _located(error, f"{APP.path}/")


def _renderable(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and all(isinstance(obj.get(f), str) and obj[f] for f in ("apiVersion", "kind"))
        and isinstance(obj.get("metadata"), dict)
        and isinstance(obj["metadata"].get("name"), str)
        and bool(obj["metadata"]["name"])
    )


# -- YAML and rendering -----------------------------------------------------------------------


@FUZZ
@given(text=yaml_texts)
def test_safe_load_all_on_arbitrary_text(text):
    try:
        docs = safe_load_all(text, "deploy/x.yaml")
    except ManifestError as error:
        assert str(error).startswith("deploy/x.yaml: ")
    else:
        assert isinstance(docs, list)


@FUZZ
@given(text=yaml_texts | yaml_structures.map(yaml.safe_dump))
def test_render_on_arbitrary_file_content(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("repo")
    (root / "app").mkdir()
    (root / "app" / "x.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        objects = render(root, "app")
    except ManifestError as error:
        assert "app/x.yaml" in str(error)
    else:
        assert all(_renderable(o) for o in objects)
