"""Escaping for untrusted text placed into Markdown (PR titles, object names, error messages)."""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~@&])")


def escape(text: str, limit: int = 500) -> str:
    """Escape Markdown and HTML so text can't inject links, mentions, markers or tables."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _SPECIAL.sub(r"\\\1", text)


def code(text: str, limit: int = 200) -> str:
    """Inline code span that holds any text, even backticks, without breaking out."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"
