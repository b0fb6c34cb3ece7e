"""Deny by default: which repositories the server config serves, and under which entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.policy import Policy
from bot.repos import match, parse_env_entries, parse_key

SOURCE = "/etc/coalmine/config.yaml"


def entries(*keys: str) -> dict[str, Policy]:
    return {key: Policy(namespaces=(f"ns-{i}",)) for i, key in enumerate(keys)}


@pytest.mark.parametrize(
    ("keys", "forge", "name", "chosen"),
    [
        (["acme/gitops"], "github", "acme/gitops", "acme/gitops"),
        (["acme/gitops"], "github", "Acme/GitOps", "acme/gitops"),  # forges ignore case
        (["acme/gitops"], "gitlab", "acme/gitops", "acme/gitops"),  # no prefix: either forge
        (["acme/gitops"], "github", "acme/gitops-2", None),
        (["acme/gitops"], "github", "evil/gitops", None),
        (["acme/*"], "github", "acme/anything", "acme/*"),
        (["acme/*"], "gitlab", "acme/sub/project", None),  # * stays in one segment
        (["acme/**"], "gitlab", "acme/sub/project", "acme/**"),
        (["github:acme/gitops"], "gitlab", "acme/gitops", None),  # pinned to one forge
        (["github:acme/gitops"], "github", "acme/gitops", "github:acme/gitops"),
        (["acme/*", "acme/gitops"], "github", "acme/gitops", "acme/gitops"),  # exact first
        (["acme/*", "acme/git*"], "github", "acme/gitops", "acme/git*"),  # longer glob first
        ([], "github", "acme/gitops", None),  # nothing listed: nothing served
    ],
)
def test_match_is_exact_or_glob_and_most_specific_first(keys, forge, name, chosen):
    found = match(entries(*keys), forge, name)
    assert (found.key if found else None) == chosen


@pytest.mark.parametrize("key", ["gitops", "acme/", "/gitops", "bitbucket:acme/gitops",
                                 "acme/../gitops", "acme/git ops"])
def test_malformed_entry_keys_are_refused_with_the_key(key):
    with pytest.raises(ConfigError) as caught:
        parse_key(key, SOURCE)
    assert caught.value.key == f"repos.{key}"


def test_the_quick_start_variable_names_repositories_and_their_namespaces():
    parsed = parse_env_entries("acme/gitops=shop,staging; acme/other=web", "COALMINE_REPOS",
                               own_namespace=None)
    assert parsed["acme/gitops"].namespaces == ("shop", "staging")
    assert parsed["acme/other"].namespaces == ("web",)


@pytest.mark.parametrize("text", ["acme/gitops", "acme/gitops=", "acme/gitops=kube-system"])
def test_the_quick_start_variable_needs_namespaces_it_may_use(text):
    with pytest.raises(ConfigError) as caught:
        parse_env_entries(text, "COALMINE_REPOS", own_namespace=None)
    assert caught.value.source == "COALMINE_REPOS"


def test_settings_serve_nothing_by_default_and_what_the_variable_names():
    assert load_settings({}).repos == {}
    settings = load_settings({"COALMINE_REPOS": "acme/gitops=shop"})
    assert settings.entry_for("github", "acme/gitops") is not None
    assert settings.entry_for("github", "acme/other") is None


def test_coalmines_own_namespace_is_never_deployable(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("repos:\n  acme/gitops:\n    namespaces: ['*']\n")
    settings = load_settings({"COALMINE_CONFIG": str(config), "COALMINE_NAMESPACE": "coalmine"})
    policy = settings.repos["acme/gitops"]
    assert not policy.allows_namespace("coalmine")
    assert not policy.allows_namespace("kube-system")
    assert policy.allows_namespace("shop")
    with pytest.raises(ConfigError) as caught:
        load_settings({"COALMINE_REPOS": "acme/gitops=coalmine",
                       "COALMINE_NAMESPACE": "coalmine"})
    assert "Coalmine's own namespace" in caught.value.reason


def test_a_repository_in_both_the_file_and_the_variable_is_an_error(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("repos:\n  acme/gitops:\n    namespaces: [shop]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"COALMINE_CONFIG": str(config), "COALMINE_REPOS": "acme/gitops=web"})
    assert caught.value.key == "acme/gitops"


def test_the_data_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings({"COALMINE_DATA_DIR": "var"}).data_dir == str(tmp_path / "var")
    assert Path(load_settings({}).data_dir).is_absolute()


def test_the_redis_password_is_a_secret_to_redact():
    settings = load_settings({"REDIS_URL": "redis://:s3cret-pass@redis:6379/0"})
    assert "s3cret-pass" in settings.secrets()


def test_the_egress_allow_list_comes_from_the_file_and_the_variable(tmp_path: Path):
    config = tmp_path / "server.yaml"
    config.write_text("egress:\n  allow: [prometheus.monitoring.svc]\n")
    settings = load_settings({"COALMINE_CONFIG": str(config),
                              "COALMINE_EGRESS_ALLOW": "10.0.0.0/8"})
    # listed, so it is looked up (and not resolvable on a test machine)
    assert "cannot resolve" in settings.egress.check("http://prometheus.monitoring.svc:9090/")
    assert settings.egress.check("http://10.1.2.3:9090/") is None
    assert "refused" in settings.egress.check("http://192.168.1.1/")


def test_a_duplicate_key_in_the_server_config_is_refused_with_its_line(tmp_path: Path):
    config = tmp_path / "server.yaml"
    config.write_text("repos:\n  acme/x: {namespaces: [a]}\n  acme/x: {namespaces: [b]}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings({"COALMINE_CONFIG": str(config)})
    assert "duplicate key" in str(raised.value) and ":3" in str(raised.value)
