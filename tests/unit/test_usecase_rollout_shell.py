"""The rollout shell with in-memory ports: what each engine decision does to the cluster.

No Redis, forge or harness: `run` gets a FakeCluster and a FakeRecordStore as arguments, and the
tests read what was written to them. The clock is fixed; the fake cluster makes a written
Deployment ready at once unless told otherwise.
"""

from __future__ import annotations

import pytest

from bot.cluster.apply import labelled
from bot.cluster.model import Owner
from bot.rollout import model as m
from bot.rollout import traffic
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord
from tests.fakes.cluster import FakeCluster, FakeRecordStore
from tests.fakes.rollout_world import KEY, REPO, RolloutDriver

T0 = 1_800_000_000.0
CANARY = "web" + traffic.CANARY_SUFFIX


def deployment(image: str, replicas: int | None = 4) -> dict:
    spec = {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": image}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"}, "spec": spec}


class World(RolloutDriver):
    """One app mid-rollout: stable `web:1` live with 4 pods, Git asking for `web:2`."""

    def __init__(self, steps: tuple, **cluster: set[str]) -> None:
        live = deployment("web:1")
        self.cluster = FakeCluster(**cluster)
        self.cluster.objects["web"] = live
        self.store = FakeRecordStore()
        new = deployment("web:2")
        context = RolloutContext(
            repo=REPO, number=42, app="web", namespace="shop", deployment=new,
            stable=traffic.stable_at(live, 4), replicas=traffic.rollout_replicas(new, live),
            template_hash=traffic.template_hash(new))
        strategy = m.CanaryStrategy(workload=m.WorkloadRef("Deployment", "web"), steps=steps,
                                    progress_deadline_seconds=300)
        state = m.new_state(app="web", revision="b" * 40, stable_revision="a" * 40, pr=42,
                            strategy=strategy)
        self.record = RolloutRecord(state, context)
        self.now = T0


WEIGHTS = (m.SetWeightStep(25), m.PauseStep(None))


@pytest.mark.parametrize(("weight", "canary_pods", "stable_pods"),
                         [(25, 1, 3), (50, 2, 2), (100, 4, 1)])
def test_a_weight_step_creates_the_canary_and_scales_stable(weight, canary_pods, stable_pods):
    world = World((m.SetWeightStep(weight), m.PauseStep(None)))
    world.send(m.Start())
    assert world.cluster.replicas(CANARY) == canary_pods
    assert world.cluster.image(CANARY) == "web:2"
    assert world.cluster.replicas("web") == stable_pods and world.cluster.image("web") == "web:1"
    assert world.state.phase == "Paused"  # healthy at once, now at the indefinite pause
    assert world.store.saved[KEY] is world.record


def test_promotion_gives_stable_the_new_template_and_removes_the_canary():
    world = World(WEIGHTS)
    world.send(m.Start())
    world.send(m.Promote("alice"))
    assert world.state.phase == "Promoted"
    assert world.cluster.image("web") == "web:2" and world.cluster.replicas("web") == 4
    assert CANARY not in world.cluster.objects
    assert world.record.context.stable_touched


def test_abort_scales_stable_back_removes_the_canary_and_holds_the_template():
    world = World(WEIGHTS)
    world.send(m.Start())
    shell = world.send(m.Abort(user="bob"))
    assert world.state.phase == "Aborted"
    assert world.cluster.replicas("web") == 4 and world.cluster.image("web") == "web:1"
    assert CANARY not in world.cluster.objects
    # Stable was never given the new template, so it is only scaled, not re-applied.
    assert not [c for c in world.cluster.calls if c[:2] == ("apply", "web")]
    assert shell.revert and world.record.context.revert == {"state": "pending"}
    assert world.store.holds[KEY] == (world.record.context.template_hash, 42)


def test_abort_during_completion_restores_the_old_stable_template():
    world = World(WEIGHTS, unready=set())
    world.send(m.Start())
    world.cluster.unready.add("web")  # the new stable never becomes ready
    world.send(m.Promote("alice"))
    assert world.state.phase == "Completing" and world.cluster.image("web") == "web:2"
    world.send(m.Abort(user="bob"))
    assert world.cluster.image("web") == "web:1" and world.cluster.replicas("web") == 4
    assert world.cluster.calls[-2:] == [("scale", "web", 4), ("delete", CANARY)]


@pytest.mark.parametrize("refused", ["apply", "scale", "delete"])
def test_a_refused_restore_is_remembered_for_the_retry_job(refused):
    world = World(WEIGHTS)
    world.send(m.Start())
    world.cluster.refuse.add(refused)
    shell = world.send(m.Abort(user="bob"))
    if refused == "apply":  # stable was not touched, so nothing is applied: restore succeeds
        assert not shell.restore_retry and world.record.context.restore_pending is None
    else:
        assert shell.restore_retry
        assert f"{refused} refused" in (world.record.context.restore_pending or "")
    assert world.state.phase == "Aborted"


def test_a_failed_canary_aborts_at_once():
    world = World(WEIGHTS, failing={CANARY})
    world.send(m.Start())
    assert world.state.phase == "Aborted"
    assert world.state.aborted_reason.startswith("canary is Degraded")
    assert CANARY not in world.cluster.objects and world.cluster.replicas("web") == 4


def test_an_unready_canary_is_waited_for_and_polled_again():
    world = World(WEIGHTS, unready={CANARY})
    shell = world.send(m.Start())
    assert world.state.phase == "Progressing" and world.state.awaiting_health
    assert "canary" in world.state.health_message
    assert shell.ticks and shell.ticks[-1].at == world.state.health_poll_at
    world.cluster.unready.clear()
    world.cluster.objects[CANARY]["status"]["availableReplicas"] = 1
    world.cluster.objects[CANARY]["status"]["updatedReplicas"] = 1
    world.now = world.state.health_poll_at
    world.send(m.Tick(world.state.version))
    assert world.state.phase == "Paused" and not world.state.awaiting_health


def test_a_refused_weight_change_is_retried_not_judged():
    world = World(WEIGHTS, refuse={"apply"})
    world.send(m.Start())
    assert world.state.phase == "Progressing"
    assert world.state.health_message.startswith("the cluster refused the change")


@pytest.mark.parametrize(("starts_canary", "canary_left"), [(True, True), (False, False)])
def test_a_superseding_merge_removes_the_canary_only_when_none_follows(starts_canary,
                                                                       canary_left):
    world = World(WEIGHTS)
    world.send(m.Start())
    world.send(m.NewRevision("c" * 40, 43, starts_canary=starts_canary))
    assert world.state.phase == "Superseded"
    assert (CANARY in world.cluster.objects) is canary_left


def test_retry_after_an_abort_clears_the_hold():
    world = World(WEIGHTS)
    world.send(m.Start())
    world.send(m.Abort(user="bob"))
    assert KEY in world.store.holds
    world.send(m.Retry("bob"))
    assert world.state.phase == "Paused" and KEY not in world.store.holds
    assert world.cluster.replicas(CANARY) == 1


def test_a_rejected_command_becomes_a_reply():
    world = World(WEIGHTS)
    world.send(m.Start())
    shell = world.send(m.Resume("carol"))
    assert shell.replies == [
        "@carol `/resume` changed nothing: not paused by a user (waiting for /promote)"]


def test_an_hpa_managed_workload_keeps_the_live_replica_count():
    live = deployment("web:1", replicas=6)
    assert traffic.rollout_replicas(deployment("web:2", replicas=None), live) == 6
    assert traffic.rollout_replicas(deployment("web:2", replicas=3), live) == 3


def test_another_apps_deployment_named_like_the_canary_is_never_deleted():
    """Attack: in a namespace two apps share, app A's workload is `web`, so its canary is
    `web-canary`, which is the name of app B's own Deployment. The apply refuses to overwrite
    B's object (its owner labels fence it); the abort and clean-up that follow derive the same
    name and must not delete it either."""
    world = World(WEIGHTS)
    theirs = labelled(deployment("payments:3") | {"metadata": {"name": CANARY,
                                                               "namespace": "shop"}},
                      Owner("github", 99, "acme/payments", "payments"), "c" * 40)
    world.cluster.put(theirs)
    world.send(m.Start())
    assert world.cluster.image(CANARY) == "payments:3", "the apply was refused"
    world.send(m.Abort(user="bob"))
    assert world.state.phase == "Aborted"
    assert world.cluster.image(CANARY) == "payments:3", "the other app's Deployment stays"
    assert ("delete", CANARY) not in world.cluster.calls
    assert world.cluster.replicas("web") == 4 and world.cluster.image("web") == "web:1"


def test_the_canary_is_deleted_as_the_very_object_that_was_read():
    """The delete carries the uid and resourceVersion it checked, so an object put there
    between the look and the delete (another owner's) is not the one deleted."""
    world = World(WEIGHTS)
    world.send(m.Start())
    world.cluster.objects[CANARY]["metadata"].update(uid="u-1", resourceVersion="7")
    world.send(m.Abort(user="bob"))
    assert CANARY not in world.cluster.objects
    assert world.cluster.delete_preconditions == {CANARY: {"uid": "u-1", "resourceVersion": "7"}}
