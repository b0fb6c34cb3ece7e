"""`coalmine diff APP`: what applying a checkout's app would change in the live cluster.

The diff engine is the PR preview's (handlers.preview.preview_app: policy, content rules, a
server-side dry run `dryRun=All` as the repository's ServiceAccount, the field-level diff of
bot.preview.diff, prune candidates, the rollout plan); the composition root (bot.cli) hands
it the checkout on disk as the preview's own `Tree`, and this module prints its answer for a
terminal or as JSON, with kubectl diff's exit status: 0 nothing would change, 1 something
would, 2 the merge would fail or could not be checked (and usage errors).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

from bot.preview.model import ACTIONS, AppPreview, FieldChange

Obj = dict[str, Any]
NO_CHANGE, CHANGES, FAILS = 0, 1, 2
VALUE_CHARS = 200
_WORD = {"refused": "refused", "invalid": "invalid", "create": "create", "change": "change",
         "prune": "prune", "unchecked": "unchecked", "unchanged": "unchanged"}


def revision(root: Path) -> str:
    """The checkout's commit, for the revision label the dry run carries (the diff ignores
    that label); 40 zeros outside a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "0" * 40
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and len(sha) == 40 else "0" * 40


def exit_code(found: AppPreview) -> int:
    if found.failed:
        return FAILS
    changed = any(c.action in ("create", "change", "prune") for c in found.changes)
    return CHANGES if changed else NO_CHANGE


def text(found: AppPreview) -> str:
    lines = [f"{found.name} (cluster {found.cluster})"]
    if found.error:
        lines.append(f"  error: {found.error_title or 'error'}: {found.error}")
    lines += [f"  policy: {v}" for v in found.policy]
    lines += [f"  rule: {v}" for v in found.rules]
    order = {action: i for i, action in enumerate(ACTIONS)}
    for change in sorted(found.changes, key=lambda c: order[c.action]):
        lines.append(f"  {_WORD[change.action]:<10} {change.ref}"
                     + (f": {change.note}" if change.note else ""))
        lines += [f"      {_field(f)}" for f in change.fields]
    if found.plan:
        lines.append("  the merge:")
        lines += [f"    {line}" for line in found.plan]
    counts = [f"{found.count(a)} {_WORD[a]}" for a in ACTIONS if found.count(a)]
    lines.append("summary: " + (", ".join(counts) if counts else "no objects"))
    return "\n".join(lines)


def _field(change: FieldChange) -> str:
    if change.hidden:
        return f"{change.path}: {change.change} (value hidden)"
    if change.change == "added":
        return f"{change.path}: added {_value(change.after)}"
    if change.change == "removed":
        return f"{change.path}: removed (was {_value(change.before)})"
    return f"{change.path}: {_value(change.before)} → {_value(change.after)}"


def _value(value: Any) -> str:
    shown = json.dumps(value, sort_keys=True, default=str)
    return shown if len(shown) <= VALUE_CHARS else shown[:VALUE_CHARS - 1] + "…"


def as_dict(found: AppPreview) -> dict[str, Any]:
    data = dataclasses.asdict(found)
    data["rules"] = [str(v) for v in found.rules]
    data["failed"] = found.failed
    for change in data["changes"]:
        for field in change["fields"]:
            if field["hidden"]:
                field.pop("before", None)
                field.pop("after", None)
    return data
