"""The rollout part of the sticky PR comment, rendered from states the real engine produced."""

from __future__ import annotations

import re

import pytest

from bot.analysis.measurement import Measurement
from bot.analysis.templates import AnalysisTemplate, Arg, MetricSpec, TemplateArg
from bot.report import charts, comment
from bot.report import rollout as report
from bot.report.charts import parse_number
from bot.report.rollout import render_rollout, render_section
from bot.rollout.engine import advance
from bot.rollout.model import (
    Abort,
    AnalysisStep,
    BackgroundAnalysis,
    CanaryStrategy,
    MeasurementTaken,
    NewRevision,
    PauseStep,
    Promote,
    PromoteFull,
    Retry,
    RolloutState,
    SetWeightStep,
    Start,
    TemplateRef,
    Tick,
    WorkloadHealth,
    WorkloadRef,
    new_state,
)

T0 = 1_700_000_000.0  # 22:13:20 UTC
HOSTILE = '<img src=x> @everyone | [x](http://e.vil) `tick` %% " ;'


def spec(name: str = "success-rate", **fields) -> MetricSpec:
    fields.setdefault("success_condition", "result[0] >= 0.95")
    return MetricSpec(name=name, provider={"prometheus": {"query": "up"}}, **fields)


def analysis(name: str = "success-rate") -> AnalysisStep:
    return AnalysisStep(templates=(TemplateRef(name),), args=(Arg("service", "web"),))


class Rollout:
    """Drives the engine as the shell would, keeping state and time."""

    def __init__(self, steps, *metrics: MetricSpec, background=None, **strategy_fields):
        strategy = CanaryStrategy(
            workload=WorkloadRef("Deployment", "web"),
            steps=tuple(steps),
            analysis=background,
            **strategy_fields,
        )
        template = AnalysisTemplate(
            name="success-rate", metrics=metrics or (spec(),), args=(TemplateArg("service"),)
        )
        self.state = new_state(
            app="web",
            revision="a1b2c3d4e5",
            stable_revision="0f0f0f0",
            pr=7,
            strategy=strategy,
            templates=(template,),
        )
        self.now = T0

    def send(self, event, after: float = 0.0) -> Rollout:
        self.now += after
        self.state, _ = advance(self.state, event, self.now)
        return self

    def healthy(self, after: float = 0.0) -> Rollout:
        return self.send(WorkloadHealth(ok=True, weight=self.state.weight), after)

    def wait(self, seconds: float) -> Rollout:
        return self.send(Tick(self.state.version), seconds)

    def answer(self, phase: str, value: str | None, message: str = "") -> Rollout:
        for run in (self.state.step_run, self.state.background_run):
            for result in run.results if run else ():
                if result.requested_at is not None:
                    taken = Measurement(phase, value, message, self.now)  # type: ignore[arg-type]
                    self.send(MeasurementTaken(run.id, result.name, taken))
        return self

    def text(self, now: float | None = None) -> str:
        return "\n".join(render_rollout(self.state, now=now))


def step_rows(text: str) -> list[tuple[str, str, str]]:
    rows = []
    for line in text.splitlines():
        cells = cells_of(line)
        if len(cells) == 3 and cells[0].isdigit():
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def cells_of(row: str) -> list[str]:
    """Cells of a GFM table row, split only on unescaped pipes, as GitHub does."""
    if not row.startswith("|"):
        return []
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]


def mermaid_blocks(text: str) -> list[list[str]]:
    blocks, current = [], None
    for line in text.splitlines():
        if line == "```mermaid":
            current = []
        elif line == "```" and current is not None:
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


_NUMBER = r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)"  # Mermaid's xychart NUMBER_WITH_DECIMAL
_STATEMENTS = [
    re.compile(r'title "[^"`]*"'),
    re.compile(rf'x-axis "[^"]*" {_NUMBER} --> {_NUMBER}'),
    re.compile(r'x-axis "[^"]*" \[(?:"[^"`]*", )*"[^"`]*"\]'),
    re.compile(rf'y-axis "[^"]*" {_NUMBER} --> {_NUMBER}'),
    re.compile(rf"line \[(?:{_NUMBER}, )*{_NUMBER}\]"),
]


def assert_valid_xychart(block: list[str]) -> None:
    """Each statement must match the xychart grammar (mermaid's xychart.jison); `%%` would
    start a comment."""
    assert block[0] == "xychart-beta"
    for statement in block[1:]:
        assert "%%" not in statement
        assert any(p.fullmatch(statement.strip()) for p in _STATEMENTS), statement


def line_values(block: list[str]) -> list[float]:
    (line,) = [s.strip() for s in block if s.strip().startswith("line [")]
    return [float(v) for v in line[len("line [") : -1].split(", ")]


# ------------------------------------------------------------------------------- headline


def test_progressing_headline_shows_step_weight_and_health_wait():
    r = Rollout([SetWeightStep(20), PauseStep(None)]).send(Start())
    r.send(WorkloadHealth(ok=False, message="0/1 canary pods ready", weight=20), after=30)
    text = r.text(now=T0 + 60)
    first = text.splitlines()[1]
    assert first.startswith("**Canary rollout** of `a1b2c3d` (stable `0f0f0f0`): ▶️ **Progressing**")
    assert "waiting for the canary at 20% to become healthy: 0/1 canary pods ready" in first
    assert "(deadline in 9m)" in first
    assert "step 1/2 · canary **20%**" in first
    assert "👉" not in text  # nobody needs to act


def test_indefinite_pause_tells_people_what_to_comment():
    r = Rollout([SetWeightStep(20), PauseStep(None), SetWeightStep(50)]).send(Start()).healthy()
    text = r.text()
    assert "⏸ **Paused** — waiting for `/promote` · step 2/3 · canary **20%**" in text
    assert "👉 Comment `/promote web` to continue, `/abort web` to roll back." in text


def test_timed_pause_says_how_long_is_left():
    r = Rollout([SetWeightStep(20), PauseStep(120), SetWeightStep(50)]).send(Start()).healthy()
    assert "⏸ **Paused** — pause 2m, 1m30s left" in r.text(now=T0 + 30)
    assert "👉" not in r.text(now=T0 + 30)


def test_promoted_and_superseded_headlines():
    done = Rollout([SetWeightStep(50)]).send(Start()).healthy(10).healthy(10)
    assert done.state.phase == "Promoted"
    assert "✅ **Promoted** — stable runs the new version" in done.text()
    gone = Rollout([SetWeightStep(50), PauseStep(None)]).send(Start()).healthy()
    gone.send(NewRevision("fedcba9876", pr=8))
    assert "⏹ **Superseded** — superseded by `fedcba9`" in gone.text()
    assert [row[2] for row in step_rows(gone.text())] == ["✅ done", "⏹ superseded"]


# ----------------------------------------------------------------------------------- notes


def test_ignored_fields_are_explained():
    r = Rollout(
        [SetWeightStep(20)],
        ignored_fields=("antiAffinity", "scaleDownDelayRevisionLimit"),
        source="deploy/web/rollout.yaml",
    ).send(Start())
    text = r.text()
    assert (
        "> ℹ️ Ignored fields in `deploy/web/rollout.yaml` (read, but without effect): "
        "`antiAffinity`, `scaleDownDelayRevisionLimit`." in text
    )
    plain = Rollout([SetWeightStep(20)]).send(Start()).text()
    assert "Ignored fields" not in plain


# ------------------------------------------------------------------------------- step table


def test_step_table_marks_done_current_and_pending_steps():
    r = Rollout([SetWeightStep(10), PauseStep(60), analysis(), SetWeightStep(50)])
    r.send(Start()).healthy(5).wait(60)
    assert step_rows(r.text()) == [
        ("1", "`setWeight 10`", "✅ done"),
        ("2", "`pause 1m`", "✅ done"),
        ("3", "`analysis success-rate`", "▶️ current"),
        ("4", "`setWeight 50`", "· pending"),
    ]


def test_step_table_records_who_promoted_skipped_and_aborted():
    r = Rollout([SetWeightStep(10), PauseStep(None), analysis(), SetWeightStep(50), PauseStep(60)])
    r.send(Start()).healthy()
    r.send(Promote("alice"), after=60)  # past the indefinite pause
    r.send(Promote("carol"), after=5)  # skips the running analysis
    r.send(Abort("bob"), after=5)
    assert step_rows(r.text()) == [
        ("1", "`setWeight 10`", "✅ done"),
        ("2", "`pause (until /promote)`", "✅ promoted by \\@alice"),
        ("3", "`analysis success-rate`", "⏭ skipped by \\@carol"),
        ("4", "`setWeight 50`", "❌ aborted by \\@bob"),
        ("5", "`pause 1m`", "· not run"),
    ]
    assert "❌ **Aborted** — aborted by \\@bob · step 4/5 · canary **0%**" in r.text()
    assert "👉 Comment `/retry web` to run it again." in r.text()


def test_full_promotion_skips_the_remaining_steps():
    r = Rollout([SetWeightStep(10), PauseStep(None), SetWeightStep(50)]).send(Start()).healthy()
    r.send(PromoteFull("dave"), after=10).healthy(10)
    assert r.state.phase == "Promoted"
    assert [row[2] for row in step_rows(r.text())] == [
        "✅ done",
        "⏭ skipped (full promotion by \\@dave)",
        "⏭ skipped (full promotion by \\@dave)",
    ]


def test_same_template_as_stable_skips_every_step():
    r = Rollout([SetWeightStep(10), PauseStep(None)]).send(Start(same_as_stable=True)).healthy()
    assert [row[2] for row in step_rows(r.text())] == [
        "⏭ skipped (same pod template as stable)"
    ] * 2


def test_retry_starts_the_table_over():
    r = Rollout([SetWeightStep(10), PauseStep(None), SetWeightStep(50)]).send(Start()).healthy()
    r.send(Promote("alice"), after=5).send(Abort("bob"), after=5).send(Retry("bob"), after=5)
    assert [row[2] for row in step_rows(r.text())] == ["▶️ current", "· pending", "· pending"]


def test_failed_analysis_marks_its_step_failed():
    r = Rollout([SetWeightStep(10), analysis()]).send(Start()).healthy()
    r.answer("Failed", "[0.91]", "result[0] >= 0.95 is false")
    assert step_rows(r.text())[1] == ("2", "`analysis success-rate`", "❌ failed")


def test_background_analysis_is_named_under_the_table():
    background = BackgroundAnalysis(
        templates=(TemplateRef("success-rate"),), args=(Arg("service", "web"),), starting_step=1
    )
    r = Rollout([SetWeightStep(10), PauseStep(None)], background=background).send(Start())
    r.healthy()
    text = r.text()
    assert "Background analysis `success-rate` from step 2." in text
    assert "▶️ **background analysis** `a1b2c3d-a1-1-bg` — **Running**: 0/1 ok" in text


# ---------------------------------------------------------------------------- measurements


def test_measurements_show_value_condition_counts_and_message():
    metric = spec(failure_condition="result[0] < 0.9", count=5, interval=60.0)
    r = Rollout([analysis()], metric).send(Start())
    r.answer("Successful", "[0.99]").wait(60).answer("Successful", "[0.98]")
    r.wait(60).answer("Inconclusive", "[0.93]", "neither condition is true")
    text = r.text()
    (row,) = [line for line in text.splitlines() if line.startswith("| success\\-rate |")]
    assert cells_of(row) == [
        "success\\-rate",
        "⚠️ Inconclusive",
        "`[0.93]`",
        "success `result[0] >= 0.95` · failure `result[0] < 0.9`",
        "2/5 ok, 0 failed, 1 inconclusive",
        "inconclusive \\(1\\) \\> inconclusiveLimit \\(0\\): neither condition is true",
    ]


def test_inconclusive_run_shows_its_reason_and_waits_for_people():
    r = Rollout([SetWeightStep(10), analysis(), SetWeightStep(50)]).send(Start()).healthy()
    r.answer("Inconclusive", None, "no data")
    text = r.text()
    assert (
        "⏸ **Paused** — analysis inconclusive: success\\-rate: inconclusive \\(1\\) \\> "
        "inconclusiveLimit \\(0\\): no data" in text
    )
    assert "👉 Comment `/promote web` to continue, `/abort web` to roll back." in text
    run_line = next(line for line in text.splitlines() if "**step 2 analysis**" in line)
    assert "**Inconclusive**" in run_line and "no data" in run_line
    assert "neither promotes nor aborts" in run_line
    row = next(line for line in text.splitlines() if line.startswith("| success"))
    assert cells_of(row)[2] == "∅ (no value)"


def test_unreachable_metrics_source_is_shown_as_the_error():
    r = Rollout([analysis()]).send(Start())
    for _ in range(5):
        r.answer("Error", None, "Prometheus unreachable: connection refused").wait(10)
    text = r.text()
    assert r.state.phase == "Aborted"
    row = next(line for line in text.splitlines() if line.startswith("| success"))
    assert cells_of(row)[1] == "❌ Error"
    assert cells_of(row)[4] == "0/1 ok, 0 failed, 0 inconclusive, 5 errors"
    assert "Prometheus unreachable: connection refused" in cells_of(row)[5]


def test_run_that_could_not_start_says_why():
    r = Rollout([analysis("missing")]).send(Start())
    assert "— **Error**: could not start: AnalysisTemplate 'missing' not found" in r.text()


# --------------------------------------------------------------------- evidence and history


def test_abort_evidence_is_a_quoted_list():
    r = Rollout([SetWeightStep(10), analysis()]).send(Start()).healthy()
    r.answer("Failed", "[0.91]", "result[0] >= 0.95 is false")
    lines = r.text().splitlines()
    start = lines.index("**Why it was aborted**")
    quoted = [line for line in lines[start + 1 : start + 5] if line.startswith("> - ")]
    assert len(quoted) == len(r.state.evidence) == 2
    assert "success\\-rate: \\[0\\.91\\] \\(Failed\\)" in quoted[1]


def test_history_lists_times_events_and_people():
    r = Rollout([SetWeightStep(10), PauseStep(None), SetWeightStep(50)]).send(Start())
    r.healthy(5).send(Promote("alice"), after=65)
    history = r.text().split("**History** (UTC)")[1].split("```mermaid")[0].strip().splitlines()
    assert history[0] == "- `22:13:20` 🚀 rollout of a1b2c3d started"
    assert "- `22:14:30` ⏭ promoted past step 2 — by \\@alice" in history


def test_history_keeps_only_the_latest_entries():
    r = Rollout([SetWeightStep(10), PauseStep(None)]).send(Start()).healthy()
    for n in range(20):
        r.send(Abort(f"user{n}"), after=1).send(Retry(f"user{n}"), after=1).healthy()
    lines = r.text().split("**History** (UTC)")[1].split("```mermaid")[0].strip().splitlines()
    assert lines[0] == f"- … {len(r.state.history) - report.HISTORY_SHOWN} earlier events"
    assert len(lines) == report.HISTORY_SHOWN + 1
    assert "retry \\#20" in "\n".join(lines) and "user0" not in "\n".join(lines)


# ----------------------------------------------------------------------------------- charts


def test_weight_chart_is_a_stepped_xychart_line():
    r = Rollout([SetWeightStep(10), PauseStep(300), SetWeightStep(50), PauseStep(None)])
    r.send(Start()).healthy().wait(300).healthy(30)
    text = r.text(now=T0 + 900)
    assert "```mermaid\nxychart-beta\n" in text
    weight_chart = mermaid_blocks(text)[0]
    assert_valid_xychart(weight_chart)
    assert '    x-axis "seconds since start" 0 --> 900' in weight_chart
    values = line_values(weight_chart)
    assert len(values) == charts.CHART_POINTS
    assert values[0] == 10 and values[-1] == 50
    assert values == sorted(values) and set(values) == {10, 50}
    # 50% was set at 300 s; Mermaid spreads the 50 values over 0..901.
    assert values.index(50) == pytest.approx(300 / 901 * charts.CHART_POINTS, abs=1)


def test_weight_chart_ends_at_zero_after_an_abort():
    r = Rollout([SetWeightStep(30), PauseStep(None)]).send(Start()).healthy()
    r.send(Abort("bob"), after=100)
    values = line_values(mermaid_blocks(r.text(now=T0 + 10_000))[0])
    assert values[0] == 30 and values[-1] == 0


def test_metric_charts_plot_numeric_values_and_skip_the_rest():
    metrics = (spec(interval=60.0, count=6), spec("latency-ms", interval=60.0, count=6))
    r = Rollout([analysis()], *metrics).send(Start())
    for value in ("[0.99]", "[NaN]", "0.5", None, "[0.98]", "[1,2]"):
        r.answer("Successful", value).wait(60)
    blocks = mermaid_blocks(r.text())
    assert len(blocks) == 3  # weight, success-rate, latency-ms
    for block in blocks:
        assert_valid_xychart(block)
    assert blocks[1][1] == '    title "success-rate"'
    assert blocks[1][2] == '    x-axis "time since start" ["0s", "2m", "4m"]'
    assert line_values(blocks[1]) == [0.99, 0.5, 0.98]


def test_metric_chart_numbers_never_use_exponents():
    r = Rollout([analysis()], spec(interval=60.0, count=2)).send(Start())
    r.answer("Successful", "1e-07").wait(60).answer("Successful", "3e-07")
    block = mermaid_blocks(r.text())[1]
    assert_valid_xychart(block)
    assert line_values(block) == [0.0000001, 0.0000003]


def test_no_chart_before_the_rollout_starts():
    assert "```mermaid" not in Rollout([SetWeightStep(10)]).text()


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("0.99", 0.99),
        ("[0.99]", 0.99),
        (" [ 12 ] ", 12.0),
        ("-3", -3.0),
        ("[1,2]", None),
        ("NaN", None),
        ("+Inf", None),
        ("[]", None),
        ('"ok"', None),
        ("true", None),
        (None, None),
    ],
)
def test_parse_number(value, number):
    assert parse_number(value) == number


# ----------------------------------------------------------------------- hostile text, size


def test_hostile_values_names_and_reasons_are_escaped():
    metric = spec(HOSTILE, success_condition="result[0] > 0 | 1")
    r = Rollout([SetWeightStep(10), PauseStep(None), analysis()], metric).send(Start()).healthy()
    r.send(Promote(HOSTILE), after=5)
    r.answer("Failed", HOSTILE, HOSTILE)
    text = r.text()
    assert r.state.phase == "Aborted"
    for line in text.splitlines():
        if line.startswith("|"):  # the steps table has 3 columns, the metrics table 6
            assert len(cells_of(line)) in (3, 6), line
        if line.startswith(("<details>", "</details>")):
            continue
        outside_code = re.sub(r"(`+).*?\1", "", line)
        assert not re.search(r"(?<!\\)[<@]", outside_code), line
        assert "](http" not in outside_code, line
    for block in mermaid_blocks(text):
        assert_valid_xychart(block)


def test_section_stays_small_with_long_histories_and_hostile_text():
    long = ("|<@" * 400)[:1000]
    metrics = tuple(
        spec(f"m{n}-{long}", success_condition=long, failure_condition=long, interval=10.0)
        for n in range(10)
    )
    steps = [SetWeightStep(w % 100 + 1) if w % 2 else PauseStep(10) for w in range(400)]
    r = Rollout(
        steps,
        *metrics,
        background=BackgroundAnalysis(
            templates=(TemplateRef("success-rate"),), args=(Arg("service", "web"),)
        ),
        ignored_fields=tuple(f"field{n}{long}" for n in range(30)),
        source=long,
    ).send(Start())
    largest = 0
    for n in range(150):
        value = f"[{n}.123456789]" if n % 2 else f"[{n}.5{long}]"  # charted / only listed
        r.answer("Successful", value, long).wait(10).healthy()
        if n % 10 == 0:
            largest = max(largest, len(r.text().encode()))
    r.answer("Failed", long, long)  # the background analysis fails: abort with evidence
    sizes = [largest, len(r.text().encode())]
    assert len(mermaid_blocks(r.text())) == 1 + charts.METRIC_CHARTS
    assert r.state.phase == "Aborted" and len(r.state.evidence) > report.EVIDENCE_LINES
    assert len(r.state.history) > 100 and len(r.state.metric_points) > 100
    assert max(sizes) < report.MAX_SECTION_BYTES, sizes


# ------------------------------------------------------------------- comment registration


def test_comment_renders_the_rollout_of_app_sections():
    r = Rollout([SetWeightStep(20), PauseStep(None)]).send(Start()).healthy()
    body = comment.render(
        {
            "web": {
                "sha": "a1b2c3d4e5",
                "state": "pending",
                "summary": "rolling out",
                "rollout": r.state.to_dict(),
            },
            "api": {"sha": "a1b2c3d4e5", "state": "success", "summary": "applied"},
        }
    )
    assert body.count("**Canary rollout**") == 1
    assert body.index("#### `api`") < body.index("#### `web`") < body.index("**Canary rollout**")
    assert len(body) < 65536


def test_render_section_without_or_with_unreadable_rollout():
    assert render_section({"sha": "a1b2c3d"}) == []
    assert render_section({"rollout": {"__type__": "Nope"}}) == [
        "",
        "_Rollout state could not be read (ValueError)._",
    ]


def test_rendering_a_decoded_state_matches_the_original():
    r = Rollout([SetWeightStep(20), analysis()]).send(Start()).healthy()
    decoded = RolloutState.from_dict(r.state.to_dict())
    assert render_section({"rollout": r.state.to_dict()}) == render_rollout(decoded)
    assert render_rollout(decoded) == render_rollout(r.state)
