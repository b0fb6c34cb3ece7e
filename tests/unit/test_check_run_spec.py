"""What an app's check run shows, from the same section the PR comment renders: buttons while the
rollout runs or waits, a conclusion and no buttons once it is final; GitHub's limits kept."""

from __future__ import annotations

import pytest

from bot.forge.base import CheckAction, CheckRunSpec
from bot.forge.github_payloads import check_run_body
from bot.report import check_runs, comment
from bot.rollout.engine import advance, status
from bot.rollout.model import (
    Abort,
    CanaryStrategy,
    NewRevision,
    PauseStep,
    Promote,
    RolloutState,
    SetWeightStep,
    Start,
    WorkloadHealth,
    WorkloadRef,
    new_state,
)

T0 = 1_700_000_000.0
URL = "https://coalmine.test/deployments/github/org/app/commits/a1b2c3d/apps/web"


def paused_rollout() -> RolloutState:
    """A canary at 20 % waiting for someone on an indefinite pause step."""
    state = new_state(app="web", revision="a1b2c3d4e5", stable_revision="0f0f0f0", pr=7,
                      strategy=CanaryStrategy(workload=WorkloadRef("Deployment", "web"),
                                              steps=(SetWeightStep(20), PauseStep(None),
                                                     SetWeightStep(60))))
    state, _ = advance(state, Start(), T0)
    state, _ = advance(state, WorkloadHealth(ok=True, weight=state.weight), T0 + 5)
    assert state.phase == "Paused"
    return state


def section(state: RolloutState) -> dict:
    """The app's section as handlers.rollout_report.publish_section writes it."""
    posted = status(state)
    return {"app": "web", "sha": state.revision, "state": posted[0], "summary": posted[1],
            "rollout": state.to_dict(), "revert": None, "traffic": []}


def test_a_paused_rollout_is_in_progress_with_the_three_buttons():
    spec = check_runs.spec_for("web", section(paused_rollout()), URL)
    assert (spec.name, spec.status, spec.conclusion) == ("coalmine/web", "in_progress", None)
    assert [a.identifier for a in spec.actions] == ["promote", "promote-full", "abort"]
    assert [a.label for a in spec.actions] == ["Promote", "Promote fully", "Abort"]
    assert spec.details_url == URL and spec.title == status(paused_rollout())[1]


def test_the_summary_is_the_comment_section_of_the_app():
    data = section(paused_rollout())
    spec = check_runs.spec_for("web", data, URL)
    assert spec.summary == "\n".join(comment.app_details("web", data))
    assert "20%" in spec.summary and "pause" in spec.summary.lower()  # steps and weights


@pytest.mark.parametrize(("event", "conclusion"), [
    (Promote("alice"), "success"),
    (Abort("alice", "aborted by @alice"), "cancelled"),
    (Abort(None, "analysis failed"), "failure"),
    (NewRevision("f" * 40, pr=8), "neutral"),
])
def test_a_finished_rollout_is_completed_with_its_conclusion_and_no_buttons(event, conclusion):
    state, _ = advance(paused_rollout(), event, T0 + 10)
    if isinstance(event, Promote):  # to the last step, then healthy: promoted
        state, _ = advance(state, WorkloadHealth(ok=True, weight=state.weight), T0 + 11)
        state, _ = advance(state, WorkloadHealth(ok=True, weight=state.weight), T0 + 12)
    assert state.phase in ("Promoted", "Aborted", "Superseded"), state.phase
    spec = check_runs.spec_for("web", section(state), URL)
    assert (spec.status, spec.conclusion, spec.actions) == ("completed", conclusion, ())


def test_a_plain_deploy_has_no_buttons():
    applying = {"app": "api", "sha": "a1b2c3d", "state": "pending", "summary": "applying"}
    assert check_runs.spec_for("api", applying, None).actions == ()
    done = check_runs.spec_for("api", {**applying, "state": "success", "summary": "applied"}, None)
    failed = check_runs.spec_for("api", {**applying, "state": "failure", "error": "boom"}, None)
    assert (done.status, done.conclusion, failed.conclusion) == ("completed", "success", "failure")


def test_the_rows_that_are_not_apps_get_no_check_run():
    assert check_runs.is_app_section("web")
    assert not check_runs.is_app_section("(repository)")
    assert not check_runs.is_app_section("(CI gate)")


def test_buttons_within_githubs_limits_and_over_them_refused():
    for action in check_runs.ACTIONS:  # built once at import: within 20 / 40 / 20 characters
        assert len(action.label) <= 20 and len(action.description) <= 40
    with pytest.raises(ValueError, match="label"):
        CheckAction("A label of 21 chars!!", "ok", "x")
    with pytest.raises(ValueError, match="description"):
        CheckAction("ok", "d" * 41, "x")
    with pytest.raises(ValueError, match="identifier"):
        CheckAction("ok", "ok", "i" * 21)
    with pytest.raises(ValueError, match="at most 3"):
        CheckRunSpec("c", "in_progress", "t", "s", actions=check_runs.ACTIONS * 2)
    with pytest.raises(ValueError, match="conclusion"):
        CheckRunSpec("c", "completed", "t", "s")


def test_an_over_long_summary_keeps_its_tail_within_65535():
    summary = "old line\n" * 10_000 + "the newest event"
    body = check_run_body(CheckRunSpec("c", "in_progress", "t", summary), 65535)
    assert len(body["output"]["summary"]) <= 65535
    assert body["output"]["summary"].endswith("the newest event")
    assert body["actions"] == []  # always sent: an update removes earlier buttons
