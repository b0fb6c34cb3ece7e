"""The pure parts of `coalmine get` and the operator commands: the watch loop, the columns,
the operator's recorded name."""

from __future__ import annotations

import io

import pytest

from bot.cli_rollouts import (
    CliError,
    actor,
    age,
    detail,
    detail_text,
    key_of,
    list_text,
    refusal,
    watch,
)
from bot.refs import RepoRef
from bot.rollout.context import RolloutContext
from bot.rollout.model import Pause, Resume, SetWeightStep, Start
from bot.rollout.store import RolloutRecord
from tests.unit.test_engine import Sim, analysis


class Clock:
    """A clock that moves only when the watch sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_watch_redraws_only_when_the_key_changes_and_stops_at_its_timeout():
    keys = iter([1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3])
    clock = Clock()
    out = io.StringIO()
    code = watch(lambda: (k := next(keys), f"frame {k}"), out, interval_s=1.0, timeout_s=6.0,
                 tty=False, sleep=clock.sleep, clock=lambda: clock.now)
    assert code == 0
    assert out.getvalue() == "frame 1\n\nframe 2\n\nframe 3\n"
    assert clock.sleeps == [1.0] * 6  # bounded: one poll a second until the timeout


def test_watch_clears_a_terminal_and_ctrl_c_exits_zero():
    calls = iter([(1, "a"), (2, "b")])

    def draw():
        try:
            return next(calls)
        except StopIteration:
            raise KeyboardInterrupt from None

    out = io.StringIO()
    assert watch(draw, out, interval_s=0.5, timeout_s=None, tty=True,
                 sleep=lambda _s: None) == 0
    assert out.getvalue() == "\x1b[H\x1b[2Ja\n\x1b[H\x1b[2Jb\n"


def test_json_frames_are_lines_without_separators():
    keys = iter([1, 2])
    out = io.StringIO()
    clock = Clock()
    watch(lambda: (k := next(keys), f'{{"k": {k}}}'), out, interval_s=1, timeout_s=1,
          tty=False, between="", sleep=clock.sleep, clock=lambda: clock.now)
    assert out.getvalue().splitlines() == ['{"k": 1}', '{"k": 2}']


@pytest.mark.parametrize(("seconds", "shown"), [
    (None, "-"), (0, "0s"), (59, "59s"), (60, "1m"), (7199, "119m"), (7200, "2h"),
    (86400 * 2 - 1, "47h"), (86400 * 2, "2d")])
def test_age_reads_like_kubectl(seconds, shown):
    assert age(seconds) == shown


def test_the_operator_is_recorded_as_from_the_cli_and_names_are_checked():
    assert actor("alice") == "alice (CLI)"
    assert actor("ops.bot@example") == "ops.bot@example (CLI)"
    for bad in ("", "@alice", "a b", "x\ny", "a" * 65, "[x](http://e)"):
        with pytest.raises(CliError) as raised:
            actor(bad)
        assert raised.value.code == 2


def test_repository_names_as_check_reads_them():
    assert key_of("acme/gitops", "web") == key_of("github:acme/gitops", "web")
    assert key_of("gitlab:group/sub/project", "web") != key_of("group/sub/project", "web")
    with pytest.raises(CliError):
        key_of("gitops", "web")


def test_the_list_has_aligned_columns():
    rows = [{"forge": "github", "repo": "acme/gitops", "app": "web", "pr": 12,
             "phase": "Paused", "step": 2, "steps": 4, "weight": 50, "age_seconds": 75},
            {"forge": "gitlab", "repo": "g/p", "app": "api-server", "pr": None,
             "phase": "Progressing", "step": 1, "steps": 2, "weight": 0, "age_seconds": None}]
    assert list_text(rows).splitlines() == [
        "REPO                APP         PR   PHASE        STEP  WEIGHT  AGE",
        "github:acme/gitops  web         #12  Paused       2/4   50%     1m",
        "gitlab:g/p          api-server  -    Progressing  1/2   0%      -",
    ]
    assert list_text([]) == "No active rollouts."


# --------------------------------------------------------------------------- one rollout


def engine_record() -> RolloutRecord:
    """A rollout the real engine moved: weight 10, a step analysis with one measurement in,
    then a user's pause."""
    sim = Sim([SetWeightStep(10), analysis(), SetWeightStep(50)])
    sim.send(Start())
    sim.healthy()
    sim.now += 30
    sim.answer("Successful", "0.97")
    sim.send(Pause("alice (CLI)"))
    context = RolloutContext(repo=RepoRef("github", "acme/gitops", ""), number=42, app="web",
                             namespace="shop", deployment={}, stable={}, replicas=3,
                             template_hash="h", url="https://pr/42")
    return RolloutRecord(sim.state, context, seq=7)


def test_one_rollout_shows_steps_weights_runs_and_history():
    record = engine_record()
    now = record.state.started_at + 90
    info = detail(record, now)
    assert (info["phase"], info["step"], info["steps"], info["weight"]) == ("Paused", 3, 3, 50)
    assert info["paused_by"] == "alice (CLI)" and info["age_seconds"] == 90
    assert [s["state"] for s in info["steps_detail"]] == ["done", "done", "paused"]
    [run] = info["analysis_runs"]
    assert run["purpose"] == "step 2" and run["phase"] == "Successful"
    assert run["metrics"][0]["successful"] == 1 and run["metrics"][0]["latest"] == "0.97"
    assert info["history"][-1]["actor"] == "alice (CLI)"
    assert [p["weight"] for p in info["weights"]] == [10, 50]

    shown = detail_text(record, now)
    assert "Rollout:   github:acme/gitops web" in shown
    assert "Step:      3/3   Weight: 50%   Age: 1m" in shown
    assert "   2. analysis success-rate" in shown
    assert "success-rate: Successful, 1 ok, 0 failed, 0 inconclusive, 0 error; latest 0.97" \
        in shown
    assert shown.rstrip().endswith("paused by user — by alice (CLI)")


def test_the_engine_is_asked_first_whether_it_would_refuse():
    record = engine_record()
    assert refusal(record, Pause("bob (CLI)"), record.state.started_at + 100) == \
        "already paused by @alice (CLI)"
    assert refusal(record, Resume("bob (CLI)"), record.state.started_at + 100) is None
