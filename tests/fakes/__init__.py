"""In-memory recording fakes of the ports use cases receive, for use-case tests.

Each fake answers reads from plain dicts the test fills and records every write, so a test
states the world, runs one use case and compares what was recorded (as bedevere's FakeGH and
Prow's fake clients do). The HTTP fakes in tests/harness serve adapter and end-to-end tests.
"""

from tests.fakes.forge import FakeForge
from tests.fakes.ports import (
    FakeClaims,
    FakeDeployer,
    FakeLock,
    FakeMarkers,
    FakeMirrors,
    FakeRollouts,
    FakeTenants,
)
from tests.fakes.preview import (
    FakeClusters,
    FakePreviewCluster,
    FakeReport,
    FakeSources,
    FakeTree,
)

__all__ = [
    "FakeClaims",
    "FakeClusters",
    "FakeDeployer",
    "FakeForge",
    "FakeLock",
    "FakeMarkers",
    "FakeMirrors",
    "FakePreviewCluster",
    "FakeReport",
    "FakeRollouts",
    "FakeSources",
    "FakeTenants",
    "FakeTree",
]
