"""Registers the shared harness fixtures for every test directory."""

pytest_plugins = [
    "tests.harness.fixtures_services",
    "tests.harness.fixtures_git",
    "tests.harness.fixtures_kube",
    "tests.harness.fixtures_forges",
    "tests.harness.fixtures_prometheus",
]
