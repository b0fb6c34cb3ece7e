"""End-to-end fixtures live in world.py beside the helpers that drive them."""

from tests.e2e.world import github_world, gitlab_world, gitops_remote  # noqa: F401
