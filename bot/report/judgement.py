"""The judge's verdict in the PR comment: canary against baseline, metric by metric, in words.

A kayenta metric's measurement (bot.analysis.providers.kayenta) keeps a `Judgement`: the score,
the thresholds it was held to, and each metric's classification, means, sample counts, p-value
and allowance, with the sentence that explains it ("latency 30 % higher on canary (mean ratio
1.30), p < 0.001, allowed +10 %"). This renders the latest judgement of each judged metric of
the runs the comment shows, under the analysis table: a line with the score against pass and
marginal, a table, and a bar chart of each metric's canary mean as a percentage of the
baseline's with the allowance as a line.

Pure rendering of typed data; everything from outside is escaped, and the parts are capped
(JUDGEMENTS_SHOWN judgements of JUDGED_ROWS metrics) so the section stays within
bot.report.rollout.MAX_SECTION_BYTES.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bot.analysis.run import AnalysisRun
from bot.judge.model import JudgedMetric, Judgement
from bot.report import charts
from bot.report.markdown import code, escape

JUDGEMENTS_SHOWN = 2
JUDGED_ROWS = 8
_NAME = 60
_WHY = 200

_VERDICT = {"pass": "✅ pass", "marginal": "⚠️ marginal", "fail": "❌ fail",
            "nodata": "⚠️ no data"}
_CLASS = {"pass": "✅ pass", "high": "❌ higher", "low": "❌ lower", "nodata": "⚠️ no data"}
_PHASE = {"Successful": "✅ Successful", "Inconclusive": "⚠️ Inconclusive", "Failed": "❌ Failed"}


def render_judgements(shown: Sequence[AnalysisRun]) -> list[str]:
    """Markdown for the latest judgement of each judged metric of `shown` (newest runs first),
    at most JUDGEMENTS_SHOWN of them."""
    lines: list[str] = []
    for count, (run, metric, phase, judgement) in enumerate(_latest(shown)):
        if count >= JUDGEMENTS_SHOWN:
            lines += ["", "_More judgements are not shown._"]
            break
        lines += _judgement(run, metric, phase, judgement)
    return lines


def _latest(shown: Sequence[AnalysisRun]) -> Iterator[tuple[AnalysisRun, str, str, Judgement]]:
    for run in shown:
        for result in run.results:
            judged = [m for m in result.measurements if m.judgement is not None]
            if judged and judged[-1].judgement is not None:
                yield run, result.name, judged[-1].phase, judged[-1].judgement


def _judgement(run: AnalysisRun, metric: str, phase: str, j: Judgement) -> list[str]:
    label = f"{escape(run.purpose, _NAME)} analysis" if run.purpose else "analysis"
    head = (f"**Judge** {code(metric, _NAME)} ({label}): canary against baseline, score "
            f"**{j.score:g}** — pass at {j.passing:g}, marginal at {j.marginal:g} → "
            f"{_VERDICT.get(j.verdict, escape(j.verdict))}, measurement "
            f"**{_PHASE.get(phase, escape(phase))}**")
    lines = ["", head, "", f"> {escape(j.explanation, _WHY)}", "",
             "| metric | result | canary mean (n) | baseline mean (n) | p | why |",
             "|---|---|--:|--:|--:|---|"]
    for m in j.metrics[:JUDGED_ROWS]:
        critical = " (critical)" if m.critical else ""
        lines.append(
            f"| {escape(m.name, _NAME)}{critical} "
            f"| {_CLASS.get(m.classification, escape(m.classification))} "
            f"| {_number(m.canary_mean)} ({m.canary_count}) "
            f"| {_number(m.baseline_mean)} ({m.baseline_count}) "
            f"| {_p(m.p_value)} | {escape(m.explanation, _WHY)} |")
    if len(j.metrics) > JUDGED_ROWS:
        lines.append(f"| … | {len(j.metrics) - JUDGED_ROWS} more metrics | | | | |")
    return lines + _chart(j.metrics[:JUDGED_ROWS])


def _chart(metrics: Sequence[JudgedMetric]) -> list[str]:
    """Bars: canary mean as % of baseline mean (100 = the same); line: the allowance on the
    side that is bad (for `cles` metrics, whose allowance is no ratio, 100)."""
    bars, limits, names = [], [], []
    for m in metrics:
        if m.canary_mean is None or not m.baseline_mean or m.baseline_mean < 0 \
                or m.canary_mean < 0:
            continue
        names.append(m.name)
        bars.append(100 * m.canary_mean / m.baseline_mean)
        allowed = m.allowed_decrease if m.direction == "decrease" else m.allowed_increase
        limits.append(100 * allowed if m.effect == "meanRatio" else 100.0)
    if not bars:
        return []
    top = max(*bars, *limits) * 1.1
    labels: list[str] = []
    for name in names:  # Mermaid merges equal categories into one
        label = charts._chart_text(name)
        labels.append(label if label not in labels else f"{label} ({len(labels) + 1})")
    categories = ", ".join(f'"{label}"' for label in labels)
    return [
        "",
        "```mermaid",
        "xychart-beta",
        '    title "Canary mean as % of baseline (line: allowed)"',
        f'    x-axis "metric" [{categories}]',
        f'    y-axis "% of baseline" 0 --> {charts._number(top)}',
        f"    bar [{', '.join(charts._number(b) for b in bars)}]",
        f"    line [{', '.join(charts._number(limit) for limit in limits)}]",
        "```",
    ]


def _number(value: float | None) -> str:
    return "—" if value is None else escape(f"{value:.4g}")


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return "\\< 0\\.001" if value < 0.001 else escape(f"{value:.3f}")
