"""The preview as a PR comment and a commit status line.

The comment has its own hidden marker (the deploy comment keeps its own), so it is found and
edited in place on every push. Everything a reviewer must act on comes first and is never
dropped: each app's result, what the policy or the content rules refuse, what the cluster
rejects and what the merge will start. The field-level diff follows, folded in `<details>`;
when the whole would pass `COMMENT_BUDGET`, object diffs are left out whole (never cut inside
a line) and the comment says how many. Every text from the PR or the cluster is escaped or
fenced, and a Secret's values never reach this module (bot.preview.diff keeps only keys).
Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from bot.preview.model import ACTIONS, AppPreview, FieldChange, ObjectChange, Preview
from bot.report.markdown import code, escape

MARKER = "<!-- coalmine:pr-preview -->"
# GitHub refuses comment bodies over 65536 characters (GitLab allows 1,000,000); the preview
# stays under the smaller with room for the adapters' own notes.
COMMENT_BUDGET = 60_000
LISTED_PER_ACTION = 50  # object lines per action and app before "… and N more"
LISTED_FINDINGS = 50  # policy, rule and validation findings per app before "… and N more"
VALUE_CHARS = 300  # a diff value longer than this is shortened (the line itself stays whole)
_ICON = {"refused": "⛔", "invalid": "❌", "create": "➕", "change": "✏️", "prune": "🗑️",
         "unchecked": "⏭️", "unchanged": "＝"}
_WORD = {"refused": "refused", "invalid": "invalid", "create": "create", "change": "change",
         "prune": "would be pruned", "unchecked": "not checked", "unchanged": "unchanged"}


# --------------------------------------------------------------------------- status


def status_line(preview: Preview) -> str:
    """The `coalmine/preview` description (the caller clips it to the forge's 140)."""
    if preview.no_config:
        return "no .coalmine.yaml: the merge deploys nothing"
    if preview.config_error:
        return "invalid .coalmine.yaml: the merge would deploy nothing"
    failing = [app for app in preview.apps if app.failed]
    if failing:
        return "the merge would fail: " + "; ".join(
            f"{app.name}: {_failure_words(app)}" for app in failing)
    return "; ".join(f"{app.name}: {_change_words(app)}" for app in preview.apps)


def _failure_words(app: AppPreview) -> str:
    words = []
    if app.error:
        words.append(app.error_title.lower() or "error")
    if app.policy:
        words.append(f"{len(app.policy)} policy violation(s)")
    if app.rules:
        words.append(f"{len(app.rules)} content rule violation(s)")
    for action, what in (("invalid", "invalid object(s)"), ("refused", "refused object(s)")):
        if app.count(action):
            words.append(f"{app.count(action)} {what}")
    return ", ".join(words)


def _change_words(app: AppPreview) -> str:
    parts = [f"{app.count(a)} to {a}" for a in ("create", "change", "prune") if app.count(a)]
    text = ", ".join(parts) or "no change"
    if app.plan and app.plan[0].startswith("rollout"):
        text += "; starts a rollout"
    return text


# --------------------------------------------------------------------------- comment


def render(preview: Preview, budget: int = COMMENT_BUDGET) -> str:
    """The whole comment, at most `budget` characters however large the change."""
    head = _head(preview)
    essentials = {app.name: _essentials(app) for app in preview.apps}
    used = _size(head) + sum(_size(lines) for lines in essentials.values())
    left = budget - used - 400 * (len(preview.apps) + 1)  # room for the folds and notes
    diffs: dict[str, list[str]] = {}
    for app in preview.apps:
        diffs[app.name], left = _diff_section(app, left)
    lines = list(head)
    for app in preview.apps:
        lines += ["", *essentials[app.name], *diffs[app.name], *_unchanged_fold(app)]
    body = "\n".join(lines)
    if len(body) > budget:  # only with absurd names; whole lines are dropped from the end
        kept = body[: budget - 200].rsplit("\n", 1)[0]
        body = kept + "\n\n> The rest of this preview was left out to fit the forge's limit."
    return body


def _head(preview: Preview) -> list[str]:
    lines = [MARKER, f"### 🔍 Coalmine preview of {code(preview.sha[:7])}", ""]
    if preview.no_config:
        return lines + ["This commit has no `.coalmine.yaml`: merging it deploys nothing."]
    if preview.config_error:
        return lines + ["❌ **Invalid configuration:** the merge would deploy nothing.", "",
                        escape(preview.config_error, 4000)]
    verdict = ("❌ **The merge would fail** for the apps marked below; nothing of them would "
               "be applied." if preview.failed else
               "✅ **The merge would deploy** what is listed below.")
    lines += [verdict, "",
              "| app | result | create | change | unchanged | would be pruned |",
              "|---|---|---:|---:|---:|---:|"]
    for app in preview.apps:
        result = f"❌ {escape(_failure_words(app), 200)}" if app.failed else \
            f"✅ {escape(_change_words(app), 200)}"
        lines.append(f"| {code(app.name)} | {result} | {app.count('create')} | "
                     f"{app.count('change')} | {app.count('unchanged')} | {app.count('prune')} |")
    return lines


def _essentials(app: AppPreview) -> list[str]:
    lines = [f"#### {code(app.name)} (cluster {code(app.cluster)})"]
    if app.error:
        lines += ["", f"**{escape(app.error_title or 'Error')}:** {escape(app.error, 4000)}"]
    if app.policy:
        lines += ["", ("**Refused by the repository's policy** (nothing of this app would be "
                      "applied):")]
        lines += _capped([f"- {escape(v, 600)}" for v in app.policy], LISTED_FINDINGS)
    if app.rules:
        lines += ["", "**Content rules broken** (nothing of this app would be applied):"]
        lines += _capped([f"- {code(v.file)}: {code(v.object)} {code(v.field)}: "
                          f"**{escape(v.rule)}** ({escape(v.detail, 300)})" for v in app.rules],
                         LISTED_FINDINGS)
    if app.rules_in_force:
        lines += ["", "Content rules in force: " + ", ".join(code(r) for r in
                                                              app.rules_in_force)]
    if app.plan:
        heading = ("What the merge would do once the checks above pass" if app.failed else
                   "What the merge will do")
        lines += ["", f"**{heading}:**", ""]
        lines += [("  - " if line[:1].isdigit() else "- ") + escape(line, 600)
                  for line in app.plan]
    listed = [c for action in ACTIONS if action != "unchanged"
              for c in app.changes if c.action == action]
    if listed:
        lines += ["", "**Objects:**", ""]
        for action in ACTIONS:
            if action == "unchanged":
                continue
            of_action = [_object_line(c) for c in app.changes if c.action == action]
            lines += _capped(of_action, LISTED_PER_ACTION)
    elif not app.error and not app.policy:
        lines += ["", "No object would change."]
    return lines


def _object_line(change: ObjectChange) -> str:
    line = f"- {_ICON[change.action]} {_WORD[change.action]} {code(change.ref)}"
    if change.action == "change":
        line += f" ({len(change.fields)} field{'s' if len(change.fields) != 1 else ''})"
    if change.note:
        line += f": {escape(change.note, 600)}"
    return line


def _diff_section(app: AppPreview, left: int) -> tuple[list[str], int]:
    """The folded field-level diff within `left` characters; objects that do not fit are
    counted, not cut."""
    shown: list[str] = []
    omitted = 0
    changed = [c for c in app.changes if c.fields]
    for change in changed:
        block = diff_block(change)
        size = _size(block)
        if size <= left:
            shown += block
            left -= size
        else:
            omitted += 1
    if not changed:
        return [], left
    lines = ["", (f"<details><summary>Field-level diff of {len(changed) - omitted} "
                 f"object(s)</summary>"), ""]
    if shown:
        marks = fence(shown)
        lines += [f"{marks}diff", *shown, marks]
    lines += ["", "</details>"]
    if omitted:
        lines += ["", (f"> The diff of {omitted} more changed object(s) was left out to fit "
                      "the comment; the object list above is complete.")]
    return lines, left


def diff_block(change: ObjectChange) -> list[str]:
    lines = [f"@@ {_one_line(change.ref)} @@"]
    for field in change.fields:
        lines += _field_lines(field)
    return lines


def _field_lines(field: FieldChange) -> list[str]:
    path = _one_line(field.path)
    if field.hidden:
        sign = {"added": "+", "removed": "-", "changed": "!"}[field.change]
        return [f"{sign} {path}: {field.change} (Secret value hidden)"]
    if field.change == "added":
        return [f"+ {path}: {_value(field.after)}"]
    if field.change == "removed":
        return [f"- {path}: {_value(field.before)}"]
    return [f"- {path}: {_value(field.before)}", f"+ {path}: {_value(field.after)}"]


def _unchanged_fold(app: AppPreview) -> list[str]:
    same = [c for c in app.changes if c.action == "unchanged"]
    if not same:
        return []
    return ["", f"<details><summary>{len(same)} unchanged object(s)</summary>", "",
            *_capped([f"- {code(c.ref)}" for c in same], LISTED_PER_ACTION), "", "</details>"]


# --------------------------------------------------------------------------- helpers


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    text = text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"
    return _no_marker(text)


def _one_line(text: str) -> str:
    return _no_marker(" ".join(str(text).split()))


def _no_marker(text: str) -> str:
    """No HTML comment can open inside a fenced value, so no text from the PR can carry a
    marker the bot looks for."""
    return text.replace("<!--", "<!\u200b--")


def fence(lines: list[str]) -> str:
    """A code fence no line of the block can close early."""
    fence = "```"
    while any(fence in line for line in lines):
        fence += "`"
    return fence


def _capped(lines: list[str], cap: int) -> list[str]:
    if len(lines) <= cap:
        return lines
    return [*lines[:cap], f"- … and {len(lines) - cap} more"]


def _size(lines: list[str]) -> int:
    return sum(len(line) + 1 for line in lines)
