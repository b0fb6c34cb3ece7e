"""Commit status texts: short, within GitHub's 140 characters, never holding a secret."""

from __future__ import annotations

STATUS_CONTEXT_PREFIX = "coalmine/"
MAX_DESCRIPTION = 140


def context(app: str) -> str:
    return f"{STATUS_CONTEXT_PREFIX}{app}"[:255]


def clip(description: str) -> str:
    """One line, at most 140 characters (GitHub answers 422 to longer ones)."""
    text = " ".join(str(description).split())
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def applied_summary(counts: dict[str, int]) -> str:
    parts = [f"{counts[k]} {k}" for k in ("created", "configured", "unchanged", "pruned") if counts.get(k)]
    return ", ".join(parts) or "nothing to apply"
