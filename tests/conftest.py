"""Registers the shared harness fixtures for every test directory."""

# Imported up front: otherwise hypothesis' pytest plugin imports it at session end, where
# CPython 3.11.7's ast.parse can fail ("AST constructor recursion depth mismatch") after the
# kubernetes client's threads have run, turning a green run red.
import hypothesis  # noqa: F401

pytest_plugins = [
    "tests.harness.fixtures_services",
    "tests.harness.fixtures_git",
    "tests.harness.fixtures_kube",
    "tests.harness.fixtures_forges",
    "tests.harness.fixtures_prometheus",
]
