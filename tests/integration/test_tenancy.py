"""Repository ids pinned to `repos:` entries in Redis: renames keep, look-alikes lose."""

from __future__ import annotations

from redis import Redis

from bot import tenancy
from bot.config import Settings
from bot.forge.base import RepoRef
from bot.policy import Policy

SHOP = Policy(namespaces=("shop",))
WIDE = Policy(namespaces=("*",))


def settings(**repos: Policy) -> Settings:
    return Settings(repos={k.replace("__", "/"): v for k, v in repos.items()})


def ref(name: str, repo_id: int | None = 42, forge: str = "github") -> RepoRef:
    return RepoRef(forge, name, f"https://github.com/{name}.git", repo_id=repo_id)  # type: ignore[arg-type]


def test_unlisted_repositories_are_not_served(redis_client: Redis):
    ok, reason = tenancy.served(settings(acme__gitops=SHOP), redis_client, ref("evil/gitops"))
    assert not ok and "evil/gitops is not served" in reason
    refused = tenancy.resolve(settings(acme__gitops=SHOP), redis_client, "github", 7, "evil/gitops")
    assert isinstance(refused, str)


def test_a_served_repository_is_pinned_by_id_and_keeps_its_policy_after_a_rename(
        redis_client: Redis):
    config = settings(acme__gitops=SHOP, **{"acme__*": WIDE})
    tenant = tenancy.resolve(config, redis_client, "github", 42, "acme/gitops")
    assert isinstance(tenant, tenancy.Tenant) and tenant.policy == SHOP
    # Renamed to a name the broader glob matches: the pin keeps the narrow policy.
    renamed = tenancy.resolve(config, redis_client, "github", 42, "acme/renamed")
    assert isinstance(renamed, tenancy.Tenant) and renamed.entry == "acme/gitops"
    assert renamed.policy == SHOP
    # Renamed out of every entry: still served, at the edge too, under its pinned entry.
    assert tenancy.served(config, redis_client, ref("elsewhere/renamed", 42)) == (True, "")
    moved = tenancy.resolve(config, redis_client, "github", 42, "elsewhere/renamed")
    assert isinstance(moved, tenancy.Tenant) and moved.policy == SHOP


def test_another_repository_taking_an_exact_name_is_refused_until_unpinned(redis_client: Redis):
    config = settings(acme__gitops=SHOP)
    assert isinstance(tenancy.resolve(config, redis_client, "github", 42, "acme/gitops"),
                      tenancy.Tenant)
    impostor = tenancy.resolve(config, redis_client, "github", 99, "acme/gitops")
    assert isinstance(impostor, str) and "first served to repository id 42" in impostor
    assert tenancy.unpin(redis_client, "github", 42)
    assert isinstance(tenancy.resolve(config, redis_client, "github", 99, "acme/gitops"),
                      tenancy.Tenant)


def test_pins_are_per_forge(redis_client: Redis):
    config = settings(acme__gitops=SHOP)
    assert isinstance(tenancy.resolve(config, redis_client, "github", 42, "acme/gitops"),
                      tenancy.Tenant)
    assert isinstance(tenancy.resolve(config, redis_client, "gitlab", 99, "acme/gitops"),
                      tenancy.Tenant)


def test_a_pin_to_an_entry_the_operator_removed_serves_nothing(redis_client: Redis):
    tenancy.resolve(settings(acme__gitops=SHOP), redis_client, "github", 42, "acme/gitops")
    later = settings(acme__other=SHOP)
    assert tenancy.served(later, redis_client, ref("acme/gitops", 42))[0] is False
    assert isinstance(tenancy.resolve(later, redis_client, "github", 42, "acme/gitops"), str)
