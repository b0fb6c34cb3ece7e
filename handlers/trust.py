"""What a job started by a PR/MR webhook first learns from the forge API, never the payload.

One webhook secret is shared by every hook a maintainer set up, so anyone holding it can sign
any payload: the payload only says where to look. `confirm` asks the forge for the
repository (its stable id picks the tenant and policy, bot.tenancy), its deploy branch and the
PR's facts; the merge (handlers.merged) and the preview (handlers.preview) then each check
what they need of those facts.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Protocol

from bot import tenancy
from bot.forge.base import ForgeError, PullRequestFacts, RepoFacts
from bot.refs import RepoRef


class Facts(Protocol):
    def repository_facts(self, repo: RepoRef) -> RepoFacts:
        """The repository's id, current name and default branch; ForgeError when unknown."""

    def pull_request_facts(self, repo: RepoRef, number: int) -> PullRequestFacts:
        """The PR's state, branches, commits, as the forge says."""


class TenantResolver(Protocol):
    """Which served repository (and policy) a forge-confirmed repository id is (bot.tenancy)."""

    def resolve(self, forge: str, repo_id: int, full_name: str) -> tenancy.Tenant | str:
        """The tenant, or why the repository is refused."""


class Confirmed(NamedTuple):
    repo: RepoRef  # the payload's, with name, id and default branch from the API
    tenant: tenancy.Tenant
    branch: str  # the deploy branch: the policy's, else the repository's default
    pull: PullRequestFacts


def confirm(repo: RepoRef, number: int, *, forge: Facts,
            tenants: TenantResolver) -> Confirmed | str:
    """The repository, tenant, deploy branch and PR as the forge confirms them, or why not."""
    try:
        facts = forge.repository_facts(repo)
    except ForgeError as exc:
        return f"the forge does not confirm the repository: {exc}"
    tenant = tenants.resolve(repo.forge, facts.id, facts.full_name)
    if isinstance(tenant, str):
        return tenant
    repo = dataclasses.replace(repo, full_name=facts.full_name, repo_id=facts.id,
                               default_branch=facts.default_branch)
    try:
        pull = forge.pull_request_facts(repo, number)
    except ForgeError as exc:
        return f"the forge does not confirm the pull request: {exc}"
    return Confirmed(repo, tenant, tenant.policy.deploy_branch or facts.default_branch, pull)
