"""The dashboard's pure parts: rows and pages of rollouts the real engine produced, the SVG
chart geometry, and the session cookie."""

from __future__ import annotations

import pytest

from bot.dashboard import svg, views
from bot.dashboard.session import SESSION_TTL_S, Gate
from bot.refs import RepoRef
from bot.rollout.context import RolloutContext
from bot.rollout.model import (
    Abort,
    PauseStep,
    Promote,
    PromoteFull,
    SetWeightStep,
    Start,
)
from tests.unit.test_report_rollout import HOSTILE, T0, Rollout, analysis, spec

TOKEN = "a-dashboard-token-0123456789"


def context(**fields) -> RolloutContext:
    """The context of PR #7's rollout of app web in acme/gitops on GitHub."""
    fields.setdefault("title", "Web 2.0")
    fields.setdefault("url", "https://github.example/acme/gitops/pull/7")
    return RolloutContext(
        repo=RepoRef("github", "acme/gitops", "https://github.example/acme/gitops.git"),
        number=7, app="web", namespace="shop", deployment={}, stable={}, replicas=3,
        template_hash="h", **fields)


def manual() -> Rollout:
    """setWeight 50, then a pause until /promote: Paused at step 2 once healthy."""
    return Rollout([SetWeightStep(50), PauseStep()]).send(Start()).healthy(2)


def measured(*values: str) -> Rollout:
    """An analysis step measured once per value (count = len(values)), then setWeight 60."""
    metric = spec(count=len(values), interval=10.0, failure_condition="result[0] < 0.5")
    rollout = Rollout([SetWeightStep(20), analysis(), SetWeightStep(60)], metric)
    rollout.send(Start()).healthy(1)
    for value in values:
        rollout.wait(10).answer("Successful", value)
    return rollout


def test_a_paused_rollout_row_says_where_it_stands_and_who_is_waited_for():
    rollout = manual()
    assert rollout.state.phase == "Paused"
    row = views.rollout_row("github", "acme/gitops", rollout.state, context(), T0 + 125)
    assert (row.phase, row.step, row.step_text, row.weight) == ("Paused", "2/2", "pause (until /promote)", 50)
    assert (row.pr, row.pr_url, row.title) == (7, "https://github.example/acme/gitops/pull/7",
                                               "Web 2.0")
    assert (row.revision, row.age, row.waiting, row.active) == ("a1b2c3d", "2m5s", True, True)
    assert row.path == "rollouts/github/acme/gitops/apps/web"


def test_a_finished_rollout_row_has_no_current_step_and_is_not_active():
    rollout = manual().send(Promote("alice"), 5).healthy(3)
    assert rollout.state.phase == "Promoted"
    row = views.rollout_row("github", "acme/gitops", rollout.state, None, T0 + 60)
    assert (row.step_text, row.weight, row.active, row.waiting) == ("", 100, False, False)
    assert (row.pr, row.pr_url, row.title) == (7, "", "")  # no context: nothing invented


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,<script>x</script>",
    "//evil.example/x", "/relative", "https:///nohost", "", None, 42,
])
def test_only_absolute_http_links_are_kept(url):
    assert views.safe_link(url) == ""


def test_http_and_https_links_are_kept():
    assert views.safe_link(" https://gitlab.example/a/b/-/merge_requests/3 ") == \
        "https://gitlab.example/a/b/-/merge_requests/3"
    assert views.safe_link("http://forge.local/pr/1") == "http://forge.local/pr/1"


def test_rollout_paths_quote_what_users_named():
    assert views.rollout_path("gitlab", "group/sub/ops", "api") == \
        "rollouts/gitlab/group/sub/ops/apps/api"
    assert views.rollout_path("github", "a/b?x=1#f", "w/../x") == \
        "rollouts/github/a/b%3Fx%3D1%23f/apps/w%2F..%2Fx"


def test_untrusted_text_is_kept_as_text_and_clipped_to_one_line():
    long_title = HOSTILE + "\n" + "x" * 1000
    row = views.rollout_row("github", "acme/gitops", manual().state,
                            context(title=long_title), T0)
    assert row.title.startswith(HOSTILE + " x")  # not escaped here: the templates escape
    assert len(row.title) == views.TEXT and row.title.endswith("…") and "\n" not in row.title


def test_the_steps_show_done_current_skipped_and_not_run():
    paused = manual()
    assert [(s.text, s.status) for s in views.rollout_detail(
        "github", "acme/gitops", paused.state, context(), T0).steps] == [
        ("setWeight 50", "done"), ("pause (until /promote)", "paused")]

    skipped = Rollout([SetWeightStep(20), PauseStep(), SetWeightStep(60), PauseStep()])
    skipped.send(Start()).healthy(1).send(PromoteFull("alice"), 1)
    statuses = [s.status for s in views.rollout_detail(
        "github", "acme/gitops", skipped.state, None, T0).steps]
    assert statuses == ["done", "skipped", "skipped", "skipped"]

    aborted = manual().send(Abort("bob", "looks wrong"), 3)
    detail = views.rollout_detail("github", "acme/gitops", aborted.state, context(), T0)
    assert [s.status for s in detail.steps] == ["done", "failed"]
    assert "looks wrong" in detail.why
    assert detail.next_move == "Comment /retry web on the PR to run it again."


def test_the_detail_lists_runs_measurements_and_history_newest_first():
    rollout = measured("0.97", "0.99")
    detail = views.rollout_detail("github", "acme/gitops", rollout.state, context(), T0 + 60)
    assert [m.value for m in detail.measurements] == ["0.99", "0.97"]
    assert detail.measurements[0].at == "2023-11-14 22:13:41"
    (run,) = detail.runs
    assert run.phase == "Successful"
    (metric,) = run.metrics
    assert (metric.name, metric.latest, metric.counts) == (
        "success-rate", "0.99", "2/2 ok, 0 failed, 0 inconclusive")
    assert metric.conditions == "success: result[0] >= 0.95 · failure: result[0] < 0.5"
    kinds = [h.kind for h in detail.history]
    assert kinds[-1] == "started" and kinds[0] == "step"
    assert detail.history_hidden == 0


def test_traffic_rows_come_from_what_the_shell_last_wrote():
    traffic = [{"object": "VirtualService/web", "detail": "route primary", "canary_weight": 25},
               {"object": "Service/web-canary", "detail": "", "canary_weight": None}, "junk"]
    detail = views.rollout_detail("github", "acme/gitops", manual().state,
                                  context(traffic=traffic), T0)
    assert [(t.object, t.weight) for t in detail.traffic] == [
        ("VirtualService/web", "25%"), ("Service/web-canary", "unknown")]
    assert detail.traffic_lead.startswith("Traffic follows pod counts")


def test_a_deployment_record_becomes_a_row_and_junk_is_dropped():
    row = views.deployment_row({"forge": "github", "repo": "acme/gitops", "app": "web",
                                "sha": "0123456789abcdef", "pr": 7, "state": "success",
                                "summary": "applied 3 objects", "updated_at": T0}, T0 + 90)
    assert row is not None
    assert (row.sha, row.pr, row.state, row.age) == ("0123456", 7, "success", "1m30s")
    assert row.rollout_path == "rollouts/github/acme/gitops/apps/web"
    assert views.deployment_row({"forge": "github", "repo": "acme/gitops"}, T0) is None
    odd = views.deployment_row({"forge": "github", "repo": "r/r", "app": "a", "sha": "s",
                                "pr": True, "updated_at": "yesterday"}, T0)
    assert odd is not None and (odd.pr, odd.age, odd.state) == (None, "—", "unknown")


# ------------------------------------------------------------------------------- charts


def _corners(chart: svg.Chart) -> list[tuple[float, float]]:
    return [tuple(float(n) for n in pair.split(",")) for pair in chart.line.split()]


def test_the_weight_chart_is_a_step_line_from_zero_to_the_end():
    rollout = Rollout([SetWeightStep(20), SetWeightStep(60), PauseStep()])
    rollout.send(Start()).healthy(10).healthy(10)
    state = rollout.state
    assert [(p.at - T0, p.weight) for p in state.weights] == [(0, 20), (10, 60)]
    chart = svg.weight_chart(state, now=T0 + 40)
    assert chart is not None
    bottom, top = svg.HEIGHT - svg.BOTTOM, svg.TOP
    x_end = svg.WIDTH - svg.RIGHT
    quarter = (x_end - svg.LEFT) / 4
    y = {w: bottom - w / 100 * (bottom - top) for w in (0, 20, 60)}
    expected = [(svg.LEFT, y[0]), (svg.LEFT, y[0]), (svg.LEFT, y[20]),
                (svg.LEFT + quarter, y[20]), (svg.LEFT + quarter, y[60]), (x_end, y[60])]
    flat = [n for corner in _corners(chart) for n in corner]
    assert flat == pytest.approx([n for corner in expected for n in corner], abs=0.06)
    assert [t.label for t in chart.x_ticks] == ["+0s", "+10s", "+20s", "+30s", "+40s"]
    assert [t.label for t in chart.y_ticks] == ["0%", "25%", "50%", "75%", "100%"]


def test_no_weight_chart_before_the_rollout_set_a_weight():
    rollout = Rollout([SetWeightStep(20)])
    assert svg.weight_chart(rollout.state, T0) is None


def test_metric_charts_plot_numeric_values_only_within_the_plot():
    rollout = measured("0.97", "[0.99]", "NaN", "0.98")
    (chart,) = svg.metric_charts(rollout.state)
    assert chart.title == "success-rate"
    assert [d.label.split(" ")[0] for d in chart.dots] == ["0.97", "0.99", "0.98"]
    for x, y in _corners(chart):
        assert svg.LEFT <= x <= svg.WIDTH - svg.RIGHT and svg.TOP <= y <= svg.HEIGHT - svg.BOTTOM
    highest = min(chart.dots, key=lambda d: d.y)  # SVG's y grows downwards
    assert highest.label.startswith("0.99")


def test_the_same_rollout_draws_the_same_chart():
    first = measured("0.97", "0.99").state
    again = measured("0.97", "0.99").state
    assert svg.metric_charts(first) == svg.metric_charts(again)
    assert svg.weight_chart(first, T0 + 99) == svg.weight_chart(again, T0 + 99)


# ------------------------------------------------------------------------------ session


def test_a_session_cookie_is_valid_only_signed_unchanged_and_in_time():
    now = [T0]
    gate = Gate(TOKEN, "server-secret", clock=lambda: now[0])
    cookie = gate.issue()
    assert gate.valid(cookie)
    issued, nonce, mac = cookie.split(".")
    assert not gate.valid(f"{int(issued) + 3600}.{nonce}.{mac}")  # extended by hand
    assert not gate.valid(f"{issued}.{nonce}.{'0' * len(mac)}")
    assert not gate.valid(None) and not gate.valid("") and not gate.valid("a.b")
    assert not gate.valid(cookie + "é")
    now[0] = T0 + SESSION_TTL_S - 1
    assert gate.valid(cookie)
    now[0] = T0 + SESSION_TTL_S
    assert not gate.valid(cookie)


def test_another_token_or_secret_signs_everybody_out():
    cookie = Gate(TOKEN, "server-secret", clock=lambda: T0).issue()
    assert not Gate(TOKEN + "x", "server-secret", clock=lambda: T0).valid(cookie)
    assert not Gate(TOKEN, "another-secret", clock=lambda: T0).valid(cookie)
    assert not Gate(TOKEN, None, clock=lambda: T0).valid(cookie)
    assert Gate(TOKEN, "server-secret", clock=lambda: T0).valid(cookie)


def test_the_token_must_match_exactly():
    gate = Gate(TOKEN)
    assert gate.token_matches(TOKEN)
    for wrong in ("", TOKEN[:-1], TOKEN + " ", TOKEN.upper(), "\udcff" + TOKEN):
        assert not gate.token_matches(wrong)
    with pytest.raises(ValueError):
        Gate("")
