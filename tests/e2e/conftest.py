"""End-to-end fixtures live in world.py beside the helpers that drive them."""

from tests.e2e.world import (  # noqa: F401
    github_app_world,
    github_world,
    gitlab_world,
    gitops_remote,
)
