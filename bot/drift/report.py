"""What a drift check found, per app, and how it is told: the `coalmine/drift` status line and
the sticky drift comment on the PR of the last deploy (its own marker, edited in place).

A drifted object is one whose live state differs from what applying the deployed commit would
store, in the fields Coalmine applies (other managers' fields and the ignored ones are left out
before comparing, see bot.drift.ignore). The field-level diff is the preview's
(bot.preview.diff), so a Secret shows only which keys differ, never a value. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.preview.model import ObjectChange
from bot.preview.render import diff_block, fence
from bot.report.markdown import code, escape

MARKER = "<!-- coalmine:drift -->"
COMMENT_BUDGET = 60_000
_WORDS = {"change": "changed live", "create": "missing live (deleted?)",
          "refused": "taken over by another owner", "invalid": "could not be compared",
          "unchecked": "not checked"}


@dataclass(frozen=True)
class AppDrift:
    app: str
    sha: str
    changes: tuple[ObjectChange, ...] = ()  # the drifted objects only
    skipped: str = ""  # why the app was not compared (a rollout is running)
    error: str = ""
    self_heal: bool = False
    healed: tuple[str, ...] = ()  # objects re-applied by selfHeal in this check
    heal_note: str = ""  # e.g. "next attempt in 40s (backoff)"
    notes: tuple[str, ...] = ()

    @property
    def drifted(self) -> int:
        return len(self.changes)


def status_line(apps: list[AppDrift]) -> tuple[str, str]:
    """(state, description) of `coalmine/drift` on the deployed commit."""
    drifted = [a for a in apps if a.drifted and not a.healed]
    if drifted:
        return "failure", "drift: " + "; ".join(f"{a.app}: {a.drifted} object(s) differ "
                                                 "from this commit" for a in drifted)
    healed = [a for a in apps if a.healed]
    if healed:
        return "success", "drift healed (selfHeal): " + "; ".join(
            f"{a.app}: {len(a.healed)} object(s) re-applied" for a in healed)
    errors = [a for a in apps if a.error]
    if errors:
        return "error", "drift check failed: " + "; ".join(f"{a.app}: {a.error}" for a in errors)
    skipped = [a.app for a in apps if a.skipped]
    text = "no drift: the cluster matches this commit"
    if skipped:
        text += f" (not checked mid-rollout: {', '.join(skipped)})"
    return "success", text


def drift_lines(apps: list[AppDrift]) -> list[tuple[AppDrift, str]]:
    """Each app with its one-line result (`/status`)."""
    return [(app, _result(app)) for app in apps]


def render(apps: list[AppDrift], sha: str) -> str:
    """The drift comment: a table per app, then each drifted object's field-level diff. No
    clock in it, so an unchanged result edits nothing."""
    lines = [MARKER, f"### 🧭 Coalmine drift check of {code(sha[:7])}", "",
             ("The cluster compared with this commit, the last one deployed. Only the fields "
             "Coalmine applies count; fields other managers own and the fields "
             "`ignoreDifferences` lists are left out."), "",
             "| app | result |", "|---|---|"]
    for app in apps:
        lines.append(f"| {code(app.app)} | {escape(_result(app), 300)} |")
    left = COMMENT_BUDGET - sum(len(line) + 1 for line in lines) - 2000
    for app in apps:
        block, left = _app_block(app, left)
        lines += block
    return "\n".join(lines)


def _result(app: AppDrift) -> str:
    if app.skipped:
        return f"⏭️ not checked: {app.skipped}"
    if app.error:
        return f"❌ {app.error}"
    if not app.drifted:
        return "✅ no drift"
    text = f"⚠️ {app.drifted} object(s) drifted"
    if app.healed:
        text += f"; selfHeal re-applied {len(app.healed)}"
    return text


def _app_block(app: AppDrift, left: int) -> tuple[list[str], int]:
    if not (app.drifted or app.notes or app.heal_note):
        return [], left
    lines = ["", f"#### {code(app.app)}", ""]
    lines += [f"- {code(c.ref)}: {_WORDS.get(c.action, c.action)}"
              + (f" ({escape(c.note, 300)})" if c.note else "") for c in app.changes]
    if app.self_heal:
        healed = ", ".join(code(r) for r in app.healed)
        lines += ["", ("🩹 **selfHeal** is on: " +
                       (f"re-applied {healed} from this commit." if app.healed else
                        "Coalmine re-applies this commit when it drifts.") +
                       (f" {escape(app.heal_note)}" if app.heal_note else ""))]
    else:
        lines += ["", ("Merge a commit that declares the live state, or re-apply this one "
                      "(`selfHeal: true` on the app does it automatically).")]
    lines += [f"> {escape(n, 500)}" for n in app.notes]
    shown, omitted = [], 0
    for change in app.changes:
        block = diff_block(change)
        size = sum(len(line) + 1 for line in block)
        if block[1:] and size <= left:
            shown += block
            left -= size
        elif block[1:]:
            omitted += 1
    if shown:
        marks = fence(shown)
        lines += ["", ("<details open><summary>Field-level diff (- live, + this commit)"
                      "</summary>"), "", f"{marks}diff", *shown, marks, "", "</details>"]
    if omitted:
        lines += ["", f"> The diff of {omitted} more object(s) was left out to fit the comment."]
    return lines, left
